"""One grid for a pair of feature maps and a label map (REFERENCE.md section 2), 2D or 3D.

The affinity losses compare two layers' channels position by position over the class
masks: the larger feature map is average-pooled by integer factors to the smaller one's
size, and the labels are resized to it by nearest neighbour with half-pixel centres.
NHWC maps [B, h, w, C] and NDHWC maps [B, d, h, w, C] follow the same rules.
"""
from typing import Tuple

import tensorflow as tf


def spatial_size(feat, what) -> Tuple[int, ...]:
  """(h, w) of an NHWC feature map or (d, h, w) of an NDHWC one, all static."""
  if feat.shape.rank not in (4, 5):
    raise ValueError(f"{what} must be NHWC [B, h, w, channels] or NDHWC "
                     f"[B, d, h, w, channels], got shape {feat.shape}")
  size = tuple(feat.shape[1:-1])
  if any(n is None for n in size):
    raise ValueError(f"{what} needs a static spatial size, got shape {feat.shape}")
  return size


def _pool_factor(large, small, what) -> Tuple[int, ...]:
  """Integer average-pooling factors, one per spatial axis, taking `large` to `small`.

  In-plane (h, w) the factor is one for both axes, as in 2D; a 3D map's depth factor may
  differ from it (a thin patch is pooled in-plane only), but must be an integer too.
  """
  factors = tuple(l // s for l, s in zip(large, small))
  if (any(l != f * s for l, s, f in zip(large, small, factors))
      or factors[-1] != factors[-2]):
    raise ValueError(f"{what}: feature sizes {large} and {small} differ by a "
                     "non-integer or anisotropic factor")
  return factors


def _avg_pool(feat, factors):
  """Non-overlapping average pooling of [B, h, w, ch] or [B, d, h, w, ch] by `factors`."""
  if len(factors) == 2:
    return tf.nn.avg_pool2d(feat, factors, factors, "VALID")
  # Depth as block means over a rank-4 view, then in-plane slice by slice: TF's
  # AvgPool3D has no float64 CPU kernel (the gradient checks).
  depth, height, width, channels = feat.shape[1:]
  if factors[0] > 1:
    depth //= factors[0]
    feat = tf.reduce_mean(
        tf.reshape(feat, [-1, depth, factors[0], height * width * channels]), axis=2)
  slices = tf.reshape(feat, [-1, height, width, channels])
  slices = tf.nn.avg_pool2d(slices, factors[1:], factors[1:], "VALID")
  return tf.reshape(slices, [-1, depth, *slices.shape[1:]])


def match_sizes(feat_l, feat_k):
  """Average-pools the larger of the two feature maps to the other's size (REF. s. 2)."""
  size_l = spatial_size(feat_l, "feat_l")
  size_k = spatial_size(feat_k, "feat_k")
  if len(size_l) != len(size_k):
    raise ValueError(f"feat_l {feat_l.shape} and feat_k {feat_k.shape} differ in rank")
  if any(k > l for k, l in zip(size_k, size_l)):
    feat_k = _avg_pool(feat_k, _pool_factor(size_k, size_l, "csa"))
  elif size_l != size_k:
    feat_l = _avg_pool(feat_l, _pool_factor(size_l, size_k, "csa"))
  return feat_l, feat_k


def nearest_labels(labels, size):
  """labels [B, H, W] or [B, D, H, W] resized to `size` (h, w) or (d, h, w).

  Nearest neighbour with half-pixel centres on every axis (REFERENCE.md section 2): a
  factor-f reduction keeps pixel f*i + f//2 of each block; 3D maps take the same rule
  along depth, then in-plane slice by slice.
  """
  if tuple(labels.shape[1:]) == tuple(size):
    return labels
  if len(size) == 3:
    depth, small_depth = labels.shape[1], size[0]
    if depth != small_depth:
      # floor((i + 0.5) * D / d), the in-plane rule of tf.image.resize, along depth.
      index = [min(int((2 * i + 1) * depth // (2 * small_depth)), depth - 1)
               for i in range(small_depth)]
      labels = tf.gather(labels, index, axis=1)
    slices = tf.reshape(labels, [-1, labels.shape[2], labels.shape[3]])
    return tf.reshape(nearest_labels(slices, size[1:]), [-1, *size])
  height, width = size
  return tf.image.resize(labels[..., None], (height, width),
                         method="nearest")[..., 0]
