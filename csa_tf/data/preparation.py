"""Steps shared by the dataset conversion scripts: label mapping, one volume's
preparation, and writing the PREP folder atomically (REFERENCE.md section 5)."""
import os
from typing import Dict, List, Optional, Sequence

import numpy as np

import csa_tf
from csa_tf.data import prepared
from csa_tf.configs.datasets import DatasetSpec
from csa_tf.configs.downsampling import size_problem
from csa_tf.errors import CsaInputError, param
from csa_tf.io import atomic
from csa_tf.io.nifti import Volume, check_not_blank
from csa_tf.data import heart_region
from csa_tf.data import patient_splits
from csa_tf.data.slicing import VolumeGeometry, enclosing_crop_origin, in_plane_zoom


def map_labels(raw: np.ndarray, spec: DatasetSpec, path: str) -> np.ndarray:
  """Maps a released label volume's raw values to class indices.

  Raw values of the paper's classes map to 1..C-1 in class order; other known values
  (e.g. MM-WHS' right atrium) to background; aliases first (MM-WHS' stray 421 -> 420).

  Raises:
    CsaInputError: the volume holds a value outside the dataset's known set.
  """
  values = np.unique(raw)
  unknown = sorted(int(v) for v in values if int(v) not in spec.known_raw_values)
  if unknown:
    shown = ", ".join(str(v) for v in unknown[:8]) + (" ..." if len(unknown) > 8 else "")
    raise CsaInputError(
        f"{path}: label values {shown} are not {spec.name} labels "
        f"(expected a subset of {sorted(spec.known_raw_values)})")
  class_of = {raw_value: index for index, raw_value in enumerate(spec.label_values, 1)}
  lookup = {int(v): class_of.get(spec.raw_value_aliases.get(int(v), int(v)), 0)
            for v in values}
  out = np.zeros(raw.shape, dtype=np.uint8)
  for value in values:
    class_index = lookup[int(value)]
    if class_index:
      out[raw == value] = class_index
  return out


# How far a label's affine entry may stray from its image's: |a - b| <= 1e-3 mm +
# 1e-5 |b| (numpy.allclose with this atol): float32 rounding of a header's sform or
# quaternion, but not a real offset (MM-WHS' 0.002 mm is refused).
GRID_TOLERANCE_MM = 1e-3


def check_same_grid(image: Volume, label: Volume) -> None:
  """Refuses a label whose affine differs from its image's (same shape only).

  A label shifted or flipped in its header lies on another voxel grid than its image;
  mapped voxel by voxel it would teach the wrong anatomy. A shape mismatch is reported
  by `prepare_volume`, so volumes of different shapes pass here.

  Raises:
    CsaInputError: naming the label file, when an affine entry differs by more than
      the tolerance (GRID_TOLERANCE_MM).
  """
  if image.data.shape != label.data.shape:
    return
  if not np.allclose(image.affine, label.affine, atol=GRID_TOLERANCE_MM):
    raise CsaInputError(f"{label.path}: label affine differs from its image's; "
                        "the two do not lie on the same voxel grid")


def prepare_volume(image: Volume, label: Volume, *, spec: DatasetSpec, modality: str,
                   patient_id: str, ornt: np.ndarray, crop_size: int,
                   in_plane_spacing: Optional[float] = None
                   ) -> (prepared.PreparedVolume, bool):
  """Maps, reorients, resamples, crops and z-scores one image/label pair.

  With `in_plane_spacing` (mm) the standard slices are first resampled in-plane to it
  (VolumeGeometry.zoom): the image linearly, the label by nearest label (order 0); the
  crop box is then found and cut on that grid. None: slices on the original grid.

  The crop box encloses the heart: the annotated regions csa_tf.data.heart_region
  finds to belong to it. Stray islands far from it are left out of the box and set to
  background in the training label; the volume keeps the whole label file
  (`full_label`, islands included) and the islands' voxels and reports, so that
  evaluation scores against the file and leaves the islands out.

  Returns:
    (volume, fits): fits is False when the heart is wider than the crop box.

  Raises:
    CsaInputError: shapes differ, the image is constant, the label holds unknown values
      or none of the dataset's classes.
  """
  if image.data.shape != label.data.shape:
    raise CsaInputError(
        f"{label.path}: label shape {label.data.shape} does not match image "
        f"{os.path.basename(image.path)} shape {image.data.shape}")
  check_not_blank(image)
  classes = map_labels(label.data, spec, label.path)
  if not classes.any():
    # The crop box is centred on the annotation, and evaluation scores it: a volume
    # without one is a wrong or empty label file, not a heart without structures.
    names = ", ".join(f"{name} ({value})" for name, value in
                      zip(spec.foreground_names, spec.label_values))
    raise CsaInputError(f"{label.path}: label volume has no foreground (no voxel of "
                        f"{names}); fix the label or move the pair out of "
                        f"{param('raw_dir')}")
  region = heart_region.find_heart(classes, image.spacing, class_names=spec.class_names)
  zoom = in_plane_zoom(image.spacing, ornt, in_plane_spacing)
  probe = VolumeGeometry(tuple(image.data.shape), ornt, (0, 0), crop_size, zoom)
  standard_labels = probe.resample(probe.to_standard(region.heart_only(classes)), order=0)
  origin, fits = enclosing_crop_origin(standard_labels, crop_size)
  geometry = VolumeGeometry(tuple(image.data.shape), ornt, origin, crop_size, zoom)
  volume = prepared.PreparedVolume(
      patient_id=patient_id,
      modality=modality,
      image=geometry.network_slices(image.data),
      label=geometry.crop(standard_labels),
      geometry=geometry,
      spacing=image.spacing,
      affine=image.affine,
      source=os.path.basename(image.path),
      full_label=classes,
      stray_voxels=region.stray_voxels,
      stray_islands=region.islands,
  )
  return volume, fits


