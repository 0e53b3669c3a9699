"""Tests of csa_tf.losses: hand-derived golden values, gradients, edge cases, XLA."""
import math

import numpy as np
import pytest
import tensorflow as tf

from csa_tf import losses
from tests import helpers


def _nhwc(rows):
  """[H*W... ] pixel list -> [1, 1, W, C] tensor (one image, one row)."""
  return tf.constant([[rows]], dtype=tf.float32)


# ----------------------------------------------------------------------------- Dice / CE


def test_dice_loss_golden():
  # Two pixels, labels [0, 1], probs p0 = [0.8, 0.2], p1 = [0.4, 0.6].
  # class 0: sum(p*g) = 0.8, sum(p^2) = 0.64 + 0.16 = 0.80, sum(g) = 1 -> 1.6 / 1.8
  # class 1: sum(p*g) = 0.6, sum(p^2) = 0.04 + 0.36 = 0.40, sum(g) = 1 -> 1.2 / 1.4
  # loss = -(0.888889 + 0.857143) / 2 = -0.873016
  probs = _nhwc([[0.8, 0.2], [0.4, 0.6]])
  labels = tf.constant([[[0, 1]]])
  expected = -(1.6 / (1.8 + 1e-7) + 1.2 / (1.4 + 1e-7)) / 2
  got = losses.dice_loss(probs, labels, num_classes=2)
  assert got.dtype == tf.float32 and got.shape == ()
  np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)
  np.testing.assert_allclose(expected, -0.8730158, rtol=1e-6)


def test_dice_loss_perfect_prediction_is_minus_one():
  labels = tf.constant([[[0, 1, 2, 2]]])
  probs = tf.one_hot(labels, 3)
  np.testing.assert_allclose(losses.dice_loss(probs, labels, num_classes=3).numpy(), -1.0,
                             rtol=1e-6)


def test_weighted_ce_loss_golden_with_clip():
  # Three pixels, labels [0, 1, 1]: w0 = 1 - 1/3 = 2/3, w1 = 1 - 2/3 = 1/3.
  # pixel 0: -(2/3) ln 0.8            = 0.148762
  # pixel 1: -(1/3) ln 0.6            = 0.170275
  # pixel 2: -(1/3) ln clip(0.001) = -(1/3) ln 0.005 = 1.766106
  # mean = 2.085143 / 3 = 0.695048
  probs = _nhwc([[0.8, 0.2], [0.4, 0.6], [0.999, 0.001]])
  labels = tf.constant([[[0, 1, 1]]])
  expected = (-(2 / 3) * math.log(0.8) - (1 / 3) * math.log(0.6)
              - (1 / 3) * math.log(0.005)) / 3
  got = losses.weighted_ce_loss(probs, labels, num_classes=2)
  np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)
  np.testing.assert_allclose(expected, 0.6950478, rtol=1e-6)


def test_half_precision_inputs_give_float32():
  probs = tf.cast(_nhwc([[0.8, 0.2], [0.4, 0.6]]), tf.float16)
  labels = tf.constant([[[0, 1]]])
  for fn in (losses.dice_loss, losses.weighted_ce_loss):
    assert fn(probs, labels, num_classes=2).dtype == tf.float32
  feat = tf.cast(tf.random.normal([1, 2, 2, 3]), tf.bfloat16)
  lab = tf.zeros([1, 2, 2], tf.int32)
  assert losses.csa_loss(feat, feat, lab, feat, feat, lab, num_classes=2).dtype == tf.float32
  assert losses.kd_loss(tf.cast(probs, tf.bfloat16), labels, probs, labels,
                        num_classes=2).dtype == tf.float32
  assert losses.l2_loss([tf.ones([2], tf.float16)]).dtype == tf.float32


def test_probs_channel_mismatch_raises():
  with pytest.raises(ValueError, match="num_classes"):
    losses.dice_loss(tf.ones([1, 2, 2, 3]), tf.zeros([1, 2, 2], tf.int32), num_classes=2)


