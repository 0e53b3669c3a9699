"""A tiny trained run for tests of commands that read one (figures, export)."""
from csa_tf.configs import train_config as config_lib
from csa_tf.data.prepared import PreparedDataset
from csa_tf.training.trainer import Trainer
from csa_tf.data.mscmr import prepare_mscmr
from tests.conftest import make_mscmr_release


def train_tiny_run(root, *, method="csa", train_steps=2):
  """Prepares a 3-patient release at crop 32 under root and trains; returns the config."""
  prep_dir = root / "prep"
  if not (prep_dir / "prep_meta.json").exists():
    raw = make_mscmr_release(root / "raw", num_patients=3, modalities=("LGE", "C0"))
    prepare_mscmr(raw, str(prep_dir), modalities=["lge", "bssfp"], crop_size=32,
                  test_fraction=0.34)
  config = config_lib.TrainConfig(
      model_dir=str(root / "runs" / method), data_dir=str(prep_dir), dataset="mscmr",
      num_classes=4, crop_size=32, method=method, train_steps=train_steps, batch_size=2,
      feature_base=2, log_every=1, checkpoint_every=100, csa_area_norm="fraction",
      bn_recalibration_batches=1).validate()
  Trainer(config, PreparedDataset.open(str(prep_dir)), log=lambda _: None).train()
  return config
