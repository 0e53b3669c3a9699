"""End-to-end runs of every command on generated phantoms, as a user runs them."""
import csv
import json
import os
import re

import nibabel as nib
import numpy as np
import pytest

from csa_tf.data.prepared import PreparedDataset
from tests.helpers import TINY_TRAIN_FLAGS, assert_exit_status, run_command, run_commands

# Every command here starts TensorFlow; they are the integration tier.
pytestmark = pytest.mark.integration

METHODS = ["csa", "single", "ummkd", "joint", "msbn", "affinity"]


@pytest.fixture(scope="module")
def phantom_prep(tmp_path_factory):
  root = tmp_path_factory.mktemp("cli")
  run_command("data_prep.phantom", "--dataset=mscmr", f"--output_dir={root / 'raw'}",
              "--num_patients=3", "--scale=0.25", "--modalities=lge,bssfp", "--seed=1")
  run_command("data_prep.mscmr", f"--raw_dir={root / 'raw'}",
              f"--output_dir={root / 'prep'}", "--crop_size=64", "--test_fraction=0.34")
  return root


@pytest.fixture(scope="module")
def trainings(phantom_prep):
  """{method: result of `csa_tf.train --method=method`}, and "demo": the demo's.

  The seven trainings are independent, so they run side by side (helpers.run_commands);
  each test checks its own one's exit status and output.
  """
  commands = [("csa_tf.train", f"--data_dir={phantom_prep / 'prep'}",
               f"--model_dir={phantom_prep / 'runs' / method}", f"--method={method}",
               *TINY_TRAIN_FLAGS) for method in METHODS]
  # The demo runs as a new user runs it: TF_CPP_MIN_LOG_LEVEL unset.
  commands.append(("csa_tf.train", "--flagfile=experiments/demo.flags",
                   f"--model_dir={phantom_prep / 'demo'}", "--phantom_patients=3",
                   *TINY_TRAIN_FLAGS,
                   dict(TF_CPP_MIN_LOG_LEVEL=None, CSA_TF_VERBOSE_TF=None)))
  return dict(zip(METHODS + ["demo"], run_commands(commands)))


@pytest.fixture(scope="module")
def csa_run(phantom_prep, trainings):
  assert_exit_status(trainings["csa"])
  return phantom_prep / "runs" / "csa"


@pytest.mark.parametrize("method", [m for m in METHODS if m != "csa"])
def test_train_each_method(phantom_prep, trainings, method):
  result = trainings[method]
  assert_exit_status(result)
  assert "step 2/2" in result.stdout and "finished step 2" in result.stdout
  _check_run_dir(phantom_prep / "runs" / method, method)


def _check_run_dir(model_dir, method):
  config = json.load(open(model_dir / "config.json"))
  assert config["method"] == method and config["modalities"] == ["lge", "bssfp"]
  assert json.load(open(model_dir / "versions.json"))["tensorflow"].startswith("2.21")
  assert (model_dir / "checkpoints" / "checkpoint").exists()
  assert any(name.startswith("events") for name in os.listdir(model_dir / "train"))


def test_train_csa_and_resume_is_a_no_op(phantom_prep, csa_run):
  _check_run_dir(csa_run, "csa")
  result = run_command("csa_tf.train", f"--data_dir={phantom_prep / 'prep'}",
                       f"--model_dir={csa_run}", "--method=csa", *TINY_TRAIN_FLAGS)
  assert "already trained to step 2" in result.stdout


def test_evaluate_writes_csv_json_and_table(csa_run):
  result = run_command("csa_tf.evaluate", f"--model_dir={csa_run}")
  assert "| CSA (ours) |" in result.stdout and "LGE Dice (%) LV" in result.stdout
  rows = list(csv.DictReader(open(csa_run / "eval" / "per_volume.csv")))
  assert {r["modality"] for r in rows} == {"lge", "bssfp"}
  assert {r["class_name"] for r in rows} == {"LV", "myo", "RV"}
  summary = json.load(open(csa_run / "eval" / "summary.json"))
  assert summary["method"] == "csa" and "absent" in summary["missing_structure_policy"]
  assert summary["summary"]["lge"]["LV"]["num_volumes"] == 1


