"""The demo's data: phantoms generated and prepared inside a run folder when no PREP is given."""
import os

from csa_tf.configs import datasets
from csa_tf.errors import param
from csa_tf.data import phantom
from csa_tf.data.mmwhs import prepare_mmwhs
from csa_tf.data.mscmr import prepare_mscmr


def prepare_phantom_data(model_dir: str, *, dataset: str, num_patients: int, scale: float,
                         crop_size: int, seed: int, log=print) -> str:
  """Generates and prepares phantoms under model_dir/phantom_data (once); returns PREP."""
  base = os.path.join(model_dir, "phantom_data")
  prep_dir = os.path.join(base, "prep")
  if os.path.isfile(os.path.join(prep_dir, "prep_meta.json")):
    return prep_dir
  raw_dir = os.path.join(base, "raw")
  spec = datasets.get_spec(dataset)
  modalities = ("lge", "bssfp") if dataset == "mscmr" else spec.modalities
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
