"""Tests for data_prep.myops, the MyoPS phantom layout and cross-release evaluation."""
import json
import os
import shutil

import nibabel as nib
import numpy as np
import pytest

from csa_tf.configs import datasets
from csa_tf.data import phantom
from csa_tf.data.myops import label_mapping, prepare_myops
from csa_tf.data.phantom import myops_layout
from csa_tf.data.prepared import PreparedDataset
from csa_tf.errors import CsaInputError, param
from csa_tf.evaluation import cross_release
from tests.helpers import short_axis_label, write_nifti

TAGS = ("C0", "DE", "T2")


@pytest.fixture(scope="module")
def myops_phantom(tmp_path_factory):
  """A 3-patient MyoPS-layout phantom (2 test20 patients) and its PREP (crop 32,
  1 test patient). Read-only."""
  root = tmp_path_factory.mktemp("myops")
  raw = str(root / "raw")
  phantom.generate_phantoms("mscmr", raw, num_patients=3, seed=1, scale=0.1,
                            release="myops", progress=None)
  summary = prepare_myops(raw, str(root / "prep"), crop_size=32, test_fraction=0.34)
  return raw, PreparedDataset.open(str(root / "prep"), dataset="mscmr"), summary


def _gd(raw, n):
  return np.asarray(nib.load(os.path.join(
      raw, "train25_myops_gd", f"myops_training_{n}_gd.nii.gz")).dataobj)


def test_phantom_writes_the_myops_layout_on_one_grid(myops_phantom):
  raw, _, _ = myops_phantom
  names = sorted(os.path.relpath(os.path.join(d, f), raw)
                 for d, _, files in os.walk(raw) for f in files if f.endswith(".gz"))
  expected = ([f"test20/myops_test_{n}_{t}.nii.gz" for n in (201, 202) for t in TAGS]
              + [f"train25/myops_training_{n}_{t}.nii.gz" for n in (101, 102, 103)
                 for t in TAGS]
              + [f"train25_myops_gd/myops_training_{n}_gd.nii.gz" for n in (101, 102, 103)])
  assert names == sorted(expected)
  marker = json.load(open(os.path.join(raw, phantom.MARKER_NAME)))
  assert marker["release"] == "myops" and marker["dataset"] == "mscmr"
  for n in (101, 102, 103):
    gd = nib.load(os.path.join(raw, "train25_myops_gd", f"myops_training_{n}_gd.nii.gz"))
    assert set(np.unique(np.asarray(gd.dataobj)).tolist()) == {0, 200, 500, 600, 1220, 2221}
    for tag in TAGS:  # Co-registered: every sequence on the label's grid.
      image = nib.load(os.path.join(raw, "train25", f"myops_training_{n}_{tag}.nii.gz"))
      assert image.shape == gd.shape and np.array_equal(image.affine, gd.affine)
    # Edema and scar are parts of the ring the MS-CMRSeg renderer labels myocardium.
    geometry = myops_layout.myops_geometry(n, 1, 0.1)
    _, plain = phantom.render(geometry)
    values = np.asarray(gd.dataobj)
    np.testing.assert_array_equal(np.isin(values, (200, 1220, 2221)), plain == 200)
    np.testing.assert_array_equal(values == 500, plain == 500)