def test_uncrop_round_trip_equals_original_labels(phantom_prep):
  prepared = PreparedDataset.open(str(phantom_prep / "prep"))
  for entry in prepared.entries:
    volume = prepared.load(entry)
    tag = {"lge": "LGE", "bssfp": "C0"}[entry.modality]
    raw = np.asanyarray(nib.load(str(
        phantom_prep / "raw" / "labels" / tag /
        f"{entry.patient_id}_{tag}_manual.nii.gz")).dataobj)
    expected = np.select([raw == 500, raw == 200, raw == 600], [1, 2, 3], 0)
    np.testing.assert_array_equal(volume.original_label, expected)


def test_predict_file_and_folder(phantom_prep, csa_run, tmp_path):
  source = phantom_prep / "raw" / "images" / "patient1_LGE.nii.gz"
  out = tmp_path / "pred.nii.gz"
  result = run_command("csa_tf.predict", f"--model_dir={csa_run}", "--modality=lge",
                       f"--input={source}", f"--output={out}")
  assert "patient1_LGE" in result.stdout
  src, pred = nib.load(str(source)), nib.load(str(out))
  np.testing.assert_array_equal(pred.affine, src.affine)
  assert pred.shape == src.shape
  assert set(np.unique(np.asanyarray(pred.dataobj))) <= {0, 200, 500, 600}
  refused = run_command("csa_tf.predict", f"--model_dir={csa_run}", "--modality=lge",
                        f"--input={source}", f"--output={out}", expect=2)
  assert refused.stderr.strip().splitlines()[-1].startswith(f"error: {out}: exists")
  folder = tmp_path / "in"
  folder.mkdir()
  for name in ("patient1_C0.nii.gz", "patient2_C0.nii.gz"):
    os.symlink(phantom_prep / "raw" / "images" / name, folder / name)
  run_command("csa_tf.predict", f"--model_dir={csa_run}", "--modality=bssfp",
              f"--input={folder}", f"--output={tmp_path / 'out'}", "--field_of_view=center")
  assert sorted(os.listdir(tmp_path / "out")) == ["patient1_C0.nii.gz", "patient2_C0.nii.gz"]


def test_reproduce_two_methods_and_skip_finished(phantom_prep, tmp_path):
  args = ["experiments.reproduce", "--dataset=mscmr", f"--data_dir={phantom_prep / 'prep'}",
          f"--output_dir={tmp_path / 'repro'}", "--methods=msbn,csa", "--train_steps=2"] + [
              f"--train_flag={flag}" for flag in TINY_TRAIN_FLAGS
              if "train_steps" not in flag]
  result = run_command(*args)
  table = (tmp_path / "repro" / "table.md").read_text()
  assert "| CSA (ours) [paper] |" in table and "| MSBN |" in table
  assert "Wilcoxon" in table
  assert (tmp_path / "repro" / "table.csv").read_text().count(",paper,") > 0
  wilcoxon = list(csv.DictReader(open(tmp_path / "repro" / "wilcoxon.csv")))
  assert {(r["method"], r["modality"]) for r in wilcoxon} == {("msbn", "lge"),
                                                              ("msbn", "bssfp")}
  again = run_command(*args)
  assert again.stdout.count("finished earlier, not retrained") == 2
  assert "== csa: training" in result.stdout


def test_demo_without_data_dir_generates_phantoms(phantom_prep, trainings):
  model_dir = phantom_prep / "demo"
  result = trainings["demo"]
  assert_exit_status(result)
  assert "generating 3 mscmr phantom patients" in result.stdout
  assert (model_dir / "phantom_data" / "prep" / "prep_meta.json").exists()
  assert "finished step 2" in result.stdout
  # None of TensorFlow's start-up notices (csa_tf/tf_runtime.py) on this CPU machine.
  notices = re.compile(r"cuInit|oneDNN|InitializeLog|cudart_stub|rebuild TensorFlow")
  assert not notices.search(result.stdout + result.stderr), result.stderr[-3000:]
  # None of TensorFlow's start-up notices (csa_tf/tf_runtime.py) on this CPU machine.
  notices = re.compile(r"cuInit|oneDNN|InitializeLog|cudart_stub|rebuild TensorFlow")
  assert not notices.search(result.stdout + result.stderr), result.stderr[-3000:]