class PrepWriter:
  """Collects prepared volumes in a staged folder and moves it into place at the end.

  Nothing appears at output_dir unless `commit` runs, so a failure half-way leaves no
  half-written PREP behind (see csa_tf/io/atomic.py's StagedFolder).
  """

  def __init__(self, output_dir: str, *, spec: DatasetSpec, settings: dict,
               overwrite: bool = False):
    self.output_dir = os.path.abspath(output_dir)
    self.spec = spec
    self.settings = settings
    self.overwrite = overwrite
    self._entries: List[dict] = []
    self._not_fitting: List[str] = []
    self._repaired: List[dict] = []
    # A replace killed half-way is undone before the folder is judged.
    atomic.restore_interrupted_replace(self.output_dir)
    self._islands: Dict[str, List[dict]] = {}
    self._check_output_dir()
    self._staged = atomic.StagedFolder(self.output_dir)
    self.tmp_dir = self._staged.path

  def _check_output_dir(self) -> None:
    if not os.path.exists(self.output_dir):
      return
    if not os.path.isdir(self.output_dir):
      raise CsaInputError(f"{self.output_dir}: exists and is not a folder")
    if not os.listdir(self.output_dir):
      return
    meta_path = os.path.join(self.output_dir, prepared.META_FILE)
    if not os.path.isfile(meta_path):
      raise CsaInputError(
          f"{self.output_dir}: output folder is not empty and holds no csa_tf preparation;"
          f" choose another {param('output_dir')}")
    if self.overwrite:
      # Only a preparation is replaced, never what a user put beside it.
      foreign = prepared.foreign_entries(self.output_dir)
      if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more"
                                          if len(foreign) > 5 else "")
        raise CsaInputError(
            f"{self.output_dir}: holds files csa_tf did not make ({shown}); "
            f"{param('overwrite')} replaces only a csa_tf preparation: move them "
            f"out or choose another {param('output_dir')}")
      return
    raise CsaInputError(
        f"{self.output_dir}: already holds a preparation ({meta_path}); pass "
        f"{param('overwrite', True)} to replace it or choose another {param('output_dir')}")

  def add(self, volume: prepared.PreparedVolume, fits: bool, *,
          non_finite: Sequence[dict] = ()) -> None:
    """Saves one volume; non_finite lists its files' repaired NaN/Inf voxels
    (`repaired_files`), recorded in prep_meta.json and summary.txt."""
    self._repaired += list(non_finite)
    relative = prepared.volume_filename(volume.modality, volume.patient_id)
    prepared.save_volume(os.path.join(self.tmp_dir, relative), volume)
    labelled = int((volume.label.reshape(len(volume.label), -1).max(axis=1) > 0).sum())
    self._entries.append(dict(patient_id=volume.patient_id, modality=volume.modality,
                              file=relative, num_slices=int(len(volume.label)),
                              num_labelled_slices=labelled))
    if not fits:
      self._not_fitting.append(f"{volume.modality}/{volume.patient_id}")
    if volume.stray_islands:
      self._islands[f"{volume.modality}/{volume.patient_id}"] = list(volume.stray_islands)

  def commit(self, splits: Dict[str, List[str]], modalities: Sequence[str], *,
             unlabelled: Sequence[dict] = (), warnings: Sequence[str] = (),
             notes: Sequence[str] = (), extra_meta: Optional[dict] = None) -> str:
    """Writes meta, splits and summary, then moves the folder into place.

    Args:
      splits: {"train": ids, "test": ids}.
      modalities: the prepared modalities.
      unlabelled: {patient_id, modality, file} of each image left out for want of its
        label (file relative to the raw folder).
      warnings: lines for people (e.g. a modality with too few test patients).
      notes: lines added to the end of summary.txt (what a converter repaired or left
        out, say).
      extra_meta: more top-level entries of prep_meta.json (the same facts for tools).

    Returns:
      The summary text, as written to summary.txt.
    """
    entries = sorted(self._entries, key=lambda e: (e["modality"], e["patient_id"]))
    meta = dict(
        format=prepared.FORMAT_NAME,
        format_version=prepared.FORMAT_VERSION,
        dataset=self.spec.name,
        class_names=list(self.spec.class_names),
        label_values=list(self.spec.label_values),
        modalities=list(modalities),
        crop_size=self.settings["crop_size"],
        settings=self.settings,
        csa_tf_version=csa_tf.__version__,
        crop_does_not_enclose=self._not_fitting,
        unlabelled=list(unlabelled),
        non_finite_repaired=sorted(self._repaired, key=lambda r: r["file"]),
        warnings=list(warnings),
        stray_islands=dict(sorted(self._islands.items())),
        heart_margin_mm=heart_region.HEART_MARGIN_MM,
        volumes=entries,
    )
    meta.update(extra_meta or {})
    atomic.write_json(os.path.join(self.tmp_dir, prepared.META_FILE), meta,
                      final_newline=False)
    atomic.write_json(os.path.join(self.tmp_dir, prepared.SPLITS_FILE), splits,
                      final_newline=False)
    summary = summary_text(self.spec, entries, splits, self.settings, self._not_fitting,
                           unlabelled=unlabelled, repaired=meta["non_finite_repaired"],
                           warnings=warnings, islands=self._islands)
    summary += "".join(line + "\n" for line in notes)
    atomic.write_text(os.path.join(self.tmp_dir, prepared.SUMMARY_FILE), summary)
    self._staged.commit()
    return summary

  def abort(self) -> None:
    """Removes everything this writer made: a failed preparation leaves no trace."""
    self._staged.abort()


