"""Tests for csa_tf.data.in_plane_spacing and MM-WHS resampled end to end: preparation on
native-grid CT phantoms, evaluation against the label files, and predict."""
import csv
import json
import os

import nibabel as nib
import numpy as np
import pytest

from csa_tf.data import in_plane_spacing
from csa_tf.data import phantom
from csa_tf.data import prepared as prepared_lib
from csa_tf.data.mmwhs import prepare_mmwhs
from csa_tf.errors import CsaInputError
from csa_tf.evaluation import evaluator
from csa_tf.io.run_dir import RunDir
from csa_tf.serving import predictor
from tests.helpers import make_config, oracle_run, write_nifti

CROP = 24  # At --scale=0.1 a CT phantom heart spans ~30 of its 51 pixels.
CT_VALUES = {"LVM": 205, "LAC": 420, "LVC": 500, "AA": 820}


def test_auto_spacing_arithmetic():
  # margin 256 / 32 = 8 pixels a side: 240 usable; 130 mm / 240 = 0.54166.. -> 0.542.
  assert in_plane_spacing.margin_pixels(256) == 8
  assert in_plane_spacing.auto_spacing([(120.0, 95.0), (80.0, 130.0)], 256) == 0.542
  # crop 24: margin 1, 22 usable; 44 mm / 22 = 2.0 exactly (not rounded up to 2.001).
  assert in_plane_spacing.auto_spacing([(44.0, 10.0)], 24) == 2.0


def test_flag_values():
  assert in_plane_spacing.parse("auto") == "auto"
  assert in_plane_spacing.parse("native") == "native"
  assert in_plane_spacing.parse("0.35") == 0.35
  for bad in ("-1", "0", "nan", "fine"):
    with pytest.raises(CsaInputError, match="in_plane_spacing=.*positive"):
      in_plane_spacing.parse(bad)


@pytest.fixture(name="ct_raw", scope="module")
def _ct_raw(tmp_path_factory):
  """Three native-grid CT phantoms (512 x 512 at 0.30-0.43 mm) shrunk by 0.1."""
  out = tmp_path_factory.mktemp("ct_phantoms") / "raw"
  phantom.generate_phantoms("mmwhs", str(out), num_patients=3, scale=0.1,
                            modalities=["ct"], progress=None)
  return str(out)


@pytest.fixture(name="auto_prep", scope="module")
def _auto_prep(ct_raw, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("auto") / "prep")
  prepare_mmwhs(ct_raw, out, modalities=["ct"], crop_size=CROP, test_fraction=0.34)
  return prepared_lib.PreparedDataset.open(out)


def test_auto_spacing_leaves_no_heart_cut_and_native_cuts_it(ct_raw, auto_prep,
                                                            tmp_path):
  meta = auto_prep.meta
  assert meta["crop_does_not_enclose"] == []
  assert meta["settings"]["in_plane_spacing"] == "auto"
  spacing = meta["in_plane_spacing_mm"]["ct"]
  assert auto_prep.in_plane_spacing_mm == {"ct": spacing}
  # The two training hearts' largest extent over the 22 usable pixels, rounded up.
  train = [e for e in auto_prep.entries if e.patient_id in auto_prep.splits["train"]]
  assert len(train) == 2
  extents = [in_plane_spacing.heart_extent_mm(v.full_label, v.spacing, v.geometry.ornt)
             for v in map(auto_prep.load, train)]
  assert spacing == in_plane_spacing.auto_spacing(extents, CROP)
  assert max(max(e) for e in extents) / spacing > CROP - 2 - 0.022
  for entry in auto_prep.entries:
    volume = auto_prep.load(entry)
    row_mm = volume.spacing[2]  # coronal rows run along the CT's array axis 2 (S-I)
    assert volume.geometry.zoom[0] == pytest.approx(row_mm / spacing)
  # The native grid (each volume's own ~4 mm pixels) cuts the same hearts.
  native = str(tmp_path / "native")
  summary = prepare_mmwhs(ct_raw, native, modalities=["ct"], crop_size=CROP,
                          test_fraction=0.34, in_plane_spacing="native")
  cut = json.load(open(os.path.join(native, "prep_meta.json")))["crop_does_not_enclose"]
  assert cut == ["ct/ct_train_1003"]  # its 0.30 mm grid: the widest heart in pixels
  assert "ct coronal slices on each volume's own grid" in summary


