r"""Converts the community's preprocessed MM-WHS release (PnP-AdaNet/SIFA) to PREP.

  python -m data_prep.mmwhs_pnp --pnp_dir=DIR --output_dir=PREP [--use_val_slices]
      [--overwrite]

The release (REFERENCE.md section 5), searched recursively under DIR:
  * training slices: one TFRecord file per slice (`*.tfrecords` or `*.tfrecord`) holding
    one `tf.train.Example` with int64 `dsize_dim0..2`, `lsize_dim0..2` and bytes
    `data_vol`, `label_vol`: raw little-endian float32 arrays of dsize (image) and lsize
    (label), C order, normally 256x256x3 (three adjacent slices; the slice's own image and
    label are the middle channel). Labels: 0 background, 1 LVM, 2 LAC, 3 LVC, 4 AA,
    5 ignore. Files whose name or own folder's name holds a `val`, `valid` or
    `validation` token (the release's `ct_val_tfs/`, `mr_val_tfs/`) are validation
    slices.
  * test volumes: `*.npz` with `arr_0` (image) and `arr_1` (label), 256x256xN, slices
    along axis 2, flipped on axes 0 and 1 relative to the TFRecords; or the NIfTI pairs
    `image_<ct|mr>_<id>.nii[.gz]` + `gth_<ct|mr>_<id>.nii[.gz]` in one folder, which
    SIFA's utils/savenpz.py turns into those npz files (read alike: pnp_records).
The modality of every file is read from its path below DIR: a `ct` or `mr` token that
starts the path or follows `_`, `/` or `.`, and is not followed by a letter (e.g.
`ct_train_tfs/ct_train_slice100.tfrecords`, `test/image_mr_1003.npz`). A path with both
tokens or neither is an error. Any other file is ignored (other NIfTI files are
counted). DIR is only read.

No test slice in training. The release's training folders hold slices of its test
volumes (csa_tf/data/pnp_leak.py gives the sources), under names that cannot tell them
apart, so:
  * validation-folder TFRecords are left out, unread (the maintainer: they are the 20%
    test data); `use_val_slices` trains on them, with a warning line;
  * every training slice (validation slices too, when used) whose image equals a slice
    of a same-modality test volume, in any in-plane orientation, is left out
    (pnp_leak.LeakIndex).
summary.txt and prep_meta.json (`left_out_of_training`) say, per folder, how many
slices were left out and why, and which test volumes they equal.

What the conversion writes (the PREP format of csa_tf.data.prepared):
  * each modality's kept TFRecords become ONE training pseudo-volume
    `<modality>_pnp_train` (e.g. "ct_pnp_train"): the middle image channel of every
    file, stacked in natural sort order of the file paths (slice2 before slice10), each
    slice z-scored on its own. Its geometry is the identity: original_shape
    (256, 256, N), slices along axis 2, crop origin (0, 0), crop size 256. The release
    has no headers, so spacing is (1, 1, 1) and the affine the identity. A modality
    whose slices were all left out has no training volume.
  * each test volume becomes `<modality>_<number>` from the last digit run of its file
    name (`image_ct_1003.npz` or `.nii.gz` -> "ct_1003"; a name without digits keeps
    its stem). The flips are undone so that its slices have the TFRecords' orientation;
    the flip is recorded in the geometry's `ornt` (axes 0 and 1 flipped), so
    `PreparedVolume.original_label` is on the npz's own grid.
  * splits.json: train = the pseudo-volumes, test = the test volumes (the release's own
    split; settings record test_fraction 0.0 and seed 0, which nothing here uses).

Deviation from the release: csa_tf has no ignore label, so label 5 ("ignore") is mapped
to background (0) in training and test volumes alike; the summary says how many voxels.
Labels 1..4 are csa_tf's MM-WHS classes (datasets.MMWHS: LVM, LAC, LVC, AA).
"""
import collections
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np


