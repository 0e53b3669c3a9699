"""The MS-CMRSeg 2019 challenge copy: its phantom, its preparation, training on it.

The copy (REFERENCE.md section 5b) labels C0/T2 of patients 1-35 and LGE of 1-5 only,
holds NaN voxels in T2 images and some labels, and stray labelled voxels near a corner.
Six phantom patients keep every path: labels for C0/T2 of 1-5 and LGE of 1-2
(`phantom.labelled_count`), so patient 6 has no label at all.
"""
import csv
import json
import os

import nibabel as nib
import numpy as np
import pytest

from csa_tf.configs import datasets
from csa_tf.data import phantom
from csa_tf.data.mscmr import prepare_mscmr
from csa_tf.data.prepared import PreparedDataset
from tests.helpers import TINY_TRAIN_FLAGS, run_command

CHALLENGE = datasets.MSCMR_CHALLENGE
TAGS = datasets.MSCMR_SEQUENCE_TAGS
LV, MYO, RV = datasets.MSCMR.label_values
NUM_PATIENTS, SEED, SCALE = 6, 2, 0.15
# Labelled patients of each modality among the six (the copy's 5/45 and 35/45 scaled).
LABELLED = {"lge": (1, 2), "bssfp": (1, 2, 3, 4, 5), "t2": (1, 2, 3, 4, 5)}


def _image_path(root, n, modality):
  return os.path.join(root, CHALLENGE.root, CHALLENGE.image_folder,
                      f"patient{n}_{TAGS[modality]}.nii.gz")


def _label_path(root, n, modality):
  return os.path.join(root, CHALLENGE.root, CHALLENGE.label_folders[modality],
                      f"patient{n}_{TAGS[modality]}_manual.nii.gz")


def _load(path):
  return np.asanyarray(nib.load(str(path)).dataobj)


@pytest.fixture(scope="module")
def challenge_copy(tmp_path_factory):
  root = tmp_path_factory.mktemp("challenge")
  paths = phantom.generate_phantoms("mscmr", str(root / "raw"), num_patients=NUM_PATIENTS,
                                    seed=SEED, scale=SCALE, release="challenge",
                                    progress=None)
  full = root / "full"
  phantom.generate_phantoms("mscmr", str(full), num_patients=NUM_PATIENTS, seed=SEED,
                            scale=SCALE, progress=None)
  return root / "raw", paths, full


def test_labelled_count_scales_the_copys_35_and_5_of_45():
  counts = {n: (phantom.labelled_count("bssfp", n), phantom.labelled_count("t2", n),
                phantom.labelled_count("lge", n)) for n in (1, 2, 6, 9, 45, 90)}
  # round(35/45 n) and round(5/45 n), at least 2, at most n.
  assert counts == {1: (1, 1, 1), 2: (2, 2, 2), 6: (5, 5, 2), 9: (7, 7, 2),
                    45: (35, 35, 5), 90: (70, 70, 10)}


