"""Loss functions: Dice, weighted CE, L2, UMMKD's KD and the class-specific affinity loss.

Pure functions of tensors (MONAI style). Shapes are NHWC: `probs`/`logits` [B, H, W, C],
integer label maps [B, H, W], features [B, h, w, channels]; every loss also takes the
3D (NDHWC) counterparts [B, D, H, W, C], [B, D, H, W] and [B, d, h, w, channels], and
pools its batch sums over all B*D*H*W positions. Every loss returns a scalar
computed in float32 (float16/bfloat16 inputs are cast up; float64 inputs stay float64 so
that gradients can be checked numerically). Forms and decisions: REFERENCE.md section 2.

Every batch-dependent loss is a function of sums over the batch (Dice's overlaps, CE's
class counts, KD's class prototypes, the affinities' dot products and norms). Their
`batch_sum` argument is applied to each of those sums, so a caller running on several
replicas can all-reduce them and get the loss of the global batch exactly.
"""
from typing import Callable, Mapping, Optional, Sequence, Tuple

import tensorflow as tf

from csa_tf import feature_grid

# The CSA loss's option lists (area norms, reductions, default layer pairs) are declared
# once, beside the training options that choose them, in a module that loads no
# TensorFlow; they stay importable as csa_tf.losses.AREA_NORMS etc.
from csa_tf.configs.train_config import (AFFINITIES, AREA_NORMS, DEFAULT_CSA_PAIRS,
                                         REDUCTIONS)

# Applied to every sum over the batch before a loss is formed from it; a cross-replica
# all-reduce under tf.distribute makes each loss that of the global batch (see
# csa_tf/training/distribution.py). None: the sums of this call's batch only.
BatchSum = Optional[Callable[[tf.Tensor], tf.Tensor]]

# UMMKD's smoothing terms and clip (REFERENCE.md section 2).
_DICE_EPS = 1e-7
_CE_CLIP_MIN = 0.005
_KD_EPS = 1e-6
# Channels whose masked squared norm is below this count as all-zero: their cosine is 0.
_SQ_NORM_FLOOR = 1e-12


def _compute_dtype(*tensors) -> tf.DType:
  """float64 if any input is float64, else float32 (never half precision)."""
  return tf.float64 if any(t.dtype == tf.float64 for t in tensors) else tf.float32


def _check_probs_and_labels(values, labels, num_classes, what):
  if values.shape.rank not in (4, 5):
    raise ValueError(f"{what} must be NHWC [B, H, W, C] or NDHWC [B, D, H, W, C], got "
                     f"shape {values.shape}")
  if labels.shape.rank != values.shape.rank - 1:
    raise ValueError(f"labels must be class indices of shape {what}.shape[:-1], got "
                     f"shape {labels.shape} beside {what} {values.shape}")
  if values.shape[-1] is not None and values.shape[-1] != num_classes:
    raise ValueError(f"{what} have {values.shape[-1]} channels, expected "
                     f"num_classes={num_classes}")
  if not values.shape[:-1].is_compatible_with(labels.shape):
    raise ValueError(f"{what} {values.shape} and labels {labels.shape} differ in their "
                     "batch or spatial sizes")


def _positions(tensor) -> Tuple[int, ...]:
  """The batch and spatial axes of an NHWC or NDHWC tensor: every axis but channels."""
  return tuple(range(tensor.shape.rank - 1))


def _probs_and_onehot(probs, labels, num_classes: int):
  """Checked probs [B, (D,) H, W, C] and one-hot labels, in the loss's compute dtype."""
  probs = tf.convert_to_tensor(probs)
  labels = tf.convert_to_tensor(labels)
  _check_probs_and_labels(probs, labels, num_classes, "probs")
  dtype = _compute_dtype(probs)
  return tf.cast(probs, dtype), tf.one_hot(labels, num_classes, dtype=dtype)


