"""The prepared-data folder (PREP) that training, evaluation and figures read.

Layout:
  PREP/prep_meta.json               format, version, dataset, classes, modalities, crop,
                                    settings and the list of volumes
  PREP/splits.json                  {"train": [patient ids], "test": [patient ids]}
  PREP/summary.txt                  counts per modality and split, for people
  PREP/volumes/<modality>/<patient_id>.npz   one volume (see `PreparedVolume`)

Each .npz is read with allow_pickle=False; strings are stored as 0-d unicode arrays.
"""
import dataclasses
import hashlib
import json
import os
import zipfile
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

import numpy as np

from csa_tf.configs import datasets
from csa_tf.errors import CsaInputError
from csa_tf.data import slicing
from csa_tf.data.slicing import VolumeGeometry
from csa_tf.data.input_slices import stack_neighbours

if TYPE_CHECKING:  # Only for the annotation: PREP readers need not load the config code.
  from csa_tf.configs.train_config import TrainConfig  # pylint: disable=g-bad-import-order

FORMAT_NAME = "csa_tf.prepared"
# prep_meta.json's format_version (every csa_tf preparation has recorded one). Version 1:
# the layout above. Bump it when a reader of this version would misread a new PREP.
FORMAT_VERSION = 1
META_FILE = "prep_meta.json"
SPLITS_FILE = "splits.json"
SUMMARY_FILE = "summary.txt"


@dataclasses.dataclass
class PreparedVolume:
  """One prepared volume.

  Attributes:
    patient_id: e.g. "patient12" (MS-CMRSeg) or "ct_train_1003" (MM-WHS).
    modality: a modality key, e.g. "lge".
    image: z-scored cropped slices [S, crop, crop] float32.
    label: class indices [S, crop, crop] uint8.
    geometry: how to paste slices back into the original grid.
    spacing: the original voxel size in mm per original array axis.
    affine: the original 4x4 voxel-to-world matrix.
    source: the original image file name (no folder).
    full_label: class indices of the whole label file on the original grid, uint8
      [original_shape] (stray islands included), what evaluation scores against; None
      in PREPs made before csa_tf stored it (they score the label inside the box).
    stray_voxels: int64 [N, 3], original-grid voxel indices of the stray islands
      (csa_tf.data.heart_region): background in `label`, not scored; None with
      full_label None.
    stray_islands: the islands' reports ({"class", "voxels", "bbox"}), as in
      prep_meta.json's "stray_islands".
    neighbours: [S, crop, crop, 2] float32, each slice's previous and next slice where
      the release stores them with the slice (the PnP-AdaNet records' side channels),
      z-scored like `image`; None where the neighbours are the volume's own slices.
  """
  patient_id: str
  modality: str
  image: np.ndarray
  label: np.ndarray
  geometry: VolumeGeometry
  spacing: Tuple[float, float, float]
  affine: np.ndarray
  source: str = ""
  full_label: Optional[np.ndarray] = None
  stray_voxels: Optional[np.ndarray] = None
  stray_islands: Tuple[dict, ...] = ()
  neighbours: Optional[np.ndarray] = None

  def inputs(self, input_slices: int) -> np.ndarray:
    """The network input of every slice: [S, crop, crop, input_slices] float32."""
    return stack_neighbours(self.image, input_slices, self.neighbours)

  @property
  def original_label(self) -> np.ndarray:
    """The class-index label pasted back onto the original grid (outside crop = 0)."""
    return self.geometry.from_slices(self.label)

  def scoring_reference(self) -> Tuple[np.ndarray, Optional[np.ndarray], bool]:
    """What a prediction on the original grid is scored against (REFERENCE.md s. 6).

    Returns:
      (reference, ignore, whole_file): reference, class indices [original_shape]: the
      whole label file where the PREP stores it, else the label inside the crop box
      pasted back; ignore, bool [original_shape] or None: the stray islands' voxels,
      not scored; whole_file: False only where an older PREP's crop box leaves part of
      the image out, so the reference may miss what the box cut.
    """
    if self.full_label is None:
      return self.original_label, None, self.geometry.covers_image()
    ignore = None
    if self.stray_voxels is not None and len(self.stray_voxels):
      ignore = np.zeros(self.full_label.shape, dtype=bool)
      ignore[tuple(self.stray_voxels.T)] = True
    return self.full_label, ignore, True


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