def test_prepares_training_patients_with_mscmr_classes(myops_phantom):
  raw, prepared, summary = myops_phantom
  assert prepared.spec.class_names == ("background", "LV", "myo", "RV")
  assert prepared.release == "myops2020" and prepared.meta["dataset"] == "mscmr"
  assert prepared.modalities == ("lge", "bssfp", "t2")
  ids = ["myops_training_101", "myops_training_102", "myops_training_103"]
  assert sorted(prepared.splits["train"] + prepared.splits["test"]) == ids
  assert len(prepared.splits["test"]) == 1  # round(0.34 * 3)
  assert len(prepared.entries) == 9  # 3 patients x 3 sequences; nothing of test20.
  assert prepared.meta["crop_does_not_enclose"] == []
  for entry in prepared.entries:
    # Every class voxel of the file is in the PREP's label: LV 500, myo 200+1220+2221.
    gd = _gd(raw, int(entry.patient_id.rsplit("_", 1)[1]))
    label = prepared.load(entry).original_label
    assert (label == 1).sum() == (gd == 500).sum()
    assert (label == 2).sum() == np.isin(gd, (200, 1220, 2221)).sum()
    assert (label == 3).sum() == (gd == 600).sum()
  ignored = prepared.meta["ignored_files"]
  assert len(ignored) == 6 and {i["reason"] for i in ignored} == {"test20: no label"}
  assert "ignored: 6 test20 files of 2 patients (the release has no labels for them)" in (
      summary)
  assert "labels: 500 -> LV; 200, 1220, 2221 -> myo; 600 -> RV" in summary
  assert prepared.meta["label_mapping"] == {"200": "myo", "500": "LV", "600": "RV",
                                            "1220": "myo", "2221": "myo"}


def _hand_release(root, patients=(101, 102), shape=(40, 48, 3)):
  """train25 + train25_myops_gd for patients, with 1220/2221 voxels in the ring."""
  for n in patients:
    label = short_axis_label(shape, (20, 20), radius=5)
    ring = np.argwhere(label == 200)
    label[tuple(ring[:4].T)] = 1220  # 4 edema voxels
    label[tuple(ring[4:7].T)] = 2221  # 3 scar voxels
    write_nifti(os.path.join(root, "train25_myops_gd", f"myops_training_{n}_gd.nii.gz"),
                label)
    rng = np.random.default_rng(n)
    for tag in TAGS:
      image = (rng.normal(100, 10, shape) + (label == 500) * 200).astype(np.float32)
      write_nifti(os.path.join(root, "train25", f"myops_training_{n}_{tag}.nii.gz"), image)
  return str(root)


def test_edema_and_scar_voxels_become_myo(tmp_path):
  raw = _hand_release(tmp_path / "raw")
  write_nifti(os.path.join(raw, "test20", "myops_test_201_DE.nii.gz"),
              np.ones((8, 8, 2), np.float32))
  prepare_myops(raw, str(tmp_path / "prep"), modalities=["lge"], crop_size=32,
                test_fraction=0.5)
  prepared = PreparedDataset.open(str(tmp_path / "prep"))
  gd = _gd(raw, 101)
  ring = np.argwhere(np.isin(gd, (1220, 2221)))
  assert len(ring) == 7
  entry = prepared.entries_for(prepared.split_of("myops_training_101"), "lge")[0]
  label = prepared.load(entry).original_label
  assert [int(label[tuple(v)]) for v in ring] == [2] * 7
  # 200-voxels of the hand-made ring plus the 7 pathology voxels.
  assert (label == 2).sum() == (gd == 200).sum() + 7
  ignored = prepared.meta["ignored_files"]
  assert ignored[0] == {"file": os.path.join("test20", "myops_test_201_DE.nii.gz"),
                        "reason": "test20: no label"}
  # C0 and T2 of both patients were not asked for: listed too.
  assert [i["file"] for i in ignored[1:]] == [
      os.path.join("train25", f"myops_training_{n}_{t}.nii.gz")
      for n in (101, 102) for t in ("C0", "T2")]
  assert label_mapping()[2221] == "myo" and label_mapping()[1220] == "myo"


@pytest.mark.parametrize("case", ["label_alone", "image_alone", "missing_sequence",
                                  "off_grid", "only_test"])
