r"""Converts the community's preprocessed MM-WHS release (PnP-AdaNet/SIFA) to PREP.

  python -m data_prep.mmwhs_pnp --pnp_dir=DIR --output_dir=PREP [--overwrite]

The release (REFERENCE.md section 5), searched recursively under DIR:
  * training slices: one TFRecord file per slice (`*.tfrecords` or `*.tfrecord`) holding
    one `tf.train.Example` with int64 `dsize_dim0..2`, `lsize_dim0..2` and bytes
    `data_vol`, `label_vol`: raw little-endian float32 arrays of dsize (image) and lsize
    (label), C order, normally 256x256x3 (three adjacent slices; the slice's own image and
    label are the middle channel). Labels: 0 background, 1 LVM, 2 LAC, 3 LVC, 4 AA,
    5 ignore.
  * test volumes: `*.npz` with `arr_0` (image) and `arr_1` (label), 256x256xN, slices
    along axis 2, flipped on axes 0 and 1 relative to the TFRecords.
The modality of every file is read from its path below DIR: a `ct` or `mr` token that
starts the path or follows `_`, `/` or `.`, and is not followed by a letter (e.g.
`ct_train_tfs/ct_train_slice100.tfrecords`, `test/image_mr_1003.npz`). A path with both
tokens or neither is an error. Any other file is ignored. DIR is only read.

What the conversion writes (the PREP format of csa_tf.data.prepared):
  * each modality's TFRecords become ONE training pseudo-volume `<modality>_pnp_train`
    (e.g. "ct_pnp_train"): the middle image channel of every file, stacked in natural sort
    order of the file paths (slice2 before slice10), each slice z-scored on its own. Its
    geometry is the identity: original_shape (256, 256, N), slices along axis 2, crop
    origin (0, 0), crop size 256. The release has no headers, so spacing is (1, 1, 1) and
    the affine the identity. TFRecords from validation folders (e.g. `ct_val_tfs`), if
    present, are training slices too: PREP has no validation split.
  * each test npz becomes one test volume `<modality>_<number>` from the last digit run
    of its file name (`image_ct_1003.npz` -> "ct_1003"; a name without digits keeps its
    stem). The flips are undone so that its slices have the TFRecords' orientation; the
    flip is recorded in the geometry's `ornt` (axes 0 and 1 flipped), so
    `PreparedVolume.original_label` is on the npz's own grid. NIfTI files (some copies
    of the release ship test volumes as `image_ct_1003.nii.gz` + `gth_ct_1003.nii.gz`)
    are not read; the summary counts them.
  * splits.json: train = the pseudo-volumes, test = the npz volumes (the release's own
    split; settings record test_fraction 0.0 and seed 0, which nothing here uses).

Deviation from the release: csa_tf has no ignore label, so label 5 ("ignore") is mapped
to background (0) in training and test volumes alike; the summary says how many voxels.
Labels 1..4 are csa_tf's MM-WHS classes (datasets.MMWHS: LVM, LAC, LVC, AA).
"""
import os
import re
import zipfile
from typing import Dict, List, Sequence, Tuple

import numpy as np


from csa_tf.configs import datasets
from csa_tf.data import prepared
from csa_tf.errors import CsaInputError, param
from csa_tf.data.slicing import VolumeGeometry, slice_axis_ornt, zscore_slices
from csa_tf.data import preparation

SLICE_SIZE = 256
IGNORE_LABEL = 5
# The release's label value of each class name; the class index comes from datasets.MMWHS.
PNP_LABELS = {0: "background", 1: "LVM", 2: "LAC", 3: "LVC", 4: "AA"}
TRAIN_SUFFIXES = (".tfrecords", ".tfrecord")
TEST_SUFFIX = ".npz"
FEATURE_KEYS = tuple(f"{kind}_dim{axis}" for kind in ("dsize", "lsize") for axis in range(3))

_MODALITY_TOKEN = re.compile(r"(?:^|[_/.])(ct|mr)(?![a-z])")
_LABEL_LEGEND = "0 bg, 1 LVM, 2 LAC, 3 LVC, 4 AA, 5 ignore"


def label_lookup(spec: datasets.DatasetSpec = datasets.MMWHS) -> np.ndarray:
  """uint8 table from release label value (0..5) to csa_tf class index; 5 -> 0."""
  table = np.zeros(IGNORE_LABEL + 1, dtype=np.uint8)
  for value, name in PNP_LABELS.items():
    table[value] = spec.class_names.index(name)
  return table


