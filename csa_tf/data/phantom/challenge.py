"""The MS-CMRSeg 2019 challenge copy's layout and quirks, drawn onto phantom volumes.

The challenge copy (datasets.MSCMR_CHALLENGE; REFERENCE.md section 5b) differs from the
fully labelled release the paper used in four ways, all imitated here:
  * folders: ROOT/c0t2lge/ for the images, ROOT/{c0gt,lgegt,t2gt}/ for the labels;
  * labels only for the first patients: 35 of 45 for C0 and T2, 5 of 45 for LGE,
    scaled to num_patients by `labelled_count`;
  * NaN voxels in every T2 image (0.1% of its voxels, anywhere) and in the T2 labels of
    odd-numbered patients (0.05%, on background voxels, so a repair to background
    gives back the drawn label); those files are stored as float32;
  * stray labelled voxels near an image corner: a 2x2 block of LV (500) at array
    (0..1, 0..1, k) in the C0 labels of patients 2, 6, 10, ..., and one myocardium
    voxel (200) at (0, 0, k) in the T2 labels of patients 3, 7, 11, ... (k the middle
    slice), as annotation slips far from the heart.
Random draws are keyed by (seed, patient, modality) in streams of their own, so the
drawn anatomy and appearance are those of the full release.
"""
import os
from typing import Optional, Tuple

import numpy as np

from csa_tf.configs import datasets
from csa_tf.data.phantom.sampling import _DATASET_KEYS, _rng

CHALLENGE = datasets.MSCMR_CHALLENGE
_QUIRK_STREAM = 300  # Random-stream offset of the NaN positions.
IMAGE_NAN_FRACTION = 0.001
LABEL_NAN_FRACTION = 0.0005


def labelled_count(modality: str, num_patients: int) -> int:
  """How many patients (1..count) of a modality have labels among num_patients.

  The release's count (35 C0/T2, 5 LGE of 45) scaled to num_patients and rounded, at
  least 2 (so that every sequence keeps a test patient in a small set) and at most
  num_patients: 45 patients give 35 and 5; 6 give 5 and 2.
  """
  share = CHALLENGE.labelled_patients[modality] / CHALLENGE.num_patients
  return min(num_patients, max(2, int(round(share * num_patients))))


def relative_paths(patient: int, modality: str) -> Tuple[str, str]:
  """(image, label) paths of one volume inside the output folder, as in the copy."""
  tag = datasets.MSCMR_SEQUENCE_TAGS[modality]
  return (os.path.join(CHALLENGE.root, CHALLENGE.image_folder,
                       f"patient{patient}_{tag}.nii.gz"),
          os.path.join(CHALLENGE.root, CHALLENGE.label_folders[modality],
                       f"patient{patient}_{tag}_manual.nii.gz"))


def apply_quirks(image: np.ndarray, label: np.ndarray, *, patient: int, modality: str,
                 seed: int, num_patients: int) -> Tuple[np.ndarray, Optional[np.ndarray]]:
  """The challenge copy's version of a drawn (image int16, label uint16) pair.

  Returns:
    (image, label): label None when the copy has no label for this volume; arrays
    with NaN voxels are float32.
  """
  modality_index = datasets.MSCMR.modalities.index(modality)
  rng = _rng(seed, _DATASET_KEYS["mscmr"], patient, _QUIRK_STREAM + modality_index)
  if modality == "t2":
    image = image.astype(np.float32)
    flat = image.reshape(-1)
    count = max(1, int(round(IMAGE_NAN_FRACTION * flat.size)))
    flat[rng.choice(flat.size, size=count, replace=False)] = np.nan
  if patient > labelled_count(modality, num_patients):
    return image, None
  label = label.copy()
  middle = label.shape[2] // 2
  if modality == "bssfp" and patient % 4 == 2:
    label[0:2, 0:2, middle] = datasets.MSCMR.label_values[0]
  if modality == "t2" and patient % 4 == 3:
    label[0, 0, middle] = datasets.MSCMR.label_values[1]
  if modality == "t2" and patient % 2 == 1:
    label = label.astype(np.float32)
    background = np.flatnonzero(label.reshape(-1) == 0)
    count = max(1, int(round(LABEL_NAN_FRACTION * label.size)))
    label.reshape(-1)[rng.choice(background, size=count, replace=False)] = np.nan
  return image, label