def test_bad_releases_are_one_line_and_leave_no_output(tmp_path, case):
  raw = _hand_release(tmp_path / "raw")
  out = tmp_path / "prep"
  gd_dir, images = os.path.join(raw, "train25_myops_gd"), os.path.join(raw, "train25")
  if case == "label_alone":
    shutil.copy(os.path.join(gd_dir, "myops_training_101_gd.nii.gz"),
                os.path.join(gd_dir, "myops_training_105_gd.nii.gz"))
    expected = (f"{gd_dir}/myops_training_105_gd.nii.gz: label without its images "
                "(expected myops_training_105_{C0,DE,T2}.nii.gz)")
  elif case == "image_alone":
    os.remove(os.path.join(gd_dir, "myops_training_102_gd.nii.gz"))
    expected = (f"{images}/myops_training_102_C0.nii.gz: no label found for this image "
                "(expected myops_training_102_gd.nii.gz)")
  elif case == "missing_sequence":
    os.remove(os.path.join(images, "myops_training_102_DE.nii.gz"))
    expected = (f"{raw}: myops_training_102 has no lge (DE) image; prepare with "
                f"{param('modalities')} not including lge or add the file")
  elif case == "off_grid":
    path = os.path.join(images, "myops_training_101_T2.nii.gz")
    image = nib.load(path)
    shifted = image.affine.copy()
    shifted[0, 3] += 2.0
    write_nifti(path, np.asarray(image.dataobj), shifted)
    expected = (f"{gd_dir}/myops_training_101_gd.nii.gz: label affine differs from its "
                "image's; the two do not lie on the same voxel grid")
  else:
    shutil.rmtree(gd_dir)
    shutil.move(images, os.path.join(raw, "test20"))
    for name in os.listdir(os.path.join(raw, "test20")):
      os.rename(os.path.join(raw, "test20", name),
                os.path.join(raw, "test20", name.replace("training_1", "test_2")))
    expected = (f"{raw}: no MyoPS training files (train25/myops_training_NNN_{{C0,DE,T2}}"
                ".nii.gz with train25_myops_gd/myops_training_NNN_gd.nii.gz) (only 6 "
                "test20 files, which have no labels)")
  with pytest.raises(CsaInputError) as error:
    prepare_myops(raw, str(out), crop_size=32)
  assert str(error.value) == expected
  assert not out.exists()


def test_a_missing_sequence_not_asked_for_is_no_error(tmp_path):
  raw = _hand_release(tmp_path / "raw")
  os.remove(os.path.join(raw, "train25", "myops_training_102_DE.nii.gz"))
  summary = prepare_myops(raw, str(tmp_path / "prep"), modalities=["bssfp", "t2"],
                          crop_size=32, test_fraction=0.5)
  prepared = PreparedDataset.open(str(tmp_path / "prep"))
  assert len(prepared.entries) == 4 and prepared.modalities == ("bssfp", "t2")
  assert (f"ignored: 1 training images of sequences not in {param('modalities')}"
          in summary)
  assert prepared.meta["ignored_files"] == [
      {"file": os.path.join("train25", "myops_training_101_DE.nii.gz"),
       "reason": "sequence not requested"}]


def test_release_warning_text_both_ways():
  forward = cross_release.release_warning("mscmr2019", "myops2020")
  assert forward == (
      "cross-release evaluation: the run was trained on MS-CMRSeg 2019 and is evaluated "
      "on MyoPS 2020, both from the Zhuang group's 45-patient multi-sequence CMR cohort; "
      "their patients may be the same under other ids, so test patients may be training "
      "patients and the scores may be optimistic")
  reverse = cross_release.release_warning("myops2020", "mscmr2019")
  assert reverse.startswith("cross-release evaluation: the run was trained on MyoPS 2020 "
                            "and is evaluated on MS-CMRSeg 2019, ")
  assert cross_release.release_warning("myops2020", "myops2020") is None
  assert cross_release.release_warning(None, "myops2020") is None
  assert cross_release.release_warning("mmwhs2017", "myops2020") is None
  assert datasets.RELEASES["myops2020"].dataset == datasets.MSCMR.name


