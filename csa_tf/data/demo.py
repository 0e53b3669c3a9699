"""The demo's data: phantoms generated and prepared inside a run folder when no PREP is given."""
import os

from csa_tf.configs import datasets
from csa_tf.data import phantom
from csa_tf.data import prepared
from csa_tf.data.mmwhs import prepare_mmwhs
from csa_tf.data.mscmr import prepare_mscmr
from csa_tf.io.run_dir import RunDir


def prepare_phantom_data(model_dir: str, *, dataset: str, num_patients: int, scale: float,
                         crop_size: int, seed: int, log=print) -> str:
  """Generates and prepares phantoms inside the run folder (once); returns PREP.

  The folders are RunDir(model_dir).demo_raw_dir and .demo_prep_dir.
  """
  run = RunDir(model_dir)
  prep_dir = run.demo_prep_dir
  if os.path.isfile(os.path.join(prep_dir, prepared.META_FILE)):
    return prep_dir
  raw_dir = run.demo_raw_dir
  spec = datasets.get_spec(dataset)
  modalities = ("lge", "bssfp") if dataset == "mscmr" else spec.modalities
  log(f"no --data_dir: generating {num_patients} {dataset} phantom patients in {raw_dir}")
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