from csa_tf.configs import datasets
from csa_tf.data import prepared
from csa_tf.errors import CsaInputError, param
from csa_tf.data.slicing import VolumeGeometry, slice_axis_ornt, zscore_slices
from csa_tf.data import preparation
from csa_tf.data.pnp_leak import ATOL, LeakIndex
# The release's files are read in pnp_records; its readers stay part of this module's
# interface (read_slice_record is not used below: it is there for callers and tests).
from csa_tf.data.pnp_records import (  # pylint: disable=unused-import
    IGNORE_LABEL, SLICE_SIZE, iter_slice_records, read_slice_record, read_test_nifti,
    read_test_npz)

# The release's label value of each class name; the class index comes from datasets.MMWHS.
PNP_LABELS = {0: "background", 1: "LVM", 2: "LAC", 3: "LVC", 4: "AA"}
TRAIN_SUFFIXES = (".tfrecords", ".tfrecord")
TEST_SUFFIX = ".npz"
NIFTI_SUFFIXES = (".nii.gz", ".nii")

_MODALITY_TOKEN = re.compile(r"(?:^|[_/.])(ct|mr)(?![a-z])")
_VALIDATION_TOKEN = re.compile(r"(?:^|[_/.])(val|valid|validation)(?![a-z])")
# SIFA's NIfTI test volumes: image_ct_1003.nii.gz with its label gth_ct_1003.nii.gz.
_NIFTI_TEST_NAME = re.compile(r"^(image|gth)_(.+?)\.nii(?:\.gz)?$", re.IGNORECASE)


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


def is_validation(relative_path: str) -> bool:
  """Whether a TFRecord is a validation slice: its own folder's name or its file name
  holds a `val`, `valid` or `validation` token (`ct_val_tfs/...`, `validation_A/...`).
  Folders further up are not read (the release unpacks into `train&val/`)."""
  parts = relative_path.replace(os.sep, "/").lower().split("/")
  return bool(_VALIDATION_TOKEN.search("/".join(parts[-2:])))


def natural_key(text: str) -> Tuple:
  """Sort key that orders digit runs by value: slice2 < slice10."""
  return tuple((0, int(part), "") if part.isdigit() else (1, 0, part)
               for part in re.split(r"(\d+)", text) if part)


# A test volume's files: (image path, label path); the label is None for an npz, which
# holds both.
TestFiles = Tuple[str, Optional[str]]


def find_release_files(
    pnp_dir: str) -> Tuple[Dict[str, List[str]], Dict[str, List[TestFiles]], List[str]]:
  """Lists the release's TFRecords and test volumes per modality, in natural order.

  Returns:
    (train, test, nifti): modality -> TFRecord paths (joined to pnp_dir, validation
    folders included), modality -> test volumes' (image, label) paths (label None for
    an npz), and the other NIfTI files found, which are not read (reported so that they
    are not missed silently).

  Raises:
    CsaInputError: pnp_dir is missing, holds no TFRecord or test volume, a file's
      modality cannot be told from its path, or an `image_`/`gth_` NIfTI lacks its
      partner in the same folder.
  """
  if not os.path.isdir(pnp_dir):
    raise CsaInputError(f"{param('pnp_dir', pnp_dir)}: folder not found")
  train: Dict[str, List[str]] = {}
  test: Dict[str, List[TestFiles]] = {}
  nifti: List[str] = []
  pairs: Dict[Tuple[str, str], Dict[str, str]] = {}  # (folder, name) -> kind -> path
  for root, dirs, files in os.walk(pnp_dir):
    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    for name in files:
      lower = name.lower()
      if name.startswith("."):
        continue
      path = os.path.join(root, name)
      if lower.endswith(TRAIN_SUFFIXES):
        modality = modality_of(os.path.relpath(path, pnp_dir), path)
        train.setdefault(modality, []).append(path)
      elif lower.endswith(TEST_SUFFIX):
        modality = modality_of(os.path.relpath(path, pnp_dir), path)
        test.setdefault(modality, []).append((path, None))
      elif lower.endswith(NIFTI_SUFFIXES):
        match = _NIFTI_TEST_NAME.match(name)
        if match is None:
          nifti.append(path)
          continue
        kind, rest = match.group(1).lower(), match.group(2)
        modality_of(os.path.relpath(path, pnp_dir), path)
        pairs.setdefault((root, rest), {})[kind] = path
  for (root, rest), kinds in sorted(pairs.items()):
    if len(kinds) == 1:
      (kind, path), = kinds.items()
      other = "gth" if kind == "image" else "image"
      raise CsaInputError(
          f"{path}: no {other}_{rest}.nii.gz beside it (a release test volume is an "
          f"image_<ct|mr>_<id> file with its gth_ label); add it or move this file out "
          f"of {param('pnp_dir')}")
    modality = modality_of(os.path.relpath(kinds["image"], pnp_dir), kinds["image"])
    test.setdefault(modality, []).append((kinds["image"], kinds["gth"]))
  if not train and not test:
    raise CsaInputError(
        f"{param('pnp_dir', pnp_dir)}: no PnP-AdaNet/SIFA files found (expected "
        "*.tfrecords training slices and/or *.npz or image_/gth_*.nii.gz test volumes "
        "whose path names ct or mr)")
  for paths in train.values():
    paths.sort(key=lambda p: natural_key(os.path.relpath(p, pnp_dir)))
  for volumes in test.values():
    volumes.sort(key=lambda v: natural_key(os.path.relpath(v[0], pnp_dir)))
  return train, test, sorted(nifti)


