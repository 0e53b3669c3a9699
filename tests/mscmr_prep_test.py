"""Tests for data_prep.mscmr on small hand-made releases in the official layout."""
import json
import os
import shutil

import nibabel as nib
import numpy as np
import pytest

from csa_tf.errors import CsaInputError
from csa_tf.data import patient_splits
from csa_tf.data.prepared import PreparedDataset
from csa_tf.data.mscmr import prepare_mscmr
from tests.helpers import make_mscmr_release, run_command, write_nifti


def _prepare(raw, out, **kw):
  kw.setdefault("crop_size", 32)
  return prepare_mscmr(raw, str(out), **kw)


def test_end_to_end(mscmr_release, tmp_path):
  out = tmp_path / "prep"
  summary = _prepare(mscmr_release, out, test_fraction=0.4, seed=3)
  assert "lge" in summary and "bssfp" in summary
  prepared = PreparedDataset.open(str(out), dataset="mscmr")
  assert prepared.modalities == ("lge", "bssfp") and prepared.crop_size == 32
  splits = json.load(open(out / "splits.json"))
  assert set(splits["train"]).isdisjoint(splits["test"])
  assert len(splits["test"]) == 2 and len(splits["train"]) == 3
  for entry in prepared.entries:
    volume = prepared.load(entry)
    assert volume.image.shape == volume.label.shape == (5, 32, 32)
    assert set(np.unique(volume.label)) == {0, 1, 2, 3}
    z = volume.image.reshape(5, -1)
    np.testing.assert_allclose(z.mean(1), 0, atol=1e-4)
    np.testing.assert_allclose(z.std(1), 1, atol=1e-3)
    # The crop box holds every labelled voxel of the original volume.
    raw_tag = {"lge": "LGE", "bssfp": "C0"}[entry.modality]
    raw = np.asanyarray(__import__("nibabel").load(os.path.join(
        mscmr_release, "labels", raw_tag,
        f"{entry.patient_id}_{raw_tag}_manual.nii.gz")).dataobj)
    assert (volume.label > 0).sum() == (raw > 0).sum()
    # Pasting back reproduces the original labels as class indices.
    mapped = np.select([raw == 500, raw == 200, raw == 600], [1, 2, 3], 0)
    np.testing.assert_array_equal(volume.original_label, mapped)


def test_split_is_by_patient_and_seeded(mscmr_release, tmp_path):
  _prepare(mscmr_release, tmp_path / "a", seed=1, test_fraction=0.4)
  _prepare(mscmr_release, tmp_path / "b", seed=1, test_fraction=0.4)
  a = json.load(open(tmp_path / "a" / "splits.json"))
  b = json.load(open(tmp_path / "b" / "splits.json"))
  assert a == b
  prepared = PreparedDataset.open(str(tmp_path / "a"))
  for patient in a["test"]:
    assert {e.modality for e in prepared.entries if e.patient_id == patient} == {
        "lge", "bssfp"}


def test_existing_same_output_is_refused_unless_overwrite(mscmr_release, tmp_path):
  out = tmp_path / "prep"
  _prepare(mscmr_release, out)
  with pytest.raises(CsaInputError, match="already holds a preparation"):
    _prepare(mscmr_release, out)
  _prepare(mscmr_release, out, overwrite=True)
  (tmp_path / "other").mkdir()
  (tmp_path / "other" / "notes.txt").write_text("mine")
  with pytest.raises(CsaInputError, match="not empty"):
    _prepare(mscmr_release, tmp_path / "other")


