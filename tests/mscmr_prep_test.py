"""Tests for data_prep.mscmr on small hand-made releases in the official layout."""
import json
import os

import numpy as np
import pytest

from csa_tf.errors import CsaInputError
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


@pytest.mark.parametrize("case", ["missing_label", "missing_image", "shape_mismatch",
                                  "unknown_values", "truncated", "nan",
                                  "missing_modality", "empty_raw"])
def test_bad_input_one_error_no_output(tmp_path, case):
  raw, named, expected = _raw_with(tmp_path, case)
  out = tmp_path / "prep"
  with pytest.raises(CsaInputError) as info:
    _prepare(raw, out)
  assert named in str(info.value) and expected in str(info.value)
  assert not out.exists()
  assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]


@pytest.mark.integration
@pytest.mark.parametrize("flags,expected", [
    (["--crop_size=30"], "--crop_size=30"),
    (["--test_fraction=1.5"], "--test_fraction"),
    (["--modalities=lge,flair"], "flair"),
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