def npz_patient_id(path: str, modality: str) -> str:
  """`image_ct_1003.npz` (or `.nii.gz`) -> "ct_1003"; a name without digits keeps its
  stem."""
  stem = os.path.basename(path)
  for suffix in (TEST_SUFFIX,) + NIFTI_SUFFIXES:
    if stem.lower().endswith(suffix):
      stem = stem[:-len(suffix)]
      break
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


class LeftOut:
  """Counts, per folder, the training slices left out and why (for summary and meta)."""

  def __init__(self, pnp_dir: str):
    self.pnp_dir = pnp_dir
    self.validation: Dict[Tuple[str, str], int] = collections.Counter()
    self.in_folder: Dict[Tuple[str, str], int] = collections.Counter()
    self.matches: Dict[Tuple[str, str], List] = collections.defaultdict(list)

  def folder(self, path: str) -> str:
    return os.path.relpath(os.path.dirname(path), self.pnp_dir)

  def records(self) -> List[dict]:
    """prep_meta.json's `left_out_of_training`: one entry per folder and reason."""
    rows = []
    for (modality, folder), count in sorted(self.validation.items()):
      rows.append(dict(modality=modality, folder=folder, slices=count, left_out=count,
                       reason="validation folder (the release's test data, SIFA #55)"))
    for (modality, folder), found in sorted(self.matches.items()):
      volumes = collections.Counter(m.test_id for m in found)
      turns = collections.Counter(m.orientation for m in found)
      rows.append(dict(
          modality=modality, folder=folder, slices=self.in_folder[(modality, folder)],
          left_out=len(found), reason="equal to a test volume's slice",
          test_volumes=dict(sorted(volumes.items())),
          orientations=dict(sorted(turns.items()))))
    return rows

  def lines(self) -> List[str]:
    """The same, as summary lines."""
    rows = self.records()
    if not rows:
      return ["left out of training: none (no validation folder left out; no training "
              "slice equals a test slice)"]
    lines = ["left out of training (the release's training folders hold its test "
             "volumes):"]
    for row in rows:
      if "test_volumes" in row:
        volumes = ", ".join(f"{k} {v}" for k, v in row["test_volumes"].items())
        turns = ", ".join(f"{k} {v}" for k, v in row["orientations"].items())
        why = f"equal to slices of test volumes ({volumes}; orientation: {turns})"
      else:
        why = (f"a validation folder, the release's test data ({param('use_val_slices')} "
               "to train on it)")
      lines.append(f"  {row['modality']} {row['folder']}: {row['left_out']} of "
                   f"{row['slices']} slices, {why}")
    return lines


