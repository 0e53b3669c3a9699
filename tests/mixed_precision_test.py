"""Tests for --mixed_precision: bfloat16 / float16 compute, float32 variables and losses."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from csa_tf.errors import CsaInputError
from csa_tf.io.run_dir import RunDir
from csa_tf.model.bundle import ModelBundle
from csa_tf.training.trainer import Trainer
from tests.helpers import make_config, quiet

# Every test trains (fp16 for 12 steps): the integration tier.
pytestmark = pytest.mark.integration


# fp16 starts with a loss scale of 2**15 that overflows and is halved on each skipped
# step until the gradients are finite, so it needs more steps to update the weights.
STEPS = {"bf16": 2, "fp16": 12}


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory):
  """Where this module's runs go: the fp16 run is reused by the refusal test."""
  return tmp_path_factory.mktemp("mixed")


@pytest.mark.parametrize("precision, compute", [("bf16", "bfloat16"), ("fp16", "float16")])
def test_mixed_precision_steps_are_finite_with_float32_variables(tiny_prep, runs_root,
                                                                   precision, compute):
  config = make_config(runs_root / precision, mixed_precision=precision,
                       train_steps=STEPS[precision])
  trainer = Trainer(config, tiny_prep, log=quiet)
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


def test_resuming_fp16_run_without_fp16_is_refused(tiny_prep, runs_root):
  model_dir = runs_root / "fp16"
  if not model_dir.exists():  # run on its own (-k): make the fp16 run here
    Trainer(make_config(model_dir, mixed_precision="fp16", train_steps=STEPS["fp16"]),
            tiny_prep, log=quiet).train()
  # Precision is not a resumable setting (TrainConfig option on_resume=False); fp16's
  # optimizer checkpoint (a loss scale) could not be restored without it anyway.
  with pytest.raises(CsaInputError,
                     match=r"other settings \(mixed_precision 'fp16' -> 'off'\)"):
    Trainer(make_config(model_dir, mixed_precision="off", train_steps=STEPS["fp16"]),
            tiny_prep, log=quiet).train()


def test_3d_fp16_steps_are_finite(tiny_prep, runs_root):
  # 3D convolutions in float16 with loss scaling, as in 2D (the in-plane max-pool of a
  # patch runs as a 2D pool: TF's CPU MaxPool3D has no float16 kernel).
  config = make_config(runs_root / "fp16_3d", mixed_precision="fp16",
                       train_steps=STEPS["fp16"], spatial_dims=3, patch_depth=2)
  trainer = Trainer(config, tiny_prep, log=quiet)
  assert trainer.bundle.unique_networks[0].compute_dtype == "float16"
  before = [v.numpy().copy() for v in trainer.bundle.trainable_variables]
  terms = trainer.train()
  assert all(np.isfinite(v) for v in terms.values()), terms
  assert any(not np.array_equal(a, v.numpy())
             for a, v in zip(before, trainer.bundle.trainable_variables))


def test_3d_bf16_is_refused_on_the_cpu_while_tf_gets_its_gradient_wrong(runs_root):
  # The reason for the refusal, pinned: when this starts failing, TensorFlow's CPU
  # kernel has been fixed and bf16 3D runs can be allowed (csa_tf/model/bundle.py).
  rng = np.random.default_rng(0)
  images = rng.normal(size=(2, 2, 16, 16, 4))
  kernel = rng.normal(size=(3, 3, 3, 4, 4))
  gradients = []
  for dtype in (tf.float32, tf.bfloat16):
    weights = tf.constant(kernel, dtype)
    with tf.GradientTape() as tape:
      tape.watch(weights)
      outputs = tf.nn.conv3d(tf.constant(images, dtype), weights, [1] * 5, "SAME")
      loss = tf.reduce_sum(tf.cast(outputs, tf.float32) ** 2)
    gradients.append(tf.cast(tape.gradient(loss, weights), tf.float32).numpy())
  # bfloat16's rounding alone stays within 1% here (measured 0.3-0.5% at depth 8); this
  # shape gives NaN (a NaN fails the comparison too).
  error = np.abs(gradients[1] - gradients[0]).max() / np.abs(gradients[0]).max()
  assert not error <= 0.05, error
  config = make_config(runs_root / "bf16_3d", spatial_dims=3, patch_depth=2)
  with pytest.raises(CsaInputError, match=r"^mixed_precision=bf16 with spatial_dims=3 "
                     "on the CPU: TensorFlow's CPU gradient of a bfloat16 3D convolution "
                     r"is wrong for some shapes \(NaN at batch 2, depth 2\); use fp16 or off"):
    ModelBundle(config, mixed_precision="bf16")
