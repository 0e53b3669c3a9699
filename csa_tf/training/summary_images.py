"""TensorBoard images of a training step: segmentation overlays and affinity heatmaps.

Every --image_summary_every steps the trainer writes, from the step's own forward pass
(training mode: batch statistics and dropout, before the step's update):

- `segmentation/<modality>`: the first slice of the modality's batch, three panels left
  to right: the input, the ground truth and the prediction, classes colour-coded
  (`CLASS_COLOURS`) and blended on the grey image;
- `affinity_<l>_<k>/<class>`: the class-specific affinity matrix (paper Eq. 3, rows:
  layer l's channels, columns: layer k's) of the first CSA layer pair, one panel per
  modality left to right in --modalities order, on one colour scale per class (blue
  negative, white 0, red positive) so that the modalities can be compared; the CSA loss
  pulls them together.

The image making is plain numpy (float RGB in [0, 1]); only `step_outputs` and
`write_image_summaries` touch TensorFlow.
"""
import math
from typing import Dict, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from csa_tf.configs import datasets
from csa_tf import losses
from csa_tf.configs.train_config import TrainConfig
from csa_tf.losses import BatchSum

# RGB in [0, 1] of classes 1, 2, ... (background is left grey): red, green, blue as the
# paper's figures colour LV, myo, RV; then yellow (MM-WHS' AA), and more for other data.
CLASS_COLOURS = np.array([
    [0.90, 0.10, 0.10], [0.10, 0.80, 0.20], [0.15, 0.35, 0.95], [0.95, 0.85, 0.10],
    [0.85, 0.20, 0.85], [0.10, 0.85, 0.85], [1.00, 0.55, 0.10], [0.55, 0.35, 0.15],
], dtype=np.float32)
# Overlay opacity of the class colours on the grey image.
OVERLAY_ALPHA = 0.5
# Slices and matrices are enlarged by whole factors to at least this many pixels, so
# that a 32 x 32 crop or an 8 x 16 affinity matrix is visible in TensorBoard.
MIN_PANEL_PIXELS = 128
_GAP = 4


def class_colour(class_index: int) -> np.ndarray:
  """RGB of a foreground class (1-based), cycling through CLASS_COLOURS."""
  return CLASS_COLOURS[(class_index - 1) % len(CLASS_COLOURS)]


def grey_to_unit(image: np.ndarray) -> np.ndarray:
  """Scales a z-scored slice [H, W] to [0, 1] between its 1st and 99th percentiles."""
  image = np.asarray(image, np.float32)
  low, high = np.percentile(image, [1, 99]) if image.size else (0.0, 1.0)
  if not high > low:
    return np.zeros_like(image)
  return np.clip((image - low) / (high - low), 0.0, 1.0)


def overlay(image: np.ndarray, labels: Optional[np.ndarray], num_classes: int, *,
            alpha: float = OVERLAY_ALPHA) -> np.ndarray:
  """Class colours blended on the grey image: RGB [H, W, 3] float32 in [0, 1].

  Args:
    image: z-scored slice [H, W].
    labels: class indices [H, W] (None: the grey image alone).
    num_classes: C, background included (class 0 stays grey).
    alpha: opacity of the class colours.
  """
  grey = grey_to_unit(image)
  rgb = np.repeat(grey[..., None], 3, axis=-1)
  if labels is None:
    return rgb
  labels = np.asarray(labels)
  for class_index in range(1, num_classes):
    inside = labels == class_index
    rgb[inside] = (1 - alpha) * rgb[inside] + alpha * class_colour(class_index)
  return rgb.astype(np.float32)


def diverging_heatmap(matrix: np.ndarray, scale: Optional[float] = None) -> np.ndarray:
  """A matrix as RGB [M, N, 3] in [0, 1]: blue for -scale, white for 0, red for +scale.

  scale defaults to the largest absolute value (1 for an all-zero matrix).
  """
  matrix = np.asarray(matrix, np.float32)
  if scale is None:
    scale = float(np.max(np.abs(matrix))) if matrix.size else 1.0
  if not scale > 0:
    scale = 1.0
  t = np.clip(matrix / scale, -1.0, 1.0)[..., None]
  white = np.ones(3, np.float32)
  red = np.array([0.80, 0.10, 0.10], np.float32)
  blue = np.array([0.10, 0.25, 0.80], np.float32)
  rgb = np.where(t >= 0, white + t * (red - white), white - t * (blue - white))
  return rgb.astype(np.float32)


def enlarge(rgb: np.ndarray, min_pixels: int = MIN_PANEL_PIXELS) -> np.ndarray:
  """Nearest-neighbour enlargement by a whole factor to at least min_pixels a side."""
  factor = max(1, math.ceil(min_pixels / max(1, min(rgb.shape[:2]))))
  return np.repeat(np.repeat(rgb, factor, axis=0), factor, axis=1)


