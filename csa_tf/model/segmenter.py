"""Segmenting slices with a trained bundle: each modality through its own BN statistics.

A 3D run's network sees windows of patch_depth consecutive slices: a volume is covered
by windows overlapping by half a patch and the probabilities are averaged where windows
overlap (csa_tf/data/patches.py), so evaluation, prediction and figures call the same
`probs` / `labels` for 2D and 3D runs.
"""
from typing import Dict

import numpy as np
import tensorflow as tf

from csa_tf.data import patches
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
        network inputs [S, H, W, in_channels]. A 3D run needs the whole volume's slices
        in order.
      modality: whose BN statistics to use.
    """
    if slices.ndim == 3:
      slices = stack_neighbours(slices, self.bundle.networks[modality].in_channels)
    if self.bundle.config.input_patch_depth:
      return self._volume_probs(slices, modality, self.bundle.config.input_patch_depth)
    function = self._function(modality)
    out = [function(tf.constant(slices[i:i + self.batch_size], tf.float32)).numpy()
           for i in range(0, len(slices), self.batch_size)]
    return np.concatenate(out, axis=0)

  def _volume_probs(self, slices: np.ndarray, modality: str, depth: int) -> np.ndarray:
    """[S, H, W, C] from windows of `depth` slices [N, depth, H, W, 1], averaged."""
    padded = patches.pad_to_depth(slices, depth)
    starts = patches.window_starts(len(padded), depth)
    windows = np.stack([padded[s:s + depth] for s in starts])
    per_call = max(1, self.batch_size // depth)  # batch_size counts slices
    function = self._function(modality)
    total = np.zeros(padded.shape[:3] + (self.bundle.config.num_classes,), np.float32)
    covered = np.zeros(len(padded), np.float32)
    for i in range(0, len(windows), per_call):
      out = function(tf.constant(windows[i:i + per_call], tf.float32)).numpy()
      for start, window_probs in zip(starts[i:i + per_call], out):
        total[start:start + depth] += window_probs
        covered[start:start + depth] += 1.0
    before, _ = patches.edge_padding(len(slices), depth)
    probs = total / covered[:, None, None, None]
    return probs[before:before + len(slices)]

  def labels(self, slices: np.ndarray, modality: str) -> np.ndarray:
    """Class indices [S, H, W] uint8 of z-scored slices (as for `probs`)."""
    return self.probs(slices, modality).argmax(axis=-1).astype(np.uint8)