def test_challenge_layout_labels_nan_and_strays(challenge_copy):
  raw, paths, full = challenge_copy
  expected = []
  for n in range(1, NUM_PATIENTS + 1):
    for modality in ("lge", "bssfp", "t2"):
      expected.append(_image_path(raw, n, modality))
      if n in LABELLED[modality]:
        expected.append(_label_path(raw, n, modality))
  assert paths == expected
  on_disk = {os.path.join(r, name) for r, _, names in os.walk(raw) for name in names}
  assert on_disk == set(expected) | {os.path.join(raw, phantom.MARKER_NAME)}
  assert json.load(open(raw / phantom.MARKER_NAME))["release"] == "challenge"
  for n in range(1, NUM_PATIENTS + 1):
    for modality in ("lge", "bssfp", "t2"):
      tag = TAGS[modality]
      image = _load(_image_path(raw, n, modality))
      drawn = _load(os.path.join(full, "images", f"patient{n}_{tag}.nii.gz"))
      if modality == "t2":
        # NaN in 0.1% of the voxels (at least one), the rest as drawn.
        nan = np.isnan(image)
        assert image.dtype == np.float32
        assert nan.sum() == max(1, round(0.001 * image.size)) < 0.01 * image.size
        np.testing.assert_array_equal(image[~nan], drawn[~nan])
      else:
        assert image.dtype == np.int16 and np.array_equal(image, drawn)
      if n not in LABELLED[modality]:
        continue
      label = _load(_label_path(raw, n, modality))
      clean = _load(os.path.join(full, "labels", tag, f"patient{n}_{tag}_manual.nii.gz"))
      middle = label.shape[2] // 2
      changed = np.isnan(label) | (np.nan_to_num(label) != clean)
      if modality == "t2" and n % 2 == 1:
        # NaN on 0.05% of the voxels, all of them background in the drawn label.
        assert label.dtype == np.float32
        assert np.isnan(label).sum() == max(1, round(0.0005 * label.size))
        assert (clean[np.isnan(label)] == 0).all()
      else:
        assert not np.isnan(label.astype(np.float32)).any()
      if modality == "bssfp" and n == 2:  # n % 4 == 2: a 2x2 LV block at the corner
        assert (label[0:2, 0:2, middle] == LV).all() and (clean[0:2, 0:2, middle] == 0).all()
        changed[0:2, 0:2, middle] = False
      if modality == "t2" and n == 3:  # n % 4 == 3: one myocardium voxel at the corner
        assert label[0, 0, middle] == MYO and clean[0, 0, middle] == 0
        changed[0, 0, middle] = False
      assert not (changed & ~np.isnan(label)).any(), (n, modality)


def test_prepare_keeps_the_labelled_volumes_and_repairs_nan(challenge_copy, tmp_path):
  raw, _, full = challenge_copy
  out = tmp_path / "prep"
  summary = prepare_mscmr(str(raw), str(out), modalities=["lge", "bssfp", "t2"],
                          crop_size=64)
  meta = json.load(open(out / "prep_meta.json"))
  assert sorted((v["modality"], v["patient_id"]) for v in meta["volumes"]) == sorted(
      (m, f"patient{n}") for m, ns in LABELLED.items() for n in ns)
  assert sorted((u["modality"], u["patient_id"]) for u in meta["unlabelled"]) == [
      ("bssfp", "patient6"), ("lge", "patient3"), ("lge", "patient4"),
      ("lge", "patient5"), ("lge", "patient6"), ("t2", "patient6")]
  # Every labelled T2 image, and the T2 labels of patients 1, 3, 5, were repaired.
  repaired = {(r["file"], r["kind"]): r["voxels"] for r in meta["non_finite_repaired"]}
  expected = {}
  for n in LABELLED["t2"]:
    for path, kind in ((_image_path(raw, n, "t2"), "image"),
                       (_label_path(raw, n, "t2"), "label")):
      count = int(np.isnan(_load(path)).sum())
      if count:
        expected[(os.path.relpath(path, raw), kind)] = count
  assert repaired == expected and len(expected) == 5 + 3
  first = os.path.relpath(_image_path(raw, 1, "t2"), raw)
  assert f"  {first}: {expected[(first, 'image')]} of " in summary
  assert "  lge (4): patient3, patient4, patient5, patient6" in summary
  # No patient is split across train and test; each modality has a test patient.
  splits = json.load(open(out / "splits.json"))
  assert set(splits["train"]).isdisjoint(splits["test"])
  assert "patient6" not in splits["train"] + splits["test"]
  prepared = PreparedDataset.open(str(out))
  for modality in ("lge", "bssfp", "t2"):
    assert prepared.entries_for("test", modality) and prepared.entries_for("train",
                                                                           modality)
  for entry in prepared.entries:
    volume = prepared.load(entry)
    assert np.isfinite(volume.image).all()
  # The repaired labels' NaN voxels became background: the T2 label of patient 1 (no
  # stray voxel) pastes back to the drawn label.
  entry, = [e for e in prepared.entries if (e.modality, e.patient_id) == ("t2",
                                                                         "patient1")]
  clean = _load(os.path.join(full, "labels", "T2", "patient1_T2_manual.nii.gz"))
  np.testing.assert_array_equal(prepared.load(entry).original_label,
                                np.select([clean == LV, clean == MYO, clean == RV],
                                          [1, 2, 3], 0))


