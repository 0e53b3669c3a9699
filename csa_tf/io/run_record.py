"""The debug record kept beside every run: resolved config and library versions."""
import json
import os
import platform
import subprocess
import sys
from importlib import metadata

from csa_tf.configs.train_config import CONFIG_FILE, TrainConfig
from csa_tf.io.nifti import write_atomically

VERSIONS_FILE = "versions.json"
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


def write_json(path: str, values: dict) -> None:
  def write(tmp):
    with open(tmp, "w", encoding="utf-8") as f:
      json.dump(values, f, indent=1, sort_keys=True)
      f.write("\n")
  write_atomically(path, write)


def write_run_record(model_dir: str, config: TrainConfig) -> None:
  """Writes config.json and versions.json into model_dir."""
  os.makedirs(model_dir, exist_ok=True)
  write_json(os.path.join(model_dir, CONFIG_FILE), config.to_json())
  write_json(os.path.join(model_dir, VERSIONS_FILE), library_versions())
