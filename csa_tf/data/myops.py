"""MyoPS 2020 as released -> an MS-CMRSeg PREP (REFERENCE.md section 5b).

`prepare_myops` is what `python -m data_prep.myops` runs. MyoPS holds MS-CMRSeg's three
sequences, co-registered, with one label per patient; its PREP is an "mscmr" PREP (the
same classes LV, myo, RV and modalities) that records release "myops2020", so a run
trained on either release is evaluated on the other's PREP (with the warning of
csa_tf/evaluation/cross_release.py). This module only finds the files and names the
label values; the shared work is csa_tf.data.preparation.
"""
import functools
import os
import re
from typing import Dict, List, Tuple

from csa_tf.configs import datasets
from csa_tf.errors import CsaInputError, param
from csa_tf.io import non_finite as non_finite_lib
from csa_tf.io.nifti import read_volume
from csa_tf.data.slicing import ORIENTATION_HEADER, short_axis_ornt
from csa_tf.data import discovery
from csa_tf.data import preparation

# train25/myops_training_1NN_{C0,DE,T2}.nii.gz, train25_myops_gd/myops_training_1NN_gd
# .nii.gz and test20/myops_test_2NN_{C0,DE,T2}.nii.gz, found by name anywhere under RAW.
_FILE_PATTERN = re.compile(r"myops_(training|test)_(\d+)_(C0|DE|T2|gd)\.nii(?:\.gz)?")
_SEQUENCE_NAMES = "{" + ",".join(sorted(datasets.MYOPS_SEQUENCE_TAGS.values())) + "}"


def patient_id(number: int) -> str:
  """The PREP's patient id of training patient `number` (101.., as in the file names)."""
  return f"myops_training_{number}"


def label_mapping(spec: datasets.DatasetSpec = datasets.MYOPS_LABELS) -> Dict[int, str]:
  """{raw label value: class name} of every non-zero value a MyoPS label may hold."""
  mapping = {}
  for raw in sorted(spec.known_raw_values - {0}):
    value = spec.raw_value_aliases.get(raw, raw)
    mapping[raw] = (spec.foreground_names[spec.label_values.index(value)]
                    if value in spec.label_values else "background")
  return mapping


def _sort_files(found: Dict[Tuple[str, ...], str], tags: Dict[str, str]):
  """Splits find_files' matches into training images, labels and what is left out."""
  images: Dict[Tuple[int, str], str] = {}
  labels: Dict[int, str] = {}
  test_files: List[str] = []
  unrequested: List[str] = []
  for (part, number, tag), path in sorted(found.items()):
    if part == "test":
      test_files.append(path)  # test20/ has no labels to train or score with.
    elif tag == "gd":
      labels[int(number)] = path
    elif tag in tags:
      images[(int(number), tags[tag])] = path
    else:
      unrequested.append(path)
  return images, labels, test_files, unrequested


def prepare_myops(raw_dir: str, output_dir: str, *,
                  modalities=datasets.MSCMR.modalities, crop_size: int = 224,
                  test_fraction: float = 0.2, seed: int = 0, overwrite: bool = False,
                  non_finite: str = non_finite_lib.REPAIR) -> str:
  """Prepares the MyoPS 2020 training patients under raw_dir into output_dir.

  Each requested sequence of a training patient is prepared with the patient's one label
  (500 -> LV, 200/1220/2221 -> myo, 600 -> RV); patients are split 80/20 as MS-CMRSeg's.
  test20/ images and sequences not requested are left out and listed in summary.txt and
  prep_meta.json ("ignored_files"). NaN/Inf voxels are repaired or refused as for
  MS-CMRSeg (`non_finite`, csa_tf/io/non_finite.py; slices along array axis 2).

  Returns:
    The summary text.

  Raises:
    CsaInputError: bad settings, no MyoPS training files, a label without any image of
      its patient, a training image without its label, a patient missing a requested
      sequence, an image not on its label's voxel grid, or any bad volume.
  """
  spec = datasets.MYOPS_LABELS
  preparation.check_common_flags(crop_size, test_fraction, raw_dir, output_dir)
  non_finite_lib.check_policy(non_finite)
  modalities = discovery.check_modalities(modalities, list(datasets.MYOPS_SEQUENCE_TAGS),
                                          "MyoPS")
  tag_of = datasets.MYOPS_SEQUENCE_TAGS
  found = discovery.find_files(raw_dir, _FILE_PATTERN)
  images, labels, test_files, unrequested = _sort_files(
      found, {tag_of[m]: m for m in modalities})
  if not labels and not images:
    also = (f" (only {len(test_files)} test20 files, which have no labels)"
            if test_files else "")
    raise CsaInputError(
        f"{raw_dir}: no MyoPS training files (train25/myops_training_NNN_{_SEQUENCE_NAMES}"
        f".nii.gz with train25_myops_gd/myops_training_NNN_gd.nii.gz){also}")
  with_images = {n for n, _ in images}
  for n, path in sorted(labels.items()):
    if n not in with_images:
      raise CsaInputError(f"{path}: label without its images (expected "
                          f"myops_training_{n}_{_SEQUENCE_NAMES}.nii.gz)")
  for (n, _), path in sorted(images.items()):
    if n not in labels:
      raise CsaInputError(f"{path}: no label found for this image (expected "
                          f"myops_training_{n}_gd.nii.gz)")
  patients = sorted(labels)
  for n in patients:
    for modality in modalities:
      if (n, modality) not in images:
        raise CsaInputError(
            f"{raw_dir}: myops_training_{n} has no {modality} ({tag_of[modality]}) image; "
            f"prepare with {param('modalities')} not including {modality} or add the file")

  def load(n, modality):
    image = read_volume(images[(n, modality)], kind="image", non_finite=non_finite,
                        slice_axis=2)
    label = read_volume(labels[n], kind="label", non_finite=non_finite)
    # The one label serves every sequence only because they are co-registered.
    preparation.check_same_grid(image, label)
    return image, label, modality, patient_id(n), short_axis_ornt(image.affine)

  jobs = [functools.partial(load, n, m) for m in modalities for n in patients]
  settings = dict(crop_size=crop_size, test_fraction=test_fraction, seed=seed,
                  raw_dir=raw_dir, modalities=modalities, orientation=ORIENTATION_HEADER)
  mapping = label_mapping(spec)
  notes = ["labels: " + "; ".join(
      f"{', '.join(str(v) for v in mapping if mapping[v] == name)} -> {name}"
      for name in spec.foreground_names)]
  if test_files:
    test_patients = len({os.path.basename(p).split("_")[2] for p in test_files})
    notes.append(f"ignored: {len(test_files)} test20 files of {test_patients} patients "
                 "(the release has no labels for them)")
  if unrequested:
    notes.append(f"ignored: {len(unrequested)} training images of sequences not in "
                 f"{param('modalities')}")
  ignored = [dict(file=os.path.relpath(p, raw_dir), reason="test20: no label")
             for p in test_files] + [
                 dict(file=os.path.relpath(p, raw_dir), reason="sequence not requested")
                 for p in unrequested]
  extra_meta = dict(release=datasets.MYOPS2020.name, ignored_files=ignored,
                    label_mapping={str(v): name for v, name in mapping.items()})
  return preparation.run_preparation(output_dir, spec=spec, settings=settings,
                                     overwrite=overwrite, jobs=jobs,
                                     modalities=modalities, notes=notes,
                                     extra_meta=extra_meta)