def dice_loss(probs, labels, *, num_classes: int, batch_sum: BatchSum = None):
  """UMMKD's multi-class soft Dice loss, background included.

  `-(1/C) sum_c 2 sum(p_c g_c) / (sum(p_c^2) + sum(g_c) + 1e-7)`, sums over batch and
  pixels (REFERENCE.md section 2). In [-1, 0]; -1 is a perfect prediction.

  Args:
    probs: softmax probabilities [B, H, W, C] or [B, D, H, W, C].
    labels: integer class map [B, H, W] or [B, D, H, W].
    num_classes: C.
    batch_sum: applied to the batch sums (e.g. a cross-replica all-reduce); None: none.

  Returns:
    Scalar loss.

  Raises:
    ValueError: bad ranks, or probs' last dimension is not num_classes.
  """
  probs, onehot = _probs_and_onehot(probs, labels, num_classes)
  axes = _positions(probs)
  intersection = tf.reduce_sum(probs * onehot, axis=axes)
  denominator = (tf.reduce_sum(tf.square(probs), axis=axes)
                 + tf.reduce_sum(onehot, axis=axes))
  if batch_sum is not None:
    intersection, denominator = batch_sum(intersection), batch_sum(denominator)
  denominator += _DICE_EPS
  return -tf.reduce_mean(2.0 * intersection / denominator)


def weighted_ce_loss(probs, labels, *, num_classes: int, batch_sum: BatchSum = None):
  """UMMKD's class-weighted cross-entropy on probabilities.

  Per-batch weights `w_c = 1 - sum(g_c) / sum(g)`, loss
  `mean over pixels of sum_c -w_c g_c log(clip(p_c, 0.005, 1))` (REFERENCE.md s. 2).

  Args:
    probs: softmax probabilities [B, H, W, C] or [B, D, H, W, C].
    labels: integer class map [B, H, W] or [B, D, H, W].
    num_classes: C.
    batch_sum: applied to the batch sums (e.g. a cross-replica all-reduce); None: none.

  Returns:
    Scalar loss.

  Raises:
    ValueError: bad ranks, or probs' last dimension is not num_classes.
  """
  probs, onehot = _probs_and_onehot(probs, labels, num_classes)
  class_pixels = tf.reduce_sum(onehot, axis=_positions(onehot))
  if batch_sum is not None:
    class_pixels = batch_sum(class_pixels)
  weights = 1.0 - class_pixels / tf.reduce_sum(class_pixels)
  log_probs = tf.math.log(tf.clip_by_value(probs, _CE_CLIP_MIN, 1.0))
  per_pixel = tf.reduce_sum(-weights * onehot * log_probs, axis=-1)
  if batch_sum is None:
    return tf.reduce_mean(per_pixel)
  # The mean over the global batch's pixels: the class counts sum to that pixel count.
  return batch_sum(tf.reduce_sum(per_pixel)) / tf.reduce_sum(class_pixels)


def l2_loss(kernels: Sequence[tf.Variable], *, weight: float = 1e-4):
  """Weight decay `weight * sum_W 0.5 ||W||^2` over conv kernels (BN excluded).

  Args:
    kernels: conv kernels, e.g. `CsaNet.conv_kernels`.
    weight: decay factor (1e-4 in UMMKD).

  Returns:
    Scalar loss.

  Raises:
    ValueError: `kernels` is empty.
  """
  kernels = list(kernels)
  if not kernels:
    raise ValueError("l2_loss needs at least one kernel")
  dtype = _compute_dtype(*kernels)
  total = tf.add_n([tf.nn.l2_loss(tf.cast(k, dtype)) for k in kernels])
  return tf.cast(weight, dtype) * total


def _class_mean_log_softmax(logits, labels, num_classes, temperature, dtype,
                            batch_sum=None):
  """log softmax(zbar_c / T) [C, C] of each class's mean logit vector over the batch."""
  logits = tf.reshape(tf.cast(logits, dtype), [-1, num_classes])  # [P, C], any rank
  onehot = tf.one_hot(tf.reshape(labels, [-1]), num_classes, dtype=dtype)
  # zbar[c, :] = sum_p g_c(p) z(p) / (sum_p g_c(p) + 1e-6).
  summed = tf.einsum("pc,pk->ck", onehot, logits)
  counts = tf.reduce_sum(onehot, axis=0)
  if batch_sum is not None:
    summed, counts = batch_sum(summed), batch_sum(counts)
  zbar = summed / (counts[:, None] + _KD_EPS)
  return tf.nn.log_softmax(zbar / temperature, axis=-1)