# Arrays deflated inside a volume's .npz: the whole-file label is mostly background
# (a CT label of 512x512x300 bytes shrinks about a hundredfold); the float slices hardly
# compress, so they are stored as np.savez stores everything.
_COMPRESSED_ARRAYS = ("full_label",)


def save_volume(path: str, volume: PreparedVolume) -> None:
  """Writes one volume as .npz (plain arrays only, so it loads without pickle)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  arrays = dict(
      patient_id=np.array(volume.patient_id),
      modality=np.array(volume.modality),
      image=volume.image.astype(np.float32),
      label=volume.label.astype(np.uint8),
      original_shape=np.array(volume.geometry.original_shape, dtype=np.int64),
      ornt=np.asarray(volume.geometry.ornt, dtype=np.float64),
      crop_origin=np.array(volume.geometry.crop_origin, dtype=np.int64),
      crop_size=np.array(volume.geometry.crop_size, dtype=np.int64),
      # Only resampled geometries store their zoom: other PREPs stay as before.
      **(dict(zoom=np.array(volume.geometry.zoom, dtype=np.float64))
         if volume.geometry.resampled else {}),
      spacing=np.array(volume.spacing, dtype=np.float64),
      affine=np.asarray(volume.affine, dtype=np.float64),
      source=np.array(volume.source),
      **({} if volume.neighbours is None
         else dict(neighbours=volume.neighbours.astype(np.float32))),
  )
  if volume.full_label is not None:
    stray = (np.zeros((0, 3)) if volume.stray_voxels is None else volume.stray_voxels)
    arrays.update(full_label=volume.full_label.astype(np.uint8),
                  stray_voxels=np.asarray(stray, dtype=np.int64).reshape(-1, 3),
                  stray_islands=np.array(json.dumps(list(volume.stray_islands))))
  write_npz(path, arrays, compressed=_COMPRESSED_ARRAYS)


def write_npz(path: str, arrays: Dict[str, np.ndarray], *,
              compressed: Sequence[str] = ()) -> None:
  """Writes arrays as an .npz that np.load reads, deflating only those named.

  np.savez stores every member and np.savez_compressed deflates every one; an .npz is
  a zip of .npy files, and zip compresses member by member.
  """
  with zipfile.ZipFile(path, "w", allowZip64=True) as archive:
    for name, value in arrays.items():
      info = zipfile.ZipInfo(f"{name}.npy")
      info.compress_type = (zipfile.ZIP_DEFLATED if name in compressed
                            else zipfile.ZIP_STORED)
      with archive.open(info, "w", force_zip64=True) as member:
        np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)


def load_volume(path: str) -> PreparedVolume:
  """Reads one prepared volume.

  Raises:
    CsaInputError: the file is missing or is not a prepared volume.
  """
  arrays = read_npz(path, what="prepared volume")
  required = ("patient_id", "modality", "image", "label", "original_shape", "ornt",
              "crop_origin", "crop_size", "spacing", "affine")
  missing = [key for key in required if key not in arrays]
  if missing:
    raise CsaInputError(f"{path}: not a prepared volume (missing {', '.join(missing)})")
  image, label = arrays["image"], arrays["label"]
  if (image.ndim != 3 or image.shape != label.shape
      or not np.issubdtype(image.dtype, np.floating)
      or not np.issubdtype(label.dtype, np.integer)):
    raise CsaInputError(f"{path}: not a prepared volume (image {image.dtype} "
                        f"{image.shape}, label {label.dtype} {label.shape}; expected "
                        "float slices and integer labels of one [S, H, W] shape)")
  geometry = VolumeGeometry(
      original_shape=tuple(int(v) for v in arrays["original_shape"]),
      ornt=arrays["ornt"],
      crop_origin=tuple(int(v) for v in arrays["crop_origin"]),
      crop_size=int(arrays["crop_size"]),
      zoom=_zoom(arrays, path),
  )
  full_label = arrays.get("full_label")
  if full_label is not None and (full_label.shape != geometry.original_shape
                                 or not np.issubdtype(full_label.dtype, np.integer)):
    raise CsaInputError(f"{path}: not a prepared volume (full_label {full_label.dtype} "
                        f"{full_label.shape}; expected integer labels of the original "
                        f"shape {geometry.original_shape})")
  stray_voxels = arrays.get("stray_voxels")
  if full_label is not None and (
      stray_voxels is None or stray_voxels.ndim != 2 or stray_voxels.shape[1] != 3
      or (len(stray_voxels) and (stray_voxels.min() < 0 or np.any(
          stray_voxels.max(axis=0) >= np.array(geometry.original_shape))))):
    raise CsaInputError(f"{path}: not a prepared volume (stray_voxels missing or not "
                        f"[N, 3] voxel indices inside {geometry.original_shape})")
  try:
    islands = tuple(json.loads(str(arrays["stray_islands"]))
                    if "stray_islands" in arrays else ())
  except ValueError:
    raise CsaInputError(f"{path}: not a prepared volume (stray_islands is not the "
                        "JSON list csa_tf writes)") from None
  return PreparedVolume(
      patient_id=str(arrays["patient_id"]),
      modality=str(arrays["modality"]),
      image=arrays["image"],
      label=arrays["label"],
      geometry=geometry,
      spacing=tuple(float(v) for v in arrays["spacing"]),
      affine=arrays["affine"],
      source=str(arrays.get("source", "")),
      full_label=full_label,
      stray_voxels=stray_voxels,
      stray_islands=islands,
      neighbours=_neighbours(arrays, image.shape, path),
  )


def _zoom(arrays: Dict[str, np.ndarray], path: str) -> Tuple[float, float]:
  """The geometry's in-plane zoom; (1, 1) where the volume stores none (not resampled)."""
  zoom = arrays.get("zoom")
  if zoom is None:
    return (1.0, 1.0)
  if zoom.shape != (2,) or not np.all(np.isfinite(zoom)) or not np.all(zoom > 0):
    raise CsaInputError(f"{path}: not a prepared volume (zoom {zoom.tolist()}; expected "
                        "two positive in-plane factors)")
  return (float(zoom[0]), float(zoom[1]))