# ----------------------------------------------------------------------------- L2 / KD


def test_l2_loss_golden():
  # 0.5 * (1 + 4 + 9) = 7; * 1e-4 = 7e-4; weight 0.1 -> 0.7.
  kernels = [tf.Variable([1.0, 2.0]), tf.Variable([[3.0]])]
  np.testing.assert_allclose(losses.l2_loss(kernels).numpy(), 7e-4, rtol=1e-6)
  np.testing.assert_allclose(losses.l2_loss(kernels, weight=0.1).numpy(), 0.7, rtol=1e-6)
  with pytest.raises(ValueError):
    losses.l2_loss([])


def test_kd_loss_golden():
  # a: labels [0, 1], logits [2, 0], [0, 2] -> zbar_0 = [2, 0], zbar_1 = [0, 2]
  #    (divided by 1 + 1e-6).
  # b: labels [0, 0], logits [1, 0], [3, 0] -> zbar_0 = [4, 0] / 2 = [2, 0];
  #    class 1 absent: zbar_1 = [0, 0] / 1e-6 = [0, 0].
  # T = 2: class 0: q_a = q_b = softmax([1, 0]) -> KL = 0.
  # class 1: q_a = softmax([0, 1]) = [1/(1+e), e/(1+e)] = [0.268941, 0.731059],
  #          q_b = [0.5, 0.5]
  #   KL(q_a||q_b) = 0.268941 ln(0.537883) + 0.731059 ln(1.462117) = 0.110944
  #   KL(q_b||q_a) = 0.5 ln(1.859141) + 0.5 ln(0.683940)           = 0.120115
  # loss = (0 + 0.5 (0.110944 + 0.120115)) / 2 = 0.057765
  logits_a = _nhwc([[2.0, 0.0], [0.0, 2.0]])
  logits_b = _nhwc([[1.0, 0.0], [3.0, 0.0]])
  labels_a = tf.constant([[[0, 1]]])
  labels_b = tf.constant([[[0, 0]]])
  e = math.e
  q_a = [1 / (1 + e), e / (1 + e)]
  kl_ab = sum(p * math.log(p / 0.5) for p in q_a)
  kl_ba = sum(0.5 * math.log(0.5 / p) for p in q_a)
  expected = 0.5 * (kl_ab + kl_ba) / 2
  got = losses.kd_loss(logits_a, labels_a, logits_b, labels_b, num_classes=2)
  np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)
  np.testing.assert_allclose(expected, 0.0577646, rtol=1e-5)
  # Symmetric, and 0 for identical inputs.
  swapped = losses.kd_loss(logits_b, labels_b, logits_a, labels_a, num_classes=2)
  np.testing.assert_allclose(swapped.numpy(), got.numpy(), rtol=1e-6)
  same = losses.kd_loss(logits_a, labels_a, logits_a, labels_a, num_classes=2)
  np.testing.assert_allclose(same.numpy(), 0.0, atol=1e-7)