def summary_text(spec: DatasetSpec, entries: List[dict], splits: Dict[str, List[str]],
                 settings: dict, not_fitting: List[str], *,
                 unlabelled: Sequence[dict] = (), repaired: Sequence[dict] = (),
                 warnings: Sequence[str] = (),
                 islands: Optional[Dict[str, List[dict]]] = None) -> str:
  lines = [f"csa_tf preparation of {spec.name} (crop {settings['crop_size']}, "
           f"seed {settings['seed']}, test fraction {settings['test_fraction']})",
           f"{'modality':<8} {'split':<6} {'volumes':>7} {'slices':>7} {'labelled':>8}"]
  modalities = sorted({e["modality"] for e in entries})
  for modality in modalities:
    for split in ("train", "test"):
      ids = set(splits[split])
      rows = [e for e in entries if e["modality"] == modality and e["patient_id"] in ids]
      lines.append(f"{modality:<8} {split:<6} {len(rows):>7} "
                   f"{sum(e['num_slices'] for e in rows):>7} "
                   f"{sum(e['num_labelled_slices'] for e in rows):>8}")
  if not_fitting:
    lines.append("annotation wider than the crop box (cut symmetrically): "
                 + ", ".join(not_fitting))
  if islands:
    lines.append("stray labelled islands far from the heart (left out of the crop box "
                 "and of training, not scored):")
    lines += [f"  {name}: {heart_region.describe_islands(reports)}"
              for name, reports in sorted(islands.items())]
  if unlabelled:
    lines.append(f"images without their label, left out of training and evaluation "
                 f"({len(unlabelled)}):")
    for modality in sorted({u["modality"] for u in unlabelled}):
      ids = [u["patient_id"] for u in unlabelled if u["modality"] == modality]
      lines.append(f"  {modality} ({len(ids)}): {', '.join(ids)}")
  if repaired:
    lines.append("non-finite (NaN/Inf) voxels repaired (image: the lowest finite value "
                 "of its slice; label: background):")
    lines += [f"  {r['file']}: {r['voxels']} of {r['total_voxels']} voxels "
              f"({100 * r['voxels'] / r['total_voxels']:.2f}%)" for r in repaired]
  lines += list(warnings)
  return "\n".join(lines) + "\n"


def repaired_files(image: Volume, label: Volume, raw_dir: str) -> List[dict]:
  """{file (relative to raw_dir), kind, voxels, total_voxels} of the pair's files read
  with repaired NaN/Inf voxels (`Volume.non_finite_repaired`)."""
  return [dict(file=os.path.relpath(v.path, raw_dir) if raw_dir else v.path, kind=kind,
               voxels=int(v.non_finite_repaired), total_voxels=int(v.data.size))
          for v, kind in ((image, "image"), (label, "label")) if v.non_finite_repaired]


