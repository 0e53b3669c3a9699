"""Tests for csa_tf.data.preparation's crop box around the heart and its island report."""
import json
import os
import zipfile

import nibabel as nib
import numpy as np
import pytest

from csa_tf.configs import datasets
from csa_tf.data import prepared
from csa_tf.data.mscmr import prepare_mscmr
from csa_tf.data.preparation import prepare_volume
from csa_tf.data.slicing import enclosing_crop_origin, short_axis_ornt
from csa_tf.errors import CsaInputError
from csa_tf.io.nifti import Volume
from tests.helpers import short_axis_label, write_nifti

SPACING = (1.25, 1.25, 10.0)
AFFINE = np.diag(SPACING + (1.0,))
MAPPED = {500: 1, 200: 2, 600: 3}


def _pair(raw_label, name="patient1_C0"):
  """In-memory image and label Volumes of an MS-CMRSeg-like scan (1.25 x 1.25 x 10 mm)."""
  image = np.random.default_rng(0).normal(100, 10, raw_label.shape).astype(np.float32)
  image += (raw_label == 500) * 200
  header = nib.Nifti1Header()
  return (Volume(image, AFFINE, SPACING, header, f"{name}.nii.gz"),
          Volume(raw_label, AFFINE, SPACING, header, f"{name}_manual.nii.gz"))


def _prepare(raw_label, crop_size):
  image, label = _pair(raw_label)
  return prepare_volume(image, label, spec=datasets.MSCMR, modality="bssfp",
                        patient_id="patient1", ornt=short_axis_ornt(AFFINE),
                        crop_size=crop_size)


def _heart(shape=(96, 96, 4)):
  # LV disk radius 8 at (50, 44), myo ring to 11.2, RV to column 65: rows 39-61,
  # columns 33-65 in every slice.
  return short_axis_label(shape, center=(50, 44), radius=8)


def test_a_stray_voxel_at_the_corner_does_not_move_the_box():
  clean, _ = _prepare(_heart(), crop_size=48)
  raw = _heart()
  raw[0, 0, 0] = 500
  volume, fits = _prepare(raw, crop_size=48)
  assert fits
  assert volume.geometry.crop_origin == clean.geometry.crop_origin
  assert volume.stray_islands == (
      {"class": "LV", "voxels": 1, "bbox": [[0, 0, 0], [0, 0, 0]]},)
  np.testing.assert_array_equal(volume.stray_voxels, [[0, 0, 0]])
  # The training label is the heart's; the whole file's label keeps the voxel.
  np.testing.assert_array_equal(volume.label, clean.label)
  expected = np.select([raw == v for v in MAPPED], list(MAPPED.values()), 0)
  np.testing.assert_array_equal(volume.full_label, expected)
  # The old rule (a box around every labelled voxel) moves the box and cuts the heart.
  old_origin, old_fits = enclosing_crop_origin(expected, 48)
  assert old_origin != volume.geometry.crop_origin and not old_fits


def test_a_heart_in_two_nearby_pieces_stays_whole_in_the_box():
  raw = _heart()
  raw[raw == 600] = 0
  raw[40:60, 64:70, :] = 600  # RV piece: columns 56-63 empty, 8 * 1.25 = 10 mm gap
  volume, fits = _prepare(raw, crop_size=48)
  assert fits and volume.stray_islands == ()
  assert volume.stray_voxels.shape == (0, 3)
  assert (volume.label > 0).sum() == (raw > 0).sum()
  assert (volume.label == 3).sum() == 20 * 6 * 4


def test_an_island_inside_the_box_is_background_in_the_training_label():
  # The heart ends at column 65; a voxel at column 86 lies 20 empty columns (25 mm)
  # past it: an island, though a 96-pixel box around the heart holds it.
  raw = _heart((128, 128, 4))
  raw[50, 86, 2] = 200
  volume, fits = _prepare(raw, crop_size=96)
  assert fits
  assert volume.stray_islands == (
      {"class": "myo", "voxels": 1, "bbox": [[50, 86, 2], [50, 86, 2]]},)
  r0, c0 = volume.geometry.crop_origin
  assert r0 <= 50 < r0 + 96 and c0 <= 86 < c0 + 96
  assert volume.label[2, 50 - r0, 86 - c0] == 0
  assert volume.full_label[50, 86, 2] == 2
  assert (volume.label > 0).sum() == (raw > 0).sum() - 1


def test_prep_meta_summary_and_npz_record_the_islands(tmp_path):
  raw_dir = tmp_path / "raw"
  for n in (1, 2):
    label = _heart()
    if n == 2:
      label[0, 0, 0] = 600
      label[95, 90:92, 3] = 200
    image, _ = _pair(label)
    write_nifti(os.path.join(raw_dir, "images", f"patient{n}_C0.nii.gz"), image.data,
                AFFINE)
    write_nifti(os.path.join(raw_dir, "labels", f"patient{n}_C0_manual.nii.gz"), label,
                AFFINE)
  out = tmp_path / "prep"
  summary = prepare_mscmr(str(raw_dir), str(out), modalities=["bssfp"], crop_size=48,
                          test_fraction=0.5)
  meta = json.load(open(out / "prep_meta.json"))
  assert meta["crop_does_not_enclose"] == []
  assert meta["stray_islands"] == {"bssfp/patient2": [
      {"class": "RV", "voxels": 1, "bbox": [[0, 0, 0], [0, 0, 0]]},
      {"class": "myo", "voxels": 2, "bbox": [[95, 90, 3], [95, 91, 3]]}]}
  assert meta["heart_margin_mm"] == 20.0
  assert ("  bssfp/patient2: RV 1 voxel at [0, 0, 0]-[0, 0, 0]; "
          "myo 2 voxels at [95, 90, 3]-[95, 91, 3]") in summary.splitlines()
  assert open(out / "summary.txt").read() == summary
  path = out / "volumes" / "bssfp" / "patient2.npz"
  volume = prepared.load_volume(str(path))
  assert volume.stray_islands == tuple(meta["stray_islands"]["bssfp/patient2"])
  np.testing.assert_array_equal(volume.stray_voxels, [[0, 0, 0], [95, 90, 3],
                                                      [95, 91, 3]])
  assert volume.full_label.dtype == np.uint8 and volume.full_label.shape == (96, 96, 4)
  assert (volume.full_label > 0).sum() == (volume.label > 0).sum() + 3
  # Only the whole-file label is deflated: the float slices hardly compress.
  with zipfile.ZipFile(path) as archive:
    kinds = {i.filename: i.compress_type for i in archive.infolist()}
  assert kinds.pop("full_label.npy") == zipfile.ZIP_DEFLATED
  assert set(kinds.values()) == {zipfile.ZIP_STORED}
  # Nothing beside csa_tf's own files, and the folder's digest is stable.
  opened = prepared.PreparedDataset.open(str(out))
  assert prepared.foreign_entries(str(out)) == []
  assert opened.fingerprint() == prepared.PreparedDataset.open(str(out)).fingerprint()


def test_a_volume_whose_whole_file_label_does_not_fit_is_refused(tmp_path):
  volume, _ = _prepare(_heart(), crop_size=48)
  volume.full_label = volume.full_label[:, :, :3]
  path = str(tmp_path / "patient1.npz")
  prepared.save_volume(path, volume)
  with pytest.raises(CsaInputError) as error:
    prepared.load_volume(path)
  assert str(error.value) == (f"{path}: not a prepared volume (full_label uint8 "
                              "(96, 96, 3); expected integer labels of the original "
                              "shape (96, 96, 4))")
