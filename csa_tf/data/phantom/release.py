"""Writing a phantom set in a release's layout: file names, NIfTI files, the marker."""
import json
import os
from typing import List, Optional, Tuple

import nibabel as nib
import numpy as np

from csa_tf.configs import datasets
from csa_tf.errors import CsaInputError, param
from csa_tf.io import atomic
from csa_tf.data.phantom import challenge
from csa_tf.data.phantom.anatomy import PhantomGeometry
from csa_tf.data.phantom.myops_layout import write_myops
from csa_tf.data.phantom.sampling import _check_scale, sample_geometry
from csa_tf.data.phantom.short_axis import _render_short_axis
from csa_tf.data.phantom.whole_heart import _render_whole_heart


MARKER_NAME = "csa_phantom.json"
MAX_PATIENTS = 999
# The releases' patient counts, the CLI's default --num_patients.
RELEASE_PATIENTS = {"mscmr": 45, "mmwhs": 20}
# The copies of a release a phantom can imitate (--release): "full" (every volume
# labelled, the layout the paper used), MS-CMRSeg's "challenge" copy
# (csa_tf/data/phantom/challenge.py) or MS-CMRSeg's patients as MyoPS 2020 ships them
# (csa_tf/data/phantom/myops_layout.py).
RELEASES = ("full", "challenge", "myops")
MYOPS_TRAIN_PATIENTS = 25  # MyoPS 2020's train25/, the default --num_patients there.


def render(geometry: PhantomGeometry) -> Tuple[np.ndarray, np.ndarray]:
  """Draws a geometry's image (int16) and label (uint16) arrays."""
  if geometry.dataset == "mscmr":
    return _render_short_axis(geometry)
  return _render_whole_heart(geometry)


def _parse_modalities(spec: datasets.DatasetSpec, modalities) -> List[str]:
  """Validates modality keys (a list or a comma-separated string; C0 means bssfp)."""
  if modalities is None:
    return list(spec.modalities)
  if isinstance(modalities, str):
    modalities = modalities.split(",")
  aliases = {tag.lower(): key for key, tag in datasets.MSCMR_SEQUENCE_TAGS.items()
             } if spec is datasets.MSCMR else {}
  parsed = []
  for item in modalities:
    key = aliases.get(str(item).strip().lower(), str(item).strip().lower())
    if key not in spec.modalities:
      raise CsaInputError(f"{param('modalities')}: unknown {spec.name} modality {item!r}; "
                          "expected "
                          f"some of {list(spec.modalities)}")
    parsed.append(key)
  if not parsed or len(set(parsed)) != len(parsed):
    raise CsaInputError(f"{param('modalities', ','.join(map(str, modalities)))}: list each "
                        "modality once")
  return [m for m in spec.modalities if m in parsed]


def _relative_paths(dataset: str, patient: int, modality: str) -> Tuple[str, str]:
  """(image, label) paths of one volume inside the output folder, as in the release."""
  if dataset == "mscmr":
    tag = datasets.MSCMR_SEQUENCE_TAGS[modality]
    return (os.path.join("images", f"patient{patient}_{tag}.nii.gz"),
            os.path.join("labels", tag, f"patient{patient}_{tag}_manual.nii.gz"))
  stem = os.path.join(f"{modality}_train", f"{modality}_train_{patient}")
  return stem + "_image.nii.gz", stem + "_label.nii.gz"


def _volume_files(dataset: str, release: str, patient: int, modality: str, image, label,
                  *, seed: int, num_patients: int) -> List[Tuple[str, np.ndarray]]:
  """(relative path, array) of each file one volume has in the release's copy."""
  if release == "challenge":
    image, label = challenge.apply_quirks(image, label, patient=patient,
                                          modality=modality, seed=seed,
                                          num_patients=num_patients)
    paths = challenge.relative_paths(patient, modality)
  else:
    paths = _relative_paths(dataset, patient, modality)
  return [(path, data) for path, data in zip(paths, (image, label)) if data is not None]


def _write_nifti(path: str, data: np.ndarray, geometry: PhantomGeometry) -> None:
  """Writes one volume with the geometry's affine and spacing (folders created)."""
  img = nib.Nifti1Image(data, geometry.affine)
  img.set_data_dtype(data.dtype)
  img.header.set_zooms(geometry.spacing)
  img.header.set_xyzt_units("mm")
  img.header["descrip"] = b"csa_tf synthetic phantom (data_prep.phantom)"
  os.makedirs(os.path.dirname(path), exist_ok=True)
  nib.save(img, path)


def _read_marker(folder: str) -> Optional[dict]:
  """The folder's phantom marker, or None when it has no readable one."""
  try:
    with open(os.path.join(folder, MARKER_NAME), encoding="utf-8") as f:
      marker = json.load(f)
  except (OSError, ValueError):
    return None
  return marker if isinstance(marker, dict) else None


def _check_output_dir(output_dir: str, dataset: str) -> None:
  """Refuses to replace anything but an empty folder or a phantom of the same dataset."""
  if not os.path.exists(output_dir):
    return
  if not os.path.isdir(output_dir):
    raise CsaInputError(f"{param('output_dir', output_dir)}: exists and is not a folder")
  if not os.listdir(output_dir):
    return
  marker = _read_marker(output_dir)
  if marker is None:
    raise CsaInputError(
        f"{param('output_dir', output_dir)}: not empty and not a phantom folder (no "
        f"{MARKER_NAME});"
        " refusing to overwrite it, choose a new or empty folder")
  if marker.get("dataset") != dataset:
    raise CsaInputError(
        f"{param('output_dir', output_dir)}: holds a {marker.get('dataset')} phantom; "
        "refusing to "
        f"replace it with {dataset}, choose another folder")


