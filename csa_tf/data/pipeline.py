"""The unpaired input pipeline: one infinite, shuffled, seeded batch stream per modality.

Each modality's stream is a pure function of (seed, step): batch `step` takes positions
[step*B, (step+1)*B) of an endless sequence of per-epoch permutations drawn with
stateless random ops. So the streams are reproducible, independent across modalities (the
data are unpaired: LGE batch k and bSSFP batch k come from unrelated permutations), and a
resumed run continues exactly where it stopped by starting at its checkpoint's step, with
no iterator state to save. Everything runs in TensorFlow ops (no Python in the hot path).
"""
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from csa_tf.errors import CsaInputError, param
from csa_tf.data import patches
from csa_tf.data.prepared import PreparedDataset

# A large odd constant that separates the modalities' random streams.
_MODALITY_SEED_STRIDE = 7919


def modality_batches(images: np.ndarray, labels: np.ndarray, *, batch_size: int,
                     seed: int, start_step: int = 0,
                     augment: bool = False) -> tf.data.Dataset:
  """An endless stream of shuffled batches of one modality.

  Args:
    images: slices [N, H, W] float32, or network inputs [N, H, W, C].
    labels: class indices [N, H, W] (any integer dtype).
    batch_size: slices per batch.
    seed: the stream's seed; equal seeds give equal streams.
    start_step: the first batch's index (a resumed run passes its step).
    augment: random flips and intensity jitter (not in the paper; off by default).

  Returns:
    A dataset of (images [B, H, W, C] float32 (C = 1 for [N, H, W] slices), labels
    [B, H, W] int32).

  Raises:
    CsaInputError: no slices, or images and labels of different shapes.
  """
  if images.ndim == 3:
    images = images[..., None]
  if images.shape[:3] != labels.shape or images.ndim != 4:
    raise CsaInputError(f"images {images.shape} and labels {labels.shape} must be "
                        "[N, H, W(, C)] and [N, H, W]")
  if int(images.shape[0]) == 0:
    raise CsaInputError("no training slices")
  image_store, label_store = _stores(images, labels)

  def fetch(index):
    return tf.gather(image_store, index), tf.gather(label_store, index)

  return _shuffled_stream(int(images.shape[0]), fetch, batch_size=batch_size, seed=seed,
                          start_step=start_step, augment=augment)


def modality_patch_batches(slices: np.ndarray, labels: np.ndarray, starts: np.ndarray, *,
                           depth: int, batch_size: int, seed: int, start_step: int = 0,
                           augment: bool = False) -> tf.data.Dataset:
  """An endless stream of shuffled batches of 3D patches of one modality.

  The patches are windows of `depth` consecutive slices of `slices` beginning at
  `starts` (csa_tf/data/patches.py); they are cut as they are drawn, so the slices are
  held once however much the windows overlap.

  Args:
    slices: the modality's volumes' slices one after another [S, H, W] float32.
    labels: their class indices [S, H, W].
    starts: the patches' first slices [N] (each window inside one volume).
    depth: slices per patch.
    batch_size, seed, start_step, augment: as for `modality_batches`.

  Returns:
    A dataset of (images [B, depth, H, W, 1] float32, labels [B, depth, H, W] int32).

  Raises:
    CsaInputError: no patches, slices and labels of different shapes, or a window that
      runs past the last slice.
  """
  starts = np.asarray(starts, np.int64)
  if slices.ndim != 3 or slices.shape != labels.shape:
    raise CsaInputError(f"slices {slices.shape} and labels {labels.shape} must both be "
                        "[S, H, W]")
  if starts.size == 0:
    raise CsaInputError("no training patches")
  if starts.min() < 0 or starts.max() + depth > len(slices):
    raise CsaInputError(f"patch windows of {depth} slices run outside the "
                        f"{len(slices)} slices")
  image_store, label_store = _stores(slices[..., None], labels)
  start_store = tf.constant(starts)
  offsets = tf.range(depth, dtype=tf.int64)

  def fetch(index):
    window = tf.gather(start_store, index)[:, None] + offsets  # [B, depth]
    return tf.gather(image_store, window), tf.gather(label_store, window)

  return _shuffled_stream(int(starts.size), fetch, batch_size=batch_size, seed=seed,
                          start_step=start_step, augment=augment)


def _stores(images: np.ndarray, labels: np.ndarray):
  """The data as CPU variables: captured by reference, so large datasets do not end up
  as constants in the tf.data graph (which has a 2 GB limit)."""
  with tf.device("/cpu:0"):
    return (tf.Variable(images.astype(np.float32), trainable=False),
            tf.Variable(labels.astype(np.uint8), trainable=False))


