"""RunDir knows the run folder; folders written by earlier csa_tf keep working.

tests/fixtures/legacy_v1/ holds a PREP and a 2-step run written by the code of commit
8163475 (before format versions were recorded in config.json; see its README.md): the
commands of today must read them, and a newer format version must be refused with one
line saying what to redo.
"""
import csv
import json
import os
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from csa_tf.configs import train_config as config_lib
from csa_tf.data import prepared
from csa_tf.errors import CsaInputError
from csa_tf.io import run_dir as run_dir_lib
from csa_tf.io import run_record
from csa_tf.io.run_dir import RunDir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LEGACY = os.path.join(ROOT, "tests", "fixtures", "legacy_v1")
LEGACY_PREP = os.path.join(LEGACY, "prep")
LEGACY_RUN = os.path.join(LEGACY, "run")
LEGACY_IMAGE = os.path.join(LEGACY, "patient1_LGE.nii.gz")


def _config(tmp_path, **overrides):
  values = dict(model_dir=str(tmp_path / "run"), data_dir=str(tmp_path / "prep"),
                dataset="mscmr", num_classes=4, crop_size=32, feature_base=2)
  values.update(overrides)
  return config_lib.TrainConfig(**values).validate()


def _one_line(command_args, cwd=ROOT):
  """Runs a command that must refuse: exit 2, one stderr line `error: ...`."""
  result = subprocess.run([sys.executable, "-m", *command_args], capture_output=True,
                          text=True, cwd=cwd, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
  return lines[0]


@pytest.fixture
def legacy_run(tmp_path):
  """A copy of the legacy run (evaluation writes into the run folder)."""
  copy = tmp_path / "legacy_run"
  shutil.copytree(LEGACY_RUN, copy)
  return str(copy)


# ---------------------------------------------------------------------------------------
# The layout.
# ---------------------------------------------------------------------------------------
def test_every_path_of_a_run_folder():
  run = RunDir("R")
  assert run.config_path == os.path.join("R", "config.json")
  assert run.versions_path == os.path.join("R", "versions.json")
  assert run.checkpoint_dir == os.path.join("R", "checkpoints")
  assert run.tensorboard_dir == os.path.join("R", "train")
  assert run.final_losses_path == os.path.join("R", "final_losses.json")
  assert run.eval_dir == os.path.join("R", "eval")
  assert run.per_volume_path() == os.path.join("R", "eval", "per_volume.csv")
  assert run.summary_path() == os.path.join("R", "eval", "summary.json")
  assert run.per_volume_path("train") == os.path.join("R", "eval", "per_volume_train.csv")
  assert run.summary_path("train") == os.path.join("R", "eval", "summary_train.json")
  assert run.figures_dir == os.path.join("R", "figures")
  assert run.phantom_data_dir == os.path.join("R", "phantom_data")
  assert run.demo_raw_dir == os.path.join("R", "phantom_data", "raw")
  assert run.demo_prep_dir == os.path.join("R", "phantom_data", "prep")


def test_the_record_round_trips_with_its_format_version(tmp_path):
  config = _config(tmp_path)
  run_record.write_run_record(config.model_dir, config)
  run = RunDir(config.model_dir)
  written = json.load(open(run.config_path))
  assert written["format_version"] == run_dir_lib.CONFIG_FORMAT_VERSION == 1
  assert {k: v for k, v in written.items() if k != "format_version"} == config.to_json()
  assert RunDir(config.model_dir).load_config() == config
  assert set(json.load(open(run.versions_path))) >= {"python", "tensorflow", "numpy"}
  assert sorted(os.listdir(config.model_dir)) == ["config.json", "versions.json"]


def test_final_losses_and_summary(tmp_path):
  run = RunDir(str(tmp_path))
  assert run.read_final_losses() is None
  run.write_final_losses({"step": 3, "total": 0.5})
  assert run.read_final_losses() == {"step": 3, "total": 0.5}
  assert not run.has_summary()
  with pytest.raises(CsaInputError) as error:
    run.read_summary()
  assert str(error.value) == (f"{run.summary_path()}: not found; the run was not "
                              "evaluated on its test split")
  os.makedirs(run.eval_dir)
  with open(run.summary_path(), "w") as f:
    json.dump({"split": "test"}, f)
  assert run.has_summary() and run.read_summary() == {"split": "test"}


def test_a_folder_without_config_or_checkpoint(tmp_path):
  run = RunDir(str(tmp_path))
  assert not run.is_run()
  with pytest.raises(CsaInputError) as error:
    run.load_config()
  assert str(error.value) == f"{tmp_path}: not a csa_tf model dir (no config.json)"
  with pytest.raises(CsaInputError) as error:
    run.latest_checkpoint()
  assert str(error.value) == f"{tmp_path}: no checkpoint found under checkpoints/"


@pytest.mark.parametrize("version,detail", [
    (0, "format_version 0 is not a positive integer"),
    ("2", "format_version '2' is not a positive integer"),
])
def test_an_invalid_format_version_is_unreadable(tmp_path, version, detail):
  config = _config(tmp_path)
  run_record.write_run_record(config.model_dir, config)
  path = RunDir(config.model_dir).config_path
  values = dict(json.load(open(path)), format_version=version)
  json.dump(values, open(path, "w"))
  with pytest.raises(CsaInputError) as error:
    RunDir(config.model_dir).load_config()
  assert str(error.value) == f"{path}: unreadable run config ({detail})"


# ---------------------------------------------------------------------------------------
# Folders written by the code of commit 8163475.
# ---------------------------------------------------------------------------------------
def test_legacy_config_has_no_version_and_loads_as_version_1():
  raw = json.load(open(os.path.join(LEGACY_RUN, "config.json")))
  assert "format_version" not in raw
  config = RunDir(LEGACY_RUN).load_config()
  assert (config.dataset, config.method, config.modalities, config.crop_size,
          config.feature_base, config.num_classes, config.train_steps) == (
              "mscmr", "msbn", ("lge", "bssfp"), 32, 1, 4, 2)
  assert config.data_dir == "tests/fixtures/legacy_v1/prep"
  assert RunDir(LEGACY_RUN).read_final_losses()["step"] == 2


def test_legacy_prep_opens_and_fits_the_legacy_run():
  prep = prepared.PreparedDataset.open(LEGACY_PREP)
  assert prep.meta["format_version"] == prepared.FORMAT_VERSION == 1
  assert prep.splits == {"train": ["patient1", "patient2"], "test": ["patient3"]}
  assert (prep.spec.name, prep.modalities, prep.crop_size) == ("mscmr", ("lge", "bssfp"),
                                                               32)
  prep.check_fits(RunDir(LEGACY_RUN).load_config())


@pytest.mark.integration
def test_evaluate_on_the_legacy_run_and_prep(legacy_run, monkeypatch):
  from csa_tf.evaluation import evaluator  # pylint: disable=g-import-not-at-top
  # The run recorded its PREP relative to the repository root, where it was trained.
  monkeypatch.chdir(ROOT)
  report = evaluator.evaluate_run(legacy_run, log=lambda _: None)
  run = RunDir(legacy_run)
  assert report == json.load(open(run.summary_path()))
  assert (report["dataset"], report["method"], report["split"], report["checkpoint"],
          report["modalities"]) == ("mscmr", "msbn", "test", "ckpt-2", ["lge", "bssfp"])
  rows = list(csv.DictReader(open(run.per_volume_path())))
  # One test patient (patient3), two modalities, three foreground classes.
  assert sorted({(r["patient_id"], r["modality"]) for r in rows}) == [
      ("patient3", "bssfp"), ("patient3", "lge")]
  assert len(rows) == 2 * 3


@pytest.mark.integration
def test_predict_one_volume_with_the_legacy_run(tmp_path):
  from csa_tf.serving import predictor  # pylint: disable=g-import-not-at-top
  out = str(tmp_path / "p1.nii.gz")
  assert predictor.predict_files(LEGACY_RUN, "lge", LEGACY_IMAGE, out,
                                 log=lambda _: None) == [out]
  image, predicted = nib.load(LEGACY_IMAGE), nib.load(out)
  assert predicted.shape == image.shape
  np.testing.assert_array_equal(predicted.affine, image.affine)
  assert set(np.unique(np.asarray(predicted.dataobj)).tolist()) <= {0, 200, 500, 600}
  assert sorted(os.listdir(tmp_path)) == ["p1.nii.gz"]


@pytest.mark.integration
def test_a_newer_config_format_is_refused_in_one_line(legacy_run):
  path = os.path.join(legacy_run, "config.json")
  values = json.load(open(path))
  values["format_version"] = 2
  json.dump(values, open(path, "w"))
  expected = (f"{path}: run config of format version 2, this csa_tf reads versions up to "
              "1; use the newer csa_tf that trained it, or train the run again with this "
              "one")
  with pytest.raises(CsaInputError) as error:
    RunDir(legacy_run).load_config()
  assert str(error.value) == expected
  line = _one_line(["csa_tf.evaluate", f"--model_dir={legacy_run}",
                    f"--data_dir={LEGACY_PREP}"])
  assert line == "error: " + expected
  assert not os.path.exists(RunDir(legacy_run).eval_dir)


@pytest.mark.integration
def test_a_newer_prep_format_is_refused_in_one_line(tmp_path):
  prep = tmp_path / "prep"
  shutil.copytree(LEGACY_PREP, prep)
  meta_path = prep / "prep_meta.json"
  meta = json.load(open(meta_path))
  meta["format_version"] = 2
  json.dump(meta, open(meta_path, "w"))
  expected = (f"{meta_path}: prepared with format version 2, newer than this csa_tf "
              "reads (up to 1); prepare the data again with this csa_tf (data_prep.mscmr "
              "/ data_prep.mmwhs) or use the newer csa_tf")
  with pytest.raises(CsaInputError) as error:
    prepared.PreparedDataset.open(str(prep))
  assert str(error.value) == expected
  line = _one_line(["csa_tf.evaluate", f"--model_dir={LEGACY_RUN}", f"--data_dir={prep}"])
  assert line == "error: " + expected


@pytest.mark.parametrize("change,message", [
    (dict(dataset="mmwhs", num_classes=5), "dataset 'mscmr', but the run was trained on "
                                           "'mmwhs'"),
    (dict(num_classes=5), "4 classes, but the run has 5"),
    (dict(modalities=("lge", "t2")), "lacks modalities t2 of the run"),
])
def test_check_fits_names_prep_meta_and_the_difference(tmp_path, change, message):
  prep = prepared.PreparedDataset.open(LEGACY_PREP)
  config = _config(tmp_path, **change)
  with pytest.raises(CsaInputError) as error:
    prep.check_fits(config)
  assert str(error.value) == f"{os.path.join(LEGACY_PREP, 'prep_meta.json')}: {message}"