def side_by_side(panels: Sequence[np.ndarray], gap: int = _GAP) -> np.ndarray:
  """RGB panels left to right on a white background, separated by `gap` pixels."""
  height = max(p.shape[0] for p in panels)
  width = sum(p.shape[1] for p in panels) + gap * (len(panels) - 1)
  out = np.ones((height, width, 3), np.float32)
  x = 0
  for panel in panels:
    out[:panel.shape[0], x:x + panel.shape[1]] = panel
    x += panel.shape[1] + gap
  return out


def segmentation_panel(image: np.ndarray, labels: np.ndarray, prediction: np.ndarray,
                       num_classes: int) -> np.ndarray:
  """Input | ground truth | prediction of one slice, RGB in [0, 1]."""
  panels = [overlay(image, None, num_classes), overlay(image, labels, num_classes),
            overlay(image, prediction, num_classes)]
  return side_by_side([enlarge(p) for p in panels])


def affinity_panels(affinities: Mapping[str, np.ndarray]) -> np.ndarray:
  """One class's affinity matrices [M, N] of several modalities on one colour scale."""
  scale = max(float(np.max(np.abs(a))) for a in affinities.values())
  return side_by_side([enlarge(diverging_heatmap(a, scale))
                       for a in affinities.values()])


def step_outputs(batches, logits, features, config: TrainConfig, *,
                 batch_sum: BatchSum = None) -> Dict[str, Dict[str, tf.Tensor]]:
  """The tensors the image summaries need, from one step's forward pass.

  Args:
    batches: {modality: (images [B, H, W, C_in], labels [B, H, W])}.
    logits: {modality: [B, H, W, C]}.
    features: {modality: {tap: [B, h, w, channels]}} holding the first CSA pair's taps
      (empty: no affinities).
    config: the run's config.
    batch_sum: the losses' batch sum (all-reduce under tf.distribute), so that the
      affinities are those of the global batch, as in the CSA loss.

  Returns:
    {modality: {"image": [H, W], "labels": [H, W], "prediction": [H, W] (first slice;
    of a 3D patch its centre slice), "affinity": [C, M, N] (when features are given)}}.
  """
  out = {}
  for modality in config.modalities:
    images, labels = batches[modality]
    first_labels, first_logits = labels[0], logits[modality][0]
    if labels.shape.rank == 4:
      # A 3D patch [B, D, H, W, 1]: show its centre slice.
      centre = labels.shape[1] // 2
      image = images[0, centre, :, :, 0]
      first_labels, first_logits = first_labels[centre], first_logits[centre]
    else:
      middle = images.shape[-1] // 2  # the centre slice of stacked adjacent slices
      image = images[0, :, :, middle]
    entry = {"image": tf.cast(image, tf.float32),
             "labels": tf.cast(first_labels, tf.int32),
             "prediction": tf.argmax(first_logits, axis=-1, output_type=tf.int32)}
    if features and config.csa_pairs:
      layer_l, layer_k = config.csa_pairs[0]
      entry["affinity"], _ = losses.class_affinity_matrices(
          features[modality][layer_l], features[modality][layer_k], labels,
          num_classes=config.num_classes, area_norm=config.csa_area_norm,
          affinity=config.csa_affinity, batch_sum=batch_sum)
    out[modality] = entry
  return out


def write_image_summaries(outputs, config: TrainConfig) -> None:
  """Writes the images of `step_outputs` to the default summary writer (step set)."""
  num_classes = config.num_classes
  class_names = datasets.get_spec(config.dataset).class_names
  values = tf.nest.map_structure(np.asarray, outputs)
  for modality in config.modalities:
    entry = values[modality]
    panel = segmentation_panel(entry["image"], entry["labels"], entry["prediction"],
                               num_classes)
    tf.summary.image(f"segmentation/{modality}", panel[None],
                     description="input | ground truth | prediction (first slice of "
                     "the step's batch, training mode)")
  if all("affinity" in values[m] for m in config.modalities):
    layer_l, layer_k = config.csa_pairs[0]
    for class_index in range(num_classes):
      name = class_names[class_index] if class_index < len(class_names) else class_index
      panel = affinity_panels({m: values[m]["affinity"][class_index]
                               for m in config.modalities})
      tf.summary.image(
          f"affinity_{layer_l}_{layer_k}/{name}", panel[None],
          description=f"class-specific affinity of {layer_l} (rows) and {layer_k} "
          f"(columns), modalities left to right: {', '.join(config.modalities)}; "
          "blue < 0 < red on one scale per class")