# Slow: two TensorFlow commands (80-126 s measured on the 2 shared cores, load ~5);
# test_training_batches_and_evaluation_lists_on_the_copys_prep covers what they read.
@pytest.mark.slow
def test_commands_end_to_end(tmp_path):
  # The user's commands: phantom copy, preparation, the strict setting's refusal, a
  # two-step training and its evaluation.
  raw, prep, run = tmp_path / "raw", tmp_path / "prep", tmp_path / "run"
  run_command("data_prep.phantom", "--dataset=mscmr", "--release=challenge",
              f"--output_dir={raw}", f"--num_patients={NUM_PATIENTS}", f"--scale={SCALE}",
              f"--seed={SEED}")
  strict = run_command("data_prep.mscmr", f"--raw_dir={raw}", f"--output_dir={prep}",
                       "--modalities=lge,bssfp,t2", "--require_labels", expect=2)
  assert strict.stderr.strip().splitlines() == [
      f"error: {_image_path(raw, 3, 'lge')}: no manual label found for this image "
      "(expected patient3_LGE_manual.nii.gz)"]
  assert not prep.exists()
  result = run_command("data_prep.mscmr", f"--raw_dir={raw}", f"--output_dir={prep}",
                       "--modalities=lge,bssfp,t2", "--crop_size=64")
  assert "images without their label, left out of training and evaluation (6):" in (
      result.stdout)
  assert "non-finite voxels repaired in patient1_T2.nii.gz" in result.stdout
  assert "non-finite voxels repaired in patient1_T2_manual.nii.gz" in result.stdout
  train = run_command("csa_tf.train", f"--data_dir={prep}", f"--model_dir={run}",
                      "--modalities=lge,bssfp", *TINY_TRAIN_FLAGS)
  assert "finished step 2" in train.stdout
  run_command("csa_tf.evaluate", f"--model_dir={run}")
  rows = list(csv.DictReader(open(run / "eval" / "per_volume.csv")))
  tested = json.load(open(prep / "splits.json"))["test"]
  # One row per class of each test volume that exists: LGE of tested patients 1-2,
  # bSSFP of tested patients 1-5.
  expected = sorted((p, m, c) for m in ("lge", "bssfp") for p in tested
                    if int(p[len("patient"):]) in LABELLED[m] for c in ("LV", "myo", "RV"))
  assert sorted((r["patient_id"], r["modality"], r["class_name"]) for r in rows) == (
      expected)
  assert {r["modality"] for r in rows} == {"lge", "bssfp"}


@pytest.mark.integration
def test_training_batches_and_evaluation_lists_on_the_copys_prep(challenge_copy,
                                                                 tmp_path):
  # The default-run part of test_commands_end_to_end (slow): what training and
  # evaluation read from a PREP where LGE has 2 patients and bSSFP 5.
  from csa_tf.data import pipeline  # pylint: disable=g-import-not-at-top
  raw, _, _ = challenge_copy
  prep = tmp_path / "prep"
  prepare_mscmr(str(raw), str(prep), modalities=["lge", "bssfp"], crop_size=32)
  prepared = PreparedDataset.open(str(prep))
  splits = json.load(open(prep / "splits.json"))
  for split in ("train", "test"):
    assert prepared.patients(split, ["lge", "bssfp"]) == {
        m: [p for p in sorted(splits[split]) if int(p[len("patient"):]) in LABELLED[m]]
        for m in ("lge", "bssfp")}
  assert len(prepared.patients("test", ["lge"])["lge"]) == 1
  batch, = pipeline.unpaired_batches(prepared, ["lge", "bssfp"], batch_size=2,
                                     seed=0).take(1)
  for modality in ("lge", "bssfp"):
    images, labels = batch[modality]
    assert images.shape == (2, 32, 32, 1) and labels.numpy().max() > 0
