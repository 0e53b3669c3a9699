"""Reads the PnP-AdaNet/SIFA MM-WHS release's files, checking each one.

Training slices are TFRecord files of one `tf.train.Example` each; test volumes are npz
files, or the NIfTI pairs SIFA's own script turns into them (the format:
csa_tf.data.mmwhs_pnp's docstring, REFERENCE.md section 5). Every
reader raises CsaInputError naming the file at fault; arrays come back as stored, with
the release's label values (0..5): mapping them to csa_tf's classes is the converter's.
"""
import os
import re
import zipfile
from typing import Sequence, Tuple

import numpy as np

from csa_tf.errors import CsaInputError
from csa_tf.io import nifti

SLICE_SIZE = 256
IGNORE_LABEL = 5
FEATURE_KEYS = tuple(f"{kind}_dim{axis}" for kind in ("dsize", "lsize") for axis in range(3))

_LABEL_LEGEND = "0 bg, 1 LVM, 2 LAC, 3 LVC, 4 AA, 5 ignore"


def _check_labels(label: np.ndarray, path: str) -> None:
  valid = np.isfinite(label) & (label >= 0) & (label <= IGNORE_LABEL)
  valid[valid] = label[valid] == np.round(label[valid])
  if not valid.all():
    bad = np.unique(label[~valid])
    shown = ", ".join(f"{v:g}" for v in bad[:8]) + (" ..." if len(bad) > 8 else "")
    raise CsaInputError(f"{path}: label values {shown} are not release labels "
                        f"(expected integers 0..5: {_LABEL_LEGEND})")


def _check_image(image: np.ndarray, path: str) -> None:
  if not np.isfinite(image).all():
    count = int(np.size(image) - np.isfinite(image).sum())
    raise CsaInputError(f"{path}: image holds {count} non-finite (NaN/Inf) values")


def _array_from_bytes(raw: bytes, dims: Sequence[int], kind: str, path: str) -> np.ndarray:
  """Decodes a float32 byte string of shape dims, checking dims against its length."""
  size_key = "dsize" if kind == "data_vol" else "lsize"
  if any(d <= 0 for d in dims):
    raise CsaInputError(f"{path}: {size_key}_dim0..2 = {tuple(dims)} are not positive")
  expected = int(np.prod(dims)) * 4
  if len(raw) != expected:
    raise CsaInputError(
        f"{path}: {kind} holds {len(raw)} bytes but {size_key}_dim0..2 = {tuple(dims)} "
        f"need {expected} (float32)")
  return np.frombuffer(raw, dtype="<f4").reshape(dims)


def _slice_features():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (slow; flags first)
  features = {key: tf.io.FixedLenFeature([], tf.int64) for key in FEATURE_KEYS}
  features.update(data_vol=tf.io.FixedLenFeature([], tf.string),
                  label_vol=tf.io.FixedLenFeature([], tf.string))
  return features


