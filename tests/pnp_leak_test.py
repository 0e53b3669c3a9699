"""Tests of csa_tf.data.pnp_leak and of data_prep.mmwhs_pnp on a release that leaks its
test volumes into its training and validation folders (tests/helpers.py
make_pnp_leak_release)."""
import json
import os

from absl.testing import flagsaver
import numpy as np
import pytest

from csa_tf.cli import run_main
from csa_tf.data import mmwhs_pnp, pnp_records, prepared
from csa_tf.data.pnp_leak import ATOL, ORIENTATIONS, LeakIndex, LeakedSlice
from csa_tf.data.slicing import zscore_slices
from csa_tf.errors import CsaInputError
from data_prep import mmwhs_pnp as pnp_command
from tests.helpers import PNP_LEAK_PLANTS, make_pnp_leak_release, write_nifti


def _zscored(rng, count, size=32):
  return zscore_slices(rng.normal(size=(count, size, size)).astype(np.float32))


# ---------------------------------------------------------------------------------------
# The index.
# ---------------------------------------------------------------------------------------
def test_index_finds_a_slice_in_each_of_the_eight_orientations():
  rng = np.random.default_rng(0)
  volume = _zscored(rng, 3)
  index = LeakIndex({"mr_1007": volume})
  assert len(index) == 3
  for key, turn in ORIENTATIONS.items():
    assert index.find(np.ascontiguousarray(turn(volume[2]))) == LeakedSlice(
        "mr_1007", 2, key), key
  assert index.find(_zscored(rng, 1)[0]) is None


def test_index_tolerance_constant_slices_and_ties():
  rng = np.random.default_rng(1)
  volume = _zscored(rng, 2)
  volume[0] = 0.0  # A constant slice, z-scored: never matched.
  index = LeakIndex({"ct_1019": volume, "ct_1003": volume[1:].copy()})
  assert len(index) == 2
  assert index.find(np.zeros((32, 32), np.float32)) is None
  # Within ATOL (1e-4) at every pixel: the same slice, and the lower id of the two
  # volumes that hold it.
  assert index.find(volume[1] + 0.5 * ATOL) == LeakedSlice("ct_1003", 0,
                                                              "as_tfrecords")
  # One pixel off by 2 * ATOL: another slice (the strided first look, every 16th pixel,
  # passes it at (1, 1); the full comparison does not).
  near = volume[1].copy()
  near[1, 1] += 2 * ATOL
  assert index.find(near) is None
  assert LeakIndex({}).find(volume[1]) is None


def test_validation_folders():
  for path in ("ct_val_tfs/ct_val_slice1.tfrecords", "data/validation_B/image_01.tfrecords",
               "mr/mr_valid_slice2.tfrecords"):
    assert mmwhs_pnp.is_validation(path), path
  for path in ("train&val/ct_train_tfs/ct_train_slice1.tfrecords",
               "train_val/mr_train_tfs/mr_train_slice1.tfrecords", "interval_ct/s1.tfrecords",
               "ct_values/s1.tfrecords"):
    assert not mmwhs_pnp.is_validation(path), path


# ---------------------------------------------------------------------------------------
# NIfTI test volumes.
# ---------------------------------------------------------------------------------------
def test_nifti_test_volume_reads_as_its_npz(tmp_path):
  # SIFA's savenpz.py: np.savez(npz, medpy.io.load(image)[0], medpy.io.load(label)[0]),
  # medpy's array being the NIfTI voxel array in index order: the same arrays.
  rng = np.random.default_rng(2)
  image = rng.normal(size=(256, 256, 3)).astype(np.float32)
  label = rng.integers(0, 6, size=(256, 256, 3)).astype(np.int16)
  image_path = write_nifti(str(tmp_path / "image_mr_1007.nii.gz"), image)
  label_path = write_nifti(str(tmp_path / "gth_mr_1007.nii.gz"), label)
  np.savez(str(tmp_path / "image_mr_1007.npz"), image, label)
  from_nifti = pnp_records.read_test_nifti(image_path, label_path)
  from_npz = pnp_records.read_test_npz(str(tmp_path / "image_mr_1007.npz"))
  for a, b in zip(from_nifti, from_npz):
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(a, b)
  write_nifti(label_path, label[:, :, :2])
  with pytest.raises(CsaInputError, match="differs from that of its image") as info:
    pnp_records.read_test_nifti(image_path, label_path)
  assert str(info.value).startswith(label_path + ":")