# ----------------------------------------------------------------------------- CSA golden
# One image of 1 x 3 pixels, layer l with M = 1 channel, layer k with N = 2 channels,
# C = 2 classes (same size: no pooling, no label resize).
#   a: labels [0, 0, 1], x = [1, 2, 3], y0 = [1, 0, 1], y1 = [0, 1, 1]
#   b: labels [1, 1, 0], x = [2, 0, 1], y0 = [1, 1, 0], y1 = [1, 1, 1]
_LA = tf.constant([[[[1.0], [2.0], [3.0]]]])
_KA = tf.constant([[[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]]])
_YA = tf.constant([[[0, 0, 1]]])
_LB = tf.constant([[[[2.0], [0.0], [1.0]]]])
_KB = tf.constant([[[[1.0, 1.0], [1.0, 1.0], [0.0, 1.0]]]])
_YB = tf.constant([[[1, 1, 0]]])
# Cosines per class (masked vectors over the class's pixels):
#   a, class 0 (pixels 0, 1): x = [1, 2]; y0 = [1, 0] -> 1/sqrt5; y1 = [0, 1] -> 2/sqrt5
#   a, class 1 (pixel 2):     x = [3];    y0 = [1] -> 1;       y1 = [1] -> 1
#   b, class 0 (pixel 2):     x = [1];    y0 = [0] -> 0 (zero norm); y1 = [1] -> 1
#   b, class 1 (pixels 0, 1): x = [2, 0]; y0 = y1 = [1, 1] -> 2 / (2 sqrt2) = 1/sqrt2
_COS_A = {0: [1 / math.sqrt(5), 2 / math.sqrt(5)], 1: [1.0, 1.0]}
_COS_B = {0: [0.0, 1.0], 1: [1 / math.sqrt(2), 1 / math.sqrt(2)]}
# S_c per area_norm: count = class pixels; fraction = count / 3; none = 1.
_AREA = {"count": ({0: 2, 1: 1}, {0: 1, 1: 2}),
         "fraction": ({0: 2 / 3, 1: 1 / 3}, {0: 1 / 3, 1: 2 / 3}),
         "none": ({0: 1, 1: 1}, {0: 1, 1: 1})}
# Without class masks (all 3 pixels), S = 3 (count) or 1 (fraction, none):
#   a: x = [1,2,3]; y0 = [1,0,1]: 4 / (sqrt14 sqrt2); y1 = [0,1,1]: 5 / (sqrt14 sqrt2)
#   b: x = [2,0,1]; y0 = [1,1,0]: 2 / (sqrt5 sqrt2);  y1 = [1,1,1]: 3 / (sqrt5 sqrt3)
_COS_A_ALL = [4 / math.sqrt(28), 5 / math.sqrt(28)]
_COS_B_ALL = [2 / math.sqrt(10), 3 / math.sqrt(15)]
_AREA_ALL = {"count": 3, "fraction": 1, "none": 1}


def _reduce(diffs, reduction):
  if reduction == "mean_then_square":
    return (sum(diffs) / len(diffs)) ** 2
  return sum(d * d for d in diffs) / len(diffs)


def _hand_csa(area_norm, reduction, class_specific):
  if not class_specific:
    s = _AREA_ALL[area_norm]
    return _reduce([a / s - b / s for a, b in zip(_COS_A_ALL, _COS_B_ALL)], reduction)
  s_a, s_b = _AREA[area_norm]
  per_class = [_reduce([a / s_a[c] - b / s_b[c] for a, b in zip(_COS_A[c], _COS_B[c])],
                       reduction) for c in (0, 1)]
  return sum(per_class) / 2


# The arithmetic of _hand_csa written out as final numbers, e.g. count/mean_then_square:
#   class 0: A_a = [0.223607, 0.447214], A_b = [0, 1] -> mean diff -0.164590 -> 0.027090
#   class 1: A_a = [1, 1], A_b = [0.353553, 0.353553] -> mean diff 0.646447 -> 0.417893
#   loss = (0.027090 + 0.417893) / 2 = 0.222492
_GOLDEN = {
    ("count", "mean_then_square", True): 0.2224915111,
    ("count", "square_then_mean", True): 0.2978398117,
    ("fraction", "mean_then_square", True): 2.0024235998,
    ("fraction", "square_then_mean", True): 2.6805583049,
    ("none", "mean_then_square", True): 0.0574830222,
    ("none", "square_then_mean", True): 0.0956796233,
    ("count", "mean_then_square", False): 0.0023975374,
    ("count", "square_then_mean", False): 0.0024584843,
    ("fraction", "mean_then_square", False): 0.0215778366,
    ("fraction", "square_then_mean", False): 0.0221263587,
    ("none", "mean_then_square", False): 0.0215778366,
    ("none", "square_then_mean", False): 0.0221263587,
}


