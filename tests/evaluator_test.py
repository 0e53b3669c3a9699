"""Tests for csa_tf.evaluation.evaluator: what a prediction is scored against.

An oracle stands in for the network: it predicts exactly the PREP's training label
inside the crop box, so every difference from Dice 1 comes from the reference.
"""
import csv
import json
import os

import nibabel as nib
import numpy as np
import pytest

from csa_tf.data import prepared as prepared_lib
from csa_tf.data.mscmr import prepare_mscmr
from csa_tf.evaluation import evaluator
from csa_tf.io.run_dir import RunDir
from tests.helpers import make_config, oracle_run, short_axis_label, write_nifti

AFFINE = np.diag([1.25, 1.25, 10.0, 1.0])
RAW_VALUES = {"LV": 500, "myo": 200, "RV": 600}
TAGS = {"lge": "LGE", "bssfp": "C0"}
CROP = 16  # the hearts below are 23 x 33 pixels: the box cuts every class


def _release(root):
  """Two patients, LGE and bSSFP; each LGE label has a stray RV voxel at (0, 0, 0)."""
  for n in (1, 2):
    for tag in TAGS.values():
      label = short_axis_label((64, 64, 3), center=(32, 28), radius=8)
      if tag == "LGE":
        label[0, 0, 0] = 600
      image = (np.random.default_rng(n).normal(100, 10, label.shape)
               + (label == 500) * 200).astype(np.float32)
      write_nifti(os.path.join(root, "images", f"patient{n}_{tag}.nii.gz"), image, AFFINE)
      write_nifti(os.path.join(root, "labels", f"patient{n}_{tag}_manual.nii.gz"), label,
                  AFFINE)
  return str(root)


@pytest.fixture(name="prep")
def _prep(tmp_path):
  raw = _release(tmp_path / "raw")
  prepare_mscmr(raw, str(tmp_path / "prep"), crop_size=CROP, test_fraction=0.5, seed=0)
  prep = prepared_lib.PreparedDataset.open(str(tmp_path / "prep"))
  assert len(prep.splits["test"]) == 1
  return prep


def _evaluate(tmp_path, prep, workers=None, name="run"):
  lines = []
  run = oracle_run(tmp_path / name, prep,
                   make_config(tmp_path / name, data_dir=prep.prep_dir, crop_size=CROP))
  report = evaluator._evaluate(run, prep, split="test", batch_size=16, log=lines.append,  # pylint: disable=protected-access
                               workers=workers)
  rows = list(csv.DictReader(open(run.per_volume_path(), encoding="utf-8")))
  return report, rows, lines


def _file_counts(tmp_path, prep, modality):
  """Voxels of each class in the test patient's label file."""
  name = f"{prep.splits['test'][0]}_{TAGS[modality]}_manual.nii.gz"
  raw = np.asanyarray(nib.load(str(tmp_path / "raw" / "labels" / name)).dataobj)
  return {name: int((raw == value).sum()) for name, value in RAW_VALUES.items()}


def test_scoring_workers_change_neither_rows_nor_lines(tmp_path, prep):
  _, one_rows, one_lines = _evaluate(tmp_path, prep, workers=1, name="one")
  _, three_rows, three_lines = _evaluate(tmp_path, prep, workers=3, name="three")
  assert len(one_rows) == 6
  assert three_rows == one_rows
  scored = [line for line in one_lines if line.startswith("[")]
  assert [line.split("]")[0] for line in scored] == ["[lge 1/1", "[bssfp 1/1"]
  assert three_lines == one_lines


def test_every_row_is_scored_against_the_label_file(tmp_path, prep):
  report, rows, lines = _evaluate(tmp_path, prep)
  assert report["scored_against"] == evaluator.SCORED_AGAINST_FILE
  assert not [line for line in lines if line.startswith("note:")]
  assert len(rows) == 6
  for row in rows:
    modality, name = row["modality"], row["class_name"]
    volume = prep.load(next(e for e in prep.entries_for("test", modality)))
    in_box = int((volume.label == int(row["class_index"])).sum())
    in_file = _file_counts(tmp_path, prep, modality)[name]
    excluded = 1 if (modality, name) == ("lge", "RV") else 0
    assert int(row["reference_voxels"]) == in_file, (modality, name)
    assert int(row["excluded_voxels"]) == excluded, (modality, name)
    # The oracle predicts the in_box voxels, all of them right; the reference holds
    # in_file - excluded: Dice 2 * in_box / (in_box + in_file - excluded), below 1.
    assert in_box < in_file - excluded
    assert float(row["dice"]) == 2 * in_box / (in_box + in_file - excluded)
  lge_rv = report["summary"]["lge"]["RV"]
  assert lge_rv["excluded_voxels"] == 1
  assert lge_rv["reference_voxels"] == _file_counts(tmp_path, prep, "lge")["RV"]
  assert json.load(open(RunDir(str(tmp_path / "run")).summary_path()))[
      "scored_against"] == evaluator.SCORED_AGAINST_FILE


def test_a_prep_without_whole_labels_is_scored_inside_the_box_with_a_note(tmp_path,
                                                                          prep):
  # What a PREP of the previous csa_tf holds: no full_label, stray_voxels or islands.
  for entry in prep.entries:
    path = os.path.join(prep.prep_dir, entry.file)
    arrays = prepared_lib.read_npz(path)
    for key in ("full_label", "stray_voxels", "stray_islands"):
      del arrays[key]
    np.savez(path, **arrays)
  report, rows, lines = _evaluate(tmp_path, prep)
  notes = [line for line in lines if line.startswith("note:")]
  assert notes == [f"note: {prep.prep_dir} was prepared before csa_tf stored whole label "
                   "files: its volumes are scored against the label inside the crop box "
                   "(what the box cut is not scored); prepare it again to score against "
                   "the label files"]
  assert report["scored_against"] == evaluator.SCORED_AGAINST_CROP
  for row in rows:
    volume = prep.load(next(e for e in prep.entries_for("test", row["modality"])))
    assert int(row["reference_voxels"]) == int(
        (volume.label == int(row["class_index"])).sum())
    assert row["excluded_voxels"] == "0" and float(row["dice"]) == 1.0
