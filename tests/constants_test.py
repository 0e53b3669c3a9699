"""The constants REFERENCE.md pins, each checked by what it does.

Every test puts a constant where it changes a number measurably and compares with a value
derived by hand, at a tolerance that its neighbours (the Keras default, a factor of 10 or
2 off) fail: Dice and KD smoothing (section 2), the CE clip (section 2), BatchNorm
momentum and epsilon, dropout, the leaky ReLU slope and the kernel initialiser
(section 1), and the learning-rate schedule (section 4). Where tests/losses_test.py,
tests/csa_net_test.py or tests/modality_batch_norm_test.py also touch a constant, they
check golden values or attributes; these tests are the ones that tell its neighbours
apart.
"""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from csa_tf import losses
from csa_tf.configs.train_config import TrainConfig
from csa_tf.model.bundle import ModelBundle
from csa_tf.model.csa_net import CsaNet
from csa_tf.model.modality_batch_norm import ModalityBatchNorm
from csa_tf.model.pre_activation_conv import PreActivationConv, conv_layer
from csa_tf.training.trainer import learning_rate_schedule
from tests import helpers


def _default_config(**overrides):
  """TINY_CONFIG, but with TrainConfig's own defaults for the constants tested here."""
  values = {k: v for k, v in helpers.TINY_CONFIG.items() if k != "learning_rate"}
  values.update(overrides)
  return TrainConfig(**values).validate()


def _f64(pixels):
  """Pixel list [[p_0, ..., p_C-1], ...] -> float64 [1, 1, W, C] (one image, one row)."""
  return tf.constant([[pixels]], dtype=tf.float64)


# ---------------------------------------------------------------------- losses (s. 2)


def test_dice_smoothing_is_1e_minus_7():
  # float64 inputs stay float64, so a change of 1e-7 in a denominator of ~1 shows.
  # One pixel of class 1 predicted [0.5, 0.5]:
  #   class 0 (absent): 2 * 0 / (0.25 + 0 + eps) = 0
  #   class 1: 2 * 0.5 / (0.25 + 1 + eps) = 1 / (1.25 + eps)
  # loss = -(1 / (1.25 + 1e-7)) / 2 = -0.39999996800000256
  got = losses.dice_loss(_f64([[0.5, 0.5]]), tf.constant([[[1]]]), num_classes=2)
  assert got.dtype == tf.float64
  expected = -0.5 / (1.25 + 1e-7)
  np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)
  np.testing.assert_allclose(expected, -0.39999996800000256, rtol=1e-12)
  # eps 1e-6 would give -0.39999968, eps 0 -0.4: both ~1e-7 away, 1e5 times the tolerance.
  for other in (1e-6, 0.0):
    assert abs(got.numpy() - (-0.5 / (1.25 + other))) > 1e-8


def test_dice_smoothing_keeps_an_absent_unpredicted_class_finite():
  # Class 1 absent and predicted 0 everywhere: 0 / (0 + 0 + eps) = 0 (eps = 0 gives NaN).
  # class 0: 2 * 1 / (1 + 1 + 1e-7); loss = -(2 / (2 + 1e-7) + 0) / 2 = -0.499999975.
  got = losses.dice_loss(_f64([[1.0, 0.0]]), tf.constant([[[0]]]), num_classes=2)
  assert np.isfinite(got.numpy())
  np.testing.assert_allclose(got.numpy(), -1 / (2 + 1e-7), rtol=1e-12)
  np.testing.assert_allclose(-1 / (2 + 1e-7), -0.4999999750000012, rtol=1e-12)


def test_cross_entropy_clips_probabilities_at_0_005():
  # Two pixels, labels [0, 1]: w0 = w1 = 1 - 1/2 = 1/2.
  #   pixel 0: p_0 = 1e-4, below the clip -> -(1/2) ln 0.005 = 2.649159
  #   pixel 1: p_1 = 0.007, above it      -> -(1/2) ln 0.007 = 2.480923
  # mean = 2.565041. A clip at 0.01 changes pixel 1 (ln 0.01), one at 0.001 pixel 0.
  probs = tf.constant([[[[1e-4, 1 - 1e-4], [0.993, 0.007]]]])
  got = losses.weighted_ce_loss(probs, tf.constant([[[0, 1]]]), num_classes=2)
  expected = -0.25 * (math.log(0.005) + math.log(0.007))
  np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)
  np.testing.assert_allclose(expected, 2.5650406, rtol=1e-6)
  for clip in (0.01, 0.001):
    wrong = -0.25 * (math.log(max(1e-4, clip)) + math.log(max(0.007, clip)))
    assert abs(wrong - expected) > 0.1