def kd_loss(logits_a, labels_a, logits_b, labels_b, *, num_classes: int,
            temperature: float = 2.0, batch_sum: BatchSum = None):
  """UMMKD's knowledge-distillation loss between two modalities' class prototypes.

  For each class c and modality, the mean logit vector over every class-c pixel of the
  batch `zbar_c = sum(z g_c) / (sum(g_c) + 1e-6)` gives `q_c = softmax(zbar_c / T)`;
  the loss is `(1/C) sum_c 0.5 (KL(q_a,c || q_b,c) + KL(q_b,c || q_a,c))`, background
  included, no stop-gradient (REFERENCE.md section 2). A class absent from a batch has
  zbar = 0, i.e. a uniform q, as in UMMKD.

  Args:
    logits_a: modality a's logits [B, H, W, C] (or [B, D, H, W, C]).
    labels_a: modality a's integer class map [B, H, W] (or [B, D, H, W]).
    logits_b: modality b's logits [B', H', W', C] (unpaired: sizes may differ; 2D or 3D
      like modality a's).
    labels_b: modality b's integer class map [B', H', W'] (or [B', D', H', W']).
    num_classes: C.
    temperature: softmax temperature T.
    batch_sum: applied to the batch sums (e.g. a cross-replica all-reduce); None: none.

  Returns:
    Scalar loss.

  Raises:
    ValueError: bad ranks or channel counts.
  """
  logits_a = tf.convert_to_tensor(logits_a)
  logits_b = tf.convert_to_tensor(logits_b)
  labels_a = tf.convert_to_tensor(labels_a)
  labels_b = tf.convert_to_tensor(labels_b)
  _check_probs_and_labels(logits_a, labels_a, num_classes, "logits_a")
  _check_probs_and_labels(logits_b, labels_b, num_classes, "logits_b")
  dtype = _compute_dtype(logits_a, logits_b)
  log_q_a = _class_mean_log_softmax(logits_a, labels_a, num_classes, temperature, dtype,
                                    batch_sum)
  log_q_b = _class_mean_log_softmax(logits_b, labels_b, num_classes, temperature, dtype,
                                    batch_sum)
  kl_ab = tf.reduce_sum(tf.exp(log_q_a) * (log_q_a - log_q_b), axis=-1)
  kl_ba = tf.reduce_sum(tf.exp(log_q_b) * (log_q_b - log_q_a), axis=-1)
  return tf.reduce_mean(0.5 * (kl_ab + kl_ba))


def _check_choice(name, value, choices):
  if value not in choices:
    raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def _inverse_norm(sq_norm):
  """1 / sqrt(sq_norm), and 0 for (near) zero norms, with finite gradients everywhere.

  The double `where` keeps rsqrt away from 0 in both branches, so the unselected branch
  cannot produce inf * 0 = NaN gradients.
  """
  nonzero = sq_norm > _SQ_NORM_FLOOR
  safe = tf.where(nonzero, sq_norm, tf.ones_like(sq_norm))
  return tf.where(nonzero, tf.math.rsqrt(safe), tf.zeros_like(sq_norm))