def test_unpaired_nifti_test_file_is_refused(tmp_path):
  pnp_dir = tmp_path / "pnp"
  write_nifti(str(pnp_dir / "test_ct" / "gth_ct_1003.nii.gz"),
              np.zeros((256, 256, 1), np.int16))
  with pytest.raises(CsaInputError, match="no image_ct_1003.nii.gz beside it"):
    mmwhs_pnp.prepare_pnp(str(pnp_dir), str(tmp_path / "prep"))
  assert sorted(os.listdir(tmp_path)) == ["pnp"]


# ---------------------------------------------------------------------------------------
# A release with the leak.
# ---------------------------------------------------------------------------------------
PLANTED = {kind: sum(1 for plant in PNP_LEAK_PLANTS if plant[0] == kind)
           for kind in ("train", "val")}


@pytest.fixture(scope="module")
def leak(tmp_path_factory):
  pnp_dir = str(tmp_path_factory.mktemp("leak") / "release")
  truth = make_pnp_leak_release(pnp_dir)
  prep_dir = str(tmp_path_factory.mktemp("leak_out") / "prep")
  summary = mmwhs_pnp.prepare_pnp(pnp_dir, prep_dir)
  return pnp_dir, truth, prep_dir, summary


def _assert_no_test_slice_in_training(prep_dir, truth):
  """Every PREP training slice against every test slice, all orientations, exactly."""
  for modality, facts in truth.items():
    train = prepared.load_volume(os.path.join(
        prep_dir, prepared.volume_filename(modality, f"{modality}_pnp_train"))).image
    for images, _ in facts["test"].values():
      for test in zscore_slices(images):
        for turn in ORIENTATIONS.values():
          gaps = np.abs(train - turn(test)[None]).reshape(len(train), -1).max(axis=1)
          assert gaps.min() > 1e-2, (modality, gaps.min())


def _expected_left_out(truth, modality, *, with_val):
  """prep_meta.json's left_out_of_training for one modality, from PNP_LEAK_PLANTS."""
  facts = truth[modality]
  rows = []
  own = {"train": len(facts["train_kept"]), "val": len(facts["val_kept"])}
  if not with_val:
    rows.append(dict(modality=modality, folder=facts["folders"]["val"],
                     slices=own["val"] + PLANTED["val"],
                     left_out=own["val"] + PLANTED["val"],
                     reason="validation folder (the release's test data, SIFA #55)"))
  for kind in ("train", "val") if with_val else ("train",):
    plants = [p for p in PNP_LEAK_PLANTS if p[0] == kind]
    volumes, turns = {}, {}
    for _, volume, _, how in plants:
      test_id = sorted(facts["test"])[volume]
      volumes[test_id] = volumes.get(test_id, 0) + 1
      how = how.replace("_rounded", "")
      turns[how] = turns.get(how, 0) + 1
    rows.append(dict(modality=modality, folder=facts["folders"][kind],
                     slices=own[kind] + len(plants), left_out=len(plants),
                     reason="equal to a test volume's slice",
                     test_volumes=dict(sorted(volumes.items())),
                     orientations=dict(sorted(turns.items()))))
  # Entries sort validation folders first, then test-slice matches, each by folder.
  return rows