def train_pseudo_volume(modality: str, paths: Sequence[str], pnp_dir: str,
                        lookup: np.ndarray, index: LeakIndex, left_out: LeftOut,
                        ) -> Tuple[Optional[prepared.PreparedVolume], int]:
  """Stacks a modality's TFRecord slices into one pseudo-volume, leaving out every
  slice that equals one of `index`'s test slices (counted in `left_out`).

  Returns:
    (volume, number of label-5 voxels mapped to background in it); volume None when
    every slice was left out.
  """
  images = np.empty((len(paths), SLICE_SIZE, SLICE_SIZE), dtype=np.float32)
  # Each record's own neighbours (its side channels, UMMKD's three-slice input): the
  # slices of the pseudo-volume are not neighbours of one another.
  neighbours = np.zeros((len(paths), SLICE_SIZE, SLICE_SIZE, 2), dtype=np.float32)
  labels = np.empty((len(paths), SLICE_SIZE, SLICE_SIZE), dtype=np.uint8)
  ignored = 0
  kept: List[str] = []
  for index_in_paths, channels, label in iter_slice_records(paths, channels=True):
    path = paths[index_in_paths]
    folder = left_out.folder(path)
    left_out.in_folder[(modality, folder)] += 1
    middle = channels.shape[-1] // 2
    # A one-channel record is its own neighbour either side.
    sides = (max(middle - 1, 0), min(middle + 1, channels.shape[-1] - 1))
    image = zscore_slices(channels[None, :, :, middle])[0]
    match = index.find(image)
    if match is not None:
      left_out.matches[(modality, folder)].append(match)
      continue
    images[len(kept)] = image
    for side, channel in enumerate(sides):
      neighbours[len(kept), :, :, side] = zscore_slices(channels[None, :, :, channel])[0]
    ignored += int((label == IGNORE_LABEL).sum())
    labels[len(kept)] = lookup[label]
    kept.append(path)
  if not kept:
    return None, 0
  folders = sorted({left_out.folder(p) for p in kept})
  geometry = VolumeGeometry((SLICE_SIZE, SLICE_SIZE, len(kept)), slice_axis_ornt(2),
                            (0, 0), SLICE_SIZE)
  volume = prepared.PreparedVolume(
      patient_id=f"{modality}_pnp_train", modality=modality, image=images[:len(kept)],
      label=labels[:len(kept)], geometry=geometry, spacing=(1.0, 1.0, 1.0),
      affine=np.eye(4), source=f"{len(kept)} tfrecords in {', '.join(folders)}",
      neighbours=neighbours[:len(kept)])
  return volume, ignored


def npz_volume(modality: str, files: TestFiles,
               lookup: np.ndarray) -> Tuple[prepared.PreparedVolume, int]:
  """One test volume (npz, or NIfTI image + label) as a prepared volume; returns
  (volume, label-5 voxels mapped to 0)."""
  path, label_path = files
  if label_path is None:
    image, label = read_test_npz(path)
  else:
    image, label = read_test_nifti(path, label_path)
  geometry = VolumeGeometry(tuple(image.shape), npz_ornt(), (0, 0), SLICE_SIZE)
  volume = prepared.PreparedVolume(
      patient_id=npz_patient_id(path, modality), modality=modality,
      image=geometry.network_slices(image),
      label=geometry.to_slices(lookup[label]),
      geometry=geometry, spacing=(1.0, 1.0, 1.0), affine=np.eye(4),
      source=os.path.basename(path))
  return volume, int((label == IGNORE_LABEL).sum())


