"""One in-plane spacing per modality for MM-WHS (`--in_plane_spacing`; REFERENCE.md 5b).

MM-WHS CT is 512x512 at 0.28-0.59 mm: the heart spans more than 256 pixels, so a
256-pixel box on the original grid cuts it. The community protocol (PnP-AdaNet/SIFA)
resamples the heart region to 256x256; here every coronal slice of a modality is
resampled to one spacing (csa_tf.data.slicing.VolumeGeometry.zoom) before cropping.

- "auto": the finest spacing at which every *training* heart of the modality fits the
  crop box with `margin_pixels` free on each side (the test split is not looked at).
  The heart is the annotated region csa_tf.data.heart_region finds (stray islands
  excluded); its extent is its in-plane bounding box over all coronal slices, in
  pixels times the pixel size, per row and column axis.
- a number: that spacing in mm.
- "native": no resampling (each volume's own grid, as PREPs were made before).
"""
import math
from typing import Iterable, Optional, Tuple, Union

import numpy as np

from csa_tf.errors import CsaInputError, param
from csa_tf.data.slicing import VolumeGeometry, standard_spacing

AUTO = "auto"
NATIVE = "native"
FLAG_HELP = ("In-plane pixel size (mm) the coronal slices are resampled to, per modality:"
             " auto (the finest at which every training heart fits the crop box with "
             "crop_size/32 pixels to spare on each side), a number in mm, or native "
             "(no resampling).")


def margin_pixels(crop_size: int) -> int:
  """Free pixels left on each side of the largest training heart by "auto": crop_size/32
  (8 of 256), so that nearest-label resampling (+-1 pixel) never cuts it."""
  return max(1, crop_size // 32)


def parse(value: Union[str, float, None]) -> Union[str, float]:
  """AUTO, NATIVE or a positive spacing in mm from the flag's text.

  Raises:
    CsaInputError: anything else, naming the flag.
  """
  if value in (AUTO, NATIVE):
    return value
  try:
    spacing = float(value)
  except (TypeError, ValueError):
    spacing = float("nan")
  if not (math.isfinite(spacing) and spacing > 0):
    raise CsaInputError(f"{param('in_plane_spacing', value)}: must be auto, native or a "
                        "positive pixel size in mm")
  return spacing


def heart_extent_mm(heart: np.ndarray, spacing, ornt: np.ndarray) -> Tuple[float, float]:
  """(rows, cols) extent in mm of a label's foreground in its standard slices.

  Args:
    heart: class indices on the original grid, stray islands already removed; > 0 is
      the heart.
    spacing: voxel size in mm per original array axis.
    ornt: the transform to [slice, row, col].
  """
  standard = VolumeGeometry(tuple(heart.shape), ornt, (0, 0), 8).to_standard(heart) > 0
  if not standard.any():
    return (0.0, 0.0)
  _, row_mm, col_mm = standard_spacing(spacing, ornt)
  rows = np.flatnonzero(standard.any(axis=(0, 2)))
  cols = np.flatnonzero(standard.any(axis=(0, 1)))
  return ((rows[-1] - rows[0] + 1) * row_mm, (cols[-1] - cols[0] + 1) * col_mm)


def auto_spacing(extents_mm: Iterable[Tuple[float, float]], crop_size: int) -> float:
  """The finest spacing (mm, rounded up to 0.001) at which every extent fits the box.

  Every heart of extent e mm spans at most e / s + 1 pixels at spacing s after
  nearest-label resampling; s = max(e) / (crop_size - 2 margin) leaves the margin.

  Raises:
    ValueError: no extents.
  """
  largest = max((max(e) for e in extents_mm), default=None)
  if largest is None:
    raise ValueError("no training hearts to choose a spacing from")
  usable = crop_size - 2 * margin_pixels(crop_size)
  return math.ceil(largest / usable * 1000 - 1e-9) / 1000


def resolved(setting: Union[str, float], auto: Optional[float]) -> Optional[float]:
  """The spacing to resample to (None: native) from a parsed setting."""
  if setting == NATIVE:
    return None
  if setting == AUTO:
    return auto
  return float(setting)