def test_leak_release_default_trains_on_no_test_slice(leak):
  _, truth, prep_dir, summary = leak
  _assert_no_test_slice_in_training(prep_dir, truth)
  data = prepared.PreparedDataset.open(prep_dir, dataset="mmwhs")
  assert data.splits == {"train": ["ct_pnp_train", "mr_pnp_train"],
                         "test": ["ct_1003", "ct_1008", "mr_1003", "mr_1008"]}
  for modality, facts in truth.items():
    # What is left is exactly the slices of no test volume (the near miss among them),
    # in natural order.
    volume = prepared.load_volume(os.path.join(
        prep_dir, prepared.volume_filename(modality, f"{modality}_pnp_train")))
    kept = facts["train_kept"]
    assert len(volume.image) == 5  # own_train 4 + the near miss.
    np.testing.assert_array_equal(volume.image,
                                  zscore_slices(np.stack([i for i, _ in kept])))
    np.testing.assert_array_equal(volume.label, np.stack([lab for _, lab in kept]))
    # The NIfTI test volume, read in the npz convention (flips undone).
    nifti = prepared.load_volume(os.path.join(
        prep_dir, prepared.volume_filename(modality, f"{modality}_1008")))
    assert nifti.source == f"image_{modality}_1008.nii.gz"
    test_image, test_label = facts["test"][f"{modality}_1008"]
    np.testing.assert_allclose(nifti.image, zscore_slices(test_image), atol=1e-6)
    np.testing.assert_array_equal(nifti.label, test_label)
  with open(os.path.join(prep_dir, prepared.META_FILE)) as f:
    meta = json.load(f)
  assert meta["settings"]["use_val_slices"] is False
  assert meta["left_out_of_training"] == (
      _expected_left_out(truth, "ct", with_val=False)[:1]
      + _expected_left_out(truth, "mr", with_val=False)[:1]
      + _expected_left_out(truth, "ct", with_val=False)[1:]
      + _expected_left_out(truth, "mr", with_val=False)[1:])
  # Planted: 5 train (ct_1003: slices 0, 2 as stored in the TFRecords, 3 as in the npz;
  # ct_1008: 1 transposed, 2 rounded), 2 in the validation folder of 2 + 2 slices.
  with open(os.path.join(prep_dir, prepared.SUMMARY_FILE)) as f:
    assert f.read() == summary
  for modality in ("ct", "mr"):
    assert (f"  {modality} {modality}_val_tfs: 4 of 4 slices, a validation folder, the "
            "release's test data (use_val_slices to train on it)\n") in summary
    assert (f"  {modality} {modality}_train_tfs: 5 of 10 slices, equal to slices of test "
            f"volumes ({modality}_1003 3, {modality}_1008 2; orientation: as_npz 1, "
            "as_tfrecords 3, transposed 1)\n") in summary


def test_use_val_slices_trains_on_them_less_their_test_slices(leak, tmp_path, capsys):
  pnp_dir, truth, _, _ = leak
  prep_dir = str(tmp_path / "prep")
  if "pnp_dir" not in pnp_command.FLAGS:
    pnp_command.define_flags()
  with flagsaver.flagsaver():
    pnp_command.FLAGS(["mmwhs_pnp", f"--pnp_dir={pnp_dir}", f"--output_dir={prep_dir}",
                       "--use_val_slices"])
    run_main(pnp_command.main)(["mmwhs_pnp"])
  stdout = capsys.readouterr().out
  assert ("warning: --use_val_slices: 8 validation-folder slices are trained on; the "
          "release's maintainer says they are its test data (SIFA #55)") in stdout
  _assert_no_test_slice_in_training(prep_dir, truth)
  for modality, facts in truth.items():
    volume = prepared.load_volume(os.path.join(
        prep_dir, prepared.volume_filename(modality, f"{modality}_pnp_train")))
    # Natural path order: m_train_tfs/ before m_val_tfs/.
    kept = facts["train_kept"] + facts["val_kept"]
    assert len(volume.image) == 7
    np.testing.assert_array_equal(volume.image,
                                  zscore_slices(np.stack([i for i, _ in kept])))
  data = prepared.PreparedDataset.open(prep_dir, dataset="mmwhs")
  assert data.meta["settings"]["use_val_slices"] is True
  assert data.meta["left_out_of_training"] == (
      _expected_left_out(truth, "ct", with_val=True)
      + _expected_left_out(truth, "mr", with_val=True))
  assert "(ct_1003 1, ct_1008 1; orientation: as_npz 1, as_tfrecords 1)" in stdout
