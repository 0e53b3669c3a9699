"""Tests for the container's GPU smoke check and entrypoint, on CPU-only and GPU hosts.

What the report must say depends on the host, so each test asks TensorFlow itself which
GPUs it sees and checks the report against that: the warning and exit status 1 with
--require_gpu where there is none; one line per GPU and the smoke test's device where
there are some.
"""
import os
import re
import subprocess
import sys

import pytest

from csa_tf import gpu_check
from tests.helpers import ROOT, command_environment


def _visible_gpus():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.config.list_physical_devices("GPU")


def _smoke_lines(report_lines):
  return [line for line in report_lines if "smoke test" in line]


def test_report_follows_the_gpus_tensorflow_sees():
  gpus = _visible_gpus()
  lines = []
  status = gpu_check.check(log=lines.append)
  required = gpu_check.check(require_gpu=True, log=lambda _: None)
  assert lines[0].startswith("csa_tf gpu_check: TensorFlow 2.21")
  if not gpus:
    assert lines[1:] == [gpu_check.WARNING_NO_GPU]
    assert (status, required) == (0, 1)
  else:
    # One line per visible GPU, then the smoke test, which names the device it ran on:
    # the first GPU, not the CPU that soft placement would fall back to.
    assert len(lines) == 1 + len(gpus) + 1, lines
    for line, gpu in zip(lines[1:], gpus):
      assert line.startswith(f"  {gpu.name}: "), (line, gpu.name)
    assert lines[-1].startswith("  smoke test on /GPU:0 (device:GPU:0): conv2d and "
                                "matmul ran"), lines[-1]
    assert gpu_check.WARNING_NO_GPU not in lines
    assert (status, required) == (0, 0)


def _entrypoint(*command, **env):
  environment = command_environment(**env)
  # The image's venv is first on PATH; here the test's interpreter stands in for it.
  environment["PATH"] = os.path.dirname(sys.executable) + os.pathsep + environment["PATH"]
  return subprocess.run(["sh", os.path.join(ROOT, "docker", "entrypoint.sh"), *command],
                        capture_output=True, text=True, cwd=ROOT, env=environment,
                        timeout=120)


@pytest.mark.integration
def test_entrypoint_checks_then_runs_the_command():
  gpus = _visible_gpus()
  result = _entrypoint("python", "-c", "print('the command ran')")
  assert result.returncode == 0, result.stderr
  assert result.stdout.startswith("csa_tf gpu_check: TensorFlow 2.21")
  assert result.stdout.rstrip().endswith("the command ran")
  smoke = _smoke_lines(result.stdout.splitlines())
  required = _entrypoint("python", "-c", "print('the command ran')",
                         CSA_TF_REQUIRE_GPU="1")
  if not gpus:
    assert "WARNING: TensorFlow sees no GPU" in result.stdout and not smoke
    # A required GPU that is missing stops the container before the command.
    assert required.returncode == 1 and "the command ran" not in required.stdout
  else:
    assert "WARNING" not in result.stdout
    assert len(smoke) == 1 and "(device:GPU:0)" in smoke[0], result.stdout
    assert required.returncode == 0, required.stderr
    assert required.stdout.rstrip().endswith("the command ran")
  skipped = _entrypoint("echo", "skipped", CSA_TF_SKIP_GPU_CHECK="1")
  assert skipped.returncode == 0 and skipped.stdout == "skipped\n"


def test_dockerfile_copies_existing_paths_that_dockerignore_keeps():
  dockerfile = open(os.path.join(ROOT, "Dockerfile"), encoding="utf-8").read()
  ignored = {line.strip() for line in
             open(os.path.join(ROOT, ".dockerignore"), encoding="utf-8")
             if line.strip() and not line.startswith("#")}
  sources = [s for line in re.findall(r"^COPY (.+)$", dockerfile, re.M)
             for s in line.split()[:-1]]
  assert {"setup.py", "csa_tf", "docker/entrypoint.sh"} <= set(sources)
  for source in sources:
    assert os.path.exists(os.path.join(ROOT, source)), source
    assert source.split("/")[0] not in ignored, source
  assert re.search(r'"tensorflow\[and-cuda\]==2\.21\.0"', dockerfile)
  assert re.search(r"^USER \d+", dockerfile, re.M)
