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
