"""The prepared-data folder (PREP) that training, evaluation and figures read.

Layout:
  PREP/prep_meta.json               format, version, dataset, classes, modalities, crop,
                                    settings and the list of volumes
  PREP/splits.json                  {"train": [patient ids], "test": [patient ids]}
  PREP/summary.txt                  counts per modality and split, for people
  PREP/volumes/<modality>/<patient_id>.npz   one volume (see `PreparedVolume`)

Each .npz is written and read by csa_tf/data/volume_file.py.
"""
import dataclasses
import hashlib
import json
import os
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

import numpy as np

from csa_tf.configs import datasets
from csa_tf.errors import CsaInputError
from csa_tf.data import slicing
from csa_tf.data import volume_file

if TYPE_CHECKING:  # Only for the annotation: PREP readers need not load the config code.
  from csa_tf.configs.train_config import TrainConfig  # pylint: disable=g-bad-import-order

FORMAT_NAME = "csa_tf.prepared"
# prep_meta.json's format_version (every csa_tf preparation has recorded one). Version 1:
# the layout above. Bump it when a reader of this version would misread a new PREP.
FORMAT_VERSION = 1
META_FILE = "prep_meta.json"
SPLITS_FILE = "splits.json"
SUMMARY_FILE = "summary.txt"

# One volume and its .npz file (csa_tf/data/volume_file.py), the PREP's parts, by the
# names its readers and writers use.
PreparedVolume = volume_file.PreparedVolume
VolumeGeometry = volume_file.VolumeGeometry
save_volume = volume_file.save_volume
write_npz = volume_file.write_npz
load_volume = volume_file.load_volume
read_npz = volume_file.read_npz


VOLUMES_SUBDIR = "volumes"


def volume_filename(modality: str, patient_id: str) -> str:
  return os.path.join(VOLUMES_SUBDIR, modality, f"{patient_id}.npz")


def foreign_entries(prep_dir: str) -> List[str]:
  """What a folder holds that a csa_tf preparation does not (paths relative to it).

  A preparation is META_FILE, SPLITS_FILE, SUMMARY_FILE and volumes/<modality>/*.npz;
  `--overwrite` may replace a folder only when this list is empty.
  """
  foreign = []
  for name in sorted(os.listdir(prep_dir)):
    path = os.path.join(prep_dir, name)
    if name in (META_FILE, SPLITS_FILE, SUMMARY_FILE) and os.path.isfile(path):
      continue
    if name != VOLUMES_SUBDIR or not os.path.isdir(path) or os.path.islink(path):
      foreign.append(name)
      continue
    for modality in sorted(os.listdir(path)):
      folder = os.path.join(path, modality)
      if not os.path.isdir(folder) or os.path.islink(folder):
        foreign.append(os.path.join(name, modality))
        continue
      foreign += [os.path.join(name, modality, f) for f in sorted(os.listdir(folder))
                  if not (f.endswith(".npz")
                          and os.path.isfile(os.path.join(folder, f)))]
  return foreign


@dataclasses.dataclass(frozen=True)
class VolumeEntry:
  """A volume listed in prep_meta.json."""
  patient_id: str
  modality: str
  file: str
  num_slices: int
  num_labelled_slices: int