def test_kd_default_temperature_2_and_prototype_epsilon_1e_minus_6():
  # float64. a: one class-1 pixel with logits [0, 2]; b: one class-1 pixel, logits [0, 0].
  # Class 0 is absent from both: zbar = 0 / (0 + 1e-6) = 0 (eps 0 gives NaN), q uniform
  # in both, KL 0. Class 1: zbar_a = [0, 2] / (1 + 1e-6), zbar_b = [0, 0];
  # with T = 2: q_a = softmax([0, s]), s = 1 / (1 + 1e-6); q_b = [1/2, 1/2].
  # loss = (0 + 0.5 (KL(q_a||q_b) + KL(q_b||q_a))) / 2.
  def expected(temperature=2.0, eps=1e-6):
    s = 2 / (1 + eps) / temperature
    q_a = [1 / (1 + math.exp(s)), math.exp(s) / (1 + math.exp(s))]
    kl_ab = sum(q * math.log(q / 0.5) for q in q_a)
    kl_ba = sum(0.5 * math.log(0.5 / q) for q in q_a)
    return 0.25 * (kl_ab + kl_ba)

  args = (_f64([[0.0, 2.0]]), tf.constant([[[1]]]), _f64([[0.0, 0.0]]),
          tf.constant([[[1]]]))
  got = losses.kd_loss(*args, num_classes=2).numpy()
  np.testing.assert_allclose(got, expected(), rtol=1e-10)
  np.testing.assert_allclose(expected(), 0.0577645, rtol=1e-5)
  # eps 1e-7 moves the loss by 1.7e-6 relative, 1e-5 by 1.7e-5: 1e4 times the tolerance.
  for eps in (1e-7, 1e-5):
    assert abs(got - expected(eps=eps)) > 1e-6 * got
  # The training option's default is the same T, and the loss follows it.
  config = _default_config(method="ummkd")
  assert config.kd_temperature == 2.0
  np.testing.assert_allclose(
      losses.kd_loss(*args, num_classes=2, temperature=config.kd_temperature).numpy(),
      expected(), rtol=1e-10)
  # T = 1 gives 0.1904, T = 3 0.0268.
  for temperature in (1.0, 3.0):
    assert abs(got - expected(temperature=temperature)) > 0.01


# ---------------------------------------------------------------------- network (s. 1)


def test_batch_norm_momentum_0_9_and_epsilon_1e_minus_3():
  # One training call on a batch of 4 pixels, 2 channels, fresh statistics (0, 1):
  #   channel 0: [1, 2, 3, 6]: mean 3, biased variance (4 + 1 + 0 + 9) / 4 = 3.5
  #   channel 1: [0.01, -0.01, 0.01, -0.01]: mean 0, variance 1e-4 (tiny, so that eps
  #   dominates the normalisation)
  # moving mean = 0.9 * 0 + 0.1 * mean      -> [0.3, 0]   (momentum 0.99: [0.03, 0])
  # moving var  = 0.9 * 1 + 0.1 * variance  -> [1.25, 0.90001]
  # channel 1 output: 0.01 / sqrt(1e-4 + 1e-3) = 0.30151134 (eps 1e-5: 0.953, 1e-2: 0.0995)
  x = np.array([[1, 0.01], [2, -0.01], [3, 0.01], [6, -0.01]], np.float32)
  layer = ModalityBatchNorm(("ct",))
  y = layer(tf.constant(x.reshape(4, 1, 1, 2)), modality="ct", training=True).numpy()
  bn = layer.bn_for("ct")
  np.testing.assert_allclose(bn.moving_mean.numpy(), [0.3, 0.0], rtol=1e-6, atol=1e-9)
  np.testing.assert_allclose(bn.moving_variance.numpy(), [1.25, 0.90001], rtol=1e-6)
  np.testing.assert_allclose(y[:, 0, 0, 1], 0.01 / math.sqrt(1.1e-3) * np.array(
      [1, -1, 1, -1]), rtol=1e-4)
  np.testing.assert_allclose(0.01 / math.sqrt(1.1e-3), 0.30151134, rtol=1e-6)
  np.testing.assert_allclose(y[:, 0, 0, 0], (x[:, 0] - 3) / math.sqrt(3.5 + 1e-3),
                             rtol=1e-5)


