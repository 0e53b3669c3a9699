"""Segments new NIfTI volumes with a trained run; no label needed.

`predict_files` is what `python -m csa_tf.predict` runs; that command's docstring
describes the two fields of view and the output. Slices are taken as in preparation
(csa_tf.data.slicing), resampled in-plane to the pixel size the run's PREP used (MM-WHS
`--in_plane_spacing`; `run_in_plane_spacing`), padded to the sizes the network takes
(csa_tf.configs.downsampling), and pasted back into the input's grid (nearest label,
VolumeGeometry.from_slices) with the release's label values. A few NaN/Inf
voxels (up to 1%, as the MS-CMRSeg challenge copy's T2 images hold) are repaired as in
preparation (csa_tf/io/non_finite.py) and reported in the volume's log line.
"""
import os
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from csa_tf.configs import datasets
from csa_tf.errors import CsaInputError, param
from csa_tf.configs.downsampling import DOWNSAMPLE, padded_size
from csa_tf.io import non_finite
from csa_tf.io.nifti import Volume, check_not_blank, read_volume, write_label_volume
from csa_tf.io.run_dir import RunDir
from csa_tf.data.prepared import META_FILE, PreparedDataset
from csa_tf.data.slicing import (ORIENTATION_HEADER, ORIENTATION_STORED, VolumeGeometry,
                                 dataset_ornt, in_plane_zoom, ornt_slice_axis)

_NIFTI_SUFFIXES = (".nii.gz", ".nii")


