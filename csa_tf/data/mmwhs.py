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
from csa_tf.data import preparation



_FILE_PATTERN = re.compile(r"(ct|mr)_train_(\d+)_(image|label)\.nii(?:\.gz)?")


def prepare_mmwhs(raw_dir: str, output_dir: str, *,
                  modalities=datasets.MMWHS.paper_modalities, crop_size: int = 256,
                  test_fraction: float = 0.2, seed: int = 0, overwrite: bool = False,
                  non_finite: str = non_finite_lib.REPAIR) -> str:
  """Prepares the release under raw_dir into output_dir; returns the summary text.

  Args:
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
  settings = dict(crop_size=crop_size, test_fraction=test_fraction, seed=seed,
                  raw_dir=raw_dir, modalities=modalities, plane="coronal",
                  non_finite=non_finite)
  return preparation.run_preparation(output_dir, spec=spec, settings=settings,
                                     overwrite=overwrite, jobs=jobs,
                                     modalities=modalities, split_groups=groups)