def _raw_with(tmp_path, case):
  raw = make_mscmr_release(tmp_path / "raw", num_patients=3)
  label = os.path.join(raw, "labels", "LGE", "patient2_LGE_manual.nii.gz")
  image = os.path.join(raw, "images", "patient2_LGE.nii.gz")
  if case == "missing_label":
    os.remove(label)
    return raw, image, "no manual label"
  if case == "missing_image":
    os.remove(image)
    return raw, label, "without its image"
  if case == "shape_mismatch":
    write_nifti(label, np.zeros((40, 48, 4), np.int16))
    return raw, label, "does not match"
  if case == "unknown_values":
    data = np.zeros((40, 48, 5), np.int16)
    data[3, 3, 3] = 1220
    write_nifti(label, data)
    return raw, label, "1220"
  if case == "truncated":
    payload = open(image, "rb").read()
    open(image, "wb").write(payload[: len(payload) // 3])
    return raw, image, "truncated"
  if case == "nan":
    data = np.ones((40, 48, 5), np.float32)
    data[0, 0, 0] = np.nan
    write_nifti(image, data)
    return raw, image, "non-finite"
  if case == "missing_modality":
    os.remove(os.path.join(raw, "images", "patient3_C0.nii.gz"))
    os.remove(os.path.join(raw, "labels", "C0", "patient3_C0_manual.nii.gz"))
    return raw, "patient3", "has no bssfp"
  if case == "empty_raw":
    empty = tmp_path / "empty"
    empty.mkdir()
    return str(empty), str(empty), "no MS-CMRSeg files"
  raise ValueError(case)


# Errors only under the strict settings (csa_tf's behaviour before the challenge copy):
# by default these images are left out, the voxel repaired, the patient kept.
STRICT_CASES = ("missing_label", "nan", "missing_modality")


@pytest.mark.parametrize("case", ["missing_label", "missing_image", "shape_mismatch",
                                  "unknown_values", "truncated", "nan",
                                  "missing_modality", "empty_raw"])
def test_bad_input_one_error_no_output(tmp_path, case):
  raw, named, expected = _raw_with(tmp_path, case)
  out = tmp_path / "prep"
  strict = (dict(require_labels=True, non_finite="refuse") if case in STRICT_CASES
            else {})
  with pytest.raises(CsaInputError) as info:
    _prepare(raw, out, **strict)
  assert named in str(info.value) and expected in str(info.value)
  assert not out.exists()
  assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]


@pytest.mark.integration
@pytest.mark.parametrize("flags,expected", [
    (["--crop_size=30"], "--crop_size=30"),
    (["--test_fraction=1.5"], "--test_fraction"),
    (["--modalities=lge,flair"], "flair"),
    (["--non_finite=ignore"], "--non_finite=ignore: value should be one of"),
])
def test_cli_bad_flags(mscmr_release, tmp_path, flags, expected):
  result = run_command("data_prep.mscmr", f"--raw_dir={mscmr_release}",
                       f"--output_dir={tmp_path / 'prep'}", *flags, expect=2)
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0]
  assert not (tmp_path / "prep").exists()


def test_output_inside_raw_is_refused(mscmr_release):
  with pytest.raises(CsaInputError, match="never written to"):
    _prepare(mscmr_release, os.path.join(mscmr_release, "prep"))


def test_output_holding_raw_is_refused_even_with_overwrite(mscmr_release):
  # --output_dir=S --raw_dir=S/raw --overwrite would replace S, raw data and all.
  before = sorted(os.listdir(mscmr_release))
  parent = os.path.dirname(mscmr_release)
  with pytest.raises(CsaInputError, match=f"^output_dir={parent}: contains raw_dir="):
    prepare_mscmr(mscmr_release, parent, crop_size=32, test_fraction=0.34,
                  overwrite=True)
  assert sorted(os.listdir(mscmr_release)) == before


@pytest.mark.integration
def test_cli_end_to_end(mscmr_release, tmp_path):
  result = run_command("data_prep.mscmr", f"--raw_dir={mscmr_release}",
                       f"--output_dir={tmp_path / 'prep'}", "--crop_size=32")
  assert "prepared data written" in result.stdout
  assert (tmp_path / "prep" / "summary.txt").read_text().startswith("csa_tf preparation")


# ---------------------------------------------------------------------------------------
# Releases with labels for some images only (the challenge copy), split and NaN repair.
# ---------------------------------------------------------------------------------------
def _meta(out):
  return json.load(open(out / "prep_meta.json"))


def _volumes(out):
  return sorted((v["modality"], v["patient_id"]) for v in _meta(out)["volumes"])


def test_images_without_labels_are_left_out_and_listed(tmp_path):
  raw = make_mscmr_release(tmp_path / "raw", num_patients=4)
  for n in (3, 4):
    os.remove(os.path.join(raw, "labels", "LGE", f"patient{n}_LGE_manual.nii.gz"))
  out = tmp_path / "prep"
  summary = _prepare(raw, out, test_fraction=0.5, seed=2)
  # bSSFP from all four patients, LGE from the two with labels.
  assert _volumes(out) == [("bssfp", f"patient{n}") for n in (1, 2, 3, 4)] + [
      ("lge", "patient1"), ("lge", "patient2")]
  assert _meta(out)["unlabelled"] == [
      dict(patient_id=f"patient{n}", modality="lge",
           file=os.path.join("images", f"patient{n}_LGE.nii.gz")) for n in (3, 4)]
  assert ("images without their label, left out of training and evaluation (2):\n"
          "  lge (2): patient3, patient4\n") in summary
  assert summary == (out / "summary.txt").read_text()
  # Split within {lge, bssfp} = patients 1, 2 and {bssfp} = patients 3, 4: half of each
  # group tests, so LGE and bSSFP both have a test patient and no patient is on both
  # sides.
  splits = json.load(open(out / "splits.json"))
  assert len(splits["test"]) == 2 and len(splits["train"]) == 2
  assert len({"patient1", "patient2"} & set(splits["test"])) == 1
  assert len({"patient3", "patient4"} & set(splits["test"])) == 1
  assert "warning" not in summary
  # The strict setting keeps csa_tf's earlier error, naming the first unlabelled image.
  with pytest.raises(CsaInputError) as info:
    _prepare(raw, tmp_path / "strict", require_labels=True)
  assert str(info.value) == (
      f"{os.path.join(raw, 'images', 'patient3_LGE.nii.gz')}: no manual label found for "
      "this image (expected patient3_LGE_manual.nii.gz)")
  assert not (tmp_path / "strict").exists()