def prepare_pnp(pnp_dir: str, output_dir: str, *, overwrite: bool = False,
                use_val_slices: bool = False) -> str:
  """Converts the release under pnp_dir into output_dir; returns the summary text.

  Args:
    use_val_slices: train on the validation folders' slices too (they are the
      release's test data; a warning line says so). Either way no training slice
      equals a test slice.

  Raises:
    CsaInputError: bad folders, no release files, two test files with the same patient
      id, or any bad file (named in the message). Nothing is left at output_dir then.
  """
  preparation.check_output_apart(output_dir, pnp_dir, source_param="pnp_dir")
  spec = datasets.MMWHS
  found, test, nifti = find_release_files(pnp_dir)
  ids: Dict[str, str] = {}
  for modality, volumes in test.items():
    for path, _ in volumes:
      patient_id = npz_patient_id(path, modality)
      if patient_id in ids:
        raise CsaInputError(f"{path}: test volume id {patient_id!r} repeats that of "
                            f"{ids[patient_id]}; keep one of them under "
                            f"{param('pnp_dir')}")
      ids[patient_id] = path
  left_out = LeftOut(pnp_dir)
  train: Dict[str, List[str]] = {}
  validation_count = 0
  for modality, paths in found.items():
    for path in paths:
      if is_validation(os.path.relpath(path, pnp_dir)):
        validation_count += 1
        if not use_val_slices:
          left_out.validation[(modality, left_out.folder(path))] += 1
          continue
      train.setdefault(modality, []).append(path)
  modalities = [m for m in spec.modalities if m in found or m in test]
  settings = dict(crop_size=SLICE_SIZE, test_fraction=0.0, seed=0,
                  split="the release's own: TFRecords train, test volumes test "
                        "(test_fraction and seed unused)",
                  pnp_dir=pnp_dir, modalities=modalities,
                  source="PnP-AdaNet/SIFA preprocessed MM-WHS",
                  ignore_label="release label 5 (ignore) mapped to background",
                  use_val_slices=use_val_slices,
                  test_slice_tolerance=ATOL,
                  num_train_records={m: len(found.get(m, [])) for m in modalities},
                  num_test_volumes={m: len(test.get(m, [])) for m in modalities})
  lookup = label_lookup(spec)
  notes = []
  if nifti:
    notes.append(f"note: {len(nifti)} NIfTI files under {param('pnp_dir')} (e.g. "
                 f"{os.path.relpath(nifti[0], pnp_dir)}) were not read; test volumes "
                 "are *.npz or image_<ct|mr>_<id>.nii.gz with gth_<ct|mr>_<id>.nii.gz")
    print(notes[-1], flush=True)
  if use_val_slices and validation_count:
    notes.append(f"warning: {param('use_val_slices')}: {validation_count} "
                 "validation-folder slices are trained on; the release's maintainer says "
                 "they are its test data (SIFA #55); those equal to a test volume's slice "
                 "are still left out")
    print(notes[-1], flush=True)
  # Test volumes first: their slices are what training slices are compared with.
  jobs = ([(m, "test", v) for m, volumes in sorted(test.items()) for v in volumes]
          + [(m, "train", paths) for m, paths in sorted(train.items())])
  writer = preparation.PrepWriter(output_dir, spec=spec, settings=settings,
                                  overwrite=overwrite)
  try:
    splits = {"train": [], "test": []}
    test_images: Dict[str, Dict[str, np.ndarray]] = collections.defaultdict(dict)
    ignored_total = 0
    for number, (modality, split, files) in enumerate(jobs, start=1):
      if split == "train":
        index = LeakIndex(test_images.get(modality, {}))
        volume, ignored = train_pseudo_volume(modality, files, pnp_dir, lookup, index,
                                              left_out)
        if volume is None:
          print(f"[{number}/{len(jobs)}] {modality} train: every slice left out",
                flush=True)
          continue
      else:
        volume, ignored = npz_volume(modality, files, lookup)
        test_images[modality][volume.patient_id] = volume.image
      writer.add(volume, fits=True)
      splits[split].append(volume.patient_id)
      ignored_total += ignored
      print(f"[{number}/{len(jobs)}] {modality} {split} {volume.patient_id}: "
            f"{len(volume.label)} slices", flush=True)
    splits["train"].sort()
    splits["test"].sort(key=natural_key)
    notes = left_out.lines() + [
        f"label 5 (ignore) voxels mapped to background: {ignored_total}"] + notes
    summary = writer.commit(splits, modalities, notes=notes,
                            extra_meta=dict(left_out_of_training=left_out.records()))
  except BaseException:
    writer.abort()
    raise
  return summary
