"""From a 3D volume to the network's 2D slices and back (REFERENCE.md section 5).

A volume is reoriented to a standard array layout [slice, row, col], each slice is
resampled in-plane where the PREP asks for one spacing (MM-WHS, `--in_plane_spacing`),
cut with one fixed crop_size x crop_size box (padded where the image is smaller), and
slices are z-scored one by one. `VolumeGeometry` records every step so that a prediction
on the cropped slices can be pasted back into the original voxel grid (`from_slices`).
"""
import dataclasses
from typing import Optional, Tuple

import numpy as np
from nibabel import orientations

# MM-WHS: coronal slices from the header's orientation. In the standard array the slice
# index increases towards anterior, rows towards inferior and columns towards the
# patient's left: a coronal slice shows the patient head-up in radiological convention
# (patient right on the image's left).
CORONAL_AXCODES = ("A", "I", "L")
# How a PREP turned its volumes into slices (prep_meta.json settings "orientation"):
# from the header, or, for MS-CMRSeg PREPs made before headers were read, as stored.
ORIENTATION_HEADER = "header"
ORIENTATION_STORED = "stored"


@dataclasses.dataclass(frozen=True)
class VolumeGeometry:
  """How a volume's cropped slices relate to its original voxel grid.

  Attributes:
    original_shape: the volume's array shape as read from disk.
    ornt: nibabel orientation transform [3, 2] from the original array to the standard
      [slice, row, col] array (ornt[i] = [output axis of input axis i, flip]).
    crop_origin: (row, col) of the crop box's top-left corner in the standard slice;
      negative or past the edge where the box is padded.
    crop_size: the box's side in pixels.
    zoom: (row, col) in-plane resampling factor, network-grid pixels per original pixel
      of the standard slice (original spacing / network spacing); (1, 1): none, the
      slices are cut from the original grid (every PREP before MM-WHS resampling).
      The crop origin is on the resampled grid.
  """
  original_shape: Tuple[int, int, int]
  ornt: np.ndarray
  crop_origin: Tuple[int, int]
  crop_size: int
  zoom: Tuple[float, float] = (1.0, 1.0)

  @property
  def standard_shape(self) -> Tuple[int, int, int]:
    shape = [0, 0, 0]
    for axis, (out_axis, _) in enumerate(self.ornt):
      shape[int(out_axis)] = self.original_shape[axis]
    return tuple(shape)

  @property
  def resampled(self) -> bool:
    return tuple(self.zoom) != (1.0, 1.0)

  @property
  def network_grid_shape(self) -> Tuple[int, int, int]:
    """[S, H, W] of the standard slices resampled in-plane (standard_shape if not)."""
    num_slices, height, width = self.standard_shape
    if not self.resampled:
      return num_slices, height, width
    return (num_slices, _resampled_size(height, self.zoom[0]),
            _resampled_size(width, self.zoom[1]))

  def to_standard(self, volume: np.ndarray) -> np.ndarray:
    """Reorients an original-grid array to [slice, row, col].

    Returns a view where the reorientation is a transpose/flip (always, for the
    orientations used here), so cropping a CT-sized volume copies only the crop.
    """
    return orientations.apply_orientation(volume, self.ornt)

  def resample(self, standard: np.ndarray, order: int) -> np.ndarray:
    """Standard [S, H, W] -> the network grid `network_grid_shape` (in-plane only).

    order 1: linear, for images (float32 out); order 0: nearest, for labels (dtype
    kept). The network pixel j of an axis with factor z samples the standard
    coordinate (j + 0.5) / z - 0.5 (pixel centres, both grids spanning the same mm),
    clamped to the edge pixels: scipy.ndimage.map_coordinates(order=1, mode="nearest")
    at those coordinates. Returns `standard` itself when there is no resampling.
    """
    if not self.resampled:
      return standard
    _, height, width = self.network_grid_shape
    if order == 0:
      rows = _nearest_taps(height, standard.shape[1], self.zoom[0])
      cols = _nearest_taps(width, standard.shape[2], self.zoom[1])
      return standard[:, rows][:, :, cols]
    if order != 1:
      raise ValueError(f"order must be 0 or 1, got {order}")
    out = _linear_along(standard.astype(np.float32, copy=False), 1,
                        *_linear_taps(height, standard.shape[1], self.zoom[0]))
    return _linear_along(out, 2, *_linear_taps(width, standard.shape[2], self.zoom[1]))

  def crop(self, standard: np.ndarray, pad_value=0) -> np.ndarray:
    """Cuts the crop box out of every slice of a network-grid array [S, H, W]."""
    return crop_slices(standard, self.crop_origin, self.crop_size, pad_value)

  def to_slices(self, volume: np.ndarray, pad_value=0, order: int = 0) -> np.ndarray:
    """Original-grid array -> cropped slices [S, crop_size, crop_size].

    Resampled (`resample`, `order`) a few slices at a time, so that a CT-sized volume
    is never held whole as float32.
    """
    standard = self.to_standard(volume)
    if not self.resampled:
      return self.crop(standard, pad_value)
    return np.concatenate(
        [self.crop(self.resample(standard[k:k + _CHUNK], order), pad_value)
         for k in range(0, len(standard), _CHUNK)]
        or [np.zeros((0, self.crop_size, self.crop_size), standard.dtype)])

  def covers_image(self) -> bool:
    """True when the crop box holds every pixel of every network-grid slice."""
    _, height, width = self.network_grid_shape
    r0, c0 = self.crop_origin
    return (r0 <= 0 and c0 <= 0 and r0 + self.crop_size >= height
            and c0 + self.crop_size >= width)

  def image_mask(self) -> np.ndarray:
    """[crop_size, crop_size] bool: True where the box holds image pixels, not padding."""
    _, height, width = self.network_grid_shape
    return crop_slices(np.ones((1, height, width), dtype=bool), self.crop_origin,
                       self.crop_size, False)[0]

  def network_slices(self, image: np.ndarray) -> np.ndarray:
    """Original-grid image -> the network's input slices [S, crop_size, crop_size].

    The one normalisation of preparation and prediction alike: each cropped slice is
    z-scored with the mean and spread of its image pixels only (paper Sec. 3), so that
    padding, where the box is larger than the image, cannot shift the statistics.
    Padding holds the volume's minimum (air, background; 0 is mid-range for CT in HU)
    z-scored like the rest of its slice.
    """
    slices = self.to_slices(image, pad_value=float(image.min()), order=1)
    return zscore_slices(slices, valid=self.image_mask())

  def from_slices(self, slices: np.ndarray, fill_value=0) -> np.ndarray:
    """Cropped slices [S, crop_size, crop_size] -> an array on the original grid.

    Voxels outside the crop box get fill_value (background for labels). A resampled
    geometry brings labels back by nearest label: each original pixel takes the label
    of the network pixel its centre falls in (standard pixel i of an axis with factor
    z: network pixel floor((i + 0.5) z)). Nearest, not the argmax of linearly resampled
    class probabilities: it needs only the labels, so evaluation, prediction and
    figures share it without holding C probability maps on a CT's grid (C x 300 MB),
    and it is the exact inverse of the labels' preparation up to boundary pixels.
    """
    num_slices, height, width = self.network_grid_shape
    if slices.shape != (num_slices, self.crop_size, self.crop_size):
      raise ValueError(f"expected slices of shape "
                       f"{(num_slices, self.crop_size, self.crop_size)}, got {slices.shape}")
    standard = np.full((num_slices, height, width), fill_value, dtype=slices.dtype)
    r0, c0 = self.crop_origin
    rows = slice(max(r0, 0), min(r0 + self.crop_size, height))
    cols = slice(max(c0, 0), min(c0 + self.crop_size, width))
    standard[:, rows, cols] = slices[:, rows.start - r0:rows.stop - r0,
                                     cols.start - c0:cols.stop - c0]
    if self.resampled:
      _, original_height, original_width = self.standard_shape
      standard = standard[:, _back_taps(original_height, height, self.zoom[0])][
          :, :, _back_taps(original_width, width, self.zoom[1])]
    back = orientations.apply_orientation(standard, _invert(self.ornt))
    return np.ascontiguousarray(back)


