"""Segmenting slices with a trained bundle: each modality through its own BN statistics."""
from typing import Dict

import numpy as np
import tensorflow as tf

from csa_tf.data.input_slices import stack_neighbours
from csa_tf.model.bundle import ModelBundle


class SliceSegmenter:
  """Predicts class indices for stacks of 2D slices, one compiled function per modality."""

  def __init__(self, bundle: ModelBundle, *, batch_size: int = 16):
    self.bundle = bundle
    self.batch_size = batch_size
    self._functions: Dict[str, tf.types.experimental.GenericFunction] = {}

  def _function(self, modality: str):
    if modality not in self._functions:
      net = self.bundle.networks[modality]

      @tf.function(reduce_retracing=True)
      def probs_fn(images):
        logits = net(images, modality=modality, training=False)
        return tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
      self._functions[modality] = probs_fn
    return self._functions[modality]

  def probs(self, slices: np.ndarray, modality: str) -> np.ndarray:
    """Softmax probabilities [S, H, W, C] of z-scored slices.

    Args:
      slices: [S, H, W], the consecutive slices of one volume (each gets its neighbours
        as channels where the network takes three: input_slices.stack_neighbours), or
        network inputs [S, H, W, in_channels].
      modality: whose BN statistics to use.
    """
    if slices.ndim == 3:
      slices = stack_neighbours(slices, self.bundle.networks[modality].in_channels)
    function = self._function(modality)
    out = [function(tf.constant(slices[i:i + self.batch_size], tf.float32)).numpy()
           for i in range(0, len(slices), self.batch_size)]
    return np.concatenate(out, axis=0)

  def labels(self, slices: np.ndarray, modality: str) -> np.ndarray:
    """Class indices [S, H, W] uint8 of z-scored slices (as for `probs`)."""
    return self.probs(slices, modality).argmax(axis=-1).astype(np.uint8)