def test_patients_contribute_the_modalities_they_have(tmp_path):
  raw = make_mscmr_release(tmp_path / "raw", num_patients=4)
  # patient3: no bSSFP at all (image and label gone); patient4: images, no label.
  os.remove(os.path.join(raw, "images", "patient3_C0.nii.gz"))
  os.remove(os.path.join(raw, "labels", "C0", "patient3_C0_manual.nii.gz"))
  for tag in ("LGE", "C0"):
    os.remove(os.path.join(raw, "labels", tag, f"patient4_{tag}_manual.nii.gz"))
  out = tmp_path / "prep"
  summary = _prepare(raw, out, test_fraction=0.5)
  assert _volumes(out) == [("bssfp", "patient1"), ("bssfp", "patient2"),
                           ("lge", "patient1"), ("lge", "patient2"), ("lge", "patient3")]
  assert [(u["patient_id"], u["modality"]) for u in _meta(out)["unlabelled"]] == [
      ("patient4", "bssfp"), ("patient4", "lge")]
  splits = json.load(open(out / "splits.json"))
  assert "patient4" not in splits["train"] + splits["test"]
  assert "  bssfp (1): patient4\n  lge (1): patient4\n" in summary


def test_a_modality_without_any_label_is_refused(tmp_path):
  raw = make_mscmr_release(tmp_path / "raw", num_patients=2)
  shutil.rmtree(os.path.join(raw, "labels", "LGE"))
  with pytest.raises(CsaInputError) as info:
    _prepare(raw, tmp_path / "prep")
  assert str(info.value) == (
      f"{raw}: none of the 2 lge (LGE) images has its label "
      "(patientN_LGE_manual.nii.gz); prepare with modalities not including lge or "
      "add the labels")
  assert not (tmp_path / "prep").exists()


def test_a_modality_with_one_labelled_patient_warns(tmp_path):
  raw = make_mscmr_release(tmp_path / "raw", num_patients=3)
  for n in (2, 3):
    os.remove(os.path.join(raw, "labels", "LGE", f"patient{n}_LGE_manual.nii.gz"))
  summary = _prepare(raw, tmp_path / "prep", test_fraction=0.2)
  assert summary.splitlines()[-1] == (
      "warning: lge: 0 of 1 labelled patients in the test split, fewer than test "
      "fraction 0.2 asks (1): it cannot be evaluated on this PREP")
  assert _meta(tmp_path / "prep")["warnings"] == [summary.splitlines()[-1]]


def test_a_separate_folder_of_lge_test_labels_is_used(tmp_path):
  raw = make_mscmr_release(tmp_path / "raw", num_patients=3)
  _prepare(raw, tmp_path / "together", test_fraction=0.34)
  # Patients 2-3's LGE labels in a later folder of their own, as some copies have them.
  os.makedirs(os.path.join(raw, "lge_test_gt"))
  for n in (2, 3):
    name = f"patient{n}_LGE_manual.nii.gz"
    os.rename(os.path.join(raw, "labels", "LGE", name),
              os.path.join(raw, "lge_test_gt", name))
  _prepare(raw, tmp_path / "apart", test_fraction=0.34)
  assert _meta(tmp_path / "apart")["unlabelled"] == []
  assert _volumes(tmp_path / "apart") == _volumes(tmp_path / "together")
  assert (json.load(open(tmp_path / "apart" / "splits.json"))
          == json.load(open(tmp_path / "together" / "splits.json")))
  # The same label in both folders stays ambiguous: refused.
  shutil.copy(os.path.join(raw, "lge_test_gt", "patient2_LGE_manual.nii.gz"),
              os.path.join(raw, "labels", "LGE"))
  with pytest.raises(CsaInputError, match="duplicate of"):
    _prepare(raw, tmp_path / "twice")