def run_preparation(output_dir: str, *, spec: DatasetSpec, settings: dict,
                    overwrite: bool, jobs, modalities: Sequence[str],
                    split_ids: Optional[Dict[str, List[str]]] = None,
                    split_groups: Optional[List[List[str]]] = None,
                    unlabelled: Sequence[dict] = (), notes: Sequence[str] = (),
                    extra_meta: Optional[dict] = None,
                    in_plane_spacing: Optional[Dict[str, float]] = None) -> str:
  """Prepares every (image, label, modality, patient_id, ornt) job and writes PREP.

  Args:
    jobs: iterable of callables returning (image Volume, label Volume, modality,
      patient_id, ornt); loading lazily keeps one volume in memory at a time.
    split_groups: lists of patient ids split independently (MM-WHS splits CT and MR
      patients separately, since they are different people); default: groups of the
      patients with the same prepared modalities (`split_by_labelled_modalities`; one
      group when every patient has every modality).
    unlabelled: the images left out for want of a label (`PrepWriter.commit`).
    notes, extra_meta: what the converter reports beyond the volumes (PrepWriter.commit).
    in_plane_spacing: {modality: mm} to resample that modality's slices to
      (`prepare_volume`); a modality not in it (or None) is not resampled.

  Returns:
    The summary text.
  """
  writer = PrepWriter(output_dir, spec=spec, settings=settings, overwrite=overwrite)
  try:
    modalities_of: Dict[str, List[str]] = {}
    for index, job in enumerate(jobs, start=1):
      image, label, modality, patient_id, ornt = job()
      volume, fits = prepare_volume(image, label, spec=spec, modality=modality,
                                    patient_id=patient_id, ornt=ornt,
                                    crop_size=settings["crop_size"],
                                    in_plane_spacing=(in_plane_spacing or {}).get(modality))
      repaired = repaired_files(image, label, settings.get("raw_dir", ""))
      writer.add(volume, fits, non_finite=repaired)
      modalities_of.setdefault(patient_id, []).append(modality)
      print(f"[{index}/{len(jobs)}] {modality} {patient_id}: {len(volume.label)} slices"
            + ("" if fits else " (annotation wider than the crop box)")
            + "".join(f"; {r['voxels']} non-finite voxels repaired in "
                      f"{os.path.basename(r['file'])}" for r in repaired)
            + (f" (stray islands left out: "
               f"{heart_region.describe_islands(volume.stray_islands)})"
               if volume.stray_islands else ""), flush=True)
    warnings: List[str] = []
    if split_ids is None:
      fraction, seed = settings["test_fraction"], settings["seed"]
      if split_groups:
        split_ids = {"train": [], "test": []}
        for group in split_groups:
          part = patient_splits.seeded_patient_split(group, test_fraction=fraction, seed=seed)
          split_ids["train"] += part["train"]
          split_ids["test"] += part["test"]
      else:
        split_ids = patient_splits.split_by_labelled_modalities(
            modalities_of, test_fraction=fraction, seed=seed)
      warnings = patient_splits.split_shortfalls(modalities_of, split_ids,
                                           test_fraction=fraction)
      for line in warnings:
        print(line, flush=True)
    return writer.commit(split_ids, modalities, unlabelled=unlabelled,
                         warnings=warnings, notes=notes, extra_meta=extra_meta)
  except BaseException:
    writer.abort()
    raise


def check_output_apart(output_dir: str, source_dir: str, *, source_param: str) -> None:
  """Refuses an output folder that is, lies inside or contains the source (raw) folder.

  The source is only ever read; replacing an output folder that holds it would delete it.

  Raises:
    CsaInputError: naming both folders (as the command's flags while one runs).
  """
  source = os.path.realpath(source_dir)
  out = os.path.realpath(output_dir)
  if out == source or out.startswith(source + os.sep):
    raise CsaInputError(f"{param('output_dir', output_dir)}: lies inside "
                        f"{param(source_param, source_dir)}; "
                        "the source folder is never written to")
  if source.startswith(out + os.sep):
    raise CsaInputError(f"{param('output_dir', output_dir)}: contains "
                        f"{param(source_param, source_dir)}; "
                        "replacing it would delete the source; choose another folder")


def check_common_flags(crop_size: int, test_fraction: float, raw_dir: str = "",
                       output_dir: str = "") -> None:
  """Raises CsaInputError for crop sizes the network cannot take, bad fractions, or an
  output folder inside the raw data (which is never written to)."""
  if raw_dir and output_dir:
    check_output_apart(output_dir, raw_dir, source_param="raw_dir")
  problem = size_problem(crop_size)
  if problem:
    raise CsaInputError(f"{param('crop_size', crop_size)}: {problem}")
  if not 0 <= test_fraction < 1:
    raise CsaInputError(f"{param('test_fraction', test_fraction)}: must be in [0, 1)")