def class_affinity_matrices(feat_l, feat_k, labels, *, num_classes: int,
                            area_norm: str = "count", class_specific: bool = True,
                            batch_sum: BatchSum = None, affinity: str = "cosine"):
  """Batch-pooled class-specific affinity matrices of one modality (paper Eq. 2-3).

  The larger feature map is average-pooled to the smaller one's size and `labels` are
  resized to that size by nearest neighbour (3D maps: the same on three axes). For class c, channel m of layer l and
  channel n of layer k give `a_mn = cos(x_m * M_c, y_n * M_c) / S_c`, where each masked
  channel is one vector over all B*h*w (3D: B*d*h*w) positions of the batch
  (REFERENCE.md s. 2); with
  affinity="dot", `a_mn = <x_m * M_c, y_n * M_c> / S_c = sum_p M_c(p) x_m(p) y_n(p) / S_c`
  (with S_c = count: the mean of x_m y_n over the class region).
  All classes are computed at once with dense one-hot masks and one einsum (XLA-friendly).

  Args:
    feat_l: layer l's features [B, h_l, w_l, M] or [B, d_l, h_l, w_l, M].
    feat_k: layer k's features [B, h_k, w_k, N] or [B, d_k, h_k, w_k, N].
    labels: integer class map [B, H, W] or [B, D, H, W].
    num_classes: C, background included.
    area_norm: S_c = "count" (class-c pixels at the feature resolution, Eq. 3),
      "fraction" (count / (B*h*w), 3D: / (B*d*h*w)) or "none" (1).
    class_specific: False uses one all-ones mask (the "Affinity" baseline).
    batch_sum: applied to the batch sums (dot products, squared norms, pixel counts),
      e.g. a cross-replica all-reduce; None: none.
    affinity: "cosine" (Eq. 3 as written) or "dot" (see above).

  Returns:
    (affinity [K, M, N], present [K] bool) with K = num_classes, or 1 when not
    class-specific; `present` marks classes with at least one pixel (their affinity is 0).

  Raises:
    ValueError: bad ranks, non-static or non-integer-ratio spatial sizes, in-plane
      factors that differ between h and w, bad area_norm or affinity.
  """
  _check_choice("area_norm", area_norm, AREA_NORMS)
  _check_choice("affinity", affinity, AFFINITIES)
  feat_l = tf.convert_to_tensor(feat_l)
  feat_k = tf.convert_to_tensor(feat_k)
  labels = tf.convert_to_tensor(labels)
  dtype = _compute_dtype(feat_l, feat_k)
  feat_l, feat_k = feature_grid.match_sizes(tf.cast(feat_l, dtype),
                                            tf.cast(feat_k, dtype))
  if labels.shape.rank != feat_l.shape.rank - 1:
    raise ValueError(f"labels must be class indices of shape [B, H, W] (3D: "
                     f"[B, D, H, W]) beside features {feat_l.shape}, got shape "
                     f"{labels.shape}")

  x = tf.reshape(feat_l, [-1, feat_l.shape[-1]])  # [P, M], P = B*h*w (3D: B*d*h*w)
  y = tf.reshape(feat_k, [-1, feat_k.shape[-1]])  # [P, N]
  if not labels.shape[:1].is_compatible_with(feat_l.shape[:1]):
    raise ValueError(f"labels {labels.shape} and features {feat_l.shape} differ in batch")
  if class_specific:
    small_labels = feature_grid.nearest_labels(
        labels, feature_grid.spatial_size(feat_l, "feat_l"))
    masks = tf.one_hot(tf.reshape(small_labels, [-1]), num_classes, dtype=dtype)  # [P, K]
  else:
    masks = tf.ones_like(x[:, :1])  # [P, 1]

  # Masks are binary, so <x*M_c, y*M_c> = sum_p M_c(p) x(p) y(p) and the masked squared
  # norms are sum_p M_c(p) x(p)^2.
  dots = tf.einsum("pkm,pn->kmn", masks[:, :, None] * x[:, None, :], y)
  sq_norm_x = tf.einsum("pk,pm->km", masks, tf.square(x))
  sq_norm_y = tf.einsum("pk,pn->kn", masks, tf.square(y))
  counts = tf.reduce_sum(masks, axis=0)  # [K]
  positions = tf.cast(tf.shape(masks)[0], dtype)
  if batch_sum is not None:
    dots, sq_norm_x, sq_norm_y = batch_sum(dots), batch_sum(sq_norm_x), batch_sum(sq_norm_y)
    counts, positions = batch_sum(counts), batch_sum(positions)
  if affinity == "cosine":
    inv_norm_x = _inverse_norm(sq_norm_x)
    inv_norm_y = _inverse_norm(sq_norm_y)
    similarity = dots * inv_norm_x[:, :, None] * inv_norm_y[:, None, :]
  else:
    similarity = dots

  present = counts > 0
  if area_norm == "count":
    area = counts
  elif area_norm == "fraction":
    area = counts / positions
  else:
    area = tf.ones_like(counts)
  return tf.math.divide_no_nan(similarity, area[:, None, None]), present


