"""Property tests: every loss, and its gradient, stays finite on any label map or feature.

Random label maps include the awkward ones a batch can hold (all background, a single
class, absent classes); features include zeros, constants and one-hot-like sparse maps,
where a cosine or a normalisation could divide by zero. A NaN here would stop a run
(csa_tf.training.trainer raises NonFiniteLossError), so these are the inputs that must not do it.
"""
import itertools

from hypothesis import given, settings, strategies as st
import numpy as np
import tensorflow as tf

from csa_tf import losses
from csa_tf.data.slicing import zscore_slices

NUM_CLASSES = 4
SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)
CSA_OPTIONS = list(itertools.product(losses.AREA_NORMS, losses.REDUCTIONS, (True, False)))


@st.composite
def label_maps(draw, batch=None, size=None):
  """Integer maps [B, H, W]: random, all background, one class, or a subset of classes."""
  batch = batch or draw(st.integers(1, 3))
  size = size or draw(st.sampled_from([4, 8]))
  kind = draw(st.sampled_from(["random", "background", "single_class", "subset"]))
  rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
  shape = (batch, size, size)
  if kind == "background":
    return np.zeros(shape, np.int32)
  if kind == "single_class":
    return np.full(shape, draw(st.integers(0, NUM_CLASSES - 1)), np.int32)
  classes = (np.arange(NUM_CLASSES) if kind == "random" else
             np.array(draw(st.lists(st.integers(0, NUM_CLASSES - 1), min_size=1,
                                    max_size=2, unique=True))))
  return rng.choice(classes, size=shape).astype(np.int32)


@st.composite
def tensors(draw, shape):
  """float32 arrays: random at several scales, zeros, a constant, or mostly zeros."""
  kind = draw(st.sampled_from(["random", "zeros", "constant", "sparse", "huge_logits"]))
  rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
  if kind == "zeros":
    return np.zeros(shape, np.float32)
  if kind == "constant":
    return np.full(shape, draw(st.floats(-50, 50, width=32)), np.float32)
  scale = 10.0 ** draw(st.integers(-4, 2))
  values = rng.normal(0, scale, shape).astype(np.float32)
  if kind == "sparse":
    values *= rng.random(shape) < 0.05
  if kind == "huge_logits":
    values *= 1000  # Saturated softmax: probabilities of exactly 0 and 1.
  return values


def _assert_finite_with_gradient(fn, *inputs):
  """fn(*inputs) and d fn / d inputs are finite."""
  variables = [tf.Variable(x) for x in inputs]
  with tf.GradientTape() as tape:
    value = fn(*variables)
  gradients = tape.gradient(value, variables)
  assert np.isfinite(value.numpy()), value.numpy()
  for gradient in gradients:
    if gradient is not None:
      assert np.all(np.isfinite(tf.convert_to_tensor(gradient).numpy()))
  return float(value.numpy())


@st.composite
def logits_and_labels(draw):
  labels = draw(label_maps())
  logits = draw(tensors(labels.shape + (NUM_CLASSES,)))
  return logits, labels


@SETTINGS
@given(logits_and_labels())
def test_dice_loss_finite(case):
  logits, labels = case
  value = _assert_finite_with_gradient(
      lambda z: losses.dice_loss(tf.nn.softmax(z), labels, num_classes=NUM_CLASSES), logits)
  assert -1.0 - 1e-6 <= value <= 0.0


@SETTINGS
@given(logits_and_labels())
def test_weighted_ce_loss_finite(case):
  logits, labels = case
  value = _assert_finite_with_gradient(
      lambda z: losses.weighted_ce_loss(tf.nn.softmax(z), labels,
                                        num_classes=NUM_CLASSES), logits)
  assert value >= 0.0


@SETTINGS
@given(logits_and_labels(), logits_and_labels())
def test_kd_loss_finite(case_a, case_b):
  (logits_a, labels_a), (logits_b, labels_b) = case_a, case_b
  value = _assert_finite_with_gradient(
      lambda a, b: losses.kd_loss(a, labels_a, b, labels_b, num_classes=NUM_CLASSES),
      logits_a, logits_b)
  assert value >= -1e-6


@st.composite
def csa_inputs(draw):
  """One modality's (feat_l [B, 2s, 2s, M], feat_k [B, s, s, N], labels [B, 4s, 4s])."""
  batch = draw(st.integers(1, 2))
  small = draw(st.sampled_from([2, 4]))
  labels = draw(label_maps(batch=batch, size=4 * small))
  feat_l = draw(tensors((batch, 2 * small, 2 * small, 3)))
  feat_k = draw(tensors((batch, small, small, 5)))
  return feat_l, feat_k, labels


@SETTINGS
@given(csa_inputs(), csa_inputs(), st.sampled_from(CSA_OPTIONS))
def test_csa_loss_finite(modality_a, modality_b, options):
  area_norm, reduction, class_specific = options
  (l_a, k_a, labels_a), (l_b, k_b, labels_b) = modality_a, modality_b
  value = _assert_finite_with_gradient(
      lambda la, ka, lb, kb: losses.csa_loss(
          la, ka, labels_a, lb, kb, labels_b, num_classes=NUM_CLASSES,
          area_norm=area_norm, reduction=reduction, class_specific=class_specific),
      l_a, k_a, l_b, k_b)
  assert value >= 0.0


def test_every_csa_option_is_covered_on_the_worst_case():
  # Hypothesis draws options at random; the all-zero, all-background batch is checked
  # under each combination explicitly.
  zeros_l, zeros_k = np.zeros((1, 4, 4, 3), np.float32), np.zeros((1, 2, 2, 5), np.float32)
  background = np.zeros((1, 8, 8), np.int32)
  for area_norm, reduction, class_specific in CSA_OPTIONS:
    value = _assert_finite_with_gradient(
        lambda la, ka, lb, kb: losses.csa_loss(
            la, ka, background, lb, kb, background, num_classes=NUM_CLASSES,
            area_norm=area_norm, reduction=reduction, class_specific=class_specific),
        zeros_l, zeros_k, zeros_l, zeros_k)
    assert value == 0.0


@st.composite
def slice_stacks(draw):
  """[S, H, W] stacks mixing random slices (any scale) and constant ones (any value)."""
  count = draw(st.integers(1, 4))
  shape = draw(st.sampled_from([(6, 7), (64, 64)]))
  rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
  slices = []
  for _ in range(count):
    if draw(st.booleans()):
      # Any value an image can hold, including ones whose float32 mean is off by an ulp
      # (3000.7: the std of the constant slice is then 2.4e-4, not 0).
      value = draw(st.one_of(st.floats(-1e15, 1e15), st.just(3000.7)))
      slices.append(np.full(shape, value))
    else:
      scale = 10.0 ** draw(st.integers(-3, 6))
      slices.append(rng.normal(draw(st.floats(-1e4, 1e4)), scale, shape))
  return np.stack(slices).astype(np.float32)


@SETTINGS
@given(slice_stacks())
def test_zscore_slices_finite(stack):
  out = zscore_slices(stack)
  assert out.shape == stack.shape and out.dtype == np.float32
  assert np.all(np.isfinite(out))
  constant = stack.max(axis=(1, 2)) == stack.min(axis=(1, 2))
  assert np.all(out[constant] == 0)
