"""Tests for --mixed_precision: bfloat16 / float16 compute, float32 variables and losses."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from csa_tf.configs import train_config as config_lib
from csa_tf.errors import CsaInputError
from csa_tf.io.run_dir import RunDir
from csa_tf.model.bundle import ModelBundle
from csa_tf.data.prepared import PreparedDataset
from csa_tf.training.trainer import Trainer
from csa_tf.data.mscmr import prepare_mscmr
from tests.conftest import make_mscmr_release


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  root = tmp_path_factory.mktemp("mixed")
  raw = make_mscmr_release(root / "raw", num_patients=3, modalities=("LGE", "C0"))
  prepare_mscmr(raw, str(root / "prep"), modalities=["lge", "bssfp"], crop_size=32,
                test_fraction=0.34)
  return PreparedDataset.open(str(root / "prep"))


def make_config(model_dir, **overrides):
  values = dict(model_dir=str(model_dir), data_dir="unused", dataset="mscmr",
                num_classes=4, crop_size=32, method="csa", train_steps=2, batch_size=2,
                feature_base=2, learning_rate=1e-3, log_every=100, checkpoint_every=100,
                csa_area_norm="fraction", bn_recalibration_batches=1)
  values.update(overrides)
  return config_lib.TrainConfig(**values).validate()


@pytest.mark.parametrize("precision, compute", [("bf16", "bfloat16"), ("fp16", "float16")])
def test_mixed_precision_steps_are_finite_with_float32_variables(prepared, tmp_path,
                                                                   precision, compute):
  # fp16 starts with a loss scale of 2**15 that overflows and is halved on each skipped
  # step until the gradients are finite, so it needs more steps to update the weights.
  config = make_config(tmp_path / precision, mixed_precision=precision,
                       train_steps=2 if precision == "bf16" else 12)
  trainer = Trainer(config, prepared, log=lambda _: None)
  net = trainer.bundle.unique_networks[0]
  assert net.compute_dtype == compute and net.variable_dtype == "float32"
  assert {v.dtype for v in trainer.bundle.trainable_variables} == {"float32"}
  logits = trainer.bundle.logits(tf.zeros([1, 32, 32, 1]), "lge")
  assert logits.dtype == compute
  before = [v.numpy().copy() for v in trainer.bundle.trainable_variables]
  terms = trainer.train()
  assert set(terms) >= {"dice_lge", "ce_bssfp", "csa", "l2", "total"}
  assert all(np.isfinite(v) for v in terms.values()), terms
  assert any(not np.array_equal(a, v.numpy())
             for a, v in zip(before, trainer.bundle.trainable_variables))
  if precision == "fp16":
    # Dynamic loss scaling (Keras 3: LossScaleOptimizer and scale_loss()).
    assert isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer)
    scale = float(trainer.optimizer.dynamic_scale)
    assert 1 <= scale < 2 ** 15, scale
  # The checkpoint restores into the float32 bundle used by evaluation and export.
  restored = ModelBundle(config).build()
  restored.restore(RunDir(config.model_dir).latest_checkpoint())
  images = tf.random.normal([2, 32, 32, 1], seed=2)
  full = restored.logits(images, "lge")
  assert full.dtype == tf.float32
  half = trainer.bundle.logits(images, "lge")
  np.testing.assert_allclose(tf.cast(half, tf.float32).numpy(), full.numpy(),
                             atol=0.1 * float(tf.reduce_max(tf.abs(full))))


def test_resuming_fp16_run_without_fp16_is_refused(prepared, tmp_path):
  Trainer(make_config(tmp_path / "run", mixed_precision="fp16", train_steps=1), prepared,
          log=lambda _: None).train()
  with pytest.raises(CsaInputError, match="mixed_precision=fp16"):
    Trainer(make_config(tmp_path / "run", mixed_precision="off"), prepared,
            log=lambda _: None).train()
