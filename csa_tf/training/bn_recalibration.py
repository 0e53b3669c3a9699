"""Re-estimating BatchNorm statistics with dropout off, before checkpoints are written.

The UMMKD network puts dropout right before the next unit's BN (conv -> dropout -> BN ->
lReLU -> conv ...; REFERENCE.md §1). The moving statistics gathered during training
therefore include dropout's extra variance, which is absent at inference, and over 31 BN
sites the shift compounds: on the CPU demo the test Dice of a 300-step run was ~15% with
the training-time moving statistics and ~80% after re-estimation. So before every
checkpoint each modality's BN statistics are recomputed as the average of per-batch
statistics over a fixed set of training batches with dropout off (the remedy of Li et
al., CVPR 2019, "Understanding the disharmony between dropout and batch normalization").

The estimate depends only on the weights and the fixed batches, not on the previous
moving statistics, so resumed and uninterrupted runs still end bit-identical. Training
itself is unchanged: in training mode BN normalises with batch statistics and never reads
the moving ones.
"""
from typing import Dict, List, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from csa_tf.training import objective
from csa_tf.configs.train_config import TrainConfig
from csa_tf.model.bundle import ModelBundle


def _layers(bundle: ModelBundle, kind) -> List[keras.layers.Layer]:
  found, seen = [], set()
  for net in bundle.unique_networks:
    for layer in net._flatten_layers(include_self=False):  # pylint: disable=protected-access
      if isinstance(layer, kind) and id(layer) not in seen:
        seen.add(id(layer))
        found.append(layer)
  return found


def recalibrate_batch_norm(bundle: ModelBundle, config: TrainConfig,
                           batches: Sequence[Dict[str, Tuple[tf.Tensor, tf.Tensor]]]) -> int:
  """Sets every BN's moving statistics to the mean of its batch statistics over batches.

  Args:
    bundle: the networks.
    config: the run's config (which setting: forward passes follow it, so "Joint" sees
      the concatenated batch and every other setting each modality's own batch).
    batches: training batches {modality: (images [B, H, W, C], labels [B, H, W])}.

  Returns:
    The number of BN layers visited.
  """
  if not batches:
    return 0
  norms = _layers(bundle, keras.layers.BatchNormalization)
  drops = _layers(bundle, keras.layers.Dropout)
  saved = ([n.momentum for n in norms], [d.rate for d in drops])
  sums = [[np.zeros_like(n.moving_mean.numpy()), np.zeros_like(n.moving_variance.numpy())]
          for n in norms]
  try:
    # momentum 0: after each pass the moving statistics hold that batch's statistics.
    for n in norms:
      n.momentum = 0.0
    for d in drops:
      d.rate = 0.0
    # Traced once per bundle with the attributes above, which tf.function bakes into the
    # graph; later calls reuse it instead of retracing at every checkpoint.
    forward = getattr(bundle, "_recalibration_forward", None)
    if forward is None:
      forward = tf.function(lambda b: objective.forward(bundle, b, config, training=True))
      bundle._recalibration_forward = forward  # pylint: disable=protected-access
    for element in batches:
      forward(element)
      for total, n in zip(sums, norms):
        total[0] += n.moving_mean.numpy()
        total[1] += n.moving_variance.numpy()
  finally:
    for n, momentum in zip(norms, saved[0]):
      n.momentum = momentum
    for d, rate in zip(drops, saved[1]):
      d.rate = rate
  # A BN whose modality was not in the batches kept its statistics on every pass, so
  # its average is its own value.
  for n, (mean_sum, var_sum) in zip(norms, sums):
    n.moving_mean.assign(mean_sum / len(batches))
    n.moving_variance.assign(var_sum / len(batches))
  return len(norms)
