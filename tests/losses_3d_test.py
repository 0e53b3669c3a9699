"""Tests of csa_tf.losses on 3D (NDHWC) inputs: batch pooling over B*D*H*W positions.

With batch pooling every loss is a function of sums over all positions of the batch, so
a 3D batch [B, D, H, W, C] must give the 2D loss of its slices [B*D, H, W, C] wherever
the 3D resize and pooling rules leave depth alone; where they reduce depth, the rules of
REFERENCE.md section 2 apply along depth as in-plane (average pooling by an integer
factor; nearest neighbour with half-pixel centres).
"""
import math

import numpy as np
import pytest
import tensorflow as tf

from csa_tf import feature_grid
from csa_tf import losses
from tests import helpers


def _slices(array):
  """[B, D, ...] -> [B*D, ...]: the same positions as a 2D batch."""
  array = np.asarray(array)
  return array.reshape((-1,) + array.shape[2:])


def _probs_case(seed, shape=(2, 3, 4, 5), num_classes=3):
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=shape + (num_classes,)).astype(np.float32)
  labels = rng.integers(0, num_classes, size=shape).astype(np.int32)
  return logits, tf.nn.softmax(logits).numpy(), labels


def test_dice_and_ce_3d_equal_2d_on_the_slices():
  _, probs, labels = _probs_case(0)
  for fn in (losses.dice_loss, losses.weighted_ce_loss):
    got = fn(probs, labels, num_classes=3)
    assert got.shape == () and got.dtype == tf.float32
    expected = fn(_slices(probs), _slices(labels), num_classes=3)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-6)


def test_dice_3d_perfect_prediction_is_minus_one():
  labels = np.arange(24).reshape((1, 2, 3, 4)) % 3
  probs = tf.one_hot(labels, 3)
  np.testing.assert_allclose(losses.dice_loss(probs, labels, num_classes=3).numpy(), -1.0,
                             rtol=1e-6)


def test_kd_3d_equals_2d_on_the_slices():
  logits_a, _, labels_a = _probs_case(1)
  logits_b, _, labels_b = _probs_case(2, shape=(1, 4, 4, 5))  # unpaired depths
  got = losses.kd_loss(logits_a, labels_a, logits_b, labels_b, num_classes=3)
  expected = losses.kd_loss(_slices(logits_a), _slices(labels_a), _slices(logits_b),
                            _slices(labels_b), num_classes=3)
  assert got.numpy() > 0
  np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-5)


def test_probs_and_labels_ranks_must_agree():
  _, probs, labels = _probs_case(3)
  with pytest.raises(ValueError, match="labels"):
    losses.dice_loss(probs, labels[:, 0], num_classes=3)
  with pytest.raises(ValueError, match="NDHWC"):
    losses.dice_loss(probs[None], labels[None], num_classes=3)
  with pytest.raises(ValueError, match="differ"):
    losses.weighted_ce_loss(probs, labels[:, :2], num_classes=3)


# ----------------------------------------------------------------------------- CSA


def _csa_case(seed, depth=(3, 2), l_size=4, k_size=8, labels_size=16, batch=(2, 1),
              channels=(3, 5), num_classes=3, k_depth_factor=1, labels_depth_factor=1):
  """Features [B, d, h, w, ch] of two unpaired modalities, labels [B, D, H, W]."""
  rng = np.random.default_rng(seed)
  case = []
  for b, d in zip(batch, depth):
    case += [rng.normal(size=(b, d, l_size, l_size, channels[0])).astype(np.float32),
             rng.normal(size=(b, d * k_depth_factor, k_size, k_size,
                              channels[1])).astype(np.float32),
             rng.integers(0, num_classes, size=(b, d * labels_depth_factor, labels_size,
                                                labels_size)).astype(np.int32)]
  return case


@pytest.mark.parametrize("area_norm", losses.AREA_NORMS)
@pytest.mark.parametrize("reduction", losses.REDUCTIONS)
@pytest.mark.parametrize("affinity", losses.AFFINITIES)
@pytest.mark.parametrize("class_specific", [True, False])
def test_csa_3d_equals_2d_on_the_flattened_positions(area_norm, reduction, affinity,
                                                     class_specific):
  # In-plane the taps differ (k pooled 8 -> 4) and the labels are resized 16 -> 4; the
  # depths agree, so the 3D positions are exactly the 2D slices' positions.
  kw = dict(num_classes=3, area_norm=area_norm, reduction=reduction, affinity=affinity,
            class_specific=class_specific)
  for case in (_csa_case(0), _csa_case(1, l_size=8, k_size=4)):
    got = losses.csa_loss(*case, **kw)
    expected = losses.csa_loss(*[_slices(a) for a in case], **kw)
    assert got.dtype == tf.float32 and got.shape == ()
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-5, atol=1e-12)
  assert expected.numpy() > 0


def test_class_affinity_3d_golden_with_depth_pooling_and_resize():
  # feat_l [1, 1, 1, 1, 1] = 2; feat_k [1, 2, 2, 2, 1] = 1..8, average-pooled to one
  # position: 4.5. Labels [1, 2, 2, 2] to one position keep voxel (1, 1, 1) (f*i + f//2
  # on every axis, f = 2), class 1. Class 1, dot, count (S = 1): 2 * 4.5 / 1 = 9;
  # cosine: 2 * 4.5 / (2 * 4.5) = 1. Class 0 is absent: 0, not present.
  feat_l = tf.constant(2.0, shape=[1, 1, 1, 1, 1])
  feat_k = tf.reshape(tf.range(1.0, 9.0), [1, 2, 2, 2, 1])
  labels = np.zeros((1, 2, 2, 2), np.int32)
  labels[0, 1, 1, 1] = 1
  for affinity, expected in (("dot", 9.0), ("cosine", 1.0)):
    matrices, present = losses.class_affinity_matrices(
        feat_l, feat_k, labels, num_classes=2, affinity=affinity)
    np.testing.assert_allclose(matrices.numpy().ravel(), [0.0, expected], rtol=1e-6)
    np.testing.assert_array_equal(present.numpy(), [False, True])
  # The top-left voxel is class 0: a top-left (not centred) resize would swap the classes.
  labels[0, 0, 0, 0] = 1
  labels[0, 1, 1, 1] = 0
  _, present = losses.class_affinity_matrices(feat_l, feat_k, labels, num_classes=2)
  np.testing.assert_array_equal(present.numpy(), [True, False])