def _shuffled_stream(num_items: int, fetch, *, batch_size: int, seed: int,
                     start_step: int, augment: bool) -> tf.data.Dataset:
  """Batches of `fetch(index)` (images, labels) at positions [step*B, (step+1)*B) of an
  endless sequence of seeded per-epoch permutations of range(num_items)."""
  if batch_size < 1:
    raise CsaInputError(f"{param('batch_size', batch_size)}: must be at least 1")
  epochs_spanned = batch_size // num_items + 2
  seed = tf.constant(seed, tf.int64)

  def batch_at(step):
    positions = step * batch_size + tf.range(batch_size, dtype=tf.int64)
    first_epoch = (step * batch_size) // num_items
    epochs = first_epoch + tf.range(epochs_spanned, dtype=tf.int64)
    keys = tf.map_fn(
        lambda epoch: tf.random.stateless_uniform([num_items], seed=tf.stack([seed, epoch])),
        epochs, fn_output_signature=tf.float32)
    permutations = tf.argsort(keys, axis=1)
    index = tf.gather_nd(permutations, tf.stack(
        [positions // num_items - first_epoch, positions % num_items], axis=1))
    batch_images, batch_labels = fetch(index)
    batch_labels = tf.cast(batch_labels, tf.int32)
    if augment:
      batch_images, batch_labels = _augment(batch_images, batch_labels,
                                            tf.stack([seed + 1, step]))
    return batch_images, batch_labels

  return (tf.data.Dataset.counter(start=start_step, dtype=tf.int64)
          .map(batch_at, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
          .prefetch(tf.data.AUTOTUNE))


def _augment(images, labels, seed):
  """Per-batch random left-right / up-down flips and intensity scale/shift.

  images [B, (D,) H, W, C], labels [B, (D,) H, W]: W is the labels' last axis, H the one
  before it, for slices and patches alike.
  """
  flips = tf.random.stateless_uniform([2], seed=seed) < 0.5
  width, height = labels.shape.rank - 1, labels.shape.rank - 2
  images = tf.where(flips[0], tf.reverse(images, axis=[width]), images)
  labels = tf.where(flips[0], tf.reverse(labels, axis=[width]), labels)
  images = tf.where(flips[1], tf.reverse(images, axis=[height]), images)
  labels = tf.where(flips[1], tf.reverse(labels, axis=[height]), labels)
  scale_shift = tf.random.stateless_uniform([2], seed=seed + 1, minval=-0.1, maxval=0.1)
  images = images * (1.0 + scale_shift[0]) + scale_shift[1]
  return images, labels


def unpaired_batches(prepared: PreparedDataset, modalities: Sequence[str], *,
                     batch_size: int, seed: int, start_step: int = 0,
                     augment: bool = False, labelled_only: bool = True,
                     input_slices: int = 1,
                     patients: Optional[Mapping[str, Sequence[str]]] = None,
                     patch_depth: Optional[int] = None) -> tf.data.Dataset:
  """Zipped independent streams of the train split: {modality: (images, labels)}.

  Args:
    prepared: the opened PREP folder.
    modalities: modality keys, one stream each.
    batch_size: slices per modality per step (the paper: 8 of each).
    seed: base seed; each modality's stream gets its own seed derived from it.
    start_step: the first step's index (resume).
    augment: see `modality_batches`.
    labelled_only: train on slices with some foreground only.
    input_slices: channels per input, 1 or 3 (`PreparedVolume.inputs`).
    patients: {modality: the training patients to draw from} (label scarcity,
      csa_tf/data/label_scarcity.py); None, or a modality not in it: every one.
    patch_depth: None for slices; else 3D patches of that many consecutive slices
      (csa_tf/data/patches.py; input_slices must then be 1).

  Returns:
    A dataset whose elements are dicts modality -> (images [B, H, W, input_slices]
    float32, labels [B, H, W] int32), or with patch_depth (images
    [B, patch_depth, H, W, 1], labels [B, patch_depth, H, W]).
  """
  streams = {}
  for index, modality in enumerate(modalities):
    own_patients = None if patients is None else patients.get(modality)
    stream_kwargs = dict(batch_size=batch_size, start_step=start_step, augment=augment,
                         seed=seed + _MODALITY_SEED_STRIDE * (index + 1))
    if patch_depth is None:
      images, labels = prepared.train_slices(
          modality, labelled_only=labelled_only, input_slices=input_slices,
          patients=own_patients)
      streams[modality] = modality_batches(images, labels, **stream_kwargs)
    else:
      slices, labels, starts = patches.train_patches(
          prepared, modality, depth=patch_depth, labelled_only=labelled_only,
          patients=own_patients)
      streams[modality] = modality_patch_batches(slices, labels, starts,
                                                 depth=patch_depth, **stream_kwargs)
  return tf.data.Dataset.zip(streams)


def element_spec_shapes(dataset: tf.data.Dataset) -> Dict[str, Tuple]:
  """{modality: (image shape, label shape)} of a dataset from `unpaired_batches`."""
  return {m: (spec[0].shape, spec[1].shape) for m, spec in dataset.element_spec.items()}
