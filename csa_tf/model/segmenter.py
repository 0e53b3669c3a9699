"""Segmenting slices with a trained bundle: each modality through its own BN statistics."""
from typing import Dict

import numpy as np
import tensorflow as tf

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
    """Softmax probabilities [S, H, W, C] of z-scored slices [S, H, W] (or [S,H,W,Cin])."""
    if slices.ndim == 3:
      slices = slices[..., None]
    function = self._function(modality)
    out = [function(tf.constant(slices[i:i + self.batch_size], tf.float32)).numpy()
           for i in range(0, len(slices), self.batch_size)]
    return np.concatenate(out, axis=0)

  def labels(self, slices: np.ndarray, modality: str) -> np.ndarray:
    """Class indices [S, H, W] uint8 of z-scored slices [S, H, W]."""
    return self.probs(slices, modality).argmax(axis=-1).astype(np.uint8)