# Today's splits of a fully labelled 7-patient release (lge, bssfp, t2), recorded before
# the split was drawn within groups of labelled modalities: with every patient labelled
# in every modality there is one group, and the split must not change.
FULL_RELEASE_SPLITS = {
    (3, 0.4): ([1, 2, 4, 5], [3, 6, 7]),
    (0, 0.2): ([1, 2, 4, 5, 6, 7], [3]),
    (1, 0.3): ([2, 3, 4, 5, 7], [1, 6]),
}


@pytest.mark.parametrize("seed,fraction", sorted(FULL_RELEASE_SPLITS))
def test_full_release_split_is_unchanged(tmp_path, seed, fraction):
  raw = make_mscmr_release(tmp_path / "raw", num_patients=7,
                           modalities=("LGE", "C0", "T2"))
  _prepare(raw, tmp_path / "prep", modalities=["lge", "bssfp", "t2"], seed=seed,
           test_fraction=fraction)
  train, test = FULL_RELEASE_SPLITS[(seed, fraction)]
  assert json.load(open(tmp_path / "prep" / "splits.json")) == {
      "train": [f"patient{n}" for n in train], "test": [f"patient{n}" for n in test]}


def test_split_gives_every_modality_with_two_patients_a_test_patient():
  # Three groups of one patient each: seeded_patient_split keeps a lone patient in
  # train, so no modality would be tested. lge (p1, p2) gets one test patient; bssfp
  # (p1, p3) one too, but never p1 once p2 is tested (lge would lose its last
  # training patient), nor the reverse.
  modalities_of = {"p1": ["lge", "bssfp"], "p2": ["lge"], "p3": ["bssfp"]}
  for seed in range(6):
    splits = patient_splits.split_by_labelled_modalities(modalities_of, test_fraction=0.2,
                                                       seed=seed)
    assert sorted(splits["train"] + splits["test"]) == ["p1", "p2", "p3"]
    for modality in ("lge", "bssfp"):
      labelled = {p for p, ms in modalities_of.items() if modality in ms}
      assert labelled & set(splits["test"]) and labelled & set(splits["train"]), seed
    assert patient_splits.split_shortfalls(modalities_of, splits, test_fraction=0.2) == []
  # One group: exactly the seeded split of all patients.
  one_group = {f"p{n}": ["lge", "bssfp"] for n in range(9)}
  assert patient_splits.split_by_labelled_modalities(
      one_group, test_fraction=0.2, seed=4) == patient_splits.seeded_patient_split(
          sorted(one_group), test_fraction=0.2, seed=4)


def test_non_finite_voxels_are_repaired_and_reported(tmp_path):
  raw = make_mscmr_release(tmp_path / "raw", num_patients=2)
  image_path = os.path.join(raw, "images", "patient2_LGE.nii.gz")
  image = nib.load(image_path)
  data = np.asanyarray(image.dataobj).copy()
  data[0, 0, 1] = data[0, 1, 1] = np.nan  # 2 of 40 * 48 * 5 = 9600 voxels (0.02%)
  write_nifti(image_path, data, image.affine)
  label_path = os.path.join(raw, "labels", "C0", "patient1_C0_manual.nii.gz")
  label = np.asanyarray(nib.load(label_path).dataobj).astype(np.float32)
  label[39, 47, 4] = np.nan
  write_nifti(label_path, label)
  out = tmp_path / "prep"
  summary = _prepare(raw, out)
  assert ("non-finite (NaN/Inf) voxels repaired (image: the lowest finite value of its "
          "slice; label: background):\n"
          f"  {os.path.join('images', 'patient2_LGE.nii.gz')}: 2 of 9600 voxels "
          "(0.02%)\n"
          f"  {os.path.join('labels', 'C0', 'patient1_C0_manual.nii.gz')}: 1 of 9600 "
          "voxels (0.01%)\n") in summary
  assert _meta(out)["non_finite_repaired"] == [
      dict(file=os.path.join("images", "patient2_LGE.nii.gz"), kind="image", voxels=2,
           total_voxels=9600),
      dict(file=os.path.join("labels", "C0", "patient1_C0_manual.nii.gz"), kind="label",
           voxels=1, total_voxels=9600)]
  prepared = PreparedDataset.open(str(out))
  for entry in prepared.entries:
    volume = prepared.load(entry)
    assert np.isfinite(volume.image).all()
  # 1% of 9600 is 96 voxels: 97 NaN voxels (48 + 47 + the 2 above) are refused.
  data[0, :, 0] = data[1, :47, 0] = np.nan
  write_nifti(image_path, data, image.affine)
  with pytest.raises(CsaInputError) as info:
    _prepare(raw, tmp_path / "corrupt")
  assert str(info.value).startswith(f"{image_path}: 97 of 9600 voxels (1.01%) are "
                                    "non-finite (NaN/Inf), more than 1%: refused")
  assert not (tmp_path / "corrupt").exists()
