"""The GPU benchmark script's CPU dry run (benchmarks/gpu_report.sh, under JAX)."""
import os
import subprocess

import pytest

pytest.importorskip("jax", reason="the jax extra (pip install -e '.[jax]') is not installed")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Slow (~3 min on 2 CPU cores, most of it JAX compiling each kernel initializer eagerly);
# tests/jax_backend_test.py runs the network under JAX in the default run.
@pytest.mark.slow
def test_dry_run_writes_the_report_labelled_as_the_network_under_jax(tmp_path):
  env = dict(os.environ, OUT=str(tmp_path), JAX_PLATFORMS="cpu")
  result = subprocess.run(["bash", "benchmarks/gpu_report.sh", "--dry_run", "--rounds=1"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
  report = (tmp_path / "gpu_benchmarks.md").read_text()
  assert report.startswith("# GPU benchmarks: the Keras network under JAX\n")
  assert "Keras network under JAX on cpu; dry run (tiny sizes)" in report
  rows = [line for line in report.splitlines() if line.startswith(("| float32", "| bf16"))]
  assert len(rows) == 2
  for row in rows:
    utilization = float(row.split("|")[5].split()[0])
    assert 0 < utilization <= 1.5  # one round on a shared CPU: a sanity bound only
  assert (tmp_path / "gpu_report.log").exists()
