"""Shared test fixtures: tiny hand-made releases written as NIfTI in the official layouts."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import nibabel as nib  # pylint: disable=g-import-not-at-top
import numpy as np
import pytest


def write_nifti(path, data, affine=None, dtype=None):
  """Writes data as NIfTI at path (folders created); returns path."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  data = np.asarray(data)
  img = nib.Nifti1Image(data.astype(dtype or data.dtype),
                        np.eye(4) if affine is None else affine)
  nib.save(img, str(path))
  return str(path)


def short_axis_label(shape, center, radius, values=(500, 200, 600)):
  """A short-axis label stack [X, Y, Z]: LV disk, myo ring, RV crescent beside them."""
  xs, ys = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
  dist = np.hypot(xs - center[0], ys - center[1])
  rv_dist = np.hypot(xs - center[0], ys - (center[1] + 1.6 * radius))
  plane = np.zeros(shape[:2], dtype=np.int16)
  plane[rv_dist < radius * 1.1] = values[2]
  plane[dist < radius * 1.4] = values[1]
  plane[dist < radius] = values[0]
  return np.repeat(plane[:, :, None], shape[2], axis=2)


def make_mscmr_release(root, num_patients=5, modalities=("LGE", "C0"), shape=(40, 48, 5),
                       seed=0):
  """Writes images/patientN_TAG.nii.gz and labels/TAG/patientN_TAG_manual.nii.gz."""
  rng = np.random.default_rng(seed)
  for n in range(1, num_patients + 1):
    for tag in modalities:
      center = (shape[0] // 2 + rng.integers(-3, 4), shape[1] // 2 + rng.integers(-6, 0))
      label = short_axis_label(shape, center, radius=4 + rng.integers(0, 3))
      image = (rng.normal(100, 10, shape) + (label == 500) * 200).astype(np.float32)
      write_nifti(os.path.join(root, "images", f"patient{n}_{tag}.nii.gz"), image)
      write_nifti(os.path.join(root, "labels", tag, f"patient{n}_{tag}_manual.nii.gz"),
                  label)
  return str(root)


def make_mmwhs_release(root, num_patients=3, modalities=("ct", "mr"), shape=(32, 24, 40),
                       seed=0):
  """Writes {ct,mr}_train/{m}_train_10NN_{image,label}.nii.gz with 3D blobs."""
  rng = np.random.default_rng(seed)
  grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
  for modality in modalities:
    for n in range(1001, 1001 + num_patients):
      label = np.zeros(shape, dtype=np.int16)
      center = np.array(shape) / 2 + rng.integers(-2, 3, 3)
      for value, offset, radius in ((500, (0, 0, 0), 4), (420, (0, 0, 8), 3),
                                    (820, (0, 4, -8), 2), (600, (6, 0, 0), 3)):
        inside = np.linalg.norm(grid - (center + offset), axis=-1) < radius
        label[inside & (label == 0)] = value
      shell = (np.linalg.norm(grid - center, axis=-1) < 6) & (label == 0)
      label[shell] = 205
      image = (rng.normal(0, 20, shape) + (label > 0) * 300).astype(np.float32)
      folder = os.path.join(root, f"{modality}_train")
      affine = np.diag([0.8, 0.8, 1.0, 1.0])
      write_nifti(os.path.join(folder, f"{modality}_train_{n}_image.nii.gz"), image, affine)
      write_nifti(os.path.join(folder, f"{modality}_train_{n}_label.nii.gz"), label, affine)
  return str(root)


@pytest.fixture
def mscmr_release(tmp_path):
  return make_mscmr_release(tmp_path / "raw")


@pytest.fixture
def mmwhs_release(tmp_path):
  return make_mmwhs_release(tmp_path / "raw")
