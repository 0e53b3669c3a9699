"""Tests for csa_tf.io.nifti: every bad file gives one CsaInputError naming it."""
import gzip
import os

import nibabel as nib
import numpy as np
import pytest

from csa_tf.errors import CsaInputError
from csa_tf.io.nifti import read_volume, write_label_volume
from tests.helpers import write_nifti


def test_reads_image_and_spacing(tmp_path):
  affine = np.diag([0.75, 0.75, 5.0, 1.0])
  path = write_nifti(tmp_path / "a.nii.gz", np.ones((4, 5, 6), np.int16), affine)
  volume = read_volume(path)
  assert volume.data.dtype == np.float32 and volume.data.shape == (4, 5, 6)
  assert volume.spacing == (0.75, 0.75, 5.0)
  np.testing.assert_array_equal(volume.affine, affine)


def test_squeezes_trailing_singleton_axis(tmp_path):
  path = write_nifti(tmp_path / "a.nii.gz", np.ones((4, 5, 6, 1), np.float32))
  assert read_volume(path).data.shape == (4, 5, 6)


@pytest.mark.parametrize("case", ["missing", "truncated", "not_nifti", "4d", "nan", "inf",
                                  "label_fraction"])
def test_bad_files_name_the_file(tmp_path, case):
  path = str(tmp_path / "bad.nii.gz")
  kind = "image"
  if case == "truncated":
    good = write_nifti(tmp_path / "good.nii.gz", np.random.rand(20, 20, 20))
    raw = open(good, "rb").read()
    open(path, "wb").write(raw[: len(raw) // 2])
  elif case == "not_nifti":
    with gzip.open(path, "wb") as f:
      f.write(b"this is a text file, not an image\n" * 20)
  elif case == "4d":
    write_nifti(path, np.zeros((4, 4, 4, 3), np.float32))
  elif case in ("nan", "inf"):
    data = np.zeros((4, 4, 4), np.float32)
    data[1, 2, 3] = np.nan if case == "nan" else np.inf
    write_nifti(path, data)
  elif case == "label_fraction":
    write_nifti(path, np.full((4, 4, 4), 0.5, np.float32))
    kind = "label"
  with pytest.raises(CsaInputError) as info:
    read_volume(path, kind=kind)
  message = str(info.value)
  assert path in message and "\n" not in message
  expected = {"missing": "not found", "truncated": "truncated", "not_nifti": "not a NIfTI",
              "4d": "3D", "nan": "non-finite", "inf": "non-finite",
              "label_fraction": "non-integer"}[case]
  assert expected in message


def test_write_label_volume_keeps_affine_and_values(tmp_path):
  affine = np.array([[0, 0, 1.2, 3], [-0.5, 0, 0, 4], [0, 0.5, 0, 5], [0, 0, 0, 1.0]])
  src = write_nifti(tmp_path / "in.nii.gz", np.random.rand(6, 7, 8).astype(np.float32),
                    affine)
  header = nib.load(src).header
  labels = np.zeros((6, 7, 8), np.int16)
  labels[2:4, 3:5, 1:6] = 820
  out = str(tmp_path / "out.nii.gz")
  write_label_volume(out, labels, affine=affine, header=header)
  img = nib.load(out)
  np.testing.assert_allclose(img.affine, affine)
  np.testing.assert_array_equal(np.asanyarray(img.dataobj), labels)
  assert sorted(os.listdir(tmp_path)) == ["in.nii.gz", "out.nii.gz"]


def _stack_with_nan(tmp_path, name="img.nii.gz"):
  """A 10x10x3 image, slice k (array axis 2) holding 100k + 0..99, and 3 NaN/Inf voxels."""
  data = (np.arange(100, dtype=np.float32).reshape(10, 10, 1)
          + 100 * np.arange(3, dtype=np.float32)).copy()
  data[0, 0, 1] = np.nan   # slice 1's lowest finite value: 101 (its voxel [0, 1])
  data[9, 9, 1] = np.inf
  data[5, 5, 2] = -np.inf  # slice 2's lowest: 200
  return write_nifti(tmp_path / name, data), data


def test_repair_sets_image_voxels_to_the_lowest_finite_value_of_their_slice(tmp_path):
  path, data = _stack_with_nan(tmp_path)
  volume = read_volume(path, non_finite="repair", slice_axis=2)
  assert volume.non_finite_repaired == 3
  assert volume.data[0, 0, 1] == 101 and volume.data[9, 9, 1] == 101
  assert volume.data[5, 5, 2] == 200
  untouched = np.isfinite(data)
  np.testing.assert_array_equal(volume.data[untouched], data[untouched])
  # Slices along another axis (the callable form): the voxel (0, 0, 1) lies in slice 0
  # of axis 0, whose lowest finite value is voxel (0, 0, 0) = 0; (9, 9, 1) in slice 9,
  # lowest (9, 0, 0) = 90.
  volume = read_volume(path, non_finite="repair", slice_axis=lambda affine: 0)
  assert volume.data[0, 0, 1] == 0 and volume.data[9, 9, 1] == 90


def test_repair_sets_label_voxels_to_background(tmp_path):
  label = np.full((10, 10, 3), 500, np.float32)
  label[2, 3, 1] = np.nan
  path = write_nifti(tmp_path / "lab.nii.gz", label)
  volume = read_volume(path, kind="label", non_finite="repair")
  assert volume.data.dtype == np.int32 and volume.non_finite_repaired == 1
  assert volume.data[2, 3, 1] == 0 and (volume.data == 500).sum() == 299


def test_refuse_is_the_default_and_more_than_one_percent_is_refused(tmp_path):
  path, _ = _stack_with_nan(tmp_path)
  with pytest.raises(CsaInputError) as info:
    read_volume(path)
  assert str(info.value) == f"{path}: 3 non-finite (NaN/Inf) voxels in the image"
  # 4 of 300 voxels (1.33%) is over the 1% a repair may touch; 3 (1.00%) is not.
  data = np.ones((10, 10, 3), np.float32)
  data[0, :4, 0] = np.nan
  corrupt = write_nifti(tmp_path / "corrupt.nii.gz", data)
  with pytest.raises(CsaInputError) as info:
    read_volume(corrupt, non_finite="repair")
  assert str(info.value) == (
      f"{corrupt}: 4 of 300 voxels (1.33%) are non-finite (NaN/Inf), more than 1%: "
      "refused as corrupt (non_finite=repair repairs up to 1%)")
  data[0, 3, 0] = 1.0
  assert read_volume(write_nifti(tmp_path / "ok.nii.gz", data),
                     non_finite="repair").non_finite_repaired == 3
