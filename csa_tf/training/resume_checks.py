"""What a run folder must agree with before training starts or resumes in it.

A run resumes only with its own settings (those declared `on_resume` may change) and
on the data it was trained on, recognised by the PREP's content fingerprint
(RUN/training_data.json); both refusals name the file and every difference.
"""
import os

from csa_tf.configs import train_config as config_lib
from csa_tf.data import label_scarcity
from csa_tf.data.prepared import PreparedDataset
from csa_tf.errors import CsaInputError, param
from csa_tf.io.run_dir import RunDir


def check_model_dir(model_dir: str, config: config_lib.TrainConfig) -> None:
  """Refuses to resume a model dir whose run had other settings.

  Only the settings declared `on_resume` (how long, how often to log or checkpoint,
  where it runs, the data folder's path) may change; the data itself is compared by
  `check_training_data`.

  Raises:
    CsaInputError: naming the run's config file and every field that differs.
  """
  run = RunDir(model_dir)
  if not run.is_run():
    return
  differing = config.changes_from(run.load_config(), on_resume=False)
  if differing:
    listed = "; ".join(f"{name} {old!r} -> {new!r}"
                       for name, (old, new) in differing.items())
    raise CsaInputError(f"{run.config_path}: this model dir was trained with other "
                        f"settings ({listed}); resume with the run's own settings or use "
                        f"a new {param('model_dir')}")


def training_data_record(prepared: PreparedDataset,
                         config: config_lib.TrainConfig) -> dict:
  """What RUN/training_data.json holds: the PREP's path, fingerprint, train patients,
  slice orientation, in-plane resampling and release.

  The train patients are those the run trains on: under --labelled_train_patients, the
  drawn ones (csa_tf/data/label_scarcity.py).

  Raises:
    ConfigError: see `label_scarcity.train_patients`.
  """
  restricted = label_scarcity.train_patients(prepared, config.modalities,
                                             dict(config.labelled_train_patients))
  return {"data_dir": os.path.abspath(prepared.prep_dir),
          "prep_fingerprint": prepared.fingerprint(),
          "train_patients": (restricted if restricted is not None
                             else prepared.patients("train", config.modalities)),
          # How the PREP turned scans into slices: predict turns new scans the same way.
          "orientation": prepared.orientation,
          # The pixel size (mm) slices were resampled to per modality (MM-WHS), so
          # that predict resamples new scans alike without the PREP.
          "in_plane_spacing_mm": prepared.in_plane_spacing_mm,
          # Which release's patients it saw: evaluation on another release of the same
          # cohort warns (csa_tf/evaluation/cross_release.py).
          "release": prepared.release}


def check_training_data(run: RunDir, record: dict) -> None:
  """Refuses to resume a run on other data than it was trained on.

  Raises:
    CsaInputError: the PREP's fingerprint differs from the one the run recorded.
  """
  previous = run.read_training_data()
  if previous is None or previous.get("prep_fingerprint") == record["prep_fingerprint"]:
    return
  raise CsaInputError(
      f"{record['data_dir']}: not the data this run was trained on "
      f"({run.training_data_path} records {previous.get('data_dir')}, whose content "
      "differs: another preparation, split or seed); resume with "
      f"{param('data_dir', previous.get('data_dir'))} or use a new {param('model_dir')}")