def _neighbours(arrays: Dict[str, np.ndarray], shape, path: str) -> Optional[np.ndarray]:
  neighbours = arrays.get("neighbours")
  if neighbours is not None and neighbours.shape != tuple(shape) + (2,):
    raise CsaInputError(f"{path}: not a prepared volume (neighbours {neighbours.shape}; "
                        f"expected {tuple(shape) + (2,)})")
  return neighbours


def read_npz(path: str, *, what: str = "npz file") -> Dict[str, np.ndarray]:
  """Reads every array of an .npz without unpickling anything.

  An .npz may hold pickled Python objects, and unpickling runs code chosen by whoever
  wrote the file, so object arrays are refused, never loaded (allow_pickle=False).

  Args:
    path: the file.
    what: what the file should be, for messages ("prepared volume").

  Raises:
    CsaInputError: the file is missing, unreadable, or holds an object array.
  """
  try:
    loaded = np.load(path, allow_pickle=False)
    if not isinstance(loaded, np.lib.npyio.NpzFile):
      raise CsaInputError(f"{path}: not a {what} (a single .npy array, not an .npz)")
    with loaded as npz:
      return {key: npz[key] for key in npz.files}
  except CsaInputError:
    raise
  except FileNotFoundError:
    raise CsaInputError(f"{path}: {what} not found") from None
  except ValueError as error:
    if "Object arrays" in str(error):
      raise CsaInputError(f"{path}: holds a pickled Python object array; csa_tf never "
                          f"loads pickles, so this is not a {what} it can read") from None
    if "allow_pickle" in str(error):
      # Neither .npz nor .npy: numpy's last guess would be a pickle.
      raise CsaInputError(f"{path}: not a {what} (not an .npz archive; csa_tf never "
                          "loads pickles)") from None
    raise CsaInputError(f"{path}: not a readable {what} ({error})") from None
  except (OSError, EOFError, zipfile.BadZipFile) as error:
    raise CsaInputError(f"{path}: not a readable {what} ({error})") from None


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
