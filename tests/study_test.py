"""experiments.study: entries, seeds, its tables and tests, and a resumed run end to end."""
import csv
import math
import os
import signal
import subprocess

import numpy as np
import pytest
from scipy import stats

from csa_tf.configs import train_config as config_lib
from csa_tf.errors import CsaInputError
from experiments import study
from experiments import study_tables
from tests.helpers import (ROOT, TINY_TRAIN_FLAGS, command_environment, command_line,
                           run_command)


def test_entries_are_the_methods_then_the_variants_with_their_flags():
  entries = study.parse_entries(
      ["single", "msbn"], ["csa_dot", "joint_concat"],
      ["csa_dot:--csa_affinity=dot", "csa_dot:--csa_pairs=g3:g4,g5:g6",
       "joint_concat:--method=joint", "joint_concat:--joint_bn=concat"])
  assert entries == [
      ("single", ["--method=single"]), ("msbn", ["--method=msbn"]),
      # A variant is a CSA run unless its flags name another method.
      ("csa_dot", ["--method=csa", "--csa_affinity=dot", "--csa_pairs=g3:g4,g5:g6"]),
      ("joint_concat", ["--method=joint", "--joint_bn=concat"])]


@pytest.mark.parametrize("methods,variants,variant_flags,message", [
    (["csa", "sota"], [], [], "--methods: unknown method 'sota'"),
    (["csa", "csa"], [], [], "--methods: csa is listed twice"),
    (["csa"], ["csa"], [], "--variant=csa: the name is used twice"),
    (["csa"], ["Big Run"], [], "--variant=Big Run: use lower-case letters"),
    (["csa"], ["dot"], ["dot=--csa_affinity=dot"],
     "--variant_flag=dot=--csa_affinity=dot: expected NAME:--flag=value"),
    (["csa"], ["dot"], ["dit:--csa_affinity=dot"], "--variant_flag=dit:--csa_affinity=dot: "
     "no --variant=dit"),
    ([], [], [], "--methods and --variant are empty"),
    (["csa"], ["d3"], ["d3:--train_steps=0"], "--variant_flag=d3:--train_steps=0: "
     "--train_steps must be a positive integer"),
    (["csa"], ["d3"], ["d3:--train_steps=lots"], "--variant_flag=d3:--train_steps=lots: "
     "--train_steps must be a positive integer"),
])
def test_bad_entries_are_one_line(methods, variants, variant_flags, message):
  with pytest.raises(CsaInputError, match="^" + message.replace("(", r"\(")):
    study.parse_entries(methods, variants, variant_flags)


def test_seeds():
  assert study.parse_seeds(["0", "2", "1"]) == [0, 2, 1]
  for bad, message in ((["0", "x"], "'x' is not a non-negative integer"),
                       (["1", "1"], "list each seed once"), ([], "list each seed once")):
    with pytest.raises(CsaInputError, match=message):
      study.parse_seeds(bad)


def _rows():
  """Two entries x two seeds x three patients, one class (LV), hand-chosen Dice."""
  dice = {("msbn", 0): [0.5, 0.6, 0.7], ("msbn", 1): [0.4, 0.6, 0.8],
          ("csa", 0): [0.6, 0.6, 0.9], ("csa", 1): [0.5, 0.7, 0.7]}
  rows = []
  for (entry, seed), values in dice.items():
    for patient, value in zip(("p1", "p2", "p3"), values):
      rows.append(dict(method=entry, seed=str(seed), modality="lge", patient_id=patient,
                       class_name="LV", dice=str(value), hd_vox=str(10 * value),
                       status="ok"))
  # An absent class: no Dice, left out of every mean.
  rows.append(dict(method="csa", seed="0", modality="lge", patient_id="p1",
                   class_name="RV", dice="", hd_vox="", status="absent"))
  return rows


def test_seed_means_and_their_spread():
  means = study_tables.seed_means(_rows())
  np.testing.assert_allclose(means[("csa", "lge", "LV")][0], 0.7)
  np.testing.assert_allclose(means[("csa", "lge", "LV")][1], 0.6333333333)
  assert ("csa", "lge", "RV") not in means
  mean, std = study_tables.mean_std(means[("csa", "lge", "LV")].values())
  # Over seeds: mean of 0.7 and 0.6333 = 0.6667; sample std = 0.0667 / sqrt(2) = 0.04714.
  np.testing.assert_allclose((mean, std), (0.6666667, 0.0471405), rtol=2e-6)
  assert study_tables.mean_std([0.5]) == (0.5, 0.0)