@pytest.mark.integration
def test_cross_release_evaluation_warns_and_records(myops_phantom, tiny_run, tiny_prep,
                                                    tmp_path):
  from csa_tf.evaluation.evaluator import evaluate_run  # pylint: disable=g-import-not-at-top
  from csa_tf.io.run_dir import RunDir  # pylint: disable=g-import-not-at-top
  from tests.helpers import make_config  # pylint: disable=g-import-not-at-top
  _, myops_prep, _ = myops_phantom
  # Either way round, a run fits the other release's PREP.
  tiny_prep.check_fits(make_config(data_dir=myops_prep.prep_dir))
  run_dir = tmp_path / "run"
  shutil.copytree(tiny_run.model_dir, run_dir)
  run = RunDir(str(run_dir))
  record = run.read_training_data()
  assert record["release"] == "mscmr2019"
  lines = []
  report = evaluate_run(str(run_dir), myops_prep.prep_dir, log=lines.append)
  expected = cross_release.release_warning("mscmr2019", "myops2020")
  assert lines[0] == f"warning: {expected}"
  assert report["cross_release_warning"] == expected and report["release"] == "myops2020"
  assert json.load(open(run.summary_path()))["cross_release_warning"] == expected
  assert report["patients"] == {m: myops_prep.splits["test"] for m in ("lge", "bssfp")}
  # A run made before training_data.json named its release: read from its PREP.
  del record["release"]
  run.write_training_data(record)
  assert cross_release.trained_release(run) == "mscmr2019"
  # On its own release: no warning.
  assert cross_release.cross_release_warning(run, tiny_prep) is None


@pytest.mark.integration
def test_commands_write_and_prepare_the_myops_layout(tmp_path):
  from tests.helpers import run_command  # pylint: disable=g-import-not-at-top
  raw, prep = tmp_path / "raw", tmp_path / "prep"
  result = run_command("data_prep.phantom", "--dataset=mscmr", "--release=myops",
                       f"--output_dir={raw}", "--num_patients=2", "--scale=0.1")
  assert result.stdout.endswith(
      # 2 training patients x (3 images + 1 label) + 2 test20 patients x 3 images.
      f"wrote 14 files of a mscmr phantom (myops layout) to {raw}\n")
  result = run_command("data_prep.myops", f"--raw_dir={raw}", f"--output_dir={prep}",
                       "--crop_size=32", "--modalities=lge,bssfp")
  assert "ignored: 6 test20 files of 2 patients" in result.stdout
  assert result.stdout.endswith(f"prepared data written to {prep}\n")
  result = run_command("data_prep.myops", f"--raw_dir={raw}", f"--output_dir={prep}",
                       "--crop_size=32", expect=2)
  assert result.stderr.strip().splitlines()[-1] == (
      f"error: {prep}: already holds a preparation ({prep}/prep_meta.json); pass "
      f"--overwrite to replace it or choose another --output_dir")
  result = run_command("data_prep.phantom", "--dataset=mmwhs", "--release=myops",
                       f"--output_dir={tmp_path / 'mm'}", expect=2)
  assert result.stderr.strip().splitlines()[-1] == (
      "error: --release=myops: expected full for mmwhs")
  assert not (tmp_path / "mm").exists()


def test_nan_voxels_are_repaired_and_reported_or_refused(myops_phantom, tmp_path):
  source, _, _ = myops_phantom
  raw = str(tmp_path / "raw")
  shutil.copytree(source, raw)
  path = os.path.join(raw, "train25", "myops_training_101_C0.nii.gz")
  image = nib.load(path)
  data = np.asarray(image.dataobj, np.float32)
  data[0, 0, 0] = data[1, 1, 1] = np.nan  # two of thousands: well under 1%
  nib.save(nib.Nifti1Image(data, image.affine), path)
  with pytest.raises(CsaInputError, match="non-finite"):
    prepare_myops(raw, str(tmp_path / "refused"), modalities=["bssfp"], crop_size=32,
                  non_finite="refuse")
  assert not (tmp_path / "refused").exists()
  summary = prepare_myops(raw, str(tmp_path / "prep"), modalities=["bssfp"], crop_size=32)
  assert "train25/myops_training_101_C0.nii.gz: 2 of" in summary
  meta = json.load(open(tmp_path / "prep" / "prep_meta.json"))
  assert [(r["file"], r["voxels"]) for r in meta["non_finite_repaired"]] == [
      ("train25/myops_training_101_C0.nii.gz", 2)]