def modality_of(relative_path: str, shown_path: str = "") -> str:
  """The modality token ("ct"/"mr") in a path relative to the release folder.

  Args:
    relative_path: the file's path below pnp_dir (the folder's own name is not read).
    shown_path: the path to name in an error; default relative_path.

  Raises:
    CsaInputError: the path holds both tokens or neither.
  """
  tokens = set(_MODALITY_TOKEN.findall(relative_path.replace(os.sep, "/").lower()))
  if len(tokens) != 1:
    problem = "both 'ct' and 'mr'" if tokens else "no 'ct' or 'mr'"
    raise CsaInputError(
        f"{shown_path or relative_path}: cannot tell the modality (the path holds {problem} as a "
        "'_'-, '/'- or '.'-delimited token); rename it or move it out of "
        f"{param('pnp_dir')}")
  return tokens.pop()


def natural_key(text: str) -> Tuple:
  """Sort key that orders digit runs by value: slice2 < slice10."""
  return tuple((0, int(part), "") if part.isdigit() else (1, 0, part)
               for part in re.split(r"(\d+)", text) if part)


def find_release_files(
    pnp_dir: str) -> Tuple[Dict[str, List[str]], Dict[str, List[str]], List[str]]:
  """Lists the release's TFRecords and npz files per modality, in natural order.

  Returns:
    (train, test, nifti): modality -> file paths (joined to pnp_dir), and the NIfTI files
    found, which are not converted (reported so that they are not missed silently).

  Raises:
    CsaInputError: pnp_dir is missing, holds no TFRecord or npz file, or a file's
      modality cannot be told from its path.
  """
  if not os.path.isdir(pnp_dir):
    raise CsaInputError(f"{param('pnp_dir', pnp_dir)}: folder not found")
  train: Dict[str, List[str]] = {}
  test: Dict[str, List[str]] = {}
  nifti: List[str] = []
  for root, dirs, files in os.walk(pnp_dir):
    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    for name in files:
      lower = name.lower()
      if name.startswith("."):
        continue
      if lower.endswith(TRAIN_SUFFIXES):
        target = train
      elif lower.endswith(TEST_SUFFIX):
        target = test
      else:
        if lower.endswith((".nii", ".nii.gz")):
          nifti.append(os.path.join(root, name))
        continue
      path = os.path.join(root, name)
      modality = modality_of(os.path.relpath(path, pnp_dir), path)
      target.setdefault(modality, []).append(path)
  if not train and not test:
    raise CsaInputError(
        f"{param('pnp_dir', pnp_dir)}: no PnP-AdaNet/SIFA files found (expected "
        "*.tfrecords "
        "training slices and/or *.npz test volumes whose path names ct or mr)")
  for group in (train, test):
    for paths in group.values():
      paths.sort(key=lambda p: natural_key(os.path.relpath(p, pnp_dir)))
  return train, test, sorted(nifti)


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