class PreparedDataset:
  """Read access to a PREP folder, validated on open."""

  def __init__(self, prep_dir: str, meta: dict, splits: Dict[str, List[str]]):
    self.prep_dir = prep_dir
    self.meta = meta
    self.splits = splits
    self.spec = datasets.get_spec(meta["dataset"])
    self.crop_size = int(meta["crop_size"])
    self.modalities = tuple(meta["modalities"])
    self.entries = [VolumeEntry(**entry) for entry in meta["volumes"]]

  @classmethod
  def open(cls, prep_dir: str, *, dataset: Optional[str] = None) -> "PreparedDataset":
    """Opens and validates PREP.

    Args:
      prep_dir: the folder written by data_prep.mscmr / data_prep.mmwhs.
      dataset: if given, the dataset the folder must hold.

    Raises:
      CsaInputError: the folder is missing, is not a csa_tf preparation, is of another
        format version or dataset, or lacks a listed volume or its splits.
    """
    if not os.path.isdir(prep_dir):
      raise CsaInputError(f"{prep_dir}: prepared data folder not found")
    meta_path = os.path.join(prep_dir, META_FILE)
    if not os.path.isfile(meta_path):
      raise CsaInputError(
          f"{prep_dir}: not a prepared data folder (no {META_FILE}); run "
          "data_prep.mscmr or data_prep.mmwhs first")
    meta = _read_json(meta_path)
    if meta.get("format") != FORMAT_NAME:
      raise CsaInputError(f"{meta_path}: not a csa_tf preparation (format "
                          f"{meta.get('format')!r})")
    version = meta.get("format_version")
    if (isinstance(version, int) and not isinstance(version, bool)
        and version > FORMAT_VERSION):
      raise CsaInputError(
          f"{meta_path}: prepared with format version {version}, newer than this csa_tf "
          f"reads (up to {FORMAT_VERSION}); prepare the data again with this csa_tf "
          "(data_prep.mscmr / data_prep.mmwhs) or use the newer csa_tf")
    if version != FORMAT_VERSION:
      raise CsaInputError(
          f"{meta_path}: prepared with format version {version}, "
          f"this csa_tf reads version {FORMAT_VERSION}; prepare the data again")
    if dataset is not None and meta.get("dataset") != dataset:
      raise CsaInputError(f"{meta_path}: holds dataset {meta.get('dataset')!r}, "
                          f"expected {dataset!r}")
    splits_path = os.path.join(prep_dir, SPLITS_FILE)
    if not os.path.isfile(splits_path):
      raise CsaInputError(f"{splits_path}: file not found")
    splits = _read_json(splits_path)
    if set(splits) != {"train", "test"}:
      raise CsaInputError(f"{splits_path}: expected keys 'train' and 'test'")
    prepared = cls(prep_dir, meta, splits)
    for entry in prepared.entries:
      path = os.path.join(prep_dir, entry.file)
      if not os.path.isfile(path):
        raise CsaInputError(f"{path}: listed in {META_FILE} but missing")
    return prepared

  @property
  def orientation(self) -> str:
    """How its volumes became slices: slicing.ORIENTATION_HEADER or _STORED (older
    MS-CMRSeg PREPs); prediction must turn new scans the same way."""
    default = (slicing.ORIENTATION_STORED if self.spec.name == "mscmr"
               else slicing.ORIENTATION_HEADER)
    return self.meta.get("settings", {}).get("orientation", default)

  @property
  def in_plane_spacing_mm(self) -> Dict[str, Optional[float]]:
    """{modality: the in-plane pixel size (mm) its slices were resampled to, or None
    where they are on each volume's own grid} (MM-WHS `--in_plane_spacing`); PREPs
    that record none were not resampled."""
    recorded = self.meta.get("in_plane_spacing_mm") or {}
    return {m: (None if recorded.get(m) is None else float(recorded[m]))
            for m in self.modalities}

  @property
  def release(self) -> str:
    """The release it was prepared from (a datasets.RELEASES key); PREPs that record
    none come from the dataset's default release (datasets.DEFAULT_RELEASE)."""
    return self.meta.get("release") or datasets.DEFAULT_RELEASE[self.spec.name]

  @property
  def meta_path(self) -> str:
    return os.path.join(self.prep_dir, META_FILE)

  def fingerprint(self) -> str:
    """A digest of what the PREP holds, the same wherever the folder is moved.

    It covers prep_meta.json (dataset, crop, every volume's entry), splits.json and each
    volume file's name and size: a preparation of other scans, another split or seed,
    or another crop differs; copying or moving the folder does not change it. (Volume
    bytes are not read: a whole-heart PREP holds gigabytes.)
    """
    digest = hashlib.sha256()
    for name in (META_FILE, SPLITS_FILE):
      with open(os.path.join(self.prep_dir, name), "rb") as f:
        digest.update(f.read())
    for entry in sorted(self.entries, key=lambda e: e.file):
      size = os.path.getsize(os.path.join(self.prep_dir, entry.file))
      digest.update(f"{entry.file}\0{size}\0".encode())
    return digest.hexdigest()

  def patients(self, split: str, modalities: Sequence[str]) -> Dict[str, List[str]]:
    """{modality: patient ids of `split`} for the given modalities."""
    return {m: [entry.patient_id for entry in self.entries_for(split, m)]
            for m in modalities}

  def check_fits(self, config: "TrainConfig") -> None:
    """Checks that a run with this config can be evaluated (or shown) on this PREP.

    Raises:
      CsaInputError: naming prep_meta.json, when the dataset, the number of classes or
        a modality of the run differ.
    """
    meta = self.meta_path
    if self.spec.name != config.dataset:
      raise CsaInputError(f"{meta}: dataset {self.spec.name!r}, but the run was trained "
                          f"on {config.dataset!r}")
    if self.spec.num_classes != config.num_classes:
      raise CsaInputError(f"{meta}: {self.spec.num_classes} classes, but the run has "
                          f"{config.num_classes}")
    missing = [m for m in config.modalities if m not in self.modalities]
    if missing:
      raise CsaInputError(f"{meta}: lacks modalities {', '.join(missing)} of the run")

  def split_of(self, patient_id: str) -> str:
    for split, ids in self.splits.items():
      if patient_id in ids:
        return split
    raise KeyError(patient_id)

  def entries_for(self, split: str, modality: Optional[str] = None) -> List[VolumeEntry]:
    """Volumes of a split ("train"/"test"), optionally of one modality, in id order."""
    ids = set(self.splits[split])
    return [entry for entry in self.entries
            if entry.patient_id in ids and (modality is None or entry.modality == modality)]

  def load(self, entry: VolumeEntry) -> PreparedVolume:
    return load_volume(os.path.join(self.prep_dir, entry.file))

  def train_slices(self, modality: str, *, labelled_only: bool = True,
                   input_slices: Optional[int] = None,
                   patients: Optional[Sequence[str]] = None
                   ) -> Tuple[np.ndarray, np.ndarray]:
    """All training slices of one modality, stacked.

    Args:
      modality: the modality key.
      labelled_only: keep only slices with some foreground (the default for training:
        the paper trains on annotated slices).
      input_slices: None for the slices alone; 1 or 3 for the network's inputs, each
        slice with its neighbours in its own volume (`PreparedVolume.inputs`).
      patients: only these training patients' volumes (label scarcity, see
        csa_tf/data/label_scarcity.py); None: every training patient.

    Returns:
      (images [N, crop, crop] float32, or [N, crop, crop, input_slices] with
      input_slices; labels [N, crop, crop] uint8).

    Raises:
      CsaInputError: the modality was not prepared or has no training slices.
    """
    if modality not in self.modalities:
      raise CsaInputError(f"{self.prep_dir}: modality {modality!r} was not prepared "
                          f"(has {', '.join(self.modalities)})")
    images, labels = [], []
    for entry in self.entries_for("train", modality):
      if patients is not None and entry.patient_id not in patients:
        continue
      volume = self.load(entry)
      keep = (volume.label.reshape(len(volume.label), -1).max(axis=1) > 0
              if labelled_only else np.ones(len(volume.label), dtype=bool))
      images.append(volume.image[keep] if input_slices is None
                    else volume.inputs(input_slices)[keep])
      labels.append(volume.label[keep])
    if not images or sum(len(x) for x in images) == 0:
      raise CsaInputError(f"{self.prep_dir}: no training slices for modality {modality!r}")
    return np.concatenate(images), np.concatenate(labels)


def _read_json(path: str) -> dict:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError) as error:
    raise CsaInputError(f"{path}: unreadable JSON ({error})") from None
