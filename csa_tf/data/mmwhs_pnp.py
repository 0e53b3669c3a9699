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
from typing import Dict, List, Sequence, Tuple

import numpy as np


from csa_tf.configs import datasets
from csa_tf.data import prepared
from csa_tf.errors import CsaInputError, param
from csa_tf.data.slicing import VolumeGeometry, slice_axis_ornt, zscore_slices
from csa_tf.data import preparation
# The release's files are read in pnp_records; its readers stay part of this module's
# interface (read_slice_record is not used below: it is there for callers and tests).
from csa_tf.data.pnp_records import (  # pylint: disable=unused-import
    IGNORE_LABEL, SLICE_SIZE, iter_slice_records, read_slice_record, read_test_npz)

# The release's label value of each class name; the class index comes from datasets.MMWHS.
PNP_LABELS = {0: "background", 1: "LVM", 2: "LAC", 3: "LVC", 4: "AA"}
TRAIN_SUFFIXES = (".tfrecords", ".tfrecord")
TEST_SUFFIX = ".npz"

_MODALITY_TOKEN = re.compile(r"(?:^|[_/.])(ct|mr)(?![a-z])")


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
      image=geometry.network_slices(image),
      label=geometry.to_slices(lookup[label]),
      geometry=geometry, spacing=(1.0, 1.0, 1.0), affine=np.eye(4),
      source=os.path.basename(path))
  return volume, int((label == IGNORE_LABEL).sum())


def prepare_pnp(pnp_dir: str, output_dir: str, *, overwrite: bool = False) -> str:
  """Converts the release under pnp_dir into output_dir; returns the summary text.

  Raises:
    CsaInputError: bad folders, no release files, two test files with the same patient
      id, or any bad file (named in the message). Nothing is left at output_dir then.
  """
  preparation.check_output_apart(output_dir, pnp_dir, source_param="pnp_dir")
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