@pytest.mark.parametrize("area_norm", losses.AREA_NORMS)
@pytest.mark.parametrize("reduction", losses.REDUCTIONS)
@pytest.mark.parametrize("class_specific", [True, False])
def test_csa_loss_golden(area_norm, reduction, class_specific):
  expected = _GOLDEN[(area_norm, reduction, class_specific)]
  np.testing.assert_allclose(_hand_csa(area_norm, reduction, class_specific), expected,
                             rtol=1e-8)
  got = losses.csa_loss(_LA, _KA, _YA, _LB, _KB, _YB, num_classes=2,
                        area_norm=area_norm, reduction=reduction,
                        class_specific=class_specific)
  assert got.dtype == tf.float32 and got.shape == ()
  np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)


def test_class_affinity_matrices_golden():
  affinity, present = losses.class_affinity_matrices(_LA, _KA, _YA, num_classes=3)
  assert affinity.shape == (3, 1, 2)
  np.testing.assert_array_equal(present.numpy(), [True, True, False])
  np.testing.assert_allclose(affinity.numpy()[:, 0, :],
                             [[_COS_A[0][0] / 2, _COS_A[0][1] / 2], [1.0, 1.0], [0.0, 0.0]],
                             rtol=1e-6)
  affinity, present = losses.class_affinity_matrices(
      _LA, _KA, _YA, num_classes=3, area_norm="none", class_specific=False)
  assert affinity.shape == (1, 1, 2)
  np.testing.assert_allclose(affinity.numpy()[0, 0], _COS_A_ALL, rtol=1e-6)


def test_csa_loss_golden_with_pooling_and_nearest_label_resize():
  # Labels 4x4 resized to 2x2 by nearest neighbour (half-pixel centres) keep pixels
  # (1, 1), (1, 3), (3, 1), (3, 3) -> [[1, 1], [1, 0]] (a stride-2 pick from (0, 0)
  # would give all background).
  labels = tf.constant([[[0, 0, 0, 0],
                         [0, 1, 0, 1],
                         [0, 0, 0, 0],
                         [0, 1, 0, 0]]])
  # Layer k is 4x4 and gets 2x2 average-pooled to layer l's 2x2:
  #   blocks [[1,3],[1,3]] -> 2, [[0,0],[0,4]] -> 1, [[2,2],[2,2]] -> 2, zeros -> 0.
  feat_k = tf.constant([[1, 3, 0, 0],
                        [1, 3, 0, 4],
                        [2, 2, 0, 0],
                        [2, 2, 0, 0]], tf.float32)[None, :, :, None]
  feat_l = tf.constant([[1, 2], [3, 4]], tf.float32)[None, :, :, None]
  # class 1 at (0,0), (0,1), (1,0): x = [1, 2, 3], y = [2, 1, 2]:
  #   cos = (2 + 2 + 6) / (sqrt14 * 3) = 0.890871; S_1 = 3 -> a = 0.296957
  # class 0 at (1,1): x = [4], y = [0] -> cos = 0 (zero norm); S_0 = 1 -> a = 0
  affinity, present = losses.class_affinity_matrices(feat_l, feat_k, labels,
                                                     num_classes=2)
  np.testing.assert_array_equal(present.numpy(), [True, True])
  np.testing.assert_allclose(affinity.numpy()[:, 0, 0], [0.0, 10 / (3 * math.sqrt(14)) / 3],
                             rtol=1e-6, atol=1e-7)
  # The same holds with the roles of l and k swapped (the larger one is pooled).
  swapped, _ = losses.class_affinity_matrices(feat_k, feat_l, labels, num_classes=2)
  np.testing.assert_allclose(swapped.numpy(), affinity.numpy(), rtol=1e-6)
  # Modality b: all-ones features, same labels: class 1 cos = 1, S = 3 -> 1/3;
  # class 0 cos = 1, S = 1 -> 1.
  # loss = ((0 - 1)^2 + (0.296957 - 0.333333)^2) / 2 = (1 + 0.001323) / 2 = 0.500662
  a1 = 10 / (3 * math.sqrt(14)) / 3
  expected = (1.0 + (a1 - 1 / 3) ** 2) / 2
  got = losses.csa_loss(feat_l, feat_k, labels, tf.ones_like(feat_l), tf.ones_like(feat_k),
                        labels, num_classes=2)
  np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)
  np.testing.assert_allclose(expected, 0.5006616, rtol=1e-6)


