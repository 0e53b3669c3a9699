"""The debug record kept beside every run: resolved config and library versions."""
import os
import platform
import subprocess
import sys
from importlib import metadata

from csa_tf.configs.train_config import TrainConfig
from csa_tf.io import atomic
from csa_tf.io.run_dir import RunDir

_PACKAGES = ("tensorflow", "keras", "numpy", "nibabel", "scipy", "medpy", "absl-py",
             "csa_tf")


def library_versions() -> dict:
  """Python, platform, git commit (if any) and the versions of the packages we use."""
  versions = {"python": sys.version.split()[0], "platform": platform.platform()}
  for package in _PACKAGES:
    try:
      versions[package] = metadata.version(package)
    except metadata.PackageNotFoundError:
      versions[package] = None
  try:
    here = os.path.dirname(os.path.abspath(__file__))
    versions["git_commit"] = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
        timeout=5, check=True).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    versions["git_commit"] = None
  try:
    import tensorflow as tf
    versions["gpus"] = [d.name for d in tf.config.list_physical_devices("GPU")]
  except ImportError:
    versions["gpus"] = []
  return versions


def write_run_record(model_dir: str, config: TrainConfig) -> None:
  """Writes the run's config and the library versions into model_dir (see RunDir)."""
  run = RunDir(model_dir)
  run.write_config(config)
  atomic.write_json(run.versions_path, library_versions(), sort_keys=True)