def _read_records(path: str) -> list:
  """All records of one TFRecord file, as scalar string tensors."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    return list(tf.data.TFRecordDataset(path))
  except tf.errors.OpError as error:
    raise CsaInputError(f"{path}: not a readable TFRecord file "
                        f"({_first_line(error.message)})") from None


def parse_slice_record(record, path: str, *,
                       channels: bool = False) -> Tuple[np.ndarray, np.ndarray]:
  """Decodes and checks one slice record (see `read_slice_record`).

  With channels, the image is returned whole, [256, 256, C] float32 (the slice with
  its (C - 1) / 2 neighbours either side), instead of its middle channel.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    parsed = tf.io.parse_single_example(record, _slice_features())
  except tf.errors.OpError as error:
    raise CsaInputError(f"{path}: not a PnP-AdaNet/SIFA slice record "
                        f"({_first_line(error.message)})") from None
  dsize = [int(parsed[f"dsize_dim{axis}"]) for axis in range(3)]
  lsize = [int(parsed[f"lsize_dim{axis}"]) for axis in range(3)]
  image = _array_from_bytes(parsed["data_vol"].numpy(), dsize, "data_vol", path)
  label = _array_from_bytes(parsed["label_vol"].numpy(), lsize, "label_vol", path)
  for name, dims in (("dsize", dsize), ("lsize", lsize)):
    if dims[0] != SLICE_SIZE or dims[1] != SLICE_SIZE or dims[2] % 2 == 0:
      raise CsaInputError(
          f"{path}: {name}_dim0..2 = {tuple(dims)}; expected {SLICE_SIZE}x{SLICE_SIZE}xC "
          "slices with an odd channel count C (the slice is the middle channel)")
  _check_image(image, path)
  _check_labels(label, path)
  return (np.array(image if channels else image[:, :, dsize[2] // 2]),
          label[:, :, lsize[2] // 2].astype(np.uint8))


def _one_record(records: list, path: str):
  if len(records) != 1:
    raise CsaInputError(f"{path}: holds {len(records)} records; the release has one "
                        "slice record per file")
  return records[0]


def read_slice_record(path: str) -> Tuple[np.ndarray, np.ndarray]:
  """Reads one training TFRecord file.

  Returns:
    (image, label): the middle channel, [256, 256] float32, and the label's middle
    channel as release values [256, 256] uint8 (0..5).

  Raises:
    CsaInputError: the file is not a readable TFRecord, does not hold exactly one slice
      record with the release's features, its sizes disagree with the byte lengths, the
      slice is not 256x256 with an odd channel count, the image is not finite, or a
      label value is not an integer in 0..5.
  """
  return parse_slice_record(_one_record(_read_records(path), path), path)


def iter_slice_records(paths: Sequence[str], *, channels: bool = False):
  """Yields (index, image, label) of each file in `paths`, in order (the image's
  channels all, with channels; see `parse_slice_record`).

  Reads all files through one tf.data pipeline (one TFRecordDataset per file costs
  ~20 ms; the pipeline about 1 ms a slice). When the pipeline fails, the files from the
  last one it reached are read one by one to name the bad file.

  Raises:
    CsaInputError: as `read_slice_record`, naming the file.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  paths = list(paths)
  if not paths:
    return

  @tf.autograph.experimental.do_not_convert
  def records_of(index, path):
    return tf.data.TFRecordDataset(path).map(
        tf.autograph.experimental.do_not_convert(lambda record: (index, record)))

  pipeline = tf.data.Dataset.from_tensor_slices(paths).enumerate().flat_map(records_of)
  expected = 0  # The next file whose record is due.
  try:
    for index, record in pipeline:
      index = int(index)
      if index < expected:  # A second record in the previous file.
        _raise_for_file(paths[index])
      if index > expected:  # Files expected..index-1 hold no record.
        _raise_for_file(paths[expected])
      yield (index,) + parse_slice_record(record, paths[index], channels=channels)
      expected = index + 1
  except tf.errors.OpError as error:
    # The failing file is the last one reached (a bad second record) or a later one.
    for path in paths[max(expected - 1, 0):]:
      _one_record(_read_records(path), path)
    raise CsaInputError(f"{os.path.dirname(paths[0])}: reading the TFRecords failed "
                        f"({_first_line(error.message)})") from None
  if expected != len(paths):
    _raise_for_file(paths[expected])


def _raise_for_file(path: str) -> None:
  """Reads one file alone to raise its own error; every caller knows it is bad."""
  _one_record(_read_records(path), path)
  raise CsaInputError(f"{path}: could not be read as one slice record")


def read_test_npz(path: str) -> Tuple[np.ndarray, np.ndarray]:
  """Reads one test volume as stored: (image float32, label uint8 release values).

  Both are [256, 256, N] on the npz's own (flipped) grid.

  Raises:
    CsaInputError: unreadable, missing arr_0/arr_1, shapes wrong or different, image not
      finite, or labels outside 0..5.
  """
  try:
    npz = np.load(path, allow_pickle=False)
    if not isinstance(npz, np.lib.npyio.NpzFile):
      raise CsaInputError(f"{path}: not a release test volume (a single .npy array, not "
                          "an .npz with arr_0 image and arr_1 label)")
    with npz:
      missing = [key for key in ("arr_0", "arr_1") if key not in npz.files]
      if missing:
        raise CsaInputError(f"{path}: not a release test volume (missing "
                            f"{', '.join(missing)}; expected arr_0 image, arr_1 label)")
      image, label = npz["arr_0"], npz["arr_1"]
  except CsaInputError:
    raise
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
    if "Object arrays" in str(error):
      # Unpickling runs code chosen by whoever wrote the file: never done.
      raise CsaInputError(f"{path}: holds a pickled Python object array; csa_tf never "
                          "loads pickles, so this is not a release test volume") from None
    raise CsaInputError(f"{path}: not a readable npz file "
                        f"({_first_line(str(error))})") from None
  for name, array in (("arr_0", image), ("arr_1", label)):
    if (array.ndim != 3 or array.shape[:2] != (SLICE_SIZE, SLICE_SIZE)
        or array.shape[2] == 0 or not np.issubdtype(array.dtype, np.number)):
      raise CsaInputError(f"{path}: {name} has shape {array.shape} and dtype "
                          f"{array.dtype}; expected numbers of shape "
                          f"{SLICE_SIZE}x{SLICE_SIZE}xN")
  if image.shape != label.shape:
    raise CsaInputError(f"{path}: arr_1 (label) shape {label.shape} differs from arr_0 "
                        f"(image) shape {image.shape}")
  _check_image(image, path)
  _check_labels(label, path)
  return image.astype(np.float32), label.astype(np.uint8)


def read_test_nifti(image_path: str, label_path: str) -> Tuple[np.ndarray, np.ndarray]:
  """Reads one NIfTI test volume (`image_<m>_<id>.nii.gz` + `gth_<m>_<id>.nii.gz`).

  SIFA's utils/savenpz.py makes the release's npz files from these with medpy.io.load,
  whose array is the NIfTI voxel array in index order (SimpleITK's array transposed), the
  header's orientation not applied. nibabel's data array is the same, so the result
  equals `read_test_npz` of the npz made from the pair: both [256, 256, N], flipped on
  axes 0 and 1 relative to the TFRecords.

  Returns:
    (image float32, label uint8 release values), as `read_test_npz`.

  Raises:
    CsaInputError: a file is unreadable or not 3D NIfTI, shapes are wrong or differ,
      the image is not finite, or labels are outside 0..5 (naming the file).
  """
  image = nifti.read_volume(image_path, kind="image").data
  label = nifti.read_volume(label_path, kind="label").data
  for path, array in ((image_path, image), (label_path, label)):
    if array.shape[:2] != (SLICE_SIZE, SLICE_SIZE):
      raise CsaInputError(f"{path}: shape {array.shape}; expected "
                          f"{SLICE_SIZE}x{SLICE_SIZE}xN (a release test volume)")
  if image.shape != label.shape:
    raise CsaInputError(f"{label_path}: shape {label.shape} differs from that of its "
                        f"image {image_path} {image.shape}")
  _check_labels(label, label_path)
  return image, label.astype(np.uint8)


def _first_line(text: str) -> str:
  """The first non-empty line of an error message, without TF's op/function tags."""
  text = re.sub(r"\{\{[^}]*\}\}|\[Op:[^\]]*\].*", "", str(text))
  lines = [line.strip(" '") for line in text.splitlines() if line.strip(" '")]
  return lines[0] if lines else "unknown error"
