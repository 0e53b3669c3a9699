"""One prepared volume (`PreparedVolume`) and its .npz file in a PREP.

Each .npz is read with allow_pickle=False; strings are stored as 0-d unicode arrays.
"""
import dataclasses
import json
import os
import zipfile
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from csa_tf.errors import CsaInputError
from csa_tf.data.slicing import VolumeGeometry
from csa_tf.data.input_slices import stack_neighbours


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
