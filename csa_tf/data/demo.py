"""The demo's data: phantoms generated and prepared inside a run folder when no PREP is given."""
import os
from typing import Optional

from csa_tf.configs import datasets
from csa_tf.errors import param
from csa_tf.data import phantom
from csa_tf.data import prepared
from csa_tf.data.mmwhs import prepare_mmwhs
from csa_tf.data.mscmr import prepare_mscmr
from csa_tf.io.run_dir import RunDir


def phantom_prep_dir(model_dir: str) -> str:
  """Where the demo's PREP lies (or will lie) in run folder model_dir."""
  return RunDir(model_dir).demo_prep_dir


def existing_phantom_prep(model_dir: str) -> Optional[str]:
  """The demo's PREP in model_dir when an earlier run prepared it, else None."""
  prep_dir = phantom_prep_dir(model_dir)
  return prep_dir if os.path.isfile(os.path.join(prep_dir, prepared.META_FILE)) else None


def prepare_phantom_data(model_dir: str, *, dataset: str, num_patients: int, scale: float,
                         crop_size: int, seed: int, log=print) -> str:
  """Generates and prepares phantoms inside the run folder (once); returns PREP.

  The folders are RunDir(model_dir).demo_raw_dir and .demo_prep_dir; the phantoms hold
  the dataset's paper modalities (`DatasetSpec.paper_modalities`).
  """
  prep_dir = existing_phantom_prep(model_dir)
  if prep_dir:
    return prep_dir
  prep_dir = phantom_prep_dir(model_dir)
  raw_dir = RunDir(model_dir).demo_raw_dir
  modalities = datasets.get_spec(dataset).paper_modalities
  log(f"no {param('data_dir')}: generating {num_patients} {dataset} phantom patients in "
      f"{raw_dir}")
  if not os.path.isdir(raw_dir):
    phantom.generate_phantoms(dataset, raw_dir, num_patients=num_patients, seed=seed,
                              scale=scale, modalities=modalities)
  if dataset == "mscmr":
    summary = prepare_mscmr(raw_dir, prep_dir, modalities=modalities, crop_size=crop_size,
                            seed=seed)
  else:
    summary = prepare_mmwhs(raw_dir, prep_dir, modalities=modalities, crop_size=crop_size,
                            seed=seed)
  log(summary.rstrip())
  return prep_dir