# Slices resampled at a time by `VolumeGeometry.to_slices`: 32 CT slices of 512x512 are
# 34 MB as float32.
_CHUNK = 32


def _resampled_size(size: int, zoom: float) -> int:
  """Pixels of an axis of `size` pixels resampled by `zoom` (the same extent in mm)."""
  return max(1, int(round(size * zoom)))


def _source_coordinates(size_out: int, size_in: int, zoom: float) -> np.ndarray:
  """Input pixel coordinate of each output pixel centre, clamped to the input."""
  coords = (np.arange(size_out, dtype=np.float64) + 0.5) / zoom - 0.5
  return np.clip(coords, 0, size_in - 1)


def _nearest_taps(size_out: int, size_in: int, zoom: float) -> np.ndarray:
  return np.floor(_source_coordinates(size_out, size_in, zoom) + 0.5).astype(np.int64)


def _linear_taps(size_out: int, size_in: int, zoom: float):
  """(first index, second index, weight of the second) of linear interpolation."""
  coords = _source_coordinates(size_out, size_in, zoom)
  first = np.minimum(np.floor(coords).astype(np.int64), max(size_in - 2, 0))
  second = np.minimum(first + 1, size_in - 1)
  return first, second, (coords - first).astype(np.float32)


def _linear_along(array: np.ndarray, axis: int, first, second, weight) -> np.ndarray:
  shape = [1, 1, 1]
  shape[axis] = len(weight)
  weight = weight.reshape(shape)
  return (np.take(array, first, axis=axis) * (1 - weight)
          + np.take(array, second, axis=axis) * weight)


