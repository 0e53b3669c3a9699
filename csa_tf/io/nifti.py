"""Reading and writing NIfTI volumes with checks that turn bad files into one clear line.

Every command that reads a user's NIfTI goes through `read_volume`, so a truncated
.nii.gz, a file that is not NIfTI, a 4D image or NaN voxels all produce the same kind of
`CsaInputError` naming the file and the problem (NaN/Inf voxels are repaired instead when
the caller asks: csa_tf/io/non_finite.py).
"""
import dataclasses
import gzip
import os
import zlib
from typing import Callable, Optional, Tuple, Union

import nibabel as nib
import numpy as np

from csa_tf.errors import CsaInputError
from csa_tf.io import non_finite as non_finite_lib
from csa_tf.io.atomic import write_atomically


@dataclasses.dataclass
class Volume:
  """A 3D NIfTI volume as read from disk.

  Attributes:
    data: the voxel array [X, Y, Z] (float32 for images, an integer type for labels).
    affine: the 4x4 voxel-to-world (RAS mm) matrix.
    spacing: voxel size in mm per array axis, from the header zooms.
    header: the NIfTI header, kept so that predictions can be written with it.
    path: where the volume was read from.
    non_finite_repaired: how many NaN/Inf voxels reading replaced (non_finite="repair").
  """
  data: np.ndarray
  affine: np.ndarray
  spacing: Tuple[float, float, float]
  header: nib.Nifti1Header
  path: str
  non_finite_repaired: int = 0


def read_volume(path: str, *, kind: str = "image",
                non_finite: str = non_finite_lib.REFUSE,
                slice_axis: Union[int, Callable[[np.ndarray], int]] = 2) -> Volume:
  """Reads a 3D NIfTI volume and validates it.

  Args:
    path: a .nii or .nii.gz file.
    kind: "image" (returned as float32, must be finite) or "label" (returned in the
      file's integer type, or int32 when stored as floats, which must be whole numbers).
    non_finite: "refuse" any NaN/Inf voxel, or "repair" up to 1% of the voxels
      (`non_finite.repair_non_finite`: images the lowest finite value of the slice,
      labels background), counted in `Volume.non_finite_repaired`.
    slice_axis: the array axis the slices stack along (MS-CMRSeg: 2), or a function of
      the header affine that returns it (MM-WHS' coronal axis); used to repair images.

  Returns:
    The volume. A 4D volume whose 4th axis has length 1 is squeezed to 3D.

  Raises:
    CsaInputError: the file is missing, unreadable, truncated, not NIfTI, not 3D, has
      non-finite voxels (refused, or above 1% when repairing) or non-integer values
      (labels).
  """
  if kind not in ("image", "label"):
    raise ValueError(f"kind must be 'image' or 'label', got {kind!r}")
  if non_finite not in non_finite_lib.NON_FINITE_POLICIES:
    raise ValueError(f"non_finite must be one of {non_finite_lib.NON_FINITE_POLICIES}, "
                     f"got {non_finite!r}")
  if os.path.isdir(path):
    raise CsaInputError(f"{path}: is a folder, expected a NIfTI file")
  if not os.path.isfile(path):
    raise CsaInputError(f"{path}: file not found")
  if not os.access(path, os.R_OK):
    # nibabel would report an unreadable file as one of unknown type.
    raise CsaInputError(f"{path}: permission denied (the file cannot be read)")
  try:
    img = nib.load(path)
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
      raise CsaInputError(f"{path}: not a NIfTI file ({type(img).__name__})")
    # Images straight to float32 (nibabel applies any scl_slope in float32): a CT-sized
    # volume never exists as float64. Labels keep the file's integer type.
    raw = np.asanyarray(img.dataobj, dtype=np.float32 if kind == "image" else None)
  except CsaInputError:
    raise
  except PermissionError:
    raise CsaInputError(f"{path}: permission denied (the file cannot be read)") from None
  except (EOFError, zlib.error, gzip.BadGzipFile,
          nib.filebasedimages.ImageFileError) as error:
    detail = _detail(error, path)
    if "not a gzip file" in detail:
      # A .gz name on something else (a CSV, a PNG, an uncompressed .nii).
      raise CsaInputError(f"{path}: not a NIfTI file (named .gz but not "
                          "gzip-compressed)") from None
    if isinstance(error, nib.filebasedimages.ImageFileError):
      if "Cannot work out file type" in detail:
        detail = "no readable NIfTI header: another format, or cut short"
      elif detail.startswith("Empty file"):
        detail = "empty file"
      raise CsaInputError(f"{path}: not a NIfTI file ({detail})") from None
    raise CsaInputError(f"{path}: truncated or corrupt gzip data ({detail})") from None
  except (OSError, ValueError) as error:
    detail = _detail(error, path)
    if detail.startswith("Expected") and "bytes" in detail:
      # nibabel's words for an uncompressed file cut short.
      raise CsaInputError(f"{path}: truncated file ({detail})") from None
    raise CsaInputError(f"{path}: cannot read NIfTI data ({detail})") from None
  if raw.ndim == 4 and raw.shape[3] == 1:
    raw = raw[..., 0]
  if raw.ndim != 3:
    raise CsaInputError(f"{path}: expected a 3D volume, got shape {tuple(raw.shape)}")
  if min(raw.shape) < 1:
    raise CsaInputError(f"{path}: empty volume of shape {tuple(raw.shape)}")
  zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
  if not all(np.isfinite(zooms)) or min(zooms) <= 0:
    raise CsaInputError(f"{path}: invalid voxel spacing {zooms} in the header")
  affine = np.asarray(img.affine, dtype=np.float64)
  if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
    raise CsaInputError(f"{path}: invalid (singular or non-finite) affine in the header")
  repaired = 0
  if np.issubdtype(raw.dtype, np.floating) and not np.isfinite(raw).all():
    if non_finite == non_finite_lib.REFUSE:
      bad = int(np.count_nonzero(~np.isfinite(raw)))
      raise CsaInputError(non_finite_lib.refused_message(path, bad, kind))
    axis = slice_axis(affine) if callable(slice_axis) else slice_axis
    raw, repaired = non_finite_lib.repair_non_finite(raw, kind=kind, slice_axis=axis,
                                                     path=path)
  if kind == "image" or np.issubdtype(raw.dtype, np.integer):
    data = raw
  else:
    if np.any(raw != np.round(raw)):
      raise CsaInputError(f"{path}: label volume holds non-integer or non-finite values")
    data = raw.astype(np.int32)
  return Volume(data=data, affine=affine, spacing=zooms, header=img.header.copy(),
                path=path, non_finite_repaired=repaired)