def test_evaluation_scores_against_the_label_files(ct_raw, auto_prep, tmp_path):
  run = oracle_run(tmp_path / "run", auto_prep, make_config(
      tmp_path / "run", data_dir=auto_prep.prep_dir, dataset="mmwhs", num_classes=5,
      modalities=("ct",), method="single", crop_size=CROP))
  report = evaluator._evaluate(run, auto_prep, split="test", batch_size=16,  # pylint: disable=protected-access
                               log=lambda line: None)
  assert report["scored_against"] == evaluator.SCORED_AGAINST_FILE
  rows = list(csv.DictReader(open(run.per_volume_path(), encoding="utf-8")))
  assert len(rows) == 4
  (patient,) = auto_prep.splits["test"]
  raw = np.asanyarray(nib.load(os.path.join(ct_raw, "ct_train",
                                            f"{patient}_label.nii.gz")).dataobj)
  for row in rows:
    assert int(row["reference_voxels"]) == int((raw == CT_VALUES[row["class_name"]]).sum())
    # The oracle's labels went down to the coarser grid and back: close, not equal.
    assert 0.9 < float(row["dice"]) < 1.0


def test_predict_resamples_to_the_runs_spacing_and_back(tmp_path, monkeypatch):
  # A 1 mm RAS volume, coronal (A, I, L): 30 slices of 20 rows x 40 columns; the run
  # resampled to 0.5 mm, so the network sees 40 x 80 slices (padded_size(80) = 80).
  image = np.zeros((40, 30, 20), np.float32)
  image[10:30] = 100.0  # half of every coronal slice's columns (array axis 0)
  affine = np.diag([1.0, 1.0, 1.0, 1.0])
  affine[:3, 3] = (-20.0, -15.0, -10.0)
  source = str(tmp_path / "ct_test_2001_image.nii.gz")
  write_nifti(source, image, affine)
  seen = []

  class _Threshold:
    def labels(self, slices, modality):
      seen.append((slices.shape, modality))
      # Class 3 (LVC) where the linearly resampled image is above its slice mean (50:
      # per row 38 x 100 + 2 x 75 + 2 x 25 over 80 columns, see below).
      return np.where(slices > 0, 3, 0).astype(np.uint8)

  run_dir = tmp_path / "run"
  config = make_config(run_dir, data_dir=str(tmp_path / "gone"), dataset="mmwhs",
                       num_classes=5, modalities=("ct", "mr"), crop_size=CROP)
  os.makedirs(run_dir)
  RunDir(str(run_dir)).write_training_data({"in_plane_spacing_mm": {"ct": 0.5,
                                                                    "mr": None}})

  class _Run(RunDir):
    config = property(lambda self: config)

    def segmenter(self, *, batch_size=16):
      return _Threshold()

  monkeypatch.setattr(predictor, "RunDir", _Run)
  target = str(tmp_path / "seg.nii.gz")
  predictor.predict_files(str(run_dir), "ct", source, target, log=lambda line: None)
  assert seen == [((30, 80, 80), "ct")]
  out = nib.load(target)
  assert out.shape == image.shape
  np.testing.assert_array_equal(out.affine, affine)
  # Standard columns 10-29 hold the block (axis 0 is flipped: 39 - 29 = 10). Network
  # column j samples j / 2 - 0.25: 25 at j = 19 and 60, 75 at j = 20 and 59, 100
  # between. Back by nearest label, column i takes network column 2i + 1: 19 (25, out)
  # for i = 9, 21 (100) for 10, 59 (75, in) for 29, 61 (0) for 30: the block exactly.
  np.testing.assert_array_equal(np.asanyarray(out.dataobj), np.where(image > 0, 500, 0))


def test_run_spacing_from_the_record_else_from_the_prep(auto_prep, tmp_path):
  config = make_config(tmp_path / "run", data_dir=auto_prep.prep_dir, dataset="mmwhs",
                       num_classes=5, modalities=("ct",), method="single", crop_size=CROP)

  class _Run(RunDir):
    pass
  _Run.config = property(lambda self: config)
  run = _Run(str(tmp_path / "run"))
  os.makedirs(run.path, exist_ok=True)
  # No record (a run older than it): the PREP its config names.
  assert predictor.run_in_plane_spacing(run, "ct") == auto_prep.in_plane_spacing_mm["ct"]
  run.write_training_data({"in_plane_spacing_mm": {"ct": 1.25}})
  assert predictor.run_in_plane_spacing(run, "ct") == 1.25


@pytest.mark.parametrize("value", ["-2", "0", "fine", "nan"])
def test_bad_spacing_is_one_line(value):
  assert in_plane_spacing.parse("auto") == "auto" and in_plane_spacing.parse("0.4") == 0.4
  with pytest.raises(CsaInputError) as error:
    in_plane_spacing.parse(value)
  assert str(error.value) == (f"in_plane_spacing={value}: must be auto, native or a "
                              "positive pixel size in mm")