def test_paired_test_pairs_patients_and_seeds():
  tests = study_tables.paired_tests(_rows(), ["msbn", "csa"], ["lge"])
  test, = tests  # csa against msbn; no single in this study
  assert (test["entry"], test["reference"], test["n"]) == ("csa", "msbn", 6)
  ours = [0.6, 0.6, 0.9, 0.5, 0.7, 0.7]
  theirs = [0.5, 0.6, 0.7, 0.4, 0.6, 0.8]
  np.testing.assert_allclose(test["p_value"], stats.wilcoxon(ours, theirs).pvalue)
  np.testing.assert_allclose(test["mean_entry"], np.mean(ours))
  # --against: the other way round, the same pairs (the signed-rank test is symmetric).
  back, = study_tables.paired_tests(_rows(), ["msbn", "csa"], ["lge"], references=["csa"])
  assert (back["entry"], back["reference"], back["n"]) == ("msbn", "csa", 6)
  np.testing.assert_allclose(back["p_value"], test["p_value"])


def test_markdown_and_figure(tmp_path):
  text = study_tables.markdown(_rows(), ["msbn", "csa"], ["lge"], ["LV", "RV"], [0, 1],
                               title="t")
  assert "| csa | 66.67 ± 4.71 | - |" in text
  assert "| msbn | 60.00 ± 0.00 | - |" in text
  assert study_tables.TEST_NAME in text and "| csa | msbn | lge | 6 |" in text
  path = study_tables.figure(_rows(), ["msbn", "csa"], ["lge"], str(tmp_path / "s.png"))
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_study_runs_every_entry_per_seed_and_gathers_their_rows(tiny_prep, tmp_path,
                                                                 monkeypatch):
  calls = []

  def fake_run(name, run_dir, *, data_dir, train_flags, train_steps, new_dirs):
    # What csa_tf.evaluate leaves: one row per test volume and class.
    del new_dirs
    calls.append((name, os.path.relpath(run_dir, tmp_path), data_dir, list(train_flags),
                  train_steps))
    os.makedirs(os.path.join(run_dir, "eval"), exist_ok=True)
    seed = int(name.rsplit(" ", 1)[1])
    with open(os.path.join(run_dir, "eval", "per_volume.csv"), "w") as f:
      f.write("patient_id,modality,class_index,class_name,status,dice,hd_vox\n"
              f"patient4,lge,1,LV,ok,{0.5 + 0.1 * seed},3\n"
              f"patient4,bssfp,1,LV,ok,{0.4 + 0.1 * seed},4\n")

  monkeypatch.setattr(study.runner, "train_and_evaluate", fake_run)
  entries = study.parse_entries(["msbn"], ["dot", "d3"],
                                ["dot:--csa_affinity=dot", "d3:--spatial_dims=3",
                                 "d3:--train_steps=3"])
  text = study.run_study(tiny_prep.prep_dir, str(tmp_path / "out"), entries=entries,
                         seeds=[0, 1], train_steps=7, flagfile="experiments/demo.flags",
                         extra_flags=["--feature_base=2"])
  assert [(c[0], c[1]) for c in calls] == [
      ("msbn seed 0", "out/runs/msbn/seed0"), ("msbn seed 1", "out/runs/msbn/seed1"),
      ("dot seed 0", "out/runs/dot/seed0"), ("dot seed 1", "out/runs/dot/seed1"),
      ("d3 seed 0", "out/runs/d3/seed0"), ("d3 seed 1", "out/runs/d3/seed1")]
  # The flagfile first, then --train_flag, then the entry's own flags.
  assert calls[3][3] == ["--flagfile=experiments/demo.flags", "--seed=1",
                         "--feature_base=2", "--method=csa", "--csa_affinity=dot"]
  assert calls[0][2] == tiny_prep.prep_dir and calls[0][4] == 7
  assert "| dot | msbn | lge | 2 |" in text and "| msbn | dot |" not in text
  # A variant's own step count replaces the study's, as the runner's (checked) count.
  assert calls[5][3][-2:] == ["--method=csa", "--spatial_dims=3"] and calls[5][4] == 3
  rows = list(csv.DictReader(open(tmp_path / "out" / "study.csv")))
  assert len(rows) == 12 and {r["seed"] for r in rows} == {"0", "1"}
  # LGE LV Dice 0.5 and 0.6 over the two seeds: 55.00 ± 7.07.
  assert "| dot | 55.00 ± 7.07 | - | - |" in text
  assert (tmp_path / "out" / "study.md").read_text() == text
  assert (tmp_path / "out" / "study.png").exists()
  # --against=d3: every other entry against the 3D variant (the runs exist: no training).
  text = study.run_study(tiny_prep.prep_dir, str(tmp_path / "out"), entries=entries,
                         seeds=[0, 1], train_steps=7, flagfile="experiments/demo.flags",
                         extra_flags=[], against=["d3"])
  assert "| msbn | d3 | lge | 2 |" in text and "| dot | msbn |" not in text
  with pytest.raises(CsaInputError, match=r"^--against: single is not an entry of the "
                     r"study \(msbn, dot, d3\)"):
    study.run_study(tiny_prep.prep_dir, str(tmp_path / "out"), entries=entries, seeds=[0],
                    train_steps=7, flagfile="experiments/demo.flags", extra_flags=[],
                    against=["single"])