def csa_loss(feat_l_a, feat_k_a, labels_a, feat_l_b, feat_k_b, labels_b, *,
             num_classes: int, area_norm: str = "count",
             reduction: str = "mean_then_square", class_specific: bool = True,
             batch_sum: BatchSum = None, affinity: str = "cosine"):
  """Class-specific affinity (CSA) consistency loss between two modalities (paper Eq. 4).

  Each modality's batch gives affinity matrices A_c [M, N] between layers l and k (see
  `class_affinity_matrices`). Classes absent from either batch are skipped; with C' kept
  classes the loss is `(1/C') sum_c (mean_mn (A_a,c - A_b,c))^2` ("mean_then_square",
  Eq. 4 literally) or `(1/C') sum_c mean_mn (A_a,c - A_b,c)^2` ("square_then_mean").
  0 when no class is kept. Gradients flow into both modalities.

  Args:
    feat_l_a: modality a's layer-l features [B, h_l, w_l, M] (3D: [B, d_l, h_l, w_l, M]).
    feat_k_a: modality a's layer-k features [B, h_k, w_k, N] (3D: [B, d_k, h_k, w_k, N]).
    labels_a: modality a's integer class map [B, H, W] (3D: [B, D, H, W]).
    feat_l_b: modality b's layer-l features [B', h_l', w_l', M] (unpaired; 3D likewise).
    feat_k_b: modality b's layer-k features [B', h_k', w_k', N].
    labels_b: modality b's integer class map [B', H', W'] (3D: [B', D', H', W']).
    num_classes: C, background included.
    area_norm: "count" (default, Eq. 3), "fraction" or "none"; see
      `class_affinity_matrices`.
    reduction: "mean_then_square" (default) or "square_then_mean".
    class_specific: False gives the non-class-specific "Affinity" baseline.
    batch_sum: see `class_affinity_matrices`.
    affinity: "cosine" (Eq. 3 as written) or "dot"; see `class_affinity_matrices`.

  Returns:
    Scalar loss.

  Raises:
    ValueError: bad area_norm, affinity or reduction, bad ranks, channel counts that differ between
      the modalities, or spatial sizes without an integer ratio.
  """
  _check_choice("area_norm", area_norm, AREA_NORMS)
  _check_choice("reduction", reduction, REDUCTIONS)
  for name_a, a, name_b, b in (("feat_l_a", feat_l_a, "feat_l_b", feat_l_b),
                               ("feat_k_a", feat_k_a, "feat_k_b", feat_k_b)):
    if tf.convert_to_tensor(a).shape[-1] != tf.convert_to_tensor(b).shape[-1]:
      raise ValueError(f"{name_a} has {a.shape[-1]} channels but {name_b} has "
                       f"{b.shape[-1]}")
  feats = [tf.convert_to_tensor(f) for f in (feat_l_a, feat_k_a, feat_l_b, feat_k_b)]
  dtype = _compute_dtype(*feats)
  feat_l_a, feat_k_a, feat_l_b, feat_k_b = [tf.cast(f, dtype) for f in feats]
  kw = dict(num_classes=num_classes, area_norm=area_norm, class_specific=class_specific,
            batch_sum=batch_sum, affinity=affinity)
  affinity_a, present_a = class_affinity_matrices(feat_l_a, feat_k_a, labels_a, **kw)
  affinity_b, present_b = class_affinity_matrices(feat_l_b, feat_k_b, labels_b, **kw)
  diff = affinity_a - affinity_b
  if reduction == "mean_then_square":
    per_class = tf.square(tf.reduce_mean(diff, axis=(1, 2)))
  else:
    per_class = tf.reduce_mean(tf.square(diff), axis=(1, 2))
  kept = tf.cast(tf.logical_and(present_a, present_b), dtype)
  return tf.math.divide_no_nan(tf.reduce_sum(kept * per_class), tf.reduce_sum(kept))


def csa_pairs_loss(features_a: Mapping[str, tf.Tensor], labels_a,
                   features_b: Mapping[str, tf.Tensor], labels_b,
                   pairs: Sequence[Tuple[str, str]] = DEFAULT_CSA_PAIRS, **kwargs):
  """Mean of `csa_loss` over layer pairs (l, k) ("multiple feature scales", Sec. 1).

  Args:
    features_a: modality a's feature taps, e.g. from `CsaNet.call_with_features`.
    labels_a: modality a's integer class map [B, H, W].
    features_b: modality b's feature taps.
    labels_b: modality b's integer class map [B', H', W'].
    pairs: (l name, k name) pairs; DEFAULT_CSA_PAIRS by default.
    **kwargs: `csa_loss` keywords (num_classes is required).

  Returns:
    Scalar loss.

  Raises:
    ValueError: `pairs` is empty or names a tap missing from the features.
  """
  pairs = tuple(tuple(pair) for pair in pairs)
  if not pairs:
    raise ValueError("csa_pairs_loss needs at least one layer pair")
  for pair in pairs:
    for name in pair:
      if name not in features_a or name not in features_b:
        raise ValueError(f"feature tap {name!r} of pair {pair} is missing; available: "
                         f"{sorted(features_a)}")
  losses = [csa_loss(features_a[l], features_a[k], labels_a,
                     features_b[l], features_b[k], labels_b, **kwargs)
            for l, k in pairs]
  return tf.add_n(losses) / len(losses)
