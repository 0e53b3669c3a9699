"""MyoPS 2020 phantoms: three co-registered sequences and one label per patient.

The release (REFERENCE.md section 5b) holds each patient's bSSFP (C0), LGE (DE) and T2
on one voxel grid, so one label serves all three: here the three sequences are drawn on
one grid from one anatomy (MS-CMRSeg phantoms draw them unpaired, on grids of their own).
The grid is an LGE-like in-plane matrix (~0.73 mm) over a few thick slices (12-23 mm),
like the release's. Every patient has a myocardial scar (label 2221) inside a wider
edema (1220), both parts of the myocardium ring: bright in LGE (scar) and T2 (edema).

  train25/myops_training_1NN_{C0,DE,T2}.nii.gz      (NN = 01..num_patients)
  train25_myops_gd/myops_training_1NN_gd.nii.gz     500 LV, 600 RV, 200 normal myo,
                                                    1220 edema, 2221 scar
  test20/myops_test_2NN_{C0,DE,T2}.nii.gz           no labels, as in the release
"""
import dataclasses
import math
import os
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from csa_tf.configs import datasets
from csa_tf.errors import CsaInputError, param
from csa_tf.data.phantom.anatomy import PhantomGeometry
from csa_tf.data.phantom.sampling import (
    _DATASET_KEYS, _RENDER_STREAM, _grid_affine, _rng, _sample_short_axis)
from csa_tf.data.phantom.short_axis import (
    _render_short_axis, _scar_distance, _short_axis_frame, _short_axis_shapes)

TRAIN_FIRST, TEST_FIRST = 101, 201
MAX_MYOPS_PATIENTS = 99  # Three-digit 1NN / 2NN numbers.
EDEMA_VALUE, SCAR_VALUE = 1220, 2221
_T2_EDEMA_GAIN = 0.8  # T2 signal of edema over normal myocardium, a fraction more.


def num_test_patients(num_patients: int) -> int:
  """test20/ patients drawn beside num_patients training ones (20 beside 25, as in the
  release)."""
  return min(MAX_MYOPS_PATIENTS, max(1, round(num_patients * 20 / 25)))


def myops_geometry(patient: int, seed: int, scale: float) -> PhantomGeometry:
  """One patient's common grid and anatomy (modality "lge"; the others reuse it).

  T2's few thick mid-ventricular slices and heart, LGE's in-plane matrix and spacing.
  """
  slices = _sample_short_axis("t2", patient, seed, scale)
  in_plane = _sample_short_axis("lge", patient, seed, scale)
  shape = (in_plane.shape[0], in_plane.shape[1], slices.shape[2])
  spacing = (in_plane.spacing[0], in_plane.spacing[1], slices.spacing[2])
  directions = slices.affine[:3, :3] / np.asarray(slices.spacing)[None, :]
  center = slices.affine[:3, :3] @ ((np.asarray(slices.shape) - 1) / 2.0) + (
      slices.affine[:3, 3])
  rng = _rng(seed, _DATASET_KEYS["myops"], patient, 0)
  heart = slices.heart
  length = heart.lv_length
  scar = (float(rng.uniform(-math.pi, math.pi)), float(rng.uniform(0.4, 0.8)),
          float(rng.uniform(0.4, 1.0)), float(rng.uniform(0.0, 0.2) * length),
          float(rng.uniform(0.7, 1.0) * length))
  render_seed = int(_rng(seed, _DATASET_KEYS["myops"], patient,
                         _RENDER_STREAM).integers(2**62))
  return PhantomGeometry("mscmr", "lge", patient, shape, spacing,
                         _grid_affine(directions, spacing, shape, center),
                         dataclasses.replace(heart, scar=scar), render_seed)


def edema_sector(scar: Tuple[float, ...]) -> Tuple[float, ...]:
  """The edema around a scar: a wider sector through the whole wall, a little longer."""
  angle, half_width, _, start, end = scar
  return (angle, half_width * 1.6, 1.0, start - 5.0, end + 5.0)


def myops_label(geometry: PhantomGeometry, label: np.ndarray) -> np.ndarray:
  """Marks edema (1220) and scar (2221) inside the myocardium (200) of a rendered label."""
  x, y, w = _short_axis_frame(geometry)
  shapes = _short_axis_shapes(geometry.heart, x, y, w)
  myo = label == datasets.MSCMR.label_values[1]
  out = label.copy()
  edema = _scar_distance(shapes, w, edema_sector(geometry.heart.scar)) < 0
  out[myo & edema] = EDEMA_VALUE
  out[myo & (_scar_distance(shapes, w, geometry.heart.scar) < 0)] = SCAR_VALUE
  return out


def render_patient(geometry: PhantomGeometry, modalities: Sequence[str]):
  """{modality: image (int16)} on the common grid, and the MyoPS label (uint16)."""
  images, label = {}, None
  for modality in modalities:
    index = datasets.MSCMR.modalities.index(modality)
    # Only LGE shows the scar (contrast uptake); T2's edema is brightened below.
    heart = geometry.heart if modality == "lge" else dataclasses.replace(
        geometry.heart, scar=None)
    # Each sequence its own appearance and noise, over the same anatomy.
    image, drawn = _render_short_axis(dataclasses.replace(
        geometry, modality=modality, heart=heart, render_seed=geometry.render_seed + index))
    if modality == "t2":
      x, y, w = _short_axis_frame(geometry)
      shapes = _short_axis_shapes(geometry.heart, x, y, w)
      d_edema = _scar_distance(shapes, w, edema_sector(geometry.heart.scar))
      voxel = float(min(geometry.spacing[:2]))
      gain = 1.0 + _T2_EDEMA_GAIN * np.clip(0.5 - d_edema / voxel, 0.0, 1.0)
      image = np.clip(np.rint(image * gain), 0, 32767).astype(np.int16)
    images[modality] = image
    label = drawn
  return images, myops_label(geometry, label)


def write_myops(staging: str, output_dir: str, *, keys: Sequence[str], num_patients: int,
                seed: int, scale: float, write: Callable,
                progress: Optional[Callable[[str], None]]) -> List[str]:
  """Writes the MyoPS layout into staging; returns the final paths under output_dir.

  Args:
    write: release.py's NIfTI writer, write(path, data, geometry).

  Raises:
    CsaInputError: num_patients above MAX_MYOPS_PATIENTS.
  """
  if num_patients > MAX_MYOPS_PATIENTS:
    raise CsaInputError(f"{param('num_patients', num_patients)}: MyoPS numbers patients "
                        f"1NN, at most {MAX_MYOPS_PATIENTS}")
  tags = datasets.MYOPS_SEQUENCE_TAGS
  written = []
  parts = [("train25", "myops_training", TRAIN_FIRST + k) for k in range(num_patients)]
  parts += [("test20", "myops_test", TEST_FIRST + k)
            for k in range(num_test_patients(num_patients))]
  for index, (folder, stem, patient) in enumerate(parts, 1):
    geometry = myops_geometry(patient, seed, scale)
    images, label = render_patient(geometry, keys)
    files = [(os.path.join(folder, f"{stem}_{patient}_{tags[m]}.nii.gz"), images[m])
             for m in keys]
    if folder == "train25":
      files.append((os.path.join("train25_myops_gd", f"{stem}_{patient}_gd.nii.gz"), label))
    for relative, data in files:
      write(os.path.join(staging, relative), data, geometry)
      written.append(os.path.join(output_dir, relative))
    if progress is not None:
      progress(f"phantom myops {stem}_{patient} ({index}/{len(parts)}): "
               f"{'x'.join(map(str, geometry.shape))}")
  return written