def test_dot_affinity_golden():
  # The case above: class 1 at (0,0), (0,1), (1,0) with x = [1, 2, 3], y = [2, 1, 2]:
  #   <x, y> = 2 + 2 + 6 = 10; S_1 = 3 -> a = 10/3 (the mean of x*y over the region);
  # class 0 at (1,1): x = [4], y = [0] -> <x, y> = 0.
  labels = tf.constant([[[0, 0, 0, 0], [0, 1, 0, 1], [0, 0, 0, 0], [0, 1, 0, 0]]])
  feat_k = tf.constant([[1, 3, 0, 0], [1, 3, 0, 4], [2, 2, 0, 0], [2, 2, 0, 0]],
                       tf.float32)[None, :, :, None]
  feat_l = tf.constant([[1, 2], [3, 4]], tf.float32)[None, :, :, None]
  dot, present = losses.class_affinity_matrices(feat_l, feat_k, labels, num_classes=2,
                                                affinity="dot")
  np.testing.assert_array_equal(present.numpy(), [True, True])
  np.testing.assert_allclose(dot.numpy()[:, 0, 0], [0.0, 10 / 3], rtol=1e-6)
  # fraction: S_1 = 3/4 -> 40/3; none: 10. Unlike the cosine, doubling the features
  # quadruples the dot affinity.
  for area_norm, expected in (("fraction", 40 / 3), ("none", 10.0)):
    got, _ = losses.class_affinity_matrices(feat_l, feat_k, labels, num_classes=2,
                                            area_norm=area_norm, affinity="dot")
    np.testing.assert_allclose(got.numpy()[1, 0, 0], expected, rtol=1e-6)
  doubled, _ = losses.class_affinity_matrices(2 * feat_l, 2 * feat_k, labels,
                                              num_classes=2, affinity="dot")
  np.testing.assert_allclose(doubled.numpy(), 4 * dot.numpy(), rtol=1e-6)
  # Modality b all ones: class 1 <1, 1> = 3 over S = 3 -> 1; class 0 -> 1.
  # loss = ((0 - 1)^2 + (10/3 - 1)^2) / 2 = (1 + 49/9) / 2 = 29/9
  got = losses.csa_loss(feat_l, feat_k, labels, tf.ones_like(feat_l), tf.ones_like(feat_k),
                        labels, num_classes=2, affinity="dot")
  np.testing.assert_allclose(got.numpy(), 29 / 9, rtol=1e-6)
  with pytest.raises(ValueError, match="affinity"):
    losses.class_affinity_matrices(feat_l, feat_k, labels, num_classes=2,
                                   affinity="cos")


# ----------------------------------------------------------------------------- CSA reference