def parse_slice_record(record, path: str) -> Tuple[np.ndarray, np.ndarray]:
  """Decodes and checks one slice record (see `read_slice_record`)."""
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
  return (np.array(image[:, :, dsize[2] // 2]),
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


def iter_slice_records(paths: Sequence[str]):
  """Yields (index, image, label) of each file in `paths`, in order.

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
      yield (index,) + parse_slice_record(record, paths[index])
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


def npz_patient_id(path: str, modality: str) -> str:
  """`image_ct_1003.npz` -> "ct_1003"; a name without digits keeps its stem."""
  stem = os.path.basename(path)[:-len(TEST_SUFFIX)]
  digits = re.findall(r"\d+", stem)
  if digits:
    return f"{modality}_{digits[-1]}"
  return f"{modality}_{re.sub(r'[^A-Za-z0-9_-]', '_', stem)}"


def npz_ornt() -> np.ndarray:
  """Transform from a test npz's array to [slice, row, col]: undo the flips of axes 0
  and 1, then move axis 2 to the front (the TFRecords' orientation)."""
  ornt = slice_axis_ornt(2)
  ornt[0, 1] = -1
  ornt[1, 1] = -1
  return ornt


def train_pseudo_volume(modality: str, paths: Sequence[str], pnp_dir: str,
                        lookup: np.ndarray) -> Tuple[prepared.PreparedVolume, int]:
  """Stacks a modality's TFRecord slices into one pseudo-volume.

  Returns:
    (volume, number of label-5 voxels mapped to background).
  """
  images = np.empty((len(paths), SLICE_SIZE, SLICE_SIZE), dtype=np.float32)
  labels = np.empty((len(paths), SLICE_SIZE, SLICE_SIZE), dtype=np.uint8)
  ignored = 0
  for index, image, label in iter_slice_records(paths):
    images[index] = zscore_slices(image[None])[0]
    ignored += int((label == IGNORE_LABEL).sum())
    labels[index] = lookup[label]
  folders = sorted({os.path.relpath(os.path.dirname(p), pnp_dir) for p in paths})
  geometry = VolumeGeometry((SLICE_SIZE, SLICE_SIZE, len(paths)), slice_axis_ornt(2),
                            (0, 0), SLICE_SIZE)
  volume = prepared.PreparedVolume(
      patient_id=f"{modality}_pnp_train", modality=modality, image=images, label=labels,
      geometry=geometry, spacing=(1.0, 1.0, 1.0), affine=np.eye(4),
      source=f"{len(paths)} tfrecords in {', '.join(folders)}")
  return volume, ignored


def npz_volume(modality: str, path: str,
               lookup: np.ndarray) -> Tuple[prepared.PreparedVolume, int]:
  """One test npz as a prepared volume; returns (volume, label-5 voxels mapped to 0)."""
  image, label = read_test_npz(path)
  geometry = VolumeGeometry(tuple(image.shape), npz_ornt(), (0, 0), SLICE_SIZE)
  volume = prepared.PreparedVolume(
      patient_id=npz_patient_id(path, modality), modality=modality,
      image=zscore_slices(geometry.to_slices(image)),
      label=geometry.to_slices(lookup[label]),
      geometry=geometry, spacing=(1.0, 1.0, 1.0), affine=np.eye(4),
      source=os.path.basename(path))
  return volume, int((label == IGNORE_LABEL).sum())


def check_dirs(pnp_dir: str, output_dir: str) -> None:
  """Refuses an output folder that is, lies inside or contains pnp_dir."""
  release = os.path.realpath(pnp_dir)
  out = os.path.realpath(output_dir)
  if out == release or out.startswith(release + os.sep):
    raise CsaInputError(f"{param('output_dir', output_dir)}: lies inside "
                        f"{param('pnp_dir', pnp_dir)}; "
                        "the release folder is never written to")
  if release.startswith(out + os.sep):
    raise CsaInputError(f"{param('output_dir', output_dir)}: contains "
                        f"{param('pnp_dir', pnp_dir)}; "
                        "replacing it would delete the release; choose another folder")


def prepare_pnp(pnp_dir: str, output_dir: str, *, overwrite: bool = False) -> str:
  """Converts the release under pnp_dir into output_dir; returns the summary text.

  Raises:
    CsaInputError: bad folders, no release files, two test files with the same patient
      id, or any bad file (named in the message). Nothing is left at output_dir then.
  """
  check_dirs(pnp_dir, output_dir)
  spec = datasets.MMWHS
  train, test, nifti = find_release_files(pnp_dir)
  ids: Dict[str, str] = {}
  for modality, paths in test.items():
    for path in paths:
      patient_id = npz_patient_id(path, modality)
      if patient_id in ids:
        raise CsaInputError(f"{path}: test volume id {patient_id!r} repeats that of "
                            f"{ids[patient_id]}; keep one of them under "
                            f"{param('pnp_dir')}")
      ids[patient_id] = path
  modalities = [m for m in spec.modalities if m in train or m in test]
  settings = dict(crop_size=SLICE_SIZE, test_fraction=0.0, seed=0,
                  split="the release's own: TFRecords train, npz test (test_fraction "
                        "and seed unused)",
                  pnp_dir=pnp_dir, modalities=modalities,
                  source="PnP-AdaNet/SIFA preprocessed MM-WHS",
                  ignore_label="release label 5 (ignore) mapped to background",
                  num_train_records={m: len(train.get(m, [])) for m in modalities},
                  num_test_volumes={m: len(test.get(m, [])) for m in modalities})
  lookup = label_lookup(spec)
  note = ""
  if nifti:
    note = (f"note: {len(nifti)} NIfTI files under {param('pnp_dir')} (e.g. "
            f"{os.path.relpath(nifti[0], pnp_dir)}) were not converted; only *.npz test "
            "volumes are read\n")
    print(note, end="", flush=True)
  jobs = ([(m, "train", paths) for m, paths in sorted(train.items())]
          + [(m, "test", [p]) for m, paths in sorted(test.items()) for p in paths])
  writer = preparation.PrepWriter(output_dir, spec=spec, settings=settings,
                                  overwrite=overwrite)
  try:
    splits = {"train": [], "test": []}
    ignored_total = 0
    for index, (modality, split, paths) in enumerate(jobs, start=1):
      if split == "train":
        volume, ignored = train_pseudo_volume(modality, paths, pnp_dir, lookup)
      else:
        volume, ignored = npz_volume(modality, paths[0], lookup)
      writer.add(volume, fits=True)
      splits[split].append(volume.patient_id)
      ignored_total += ignored
      print(f"[{index}/{len(jobs)}] {modality} {split} {volume.patient_id}: "
            f"{len(volume.label)} slices", flush=True)
    summary = writer.commit(splits, modalities)
  except BaseException:
    writer.abort()
    raise
  return (summary + f"label 5 (ignore) voxels mapped to background: {ignored_total}\n"
          + note)


def _first_line(text: str) -> str:
  """The first non-empty line of an error message, without TF's op/function tags."""
  text = re.sub(r"\{\{[^}]*\}\}|\[Op:[^\]]*\].*", "", str(text))
  lines = [line.strip(" '") for line in text.splitlines() if line.strip(" '")]
  return lines[0] if lines else "unknown error"
