"""Finds the test slices of the PnP-AdaNet/SIFA MM-WHS release among its training slices.

The release's training folders hold slices of its own test volumes: its maintainer says
the validation slices are the 20% test data (SIFA issue #55), and its MR train+val
slices (9,600 + 2,400) include the MR test volumes 1007, 1009, 1018 and 1019 (SIFA #16,
#44). Files are named `*_slice<N>.tfrecords`, so only the pixels can tell them apart.

A training slice is a test slice when, both z-scored on their own (what PREP stores and
the network sees), every pixel agrees within `ATOL` in one of the eight in-plane
orientations of `ORIENTATIONS`. The release's TFRecords and its npz test volumes differ
by a flip of both in-plane axes (SIFA's evaluate.py; REFERENCE.md section 5); the other
six cost nothing and catch copies turned otherwise. Slices without spread are never
matched: z-scoring turns a constant slice into zeros whatever it held, so it carries no
image of anyone.

Speed: a slice's signature, the sorted means of its 4x4 grid of blocks, does not change
under any orientation (they only permute the blocks), and two slices that agree within
ATOL at every pixel have signatures within ATOL of each other. Test slices sorted by
their largest block mean give each training slice a window by binary search, the whole
signature narrows it to the true match (or none), and a strided subsample is compared
before every pixel.
"""
import dataclasses
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np

# Largest pixel difference, in units of each slice's standard deviation, of two slices
# that are one: float32 rounding of the same values (float64 -> float32, a different
# summation order in the z-score) moves a z-score by ~1e-6; two different slices of a
# scan never agree this closely at all 65,536 pixels.
ATOL = 1e-4

# How a training slice relates to the test slice it equals, the test slice taken in the
# TFRecords' orientation (PREP's test volumes: the npz flips undone): train = f(test).
ORIENTATIONS: Dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "as_tfrecords": lambda s: s,
    "as_npz": lambda s: s[::-1, ::-1],  # Flipped on both axes, as the npz test volumes.
    "flipped_rows": lambda s: s[::-1],
    "flipped_cols": lambda s: s[:, ::-1],
    "transposed": lambda s: s.T,
    "transposed_as_npz": lambda s: s.T[::-1, ::-1],
    "transposed_flipped_rows": lambda s: s.T[::-1],
    "transposed_flipped_cols": lambda s: s.T[:, ::-1],
}
_STRIDE = 16  # The subsample compared first: every 16th row and column.
_GRID = 4  # The signature's blocks per side.


@dataclasses.dataclass(frozen=True)
class LeakedSlice:
  """A training slice found in a test volume.

  Attributes:
    test_id: the test volume's patient id (e.g. "mr_1007").
    test_slice: the slice's index in that volume's [S, H, W] slices.
    orientation: the key of ORIENTATIONS: training slice = ORIENTATIONS[key](test slice).
  """
  test_id: str
  test_slice: int
  orientation: str


def _signature(slice_: np.ndarray) -> np.ndarray:
  """The sorted means of the 4x4 grid of blocks of a [H, W] slice (H, W multiples of 4).

  Every orientation permutes the blocks, so the sorted means do not change; slices
  within atol at every pixel have block means within atol, and sorting keeps that.
  """
  height, width = slice_.shape
  blocks = slice_.reshape(_GRID, height // _GRID, _GRID, width // _GRID)
  return np.sort(blocks.mean(axis=(1, 3), dtype=np.float64).ravel())


def _has_spread(slice_: np.ndarray) -> bool:
  return bool(slice_.max() > slice_.min())


class LeakIndex:
  """The z-scored slices of a modality's test volumes, for `find`.

  Args:
    volumes: test patient id -> its z-scored slices [S, H, W] float32, in the
      TFRecords' orientation (`PreparedVolume.image` of a test volume); H and W
      multiples of 4 (the release's are 256). Kept by reference, not copied.
    atol: the largest pixel difference of two slices that count as one.

  Raises:
    ValueError: a slice size is not a multiple of 4.
  """

  def __init__(self, volumes: Mapping[str, np.ndarray], atol: float = ATOL):
    self.atol = atol
    self._slices: List[Tuple[str, int, np.ndarray]] = []
    for test_id, slices in sorted(volumes.items()):
      if slices.shape[1] % _GRID or slices.shape[2] % _GRID:
        raise ValueError(f"{test_id}: slices of {slices.shape[1:]} are not multiples of "
                         f"{_GRID}")
      self._slices += [(test_id, k, s) for k, s in enumerate(slices) if _has_spread(s)]
    signatures = np.array([_signature(s) for _, _, s in self._slices],
                          dtype=np.float64).reshape(-1, _GRID * _GRID)
    # Sorted by the largest block mean, which binary search narrows down first.
    self._order = np.argsort(signatures[:, -1], kind="stable")
    self._signatures = signatures[self._order]

  def __len__(self) -> int:
    """The number of test slices that can be matched (those with spread)."""
    return len(self._slices)

  def find(self, slice_: np.ndarray) -> Optional[LeakedSlice]:
    """The test slice that z-scored [H, W] `slice_` equals, or None.

    Where several would (two equal test slices), the lowest (test id, slice index).
    """
    if (not self._slices or slice_.shape[0] % _GRID or slice_.shape[1] % _GRID
        or not _has_spread(slice_)):
      return None
    signature = _signature(slice_)
    # Widened by 1% for float64 rounding of the means (far below atol).
    window = self.atol * 1.01
    low = np.searchsorted(self._signatures[:, -1], signature[-1] - window, side="left")
    high = np.searchsorted(self._signatures[:, -1], signature[-1] + window, side="right")
    near = np.abs(self._signatures[low:high] - signature).max(axis=1) <= window
    coarse = slice_[::_STRIDE, ::_STRIDE]
    found = []
    for position in self._order[low:high][near]:
      test_id, test_slice, test = self._slices[position]
      for key, orient in ORIENTATIONS.items():
        view = orient(test)
        if view.shape != slice_.shape:
          continue
        if (np.abs(view[::_STRIDE, ::_STRIDE] - coarse).max() <= self.atol
            and np.abs(view - slice_).max() <= self.atol):
          found.append(LeakedSlice(test_id, test_slice, key))
          break
    return min(found, key=lambda m: (m.test_id, m.test_slice)) if found else None