# The default run covers the orchestration above and resuming by checkpoint step in
# tests/fault_injection_test.py (runner.run_done, reproduce's method_done); this trains.
@pytest.mark.slow
def test_study_runs_resumes_after_a_kill_and_writes_its_outputs(tiny_prep, tmp_path):
  out = tmp_path / "study"
  args = ("experiments.study", f"--data_dir={tiny_prep.prep_dir}", f"--output_dir={out}",
          "--methods=msbn", "--variant=csa_dot", "--variant_flag=csa_dot:--csa_affinity=dot",
          "--seeds=0,1", "--train_steps=2", "--flagfile_for_train=experiments/demo.flags",
          *[f"--train_flag={flag}" for flag in TINY_TRAIN_FLAGS if "train_steps" not in flag])
  # Killed (with its training child) once the first run is done.
  first = subprocess.Popen(command_line(*args), cwd=ROOT, env=command_environment(),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)
  try:
    for line in first.stdout:
      if line.startswith("== msbn seed 0: done"):
        break
  finally:
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
  result = run_command(*args)
  assert "== msbn seed 0: finished earlier, not retrained" in result.stdout
  assert "== csa_dot seed 1: done" in result.stdout
  rows = list(csv.DictReader(open(out / "study.csv")))
  assert {(r["method"], r["seed"]) for r in rows} == {
      ("msbn", "0"), ("msbn", "1"), ("csa_dot", "0"), ("csa_dot", "1")}
  assert list(rows[0]) == list(study_tables.CSV_COLUMNS)
  assert all(not r["dice"] or 0 <= float(r["dice"]) <= 1 for r in rows)
  text = (out / "study.md").read_text()
  assert "±" in text and "| csa_dot | msbn |" in text
  assert (out / "study.png").stat().st_size > 1000
  # The variant's flag reached its run.
  import json  # pylint: disable=g-import-not-at-top
  assert json.load(open(out / "runs" / "csa_dot" / "seed1" / "config.json"))[
      "csa_affinity"] == "dot"
  assert not math.isnan(float(rows[0]["seed"]))


def test_table_c_flagfile_lists_every_reading_at_both_lambdas():
  path = os.path.join(ROOT, "experiments", "csa_study_c.flags")
  lines = [line.strip() for line in open(path, encoding="utf-8")]
  flags_ = [line for line in lines if line.startswith("--")]
  variants = [f.split("=", 1)[1] for f in flags_ if f.startswith("--variant=")]
  variant_flags = [f.split("=", 1)[1] for f in flags_ if f.startswith("--variant_flag=")]
  assert len(flags_) == len(variants) + len(variant_flags)
  entries = dict(study.parse_entries(["single", "msbn", "csa"], variants, variant_flags))
  readings = {}
  for name, own in entries.items():
    values = dict(f[2:].split("=", 1) for f in own)
    if {"csa_affinity", "csa_area_norm", "csa_reduction"} <= set(values):
      key = (values["csa_affinity"], values["csa_area_norm"], values["csa_reduction"])
      readings.setdefault(key, []).append(float(values["lambda"]))
      assert values["method"] == "csa"
  # 12 readings, each at its 10% lambda and at 0.5, but the literal one at 0.5, which
  # is the csa setting itself.
  assert set(readings) == {(a, n, r) for a in config_lib.AFFINITIES
                           for n in config_lib.AREA_NORMS for r in config_lib.REDUCTIONS}
  literal = ("cosine", "count", "mean_then_square")
  assert readings.pop(literal) == [5.76]
  assert all(len(lambdas) == 2 and lambdas.count(0.5) == 1
             for lambdas in readings.values())
  # Each 10% lambda is 0.05 / the share its comment line gives (table a).
  shares = [float(line.split("lambda = 0.05 / ")[1].split(" =")[0])
            for line in lines if "lambda = 0.05 / " in line]
  assert len(shares) == 12
  ten_percent = [l for lambdas in readings.values() for l in lambdas if l != 0.5] + [5.76]
  assert sorted(ten_percent) == sorted(float(f"{0.05 / s:.3g}") for s in shares)
  assert entries["msbn_no_recal"] == ["--method=msbn", "--bn_recalibration_batches=0"]
  assert entries["csa_no_recal"] == ["--method=csa", "--bn_recalibration_batches=0"]
  assert entries["joint_concat"] == ["--method=joint", "--joint_bn=concat"]