def slice_geometry(shape: Tuple[int, int, int], affine: np.ndarray, *, dataset: str,
                   field_of_view: str, crop_size: int,
                   orientation: str = ORIENTATION_HEADER,
                   spacing: Optional[Sequence[float]] = None,
                   in_plane_spacing: Optional[float] = None) -> VolumeGeometry:
  """The geometry that turns a new volume into network slices without a label.

  `orientation` is that of the run's PREP (`run_orientation`), so that a new scan is
  turned as the training scans were; with `in_plane_spacing` (mm, the run's
  `run_in_plane_spacing`) its slices are resampled to that pixel size from the scan's
  own `spacing` (mm per array axis) first, and the box is centred on that grid.
  """
  ornt = dataset_ornt(dataset, affine, orientation)
  zoom = (1.0, 1.0) if in_plane_spacing is None else in_plane_zoom(spacing, ornt,
                                                                   in_plane_spacing)
  probe = VolumeGeometry(tuple(shape), ornt, (0, 0), DOWNSAMPLE, zoom)
  _, height, width = probe.network_grid_shape
  if field_of_view == "full":
    size = padded_size(max(height, width))
  else:
    size = crop_size
  origin = (height // 2 - size // 2, width // 2 - size // 2)
  return VolumeGeometry(tuple(shape), ornt, origin, size, zoom)


def read_scan(path: str, *, dataset: str, orientation: str) -> Volume:
  """Reads a new scan, repairing up to 1% NaN/Inf voxels along its slices.

  Raises:
    CsaInputError: as `read_volume` (more than 1% non-finite voxels among them).
  """
  return read_volume(
      path, kind="image", non_finite=non_finite.REPAIR,
      slice_axis=lambda affine: ornt_slice_axis(dataset_ornt(dataset, affine,
                                                             orientation)))


def run_orientation(run: RunDir) -> str:
  """The slice orientation of the PREP the run trained on.

  From RUN/training_data.json; a run made before it was recorded trained on a PREP
  made before MS-CMRSeg headers were read (slices as stored).
  """
  record = run.read_training_data() or {}
  return record.get("orientation", ORIENTATION_STORED)


def run_in_plane_spacing(run: RunDir, modality: str) -> Optional[float]:
  """The pixel size (mm) the run's training slices of `modality` were resampled to.

  From RUN/training_data.json, so that predict needs no PREP; for a run whose record
  predates it, from the PREP its config names (if still there); else None: not
  resampled (no PREP was before MM-WHS resampling).
  """
  record = run.read_training_data() or {}
  if "in_plane_spacing_mm" in record:
    value = record["in_plane_spacing_mm"].get(modality)
    return None if value is None else float(value)
  data_dir = run.config.data_dir
  if data_dir and os.path.isfile(os.path.join(data_dir, META_FILE)):
    return PreparedDataset.open(data_dir).in_plane_spacing_mm.get(modality)
  return None


def input_output_pairs(input_path: str, output_path: str,
                       overwrite: bool) -> List[Tuple[str, str]]:
  """Pairs inputs with outputs; checks every output before anything is written.

  Raises:
    CsaInputError: missing input, an empty input folder, or an existing output without
      overwrite.
  """
  if os.path.isdir(input_path):
    # Hidden files are skipped: among them the temporary files of an interrupted write.
    names = sorted(n for n in os.listdir(input_path)
                   if n.endswith(_NIFTI_SUFFIXES) and not n.startswith("."))
    if not names:
      raise CsaInputError(f"{input_path}: no .nii or .nii.gz files in the input folder")
    if os.path.isfile(output_path):
      raise CsaInputError(f"{output_path}: is a file; a folder input needs an output "
                          "folder")
    pairs = [(os.path.join(input_path, n), os.path.join(output_path, n)) for n in names]
  elif os.path.isfile(input_path):
    if os.path.isdir(output_path):
      output_path = os.path.join(output_path, os.path.basename(input_path))
    if not output_path.endswith(_NIFTI_SUFFIXES):
      raise CsaInputError(f"{param('output_path', output_path)}: must end in .nii.gz or "
                          ".nii")
    pairs = [(input_path, output_path)]
  else:
    raise CsaInputError(f"{input_path}: input not found")
  for source, target in pairs:
    if os.path.abspath(source) == os.path.abspath(target):
      raise CsaInputError(f"{target}: output would replace its own input")
    if os.path.exists(target) and not overwrite:
      raise CsaInputError(f"{target}: exists; pass {param('overwrite', True)} to replace "
                          "it")
  return pairs


def predict_files(model_dir: str, modality: str, input_path: str, output_path: str, *,
                  field_of_view: str = "full", overwrite: bool = False,
                  batch_size: int = 16, log: Callable[[str], None] = print) -> List[str]:
  """Segments each input volume and writes label volumes; returns the written paths.

  Every input is checked, and the model restored, before the first output is written:
  a bad file among many leaves no outputs, not some.

  Raises:
    CsaInputError: bad model dir, unknown modality, bad input files or existing outputs.
  """
  run = RunDir(model_dir)
  config = run.config
  if modality not in config.modalities:
    raise CsaInputError(f"{param('modality', modality)}: the run in {model_dir} was "
                        "trained on "
                        f"{', '.join(config.modalities)}")
  pairs = input_output_pairs(input_path, output_path, overwrite)
  orientation = run_orientation(run)
  in_plane_spacing = run_in_plane_spacing(run, modality)
  for source, _ in pairs:
    # Read twice (here and below) rather than held: volumes can be hundreds of MB.
    check_not_blank(read_scan(source, dataset=config.dataset, orientation=orientation))
  spec = datasets.get_spec(config.dataset)
  raw_values = np.array((0,) + spec.label_values, dtype=np.int16)
  # TensorFlow loads only after the cheap checks, so that they fail fast.
  segmenter = run.segmenter(batch_size=batch_size)
  written = []
  for index, (source, target) in enumerate(pairs, start=1):
    volume = read_scan(source, dataset=config.dataset, orientation=orientation)
    geometry = slice_geometry(volume.data.shape, volume.affine, dataset=config.dataset,
                              field_of_view=field_of_view, crop_size=config.crop_size,
                              orientation=orientation, spacing=volume.spacing,
                              in_plane_spacing=in_plane_spacing)
    slices = geometry.network_slices(volume.data)
    classes = geometry.from_slices(segmenter.labels(slices, modality))
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    write_label_volume(target, raw_values[classes], affine=volume.affine,
                       header=volume.header)
    counts = ", ".join(f"{name} {int((classes == c).sum())}"
                       for c, name in enumerate(spec.class_names) if c)
    repaired = (f"; {volume.non_finite_repaired} non-finite (NaN/Inf) input voxels "
                "repaired" if volume.non_finite_repaired else "")
    log(f"[{index}/{len(pairs)}] {source} -> {target} (voxels: {counts}{repaired})")
    written.append(target)
  return written
