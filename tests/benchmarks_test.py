"""Tests of benchmarks/run.py's figures and spreads (no timing is asserted)."""
import pytest

from benchmarks import run as benchmarks
from benchmarks import utilization
from csa_tf.errors import CsaInputError
from csa_tf.model import flops
from csa_tf.model.csa_net import CsaNet


def test_spread_is_median_min_and_max_of_the_rounds():
  assert benchmarks.spread("ratio", [1.2, 0.9, 1.0, 1.1, 5.0]) == {
      "ratio": 1.1, "ratio_min": 0.9, "ratio_max": 5.0}
  line = benchmarks.figure_line("ratio", {"ratio": 1.1, "ratio_min": 0.9,
                                          "ratio_max": 5.0})
  assert line == "ratio: 1.100 (min 0.900, max 5.000)"
  assert benchmarks.figure_line("rss", {"rss": 12.0}) == "rss: 12.000"


def test_unknown_figure_or_no_rounds_is_refused():
  with pytest.raises(CsaInputError, match="^--only: unknown figure mfu; expected some "
                     "of model_gflops_per_image, flops_utilization, "):
    benchmarks.run_benchmarks(full=False, steps=1, warmup=1, only=("mfu",))
  with pytest.raises(CsaInputError, match=r"^--rounds=0: must be at least 1"):
    benchmarks.run_benchmarks(full=False, steps=1, warmup=1, rounds=0)


def test_matmul_peak_counts_two_flops_per_multiply_add():
  assert utilization.matmul_flops_per_call(4) == 2 * 4 ** 3 * utilization.MATMULS_PER_CALL
  assert utilization.gflops_per_round(4e9, [2.0, 4.0]) == [2.0, 1.0]


def test_model_gflops_is_the_paper_networks_analytic_count(capsys):
  results = benchmarks.run_benchmarks(full=False, steps=1, warmup=1,
                                      only=("model_gflops_per_image",))
  assert results == {"model_gflops_per_image": flops.paper_network_gflops_per_image()}
  assert capsys.readouterr().out == "model_gflops_per_image: 59.641\n"


@pytest.mark.integration
def test_flops_utilization_is_a_fraction_of_the_measured_peak(capsys):
  results = benchmarks.run_benchmarks(full=False, steps=1, warmup=1, rounds=2,
                                      only=("flops_utilization",), feature_base=4)
  # CPU sizes at the demo's width: feature_base 4, 64x64, batch 8 per modality, two
  # modalities.
  net = CsaNet(4, ["lge", "bssfp"], feature_base=4)
  net.build((None, 64, 64, 1))
  assert results["step_gflops"] == pytest.approx(
      3 * 16 * flops.forward_flops_per_image(net, 64, 64) / 1e9, rel=1e-12)
  assert 0 < results["flops_utilization_min"] <= results["flops_utilization"]
  assert results["flops_utilization"] <= results["flops_utilization_max"] <= 1
  assert results["achieved_gflops"] > 0 and results["peak_gflops"] > 0
  assert "flops_utilization: " in capsys.readouterr().out


def test_hd_eval_figure_comes_from_a_fresh_process_with_its_spread():
  results = benchmarks.hd_eval_seconds(None, 0, 0, 3, shape=(64, 64, 32))
  assert set(results) == {"hd_eval_seconds", "hd_eval_seconds_min", "hd_eval_seconds_max"}
  assert 0 < results["hd_eval_seconds_min"] <= results["hd_eval_seconds"]
  assert results["hd_eval_seconds"] <= results["hd_eval_seconds_max"]


def test_report_names_the_timed_sizes():
  assert benchmarks.sizes_text(False) == (
      "CPU sizes (feature_base 8, 64x64, batch 8 per modality)")
  assert benchmarks.sizes_text(False, 4) == (
      "CPU sizes (feature_base 4, 64x64, batch 8 per modality)")
  assert benchmarks.sizes_text(True) == (
      "paper sizes (feature_base 16, 224x224, batch 8 per modality)")


@pytest.mark.integration
def test_step_3d_ratio_times_both_steps_side_by_side(capsys):
  results = benchmarks.run_benchmarks(full=False, steps=1, warmup=1, rounds=1,
                                      only=("step_3d_ratio",), feature_base=2)
  assert results["csa_2d_step_seconds"] > 0 and results["csa_3d_step_seconds"] > 0
  assert results["step_3d_ratio"] == pytest.approx(
      results["csa_3d_step_seconds"] / results["csa_2d_step_seconds"])
  assert "step_3d_ratio: " in capsys.readouterr().out


@pytest.mark.integration
def test_step_3d_rss_ratio_compares_fresh_processes_above_an_idle_one(capsys):
  results = benchmarks.run_benchmarks(full=False, steps=1, warmup=1, rounds=1,
                                      only=("step_3d_rss_ratio",), feature_base=2)
  idle, two_d, three_d = (results[f"{name}_peak_rss_mb"]
                          for name in ("idle", "csa_2d", "csa_3d"))
  # TensorFlow alone takes hundreds of MB; training a step takes more on top of it.
  assert 100 < idle < two_d and idle < three_d
  assert results["step_3d_rss_ratio"] == pytest.approx((three_d - idle) / (two_d - idle))
  assert "step_3d_rss_ratio: " in capsys.readouterr().out