def _back_taps(size_original: int, size_network: int, zoom: float) -> np.ndarray:
  """Network pixel whose area holds each original pixel's centre (nearest label)."""
  taps = np.floor((np.arange(size_original, dtype=np.float64) + 0.5) * zoom)
  return np.clip(taps, 0, size_network - 1).astype(np.int64)


def standard_spacing(spacing, ornt: np.ndarray) -> Tuple[float, float, float]:
  """Voxel size in mm along the standard [slice, row, col] axes."""
  out = [0.0, 0.0, 0.0]
  for axis, (out_axis, _) in enumerate(np.asarray(ornt)):
    out[int(out_axis)] = float(spacing[axis])
  return tuple(out)


def in_plane_zoom(spacing, ornt: np.ndarray,
                  in_plane_spacing: Optional[float]) -> Tuple[float, float]:
  """(row, col) zoom that brings a volume's standard slices to `in_plane_spacing` mm.

  Args:
    spacing: the volume's voxel size in mm per original array axis.
    ornt: its transform to [slice, row, col].
    in_plane_spacing: the network grid's pixel size in mm; None: no resampling.
  """
  if in_plane_spacing is None:
    return (1.0, 1.0)
  _, row, col = standard_spacing(spacing, ornt)
  return (row / in_plane_spacing, col / in_plane_spacing)


def _invert(ornt: np.ndarray) -> np.ndarray:
  """The orientation transform that undoes `ornt`."""
  inverse = np.zeros_like(ornt, dtype=np.float64)
  for axis, (out_axis, flip) in enumerate(ornt):
    inverse[int(out_axis)] = [axis, flip]
  return inverse


def ornt_slice_axis(ornt: np.ndarray) -> int:
  """The original array axis that becomes the slice axis under `ornt`."""
  return int(np.flatnonzero(np.asarray(ornt)[:, 0] == 0)[0])


def slice_axis_ornt(slice_axis: int = 2) -> np.ndarray:
  """Transform that keeps the array's axes and moves `slice_axis` to the front.

  MS-CMRSeg stacks short-axis slices along array axis 2; the slices are used as stored.
  """
  others = [axis for axis in range(3) if axis != slice_axis]
  ornt = np.zeros((3, 2))
  ornt[slice_axis] = [0, 1]
  ornt[others[0]] = [1, 1]
  ornt[others[1]] = [2, 1]
  return ornt


def short_axis_ornt(affine: np.ndarray, slice_axis: int = 2) -> np.ndarray:
  """MS-CMRSeg: slices along `slice_axis` as stacked, in-plane axes from the header.

  The short-axis slices stay in their stacking order; each slice is turned so that its
  rows run along the in-plane array axis whose nearest world axis comes first (x before
  y before z) and both in-plane axes point along +world. A scan stored RAS and the same
  scan stored LPS give the same slices; a volume with an identity-like (RAS) header
  keeps its array layout, as `slice_axis_ornt` would.
  """
  world = orientations.io_orientation(affine)  # [array axis] -> [world axis, +-1]
  in_plane = sorted((axis for axis in range(3) if axis != slice_axis),
                    key=lambda axis: world[axis, 0])
  ornt = np.zeros((3, 2))
  ornt[slice_axis] = [0, 1]
  for out_axis, axis in enumerate(in_plane, start=1):
    ornt[axis] = [out_axis, world[axis, 1]]
  return ornt


