"""NaN and Inf voxels in a volume: refused, or repaired and counted (`repair_non_finite`).

The MS-CMRSeg 2019 challenge copy holds NaN voxels in its T2 images and in some labels
(REFERENCE.md section 5b; others' scripts apply `nan_to_num`). A few such voxels are an
export slip that a repair undoes; many mean a broken file, which is refused.
"""
from typing import Tuple

import numpy as np

from csa_tf.errors import CsaInputError, param

# What a reader does with non-finite voxels: the choices of `--non_finite`.
REPAIR = "repair"
REFUSE = "refuse"
NON_FINITE_POLICIES = (REPAIR, REFUSE)
# Above this fraction of a volume's voxels the file is corrupt, not slipped: refused.
MAX_REPAIRED_FRACTION = 0.01
# The preparation commands' --non_finite help.
FLAG_HELP = ("NaN/Inf voxels: repair (images: the lowest finite value of the slice; "
             "labels: background; reported per file; a file above 1% is refused) or "
             "refuse any.")


def check_policy(non_finite: str) -> None:
  """Raises CsaInputError (naming the non_finite option) unless it is a known policy."""
  if non_finite not in NON_FINITE_POLICIES:
    raise CsaInputError(f"{param('non_finite', non_finite)}: expected one of "
                        f"{', '.join(NON_FINITE_POLICIES)}")


def repair_non_finite(data: np.ndarray, *, kind: str, slice_axis: int,
                      path: str) -> Tuple[np.ndarray, int]:
  """Replaces a volume's NaN/Inf voxels; returns (repaired data, how many were replaced).

  Images: each non-finite voxel gets the lowest finite value of its slice (the stack's
  slice along `slice_axis`; background, like `nan_to_num`'s 0 for a magnitude image,
  without inventing a value outside the slice's range); a slice with no finite voxel
  gets the volume's lowest finite value. Labels: background (0), as `nan_to_num` does.

  Args:
    data: the voxel array [X, Y, Z], float (an integer array has no such voxels).
    kind: "image" or "label".
    slice_axis: the array axis the volume's slices stack along (images only).
    path: the file, for the message.

  Returns:
    (data, count): data itself when count is 0, otherwise a repaired copy.

  Raises:
    CsaInputError: naming the file, the count and the percentage, when more than
      MAX_REPAIRED_FRACTION of the voxels are non-finite (or all of them are).
  """
  if not np.issubdtype(data.dtype, np.floating):
    return data, 0
  finite = np.isfinite(data)
  count = int(data.size - np.count_nonzero(finite))
  if count == 0:
    return data, 0
  if count > MAX_REPAIRED_FRACTION * data.size or count == data.size:
    raise CsaInputError(
        f"{path}: {count} of {data.size} voxels ({100 * count / data.size:.2f}%) are "
        f"non-finite (NaN/Inf), more than {100 * MAX_REPAIRED_FRACTION:g}%: refused as "
        f"corrupt ({param('non_finite', REPAIR)} repairs up to "
        f"{100 * MAX_REPAIRED_FRACTION:g}%)")
  if kind == "label":
    return np.where(finite, data, 0).astype(data.dtype), count
  repaired = np.array(data, copy=True)
  slices, ok = np.moveaxis(repaired, slice_axis, 0), np.moveaxis(finite, slice_axis, 0)
  lowest = float(data[finite].min())
  for index in np.flatnonzero(~ok.reshape(len(ok), -1).all(axis=1)):
    values = slices[index][ok[index]]
    slices[index][~ok[index]] = values.min() if values.size else lowest
  return repaired, count


def refused_message(path: str, count: int, kind: str) -> str:
  """The one line of `--non_finite=refuse` (the message csa_tf has always given)."""
  if kind == "label":
    return f"{path}: label volume holds non-integer or non-finite values"
  return f"{path}: {count} non-finite (NaN/Inf) voxels in the image"
