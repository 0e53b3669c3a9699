"""MM-WHS 2017 as released -> PREP (REFERENCE.md section 5; paper Sec. 3).

`prepare_mmwhs` is what `python -m data_prep.mmwhs` runs (its docstring says what the
command reads and writes). This module only finds the files, checks image/label grids
and names the label values; the shared work is csa_tf.data.preparation.
"""
import functools
import re


from csa_tf.configs import datasets
from csa_tf.errors import CsaInputError
from csa_tf.io import non_finite as non_finite_lib
from csa_tf.io.nifti import read_volume
from csa_tf.data.slicing import header_ornt, ornt_slice_axis
from csa_tf.data import discovery
from csa_tf.data import heart_region
from csa_tf.data import in_plane_spacing as spacing_lib
from csa_tf.data import patient_splits
from csa_tf.data import preparation



_FILE_PATTERN = re.compile(r"(ct|mr)_train_(\d+)_(image|label)\.nii(?:\.gz)?")


def prepare_mmwhs(raw_dir: str, output_dir: str, *,
                  modalities=datasets.MMWHS.paper_modalities, crop_size: int = 256,
                  test_fraction: float = 0.2, seed: int = 0, overwrite: bool = False,
                  non_finite: str = non_finite_lib.REPAIR,
                  in_plane_spacing="auto") -> str:
  """Prepares the release under raw_dir into output_dir; returns the summary text.

  Args:
    in_plane_spacing: "auto", "native" or mm (csa_tf/data/in_plane_spacing.py): the
      pixel size every coronal slice of a modality is resampled to; the spacing used
      per modality is recorded in prep_meta.json ("in_plane_spacing_mm", null where
      native) and the summary.
    non_finite: "repair" (up to 1% of a file's voxels, images along their coronal
      slices; reported per file) or "refuse" NaN/Inf voxels (csa_tf/io/non_finite.py).

  Raises:
    CsaInputError: bad settings, no matching files, an image without its label (or the
      reverse), or any bad volume.
  """
  spec = datasets.MMWHS
  preparation.check_common_flags(crop_size, test_fraction, raw_dir, output_dir)
  modalities = discovery.check_modalities(modalities, spec.modalities, "MM-WHS")
  non_finite_lib.check_policy(non_finite)
  setting = spacing_lib.parse(in_plane_spacing)
  found = discovery.find_files(raw_dir, _FILE_PATTERN)
  images = {(m, n): p for (m, n, kind), p in found.items()
            if kind == "image" and m in modalities}
  labels = {(m, n): p for (m, n, kind), p in found.items()
            if kind == "label" and m in modalities}
  if not images and not labels:
    raise CsaInputError(f"{raw_dir}: no MM-WHS training files "
                        f"({{ct,mr}}_train_NNNN_{{image,label}}.nii.gz) for "
                        f"modalities {','.join(modalities)}")
  discovery.check_pairs(images, labels,
                        image_name=lambda key: f"{key[0]}_train_{key[1]}_image.nii.gz",
                        label_name=lambda key: f"{key[0]}_train_{key[1]}_label.nii.gz")
  for modality in modalities:
    if not any(m == modality for m, _ in images):
      raise CsaInputError(f"{raw_dir}: no {modality} training volumes found")

  def load(modality, number):
    image = read_volume(images[(modality, number)], kind="image", non_finite=non_finite,
                        slice_axis=lambda affine: ornt_slice_axis(header_ornt(affine)))
    label = read_volume(labels[(modality, number)], kind="label", non_finite=non_finite)
    preparation.check_same_grid(image, label)
    return image, label, modality, f"{modality}_train_{number}", header_ornt(image.affine)

  keys = sorted(images)
  jobs = [functools.partial(load, m, n) for m, n in keys]
  groups = [[f"{m}_train_{n}" for m, n in keys if m == modality] for modality in modalities]
  spacing_of = {}
  for modality, group in zip(modalities, groups):
    auto = None
    if setting == spacing_lib.AUTO:
      # The same seeded split run_preparation draws below: only training hearts count.
      train = patient_splits.seeded_patient_split(group, test_fraction=test_fraction,
                                            seed=seed)["train"]
      auto = spacing_lib.auto_spacing(
          (_heart_extent(labels[(modality, name.rsplit("_", 1)[1])], spec, non_finite)
           for name in train), crop_size)
    spacing_of[modality] = spacing_lib.resolved(setting, auto)
  settings = dict(crop_size=crop_size, test_fraction=test_fraction, seed=seed,
                  raw_dir=raw_dir, modalities=modalities, plane="coronal",
                  non_finite=non_finite, in_plane_spacing=setting)
  notes = [f"{modality} coronal slices resampled to {mm} mm pixels"
           + (" (auto: every training heart fits the crop box with "
              f"{spacing_lib.margin_pixels(crop_size)} pixels to spare on each side)"
              if setting == spacing_lib.AUTO else "")
           if mm is not None else f"{modality} coronal slices on each volume's own grid"
           for modality, mm in spacing_of.items()]
  for line in notes:
    print(line, flush=True)
  return preparation.run_preparation(
      output_dir, spec=spec, settings=settings, overwrite=overwrite, jobs=jobs,
      modalities=modalities, split_groups=groups, notes=notes,
      extra_meta=dict(in_plane_spacing_mm=spacing_of,
                      in_plane_margin_pixels=spacing_lib.margin_pixels(crop_size)),
      in_plane_spacing=spacing_of)


def _heart_extent(path: str, spec, non_finite: str):
  """(rows, cols) mm of the heart (stray islands excluded) in a label's coronal slices."""
  label = read_volume(path, kind="label", non_finite=non_finite)
  classes = preparation.map_labels(label.data, spec, label.path)
  region = heart_region.find_heart(classes, label.spacing, class_names=spec.class_names)
  return spacing_lib.heart_extent_mm(region.heart_only(classes), label.spacing,
                                     header_ornt(label.affine))
