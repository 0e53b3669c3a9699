"""Tests for the container's GPU smoke check and entrypoint (on this CPU-only machine)."""
import os
import re
import subprocess
import sys

import pytest

from csa_tf import gpu_check
from tests.helpers import ROOT, command_environment


def test_no_gpu_is_a_warning_unless_required():
  lines = []
  assert gpu_check.check(log=lines.append) == 0
  assert lines[0].startswith("csa_tf gpu_check: TensorFlow 2.21")
  assert lines[-1] == gpu_check.WARNING_NO_GPU
  assert gpu_check.check(require_gpu=True, log=lambda _: None) == 1


def _entrypoint(*command, **env):
  environment = command_environment(**env)
  # The image's venv is first on PATH; here the test's interpreter stands in for it.
  environment["PATH"] = os.path.dirname(sys.executable) + os.pathsep + environment["PATH"]
  return subprocess.run(["sh", os.path.join(ROOT, "docker", "entrypoint.sh"), *command],
                        capture_output=True, text=True, cwd=ROOT, env=environment,
                        timeout=120)


@pytest.mark.integration
def test_entrypoint_warns_then_runs_the_command():
  result = _entrypoint("python", "-c", "print('the command ran')")
  assert result.returncode == 0, result.stderr
  assert "WARNING: TensorFlow sees no GPU" in result.stdout
  assert result.stdout.rstrip().endswith("the command ran")
  required = _entrypoint("python", "-c", "print('the command ran')",
                         CSA_TF_REQUIRE_GPU="1")
  assert required.returncode == 1 and "the command ran" not in required.stdout
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