def _np_avg_pool(feat, factor):
  b, h, w, ch = feat.shape
  out = np.zeros((b, h // factor, w // factor, ch))
  for i in range(h // factor):
    for j in range(w // factor):
      block = feat[:, i * factor:(i + 1) * factor, j * factor:(j + 1) * factor, :]
      out[:, i, j, :] = block.mean(axis=(1, 2))
  return out


def _np_nearest(labels, h, w):
  big_h, big_w = labels.shape[1:]
  rows = [int(math.floor((i + 0.5) * big_h / h)) for i in range(h)]
  cols = [int(math.floor((j + 0.5) * big_w / w)) for j in range(w)]
  return labels[:, rows][:, :, cols]


def _np_affinity(feat_l, feat_k, labels, num_classes, area_norm, class_specific,
                 affinity="cosine"):
  """Literal per-class, per-channel-pair reference of REFERENCE.md section 2."""
  feat_l = np.asarray(feat_l, np.float64)
  feat_k = np.asarray(feat_k, np.float64)
  if feat_k.shape[1] > feat_l.shape[1]:
    feat_k = _np_avg_pool(feat_k, feat_k.shape[1] // feat_l.shape[1])
  elif feat_l.shape[1] > feat_k.shape[1]:
    feat_l = _np_avg_pool(feat_l, feat_l.shape[1] // feat_k.shape[1])
  b, h, w, m_count = feat_l.shape
  n_count = feat_k.shape[-1]
  small = _np_nearest(np.asarray(labels), h, w)
  masks = ([small == c for c in range(num_classes)] if class_specific
           else [np.ones_like(small, bool)])
  matrices = np.zeros((len(masks), m_count, n_count))
  present = np.zeros(len(masks), bool)
  for c, mask in enumerate(masks):
    count = mask.sum()
    present[c] = count > 0
    if not count:
      continue
    area = {"count": count, "fraction": count / (b * h * w), "none": 1.0}[area_norm]
    for m in range(m_count):
      x = feat_l[..., m][mask]
      for n in range(n_count):
        y = feat_k[..., n][mask]
        norms = np.linalg.norm(x) * np.linalg.norm(y)
        if affinity == "dot":
          similarity = x @ y
        else:
          similarity = x @ y / norms if norms > 0 else 0.0
        matrices[c, m, n] = similarity / area
  return matrices, present


def _np_csa(la, ka, ya, lb, kb, yb, num_classes, area_norm="count",
            reduction="mean_then_square", class_specific=True, affinity="cosine"):
  aff_a, pres_a = _np_affinity(la, ka, ya, num_classes, area_norm, class_specific,
                               affinity)
  aff_b, pres_b = _np_affinity(lb, kb, yb, num_classes, area_norm, class_specific,
                               affinity)
  terms = []
  for c in range(aff_a.shape[0]):
    if pres_a[c] and pres_b[c]:
      d = aff_a[c] - aff_b[c]
      terms.append(d.mean() ** 2 if reduction == "mean_then_square" else (d ** 2).mean())
  return float(np.mean(terms)) if terms else 0.0


def _random_case(seed, dtype=np.float32, l_size=4, k_size=8, labels_size=16, batch=(2, 3),
                 channels=(3, 5), num_classes=3):
  rng = np.random.default_rng(seed)
  ba, bb = batch
  m, n = channels
  la = rng.normal(size=(ba, l_size, l_size, m)).astype(dtype)
  ka = rng.normal(size=(ba, k_size, k_size, n)).astype(dtype)
  lb = rng.normal(size=(bb, l_size, l_size, m)).astype(dtype)
  kb = rng.normal(size=(bb, k_size, k_size, n)).astype(dtype)
  ya = rng.integers(0, num_classes, size=(ba, labels_size, labels_size)).astype(np.int32)
  yb = rng.integers(0, num_classes, size=(bb, labels_size, labels_size)).astype(np.int32)
  return la, ka, ya, lb, kb, yb


@pytest.mark.parametrize("area_norm", losses.AREA_NORMS)
@pytest.mark.parametrize("reduction", losses.REDUCTIONS)
@pytest.mark.parametrize("class_specific", [True, False])
@pytest.mark.parametrize("affinity", losses.AFFINITIES)
def test_csa_loss_matches_numpy_reference(area_norm, reduction, class_specific, affinity):
  kw = dict(area_norm=area_norm, reduction=reduction, class_specific=class_specific,
            affinity=affinity)
  # k larger than l (pool k), and l larger than k (pool l); unpaired batch sizes 2 and 3.
  for case in (_random_case(0), _random_case(1, l_size=8, k_size=4)):
    expected = _np_csa(*case, num_classes=3, **kw)
    got = losses.csa_loss(*case, num_classes=3, **kw)
    np.testing.assert_allclose(got.numpy(), expected, rtol=2e-4, atol=1e-9)


def test_csa_loss_float64_gradient_check():
  # Small enough for finite differences (l 2x2 pooled from k 4x4, labels 4x4).
  case = _random_case(2, dtype=np.float64, l_size=2, k_size=4, labels_size=4,
                      batch=(1, 2), channels=(2, 3), num_classes=2)
  la, ka, ya, lb, kb, yb = case
  ya[0, 0, 0], ya[0, 1, 1] = 0, 1  # both classes present in both modalities
  yb[0, 0, 0], yb[0, 1, 1] = 0, 1
  for reduction in losses.REDUCTIONS:
    @tf.function
    def fn(la_, ka_, lb_, kb_, reduction=reduction):
      return losses.csa_loss(la_, ka_, ya, lb_, kb_, yb, num_classes=2,
                             area_norm="none", reduction=reduction)
    helpers.assert_float64_gradients_match(fn, (la, ka, lb, kb))


def _loss_and_grads(la, ka, ya, lb, kb, yb, **kw):
  feats = [tf.Variable(tf.cast(v, tf.float32)) for v in (la, ka, lb, kb)]
  with tf.GradientTape() as tape:
    loss = losses.csa_loss(feats[0], feats[1], ya, feats[2], feats[3], yb,
                           num_classes=3, **kw)
  return loss, tape.gradient(loss, feats)


@pytest.mark.parametrize("reduction", losses.REDUCTIONS)
def test_csa_loss_finite_in_edge_cases(reduction):
  la, ka, ya, lb, kb, yb = _random_case(3)
  cases = {
      # Class 2 absent from a: only classes 0 and 1 count.
      "absent": (la, ka, np.minimum(ya, 1), lb, kb, yb),
      # a all background, b without background: no class kept -> 0.
      "none_kept": (la, ka, np.zeros_like(ya), lb, kb, np.maximum(yb, 1)),
      "all_background": (la, ka, np.zeros_like(ya), lb, kb, np.zeros_like(yb)),
      "zero_features": (0 * la, 0 * ka, ya, 0 * lb, 0 * kb, yb),
      "zero_channel": (la * np.array([0, 1, 1], np.float32), ka, ya, lb, kb, yb),
  }
  for name, case in cases.items():
    loss, grads = _loss_and_grads(*case, reduction=reduction)
    assert np.isfinite(loss.numpy()), name
    for grad in grads:
      assert np.all(np.isfinite(grad.numpy())), name
    np.testing.assert_allclose(loss.numpy(), _np_csa(*case, num_classes=3,
                                                     reduction=reduction),
                               rtol=2e-4, atol=1e-12, err_msg=name)
  np.testing.assert_equal(_loss_and_grads(*cases["none_kept"])[0].numpy(), 0.0)


def test_csa_loss_skips_class_absent_from_one_modality():
  la, ka, ya, lb, kb, yb = _random_case(4, l_size=8, k_size=8, labels_size=8)
  ya_absent = np.minimum(ya, 1)  # class 2 missing in a
  # b's features on its class-2 pixels must not matter.
  lb_changed, kb_changed = lb.copy(), kb.copy()
  lb_changed[yb == 2] *= 3.0
  kb_changed[yb == 2] += 5.0
  base = losses.csa_loss(la, ka, ya_absent, lb, kb, yb, num_classes=3)
  changed = losses.csa_loss(la, ka, ya_absent, lb_changed, kb_changed, yb, num_classes=3)
  assert base.numpy() > 0
  np.testing.assert_allclose(base.numpy(), changed.numpy(), rtol=1e-6)


def test_csa_loss_identical_is_zero_and_symmetric():
  la, ka, ya, lb, kb, yb = _random_case(5)
  np.testing.assert_equal(
      losses.csa_loss(la, ka, ya, la, ka, ya, num_classes=3).numpy(), 0.0)
  for reduction in losses.REDUCTIONS:
    ab = losses.csa_loss(la, ka, ya, lb, kb, yb, num_classes=3, reduction=reduction)
    ba = losses.csa_loss(lb, kb, yb, la, ka, ya, num_classes=3, reduction=reduction)
    assert ab.numpy() > 0
    np.testing.assert_allclose(ab.numpy(), ba.numpy(), rtol=1e-6)


def test_csa_loss_bad_arguments_raise():
  args = (_LA, _KA, _YA, _LB, _KB, _YB)
  with pytest.raises(ValueError, match="area_norm"):
    losses.csa_loss(*args, num_classes=2, area_norm="pixels")
  with pytest.raises(ValueError, match="reduction"):
    losses.csa_loss(*args, num_classes=2, reduction="sum")
  with pytest.raises(ValueError, match="channels"):
    losses.csa_loss(_LA, _KA, _YA, _KB, _KB, _YB, num_classes=2)
  with pytest.raises(ValueError, match="non-integer"):
    losses.class_affinity_matrices(tf.ones([1, 4, 4, 1]), tf.ones([1, 6, 6, 1]),
                                   tf.zeros([1, 4, 4], tf.int32), num_classes=2)


def test_csa_loss_under_xla_matches_eager():
  la, ka, ya, lb, kb, yb = _random_case(6)
  feats = [tf.Variable(v) for v in (la, ka, lb, kb)]

  def loss_and_grads():
    with tf.GradientTape() as tape:
      loss = losses.csa_loss(feats[0], feats[1], ya, feats[2], feats[3], yb,
                             num_classes=3)
    return loss, tape.gradient(loss, feats)

  helpers.assert_xla_matches_eager(loss_and_grads)


def test_csa_pairs_loss_is_mean_over_pairs():
  rng = np.random.default_rng(7)

  def taps(batch):
    return {"g3": rng.normal(size=(batch, 8, 8, 2)).astype(np.float32),
            "g4": rng.normal(size=(batch, 4, 4, 4)).astype(np.float32),
            "g5": rng.normal(size=(batch, 4, 4, 8)).astype(np.float32),
            "g6": rng.normal(size=(batch, 4, 4, 8)).astype(np.float32),
            "g7": rng.normal(size=(batch, 4, 4, 16)).astype(np.float32),
            "g8": rng.normal(size=(batch, 4, 4, 16)).astype(np.float32)}

  fa, fb = taps(2), taps(3)
  ya = rng.integers(0, 3, size=(2, 32, 32)).astype(np.int32)
  yb = rng.integers(0, 3, size=(3, 32, 32)).astype(np.int32)
  assert losses.DEFAULT_CSA_PAIRS == (("g3", "g4"), ("g5", "g6"), ("g7", "g8"))
  got = losses.csa_pairs_loss(fa, ya, fb, yb, num_classes=3,
                              reduction="square_then_mean")
  expected = np.mean([_np_csa(fa[l], fa[k], ya, fb[l], fb[k], yb, 3,
                              reduction="square_then_mean")
                      for l, k in losses.DEFAULT_CSA_PAIRS])
  np.testing.assert_allclose(got.numpy(), expected, rtol=2e-4)
  with pytest.raises(ValueError, match="g9"):
    losses.csa_pairs_loss(fa, ya, fb, yb, pairs=[("g8", "g9")], num_classes=3)
  with pytest.raises(ValueError):
    losses.csa_pairs_loss(fa, ya, fb, yb, pairs=[], num_classes=3)
