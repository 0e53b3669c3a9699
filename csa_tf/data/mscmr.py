"""MS-CMRSeg 2019 as released -> PREP (REFERENCE.md section 5; paper Sec. 3).

`prepare_mscmr` is what `python -m data_prep.mscmr` runs (its docstring says what the
command reads and writes). This module only finds the files and names the label values;
the shared work is csa_tf.data.preparation.
"""
import functools
import os
import re

from csa_tf.configs import datasets
from csa_tf.errors import CsaInputError, param
from csa_tf.io import non_finite as non_finite_lib
from csa_tf.io.nifti import read_volume
from csa_tf.data.slicing import ORIENTATION_HEADER, short_axis_ornt
from csa_tf.data import discovery
from csa_tf.data import preparation
from csa_tf.data import prepared


_FILE_PATTERN = re.compile(r"patient(\d+)_(C0|LGE|T2)(_manual)?\.nii(?:\.gz)?")
# The releases stack the short-axis slices along array axis 2 (REFERENCE.md section 5).
_SLICE_AXIS = 2


def prepare_mscmr(raw_dir: str, output_dir: str, *,
                  modalities=datasets.MSCMR.paper_modalities, crop_size: int = 224,
                  test_fraction: float = 0.2, seed: int = 0, overwrite: bool = False,
                  require_labels: bool = False,
                  non_finite: str = non_finite_lib.REPAIR) -> str:
  """Prepares the release under raw_dir into output_dir; returns the summary text.

  Labels are found by name anywhere under raw_dir, so a later folder of LGE test labels
  beside the challenge copy's `lgegt/` is used like any other. An image without its
  label is left out and listed (summary.txt, prep_meta.json `unlabelled`), unless
  require_labels: the challenge copy labels C0 and T2 of patients 1-35 and LGE of 1-5
  only (REFERENCE.md section 5b). Modalities are unpaired: a patient contributes the
  requested modalities it has labelled, and one with no labelled requested modality
  contributes nothing (its images are listed). The split is by patient, drawn within
  groups of patients with the same labelled modalities
  (`patient_splits.split_by_labelled_modalities`).

  Args:
    require_labels: refuse an image without its label and a patient without a
      requested modality's image (csa_tf's behaviour before the challenge copy).
    non_finite: "repair" (up to 1% of a file's voxels; reported per file) or "refuse"
      NaN/Inf voxels (csa_tf/io/non_finite.py).

  Raises:
    CsaInputError: bad settings, no matching files, a label without its image, a
      requested modality without any labelled volume, (with require_labels) an image
      without its label or a patient missing a requested modality, a label whose affine
      differs from its image's, or any bad volume.
  """
  spec = datasets.MSCMR
  preparation.check_common_flags(crop_size, test_fraction, raw_dir, output_dir)
  modalities = discovery.check_modalities(modalities, list(datasets.MSCMR_SEQUENCE_TAGS),
                                          "MS-CMRSeg")
  non_finite_lib.check_policy(non_finite)
  found = discovery.find_files(raw_dir, _FILE_PATTERN)
  tags = {datasets.MSCMR_SEQUENCE_TAGS[m]: m for m in modalities}
  images = {(int(n), tags[tag]): path for (n, tag, manual), path in found.items()
            if tag in tags and not manual}
  labels = {(int(n), tags[tag]): path for (n, tag, manual), path in found.items()
            if tag in tags and manual}
  if not images and not labels:
    raise CsaInputError(
        f"{raw_dir}: no MS-CMRSeg files (patientN_{{C0,LGE,T2}}[_manual].nii.gz) for "
        f"modalities {','.join(modalities)}")
  tag_of = datasets.MSCMR_SEQUENCE_TAGS
  unlabelled = discovery.check_pairs(
      images, labels, label_word="manual label", require_labels=require_labels,
      image_name=lambda key: f"patient{key[0]}_{tag_of[key[1]]}.nii.gz",
      label_name=lambda key: f"patient{key[0]}_{tag_of[key[1]]}_manual.nii.gz")
  patients = sorted({n for n, _ in images})
  if require_labels:
    for n in patients:
      for modality in modalities:
        if (n, modality) not in images:
          raise CsaInputError(
              f"{raw_dir}: patient{n} has no {modality} "
              f"({datasets.MSCMR_SEQUENCE_TAGS[modality]}) image; prepare with "
              f"{param('modalities')} not including {modality} or add the file")
  for modality in modalities:
    if not any(m == modality for _, m in labels):
      count = sum(m == modality for _, m in images)
      raise CsaInputError(
          f"{raw_dir}: none of the {count} {modality} ({tag_of[modality]}) images has its "
          f"label (patientN_{tag_of[modality]}_manual.nii.gz); prepare with "
          f"{param('modalities')} not including {modality} or add the labels")
  left_out = [dict(patient_id=f"patient{n}", modality=m,
                   file=os.path.relpath(images[(n, m)], raw_dir)) for n, m in unlabelled]
  if left_out:
    print(f"{len(left_out)} images without their label are left out (listed in "
          f"{prepared.SUMMARY_FILE})", flush=True)

  def load(n, modality):
    image = read_volume(images[(n, modality)], kind="image", non_finite=non_finite,
                        slice_axis=_SLICE_AXIS)
    label = read_volume(labels[(n, modality)], kind="label", non_finite=non_finite)
    preparation.check_same_grid(image, label)
    return (image, label, modality, f"patient{n}",
            short_axis_ornt(image.affine, _SLICE_AXIS))

  jobs = [functools.partial(load, n, m) for m in modalities for n in patients
          if (n, m) in labels]
  settings = dict(crop_size=crop_size, test_fraction=test_fraction, seed=seed,
                  raw_dir=raw_dir, modalities=modalities, orientation=ORIENTATION_HEADER,
                  require_labels=require_labels, non_finite=non_finite)
  return preparation.run_preparation(output_dir, spec=spec, settings=settings,
                                     overwrite=overwrite, jobs=jobs,
                                     modalities=modalities, unlabelled=left_out)