def check_not_blank(volume: Volume) -> None:
  """Refuses an image whose voxels all hold one value (a blank or failed export).

  Such a volume has nothing to segment or learn from: per-slice z-scoring turns it into
  zeros, so preparation would silently train on empty slices and prediction would
  return a meaningless mask.

  Raises:
    CsaInputError: naming the file and the value.
  """
  data = volume.data
  if data.size and data.min() == data.max():
    raise CsaInputError(f"{volume.path}: image is constant (every voxel is "
                        f"{float(data.flat[0]):g}): a blank scan or a failed export")


def write_label_volume(path: str, labels: np.ndarray, *, affine: np.ndarray,
                       header: Optional[nib.Nifti1Header] = None) -> None:
  """Writes an integer label volume atomically (temporary file, then rename).

  The header, when given, is copied so that the output carries the input's geometry;
  its data type is set to int16 (label values up to 850 fit).
  """
  out_header = header.copy() if header is not None else None
  img = nib.Nifti1Image(np.asarray(labels, dtype=np.int16), affine, header=out_header)
  img.set_data_dtype(np.int16)
  # Keep the input's scaling from rescaling our integer labels.
  img.header.set_slope_inter(1.0, 0.0)
  # nibabel encodes; atomic.py puts the file in place (its temporary keeps the .nii.gz
  # suffix, so nibabel compresses as for the final name).
  write_atomically(path, lambda tmp: nib.save(img, tmp))


def _detail(error: BaseException, path: str) -> str:
  """The error's first line without the path, which the message already starts with."""
  text = _first_line(error)
  for quoted in (f"'{path}'", f'"{path}"', path):
    text = text.replace(quoted, "the file")
  return text


def _first_line(error: BaseException) -> str:
  text = str(error).strip().splitlines()
  return text[0] if text else type(error).__name__
