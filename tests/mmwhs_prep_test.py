"""Tests for data_prep.mmwhs: header orientation, coronal slices, label mapping."""
import json
import os

import nibabel as nib
import numpy as np
import pytest

from csa_tf.errors import CsaInputError
from csa_tf.data.prepared import PreparedDataset
from csa_tf.data.mmwhs import prepare_mmwhs
from tests.helpers import make_mmwhs_release, write_nifti


def test_end_to_end_maps_four_structures(mmwhs_release, tmp_path):
  out = tmp_path / "prep"
  prepare_mmwhs(mmwhs_release, str(out), crop_size=32, test_fraction=0.34)
  prepared = PreparedDataset.open(str(out), dataset="mmwhs")
  splits = json.load(open(out / "splits.json"))
  # CT and MR patients are different people: each modality is split on its own.
  for modality in ("ct", "mr"):
    test = [p for p in splits["test"] if p.startswith(modality)]
    train = [p for p in splits["train"] if p.startswith(modality)]
    assert len(test) == 1 and len(train) == 2
  entry = prepared.entries[0]
  volume = prepared.load(entry)
  raw = np.asanyarray(nib.load(os.path.join(
      mmwhs_release, f"{entry.modality}_train",
      f"{entry.patient_id}_label.nii.gz")).dataobj)
  mapped = np.select([raw == 205, raw == 420, raw == 500, raw == 820], [1, 2, 3, 4], 0)
  np.testing.assert_array_equal(volume.original_label, mapped)
  np.testing.assert_array_equal(volume.full_label, mapped)
  assert (raw == 600).any() and 600 not in np.unique(volume.label)
  # The aorta's blob is a component of its own, a voxel or two off the myocardium's
  # shell: within the margin, so one heart, no stray islands, and the box holds it all.
  meta = json.load(open(out / "prep_meta.json"))
  assert meta["stray_islands"] == {} and meta["crop_does_not_enclose"] == []
  # Coronal slices of an RAS volume: slices along array axis 1 (A-P).
  assert volume.label.shape[0] == raw.shape[1]


def test_stray_421_reads_as_left_atrium(tmp_path):
  raw = make_mmwhs_release(tmp_path / "raw", num_patients=2, modalities=("mr",))
  path = os.path.join(raw, "mr_train", "mr_train_1001_label.nii.gz")
  img = nib.load(path)
  label = np.asanyarray(img.dataobj).copy()
  label[label == 420] = 421
  write_nifti(path, label, img.affine)
  # On the native grid, so the slices hold the file's voxels one for one.
  prepare_mmwhs(raw, str(tmp_path / "prep"), modalities=["mr"], crop_size=32,
                in_plane_spacing="native")
  prepared = PreparedDataset.open(str(tmp_path / "prep"))
  entry = [e for e in prepared.entries if e.patient_id == "mr_train_1001"][0]
  assert (prepared.load(entry).label == 2).sum() == (label == 421).sum() > 0


def test_flipped_affine_volume_gives_same_slices(tmp_path):
  raw = make_mmwhs_release(tmp_path / "raw", num_patients=1, modalities=("ct",))
  flipped_raw = tmp_path / "flipped"
  for kind in ("image", "label"):
    src = os.path.join(raw, "ct_train", f"ct_train_1001_{kind}.nii.gz")
    img = nib.load(src)
    data = np.asanyarray(img.dataobj)[::-1, :, ::-1]
    affine = img.affine.copy()
    for axis in (0, 2):
      affine[:3, 3] += affine[:3, axis] * (data.shape[axis] - 1)
      affine[:3, axis] *= -1
    write_nifti(os.path.join(flipped_raw, "ct_train", f"ct_train_1001_{kind}.nii.gz"),
                data, affine)
  prepare_mmwhs(raw, str(tmp_path / "a"), modalities=["ct"], crop_size=32,
                test_fraction=0)
  prepare_mmwhs(str(flipped_raw), str(tmp_path / "b"), modalities=["ct"], crop_size=32,
                test_fraction=0)
  a = PreparedDataset.open(str(tmp_path / "a"))
  b = PreparedDataset.open(str(tmp_path / "b"))
  va, vb = a.load(a.entries[0]), b.load(b.entries[0])
  np.testing.assert_array_equal(va.label, vb.label)
  np.testing.assert_allclose(va.image, vb.image, atol=1e-5)


def test_label_on_other_grid_is_refused(tmp_path):
  raw = make_mmwhs_release(tmp_path / "raw", num_patients=2, modalities=("ct",))
  path = os.path.join(raw, "ct_train", "ct_train_1002_label.nii.gz")
  img = nib.load(path)
  write_nifti(path, np.asanyarray(img.dataobj), np.diag([2.0, 2.0, 2.0, 1.0]))
  with pytest.raises(CsaInputError, match="ct_train_1002_label.*affine"):
    prepare_mmwhs(raw, str(tmp_path / "prep"), modalities=["ct"], crop_size=32)
  assert not (tmp_path / "prep").exists()


def test_unknown_label_value(tmp_path):
  raw = make_mmwhs_release(tmp_path / "raw", num_patients=2, modalities=("ct",))
  path = os.path.join(raw, "ct_train", "ct_train_1001_label.nii.gz")
  img = nib.load(path)
  label = np.asanyarray(img.dataobj).copy()
  label[0, 0, 0] = 999
  write_nifti(path, label, img.affine)
  with pytest.raises(CsaInputError, match="ct_train_1001_label.*999"):
    prepare_mmwhs(raw, str(tmp_path / "prep"), modalities=["ct"], crop_size=32)