def _np_nearest_3d(labels, size):
  """Half-pixel-centre nearest neighbour on each of the three spatial axes."""
  for axis, small in zip((1, 2, 3), size):
    big = labels.shape[axis]
    index = [min(int(math.floor((i + 0.5) * big / small)), big - 1) for i in range(small)]
    labels = np.take(labels, index, axis=axis)
  return labels


def _np_avg_pool_depth(feat, factor):
  b, d, h, w, ch = feat.shape
  return feat.reshape(b, d // factor, factor, h, w, ch).mean(axis=2)


@pytest.mark.parametrize("area_norm", losses.AREA_NORMS)
@pytest.mark.parametrize("reduction", losses.REDUCTIONS)
def test_csa_3d_with_depth_pooling_matches_pooled_slices(area_norm, reduction):
  # Layer k has twice layer l's depth (pooled along depth by 2, in-plane by 2); the
  # labels have three times its depth (nearest keeps slices 1, 4, ...). Pooling and
  # resizing by hand first, the rest is the 2D loss of the slices.
  case = _csa_case(4, k_depth_factor=2, labels_depth_factor=3)
  kw = dict(num_classes=3, area_norm=area_norm, reduction=reduction)
  got = losses.csa_loss(*case, **kw)
  flat = []
  for feat_l, feat_k, labels in (case[:3], case[3:]):
    small = _np_nearest_3d(labels, feat_l.shape[1:2] + labels.shape[2:])
    np.testing.assert_array_equal(small, labels[:, 1::3])
    flat += [_slices(feat_l), _slices(_np_avg_pool_depth(feat_k, 2)), _slices(small)]
  expected = losses.csa_loss(*flat, **kw)
  assert expected.numpy() > 0
  np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-5)


def test_depth_resize_by_a_non_integer_ratio_keeps_the_centre_rule():
  # Depth 5 -> 2: floor((i + 0.5) * 5 / 2) = slices 1 and 3; in-plane 4 -> 2: 1 and 3.
  labels = np.arange(5 * 4 * 4).reshape((1, 5, 4, 4)).astype(np.int32)
  got = feature_grid.nearest_labels(tf.constant(labels), (2, 2, 2))
  np.testing.assert_array_equal(got.numpy(), _np_nearest_3d(labels, (2, 2, 2)))
  np.testing.assert_array_equal(got.numpy(), labels[:, [1, 3]][:, :, [1, 3]][..., [1, 3]])


def test_csa_3d_float64_gradient_check():
  case = _csa_case(5, depth=(2, 1), l_size=2, k_size=4, labels_size=4, batch=(1, 1),
                   channels=(2, 2), num_classes=2)
  la, ka, ya, lb, kb, yb = [np.asarray(a, np.float64) if a.dtype == np.float32 else a
                            for a in case]
  for labels in (ya, yb):
    labels[0, 0, 0, 0], labels[0, 0, 1, 1] = 0, 1  # both classes in both modalities

  @tf.function
  def fn(la_, ka_, lb_, kb_):
    return losses.csa_loss(la_, ka_, ya, lb_, kb_, yb, num_classes=2, area_norm="none",
                           reduction="square_then_mean")

  helpers.assert_float64_gradients_match(fn, (la, ka, lb, kb))


def test_csa_3d_bad_shapes_raise():
  feat = tf.ones([1, 2, 4, 4, 1])
  labels = tf.zeros([1, 2, 4, 4], tf.int32)
  with pytest.raises(ValueError, match="anisotropic"):  # in-plane 2 and 1
    losses.class_affinity_matrices(feat, tf.ones([1, 2, 8, 4, 1]), labels, num_classes=2)
  with pytest.raises(ValueError, match="non-integer"):  # depth 3 over 2
    losses.class_affinity_matrices(feat, tf.ones([1, 3, 4, 4, 1]), labels, num_classes=2)
  with pytest.raises(ValueError, match="rank"):
    losses.class_affinity_matrices(feat, tf.ones([1, 4, 4, 1]), labels, num_classes=2)
  with pytest.raises(ValueError, match="labels"):
    losses.class_affinity_matrices(feat, feat, labels[:, 0], num_classes=2)
  with pytest.raises(ValueError, match="NDHWC"):
    losses.class_affinity_matrices(feat[None], feat[None], labels[None], num_classes=2)


def test_csa_3d_under_xla_matches_eager():
  case = _csa_case(6, k_depth_factor=2)
  feats = [tf.Variable(case[i]) for i in (0, 1, 3, 4)]

  def loss_and_grads():
    with tf.GradientTape() as tape:
      loss = losses.csa_loss(feats[0], feats[1], case[2], feats[2], feats[3], case[5],
                             num_classes=3, reduction="square_then_mean")
    return loss, tape.gradient(loss, feats)

  helpers.assert_xla_matches_eager(loss_and_grads)