def _write_release(release: str, spec: datasets.DatasetSpec, staging: str,
                   output_dir: str, *, keys: List[str], num_patients: int, seed: int,
                   scale: float, progress) -> List[str]:
  """Writes the files of one phantom layout (checked by _check_release) into staging;
  returns their final paths."""
  if release == "myops":
    return write_myops(staging, output_dir, keys=keys, num_patients=num_patients,
                       seed=seed, scale=scale, write=_write_nifti, progress=progress)
  return _write_full(spec, release, staging, output_dir, keys=keys,
                     num_patients=num_patients, seed=seed, scale=scale, progress=progress)


def _check_release(release: str, spec: datasets.DatasetSpec) -> None:
  """Raises CsaInputError for a layout the dataset has not (challenge and myops are
  MS-CMRSeg's only)."""
  allowed = RELEASES if spec is datasets.MSCMR else ("full",)
  if release not in allowed:
    names = (", ".join(allowed[:-1]) + " or " + allowed[-1] if len(allowed) > 1
             else allowed[0])
    raise CsaInputError(f"{param('release', release)}: expected {names} for {spec.name}")


def _write_full(spec: datasets.DatasetSpec, release: str, staging: str, output_dir: str,
                *, keys: List[str], num_patients: int, seed: int, scale: float,
                progress) -> List[str]:
  """The dataset's own release layout ("full": every volume with its label), or
  MS-CMRSeg's challenge copy (_volume_files)."""
  written = []
  first = 1 if spec is datasets.MSCMR else 1001
  for index, patient in enumerate(range(first, first + num_patients), 1):
    grids = []
    for modality in keys:
      geometry = sample_geometry(spec.name, patient, modality, seed=seed, scale=scale)
      image, label = render(geometry)
      files = _volume_files(spec.name, release, patient, modality, image, label,
                            seed=seed, num_patients=num_patients)
      for relative, data in files:
        _write_nifti(os.path.join(staging, relative), data, geometry)
        written.append(os.path.join(output_dir, relative))
      grids.append(f"{modality} {'x'.join(map(str, geometry.shape))}"
                   + ("" if len(files) == 2 else " (no label)"))
    if progress is not None:
      progress(f"phantom {spec.name} patient {patient} ({index}/{num_patients}): "
               + ", ".join(grids))
  return written


def generate_phantoms(dataset: str, output_dir: str, *, num_patients: int, seed: int = 0,
                      scale: float = 1.0, modalities=None, progress=print,
                      release: str = "full") -> List[str]:
  """Writes a phantom release of `dataset` into output_dir.

  The files are written into a temporary sibling folder that is renamed to output_dir
  once complete, so an error leaves no half-written output; an existing phantom folder
  of the same dataset is replaced.

  Args:
    dataset: "mscmr" or "mmwhs".
    output_dir: the folder to create (or an empty one, or an older phantom of dataset).
    num_patients: patients to draw (MS-CMRSeg 1..N, MM-WHS 1001..1000+N).
    seed: seed of the whole set (a non-negative integer).
    scale: shrinks the in-plane matrix (and MM-WHS' slice count) by this factor in
      (0, 1], keeping the anatomy's size in mm.
    modalities: modality keys (list or comma-separated; MS-CMRSeg also takes C0 for
      bssfp); None for all of the dataset's.
    progress: called with one line per patient; None for silence.
    release: one of RELEASES: "full" (every volume labelled) or, for mscmr,
      "challenge" (the challenge copy's folders, unlabelled patients, NaN and stray
      voxels: phantom/challenge.py) or "myops" (phantom/myops_layout.py; num_patients
      then counts train25/ patients).

  Returns:
    The written NIfTI paths under output_dir (image then label, patient by patient;
    an unlabelled volume has its image only).

  Raises:
    CsaInputError: bad arguments, or output_dir is a file, a non-empty folder that is
      not a phantom folder, or a phantom of the other dataset.
  """
  spec = datasets.get_spec(dataset)
  if isinstance(num_patients, bool) or not isinstance(num_patients, int) or not (
      1 <= num_patients <= MAX_PATIENTS):
    raise CsaInputError(f"{param('num_patients', num_patients)}: must be an integer in "
                        f"[1, {MAX_PATIENTS}]")
  if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
    raise CsaInputError(f"{param('seed', seed)}: must be a non-negative integer")
  _check_scale(scale)
  _check_release(release, spec)
  keys = _parse_modalities(spec, modalities)
  if not output_dir:
    raise CsaInputError(f"{param('output_dir')} is required")
  output_dir = os.path.abspath(output_dir)
  atomic.restore_interrupted_replace(output_dir)  # Undo a replace killed half-way.
  _check_output_dir(output_dir, spec.name)

  staged = atomic.StagedFolder(output_dir)
  staging = staged.path
  try:
    written = _write_release(release, spec, staging, output_dir, keys=keys,
                             num_patients=num_patients, seed=seed, scale=scale,
                             progress=progress)
    marker = dict(generator="data_prep.phantom", dataset=spec.name, seed=seed,
                  scale=scale, num_patients=num_patients, modalities=keys)
    if release != "full":  # A full release's marker stays as it always was.
      marker["release"] = release
    atomic.write_json(os.path.join(staging, MARKER_NAME), marker, indent=2,
                      final_newline=False)
    _check_output_dir(output_dir, spec.name)  # It may have changed while we drew.
    staged.commit()  # Replaces an old phantom of the dataset with one rename.
  except BaseException:
    staged.abort()
    raise
  return written