def dataset_ornt(dataset: str, affine: np.ndarray, orientation: str) -> np.ndarray:
  """The array -> [slice, row, col] transform of a volume of `dataset`.

  Args:
    dataset: "mscmr" or "mmwhs".
    affine: the volume's header affine.
    orientation: ORIENTATION_HEADER, or ORIENTATION_STORED for MS-CMRSeg data prepared
      before csa_tf read MS-CMRSeg headers (slices as stored). MM-WHS is always read
      from its header.
  """
  if dataset != "mscmr":
    return header_ornt(affine)
  if orientation == ORIENTATION_STORED:
    return slice_axis_ornt(2)
  return short_axis_ornt(affine)


def header_ornt(affine: np.ndarray, axcodes=CORONAL_AXCODES) -> np.ndarray:
  """Transform from the array's header orientation to `axcodes` [slice, row, col]."""
  start = orientations.io_orientation(affine)
  return orientations.ornt_transform(start, orientations.axcodes2ornt(axcodes))


def enclosing_crop_origin(standard_labels: np.ndarray,
                          crop_size: int) -> Tuple[Tuple[int, int], bool]:
  """The top-left corner of one crop box that encloses every foreground voxel.

  Args:
    standard_labels: class-index labels [S, H, W]; > 0 is foreground.
    crop_size: the box side.

  Returns:
    ((row, col), fits): the box is centred on the foreground's in-plane bounding box over
    all slices, kept inside the image where the image is at least crop_size wide, and
    centred on the image where it is smaller (then padded). `fits` is False when the
    foreground is wider than the box, which then cuts it symmetrically.
  """
  _, height, width = standard_labels.shape
  foreground = standard_labels > 0
  if foreground.any():
    rows = np.flatnonzero(foreground.any(axis=(0, 2)))
    cols = np.flatnonzero(foreground.any(axis=(0, 1)))
    bounds = ((rows[0], rows[-1]), (cols[0], cols[-1]))
  else:
    bounds = ((0, height - 1), (0, width - 1))
  origin = []
  fits = True
  for (low, high), extent in zip(bounds, (height, width)):
    size = high - low + 1
    fits &= size <= crop_size
    start = (low + high + 1) // 2 - crop_size // 2
    if extent >= crop_size:
      start = min(max(start, 0), extent - crop_size)
      if size <= crop_size:
        # Clamping to the image can never cut the foreground, which lies inside it.
        start = min(max(start, high + 1 - crop_size), low)
    else:
      start = -((crop_size - extent) // 2)
    origin.append(int(start))
  return (origin[0], origin[1]), bool(fits)


def crop_slices(standard: np.ndarray, origin: Tuple[int, int], crop_size: int,
                pad_value=0) -> np.ndarray:
  """Cuts [S, crop, crop] at `origin` from [S, H, W], padding outside with pad_value."""
  num_slices, height, width = standard.shape
  out = np.full((num_slices, crop_size, crop_size), pad_value, dtype=standard.dtype)
  r0, c0 = origin
  rows = slice(max(r0, 0), min(r0 + crop_size, height))
  cols = slice(max(c0, 0), min(c0 + crop_size, width))
  if rows.stop > rows.start and cols.stop > cols.start:
    out[:, rows.start - r0:rows.stop - r0, cols.start - c0:cols.stop - c0] = (
        standard[:, rows, cols])
  return out


def zscore_slices(slices: np.ndarray, eps: float = 1e-6,
                  valid: Optional[np.ndarray] = None) -> np.ndarray:
  """Z-scores each 2D slice of [S, H, W] on its own (paper Sec. 3, preprocessing).

  Args:
    slices: [S, H, W].
    eps: a spread at or below it counts as none.
    valid: [H, W] bool, the pixels whose mean and spread are used (the image, not the
      padding); None: all. Every pixel is then shifted and scaled by them.

  A constant slice has no spread to divide by; it becomes all zeros instead of NaN.
  """
  slices = slices.astype(np.float32)
  if valid is None or valid.all():
    pixels = slices
  else:
    pixels = slices[:, valid][:, :, None]  # [S, n, 1]: the image pixels of each slice
  mean = pixels.mean(axis=(1, 2), keepdims=True)
  std = pixels.std(axis=(1, 2), keepdims=True)
  # Constancy is tested exactly: float32 rounding of a constant slice's mean can leave
  # a std of one ulp of the value (2.4e-4 for a slice of 3000.7), which would turn the
  # slice into all +1 or -1 instead of zeros.
  varies = (pixels.max(axis=(1, 2), keepdims=True)
            > pixels.min(axis=(1, 2), keepdims=True))
  spread = varies & (std > eps)
  safe_std = np.where(spread, std, 1.0)
  return np.where(spread, (slices - mean) / safe_std, 0.0).astype(np.float32)