def _dropout_sources():
  """The network's dropout layers as built from each place that declares the default."""
  bundle = ModelBundle(_default_config())
  from_config = [l for l in bundle.unique_networks[0].sublayers()
                 if isinstance(l, PreActivationConv)][0]
  from_net = CsaNet(3, ("lge",), feature_base=2).g9_unit1
  return {"config": from_config, "csa_net": from_net,
          "unit": PreActivationConv(4, ("lge",))}


def test_dropout_rate_0_25_drops_a_quarter_and_scales_by_4_over_3():
  # 2**17 ones: a drop rate of 0.25 leaves a fraction of zeros within 0.0012 (one
  # standard deviation) of 0.25, so +-0.01 is ~8 sigma and rejects 0.2 and 0.5; kept
  # values are 1 / (1 - 0.25) = 4/3 (0.5: 2, 0.2: 1.25).
  assert _default_config().dropout_rate == 0.25
  ones = tf.ones([2, 256, 256, 1])
  for name, unit in _dropout_sources().items():
    assert unit.dropout_rate == 0.25, name
    out = unit.dropout(ones, training=True).numpy()
    dropped = np.mean(out == 0)
    assert abs(dropped - 0.25) < 0.01, (name, dropped)
    np.testing.assert_allclose(out[out != 0], 4 / 3, rtol=1e-6)
    np.testing.assert_array_equal(unit.dropout(ones, training=False).numpy(), 1.0)


def test_leaky_relu_slope_0_2_in_the_unit():
  # One channel, a conv kernel that copies its centre tap, fresh BN in inference mode
  # (x / sqrt(1 + 1e-3)), dropout off: out = lrelu(x / sqrt(1.001)), i.e. 0.2 * that for
  # negative x (0.3, Keras' default, or 0.1 would give 1.5x or 0.5x).
  unit = PreActivationConv(1, ("lge",))
  unit.build((None, 1, 4, 1))
  kernel = np.zeros((3, 3, 1, 1), np.float32)
  kernel[1, 1] = 1.0
  unit.conv.kernel.assign(kernel)
  x = np.array([-2.0, -1.0, 0.5, 3.0], np.float32)
  y = unit(tf.constant(x.reshape(1, 1, 4, 1)), modality="lge", training=False).numpy()
  scaled = x / math.sqrt(1.001)
  np.testing.assert_allclose(y.ravel(), np.where(x < 0, 0.2 * scaled, scaled), rtol=1e-6)
  np.testing.assert_allclose(y.ravel()[:2], [-0.39980013, -0.19990006], rtol=1e-6)


def test_kernels_are_truncated_normal_0_01_without_bias():
  # TruncatedNormal(stddev=0.01) redraws values beyond 2 sigma: the std of the kept
  # normal is 0.01 * sqrt(1 - 4 phi(2) / (2 Phi(2) - 1)) = 0.01 * sqrt(1 - 4 * 0.053991 /
  # 0.954500) = 0.0087962, with a standard error of 0.0088 / sqrt(2 * 36864) = 3e-5 for
  # a 3x3x64x64 kernel; +-3e-4 rejects 0.02 (0.0176) and 0.005 (0.0044).
  conv = conv_layer(64, 3)
  conv.build((None, 8, 8, 64))
  assert conv.bias is None
  kernel = conv.kernel.numpy()
  assert abs(kernel.std() - 0.0087962) < 3e-4
  assert np.abs(kernel).max() <= 0.02 and abs(kernel.mean()) < 2e-4
  # The network's convolutions are made by that function.
  net = CsaNet(3, ("lge",), feature_base=2)
  net.build((None, None, None, 1))
  convs = [l for l in net.sublayers() if isinstance(l, keras.layers.Conv2D)]
  assert convs and all(c.bias is None and np.abs(c.kernel.numpy()).max() <= 0.02
                       for c in convs)


# ------------------------------------------------------------------ optimisation (s. 4)


@pytest.mark.parametrize("step, lr", [
    (0, 1e-4), (999, 1e-4),          # staircase: the first period keeps 1e-4
    (1000, 9.5e-5), (1500, 9.5e-5),  # 1e-4 * 0.95
    (2000, 9.025e-5),                # 1e-4 * 0.95**2
    (2999, 9.025e-5), (3000, 8.57375e-5),
])
def test_learning_rate_decays_5_percent_per_1000_steps_staircase(step, lr):
  # Smooth decay would give 1e-4 * 0.95**0.999 = 9.50e-5 at step 999 (5% off).
  schedule = learning_rate_schedule(_default_config())
  np.testing.assert_allclose(float(schedule(step)), lr, rtol=1e-6)
