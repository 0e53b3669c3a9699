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
# Trained through the CLI in the default run: csa, and the settings no other default
# test trains to the end (single and joint: trainer_test; msbn: the reproduce test).
CLI_METHODS = ["csa", "ummkd", "affinity"]


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
  commands = [_train_command(phantom_prep, method) for method in CLI_METHODS]
  # The demo runs as a new user runs it: TF_CPP_MIN_LOG_LEVEL unset.
  commands.append(("csa_tf.train", "--flagfile=experiments/demo.flags",
                   f"--model_dir={phantom_prep / 'demo'}", "--phantom_patients=3",
                   *TINY_TRAIN_FLAGS,
                   dict(TF_CPP_MIN_LOG_LEVEL=None, CSA_TF_VERBOSE_TF=None)))
  return dict(zip(CLI_METHODS + ["demo"], run_commands(commands)))


def _train_command(phantom_prep, method):
  return ("csa_tf.train", f"--data_dir={phantom_prep / 'prep'}",
          f"--model_dir={phantom_prep / 'runs' / method}", f"--method={method}",
          *TINY_TRAIN_FLAGS)


@pytest.fixture(scope="module")
def csa_run(phantom_prep, trainings):
  assert_exit_status(trainings["csa"])
  return phantom_prep / "runs" / "csa"


@pytest.mark.parametrize("method", [m if m in CLI_METHODS else
                                    pytest.param(m, marks=pytest.mark.slow)
                                    for m in METHODS if m != "csa"])
def test_train_each_method(phantom_prep, trainings, method):
  result = trainings.get(method) or run_command(*_train_command(phantom_prep, method))
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


# MS-CMRSeg's label values (REFERENCE.md section 5) and the phantom's file tags.
CLASSES = (("LV", 500), ("myo", 200), ("RV", 600))
TAGS = {"lge": "LGE", "bssfp": "C0"}


def _recomputed_metrics(model_dir, phantom_prep):
  """Status, Dice and HD per (patient, modality, class), without csa_tf.evaluation.

  Each PREP test volume goes through the restored networks (softmax, argmax, batches of
  16 slices, as `csa_tf.evaluate`'s segmenter) and is pasted back into its original grid;
  the ground truth is the raw release's label NIfTI (values 500, 200, 600), and the
  spacing its header's. Dice is counted here; HD is medpy 0.5.2's (REFERENCE.md s. 6).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from medpy.metric import binary as medpy_binary  # pylint: disable=g-import-not-at-top
  from csa_tf.io.run_dir import RunDir  # pylint: disable=g-import-not-at-top
  bundle = RunDir(str(model_dir)).networks()
  prepared = PreparedDataset.open(str(phantom_prep / "prep"))
  out = {}
  for entry in prepared.entries_for("test"):
    volume = prepared.load(entry)
    images = volume.image[..., None].astype(np.float32)
    probs = np.concatenate([tf.nn.softmax(bundle.logits(
        tf.constant(images[i:i + 16]), entry.modality), axis=-1).numpy()
                            for i in range(0, len(images), 16)])
    predicted = volume.geometry.from_slices(probs.argmax(axis=-1).astype(np.uint8))
    tag = TAGS[entry.modality]
    label = nib.load(str(phantom_prep / "raw" / "labels" / tag /
                         f"{entry.patient_id}_{tag}_manual.nii.gz"))
    truth = np.asanyarray(label.dataobj)
    spacing = tuple(float(z) for z in label.header.get_zooms()[:3])
    assert predicted.shape == truth.shape
    for index, (name, value) in enumerate(CLASSES, start=1):
      pred, gt = predicted == index, truth == value
      sizes = (np.count_nonzero(pred), np.count_nonzero(gt))
      values = {"status": {(True, True): "ok", (False, False): "absent",
                           (False, True): "missed", (True, False): "spurious"}[
                               (sizes[0] > 0, sizes[1] > 0)]}
      if any(sizes):
        values["dice"] = 2 * np.count_nonzero(pred & gt) / sum(sizes)
      if all(sizes):
        values["hd_vox"] = medpy_binary.hd(pred, gt)
        values["hd_mm"] = medpy_binary.hd(pred, gt, voxelspacing=spacing)
      out[(entry.patient_id, entry.modality, name)] = values
  return out


def _summary_of_csv(rows):
  """{(modality, class): {status counts, metric: mean}} by the policy, from CSV rows.

  Dice averages every row but the "absent" ones (their cells are empty); distances
  average the "ok" rows (csa_tf/metrics.py's missing-structure policy).
  """
  out = {}
  for key in sorted({(r["modality"], r["class_name"]) for r in rows}):
    group = [r for r in rows if (r["modality"], r["class_name"]) == key]
    entry = {s: sum(r["status"] == s for r in group)
             for s in ("ok", "absent", "missed", "spurious")}
    entry["num_volumes"] = len(group)
    dice = [float(r["dice"]) for r in group if r["status"] != "absent"]
    entry["dice"] = float(np.mean(dice)) if dice else None
    for metric in ("hd_vox", "hd_mm", "hd95_mm", "assd_mm"):
      values = [float(r[metric]) for r in group if r["status"] == "ok"]
      entry[metric] = float(np.mean(values)) if values else None
    out[key] = entry
  return out


def _check_summary_json(summary, rows):
  """summary.json's counts and means equal those of the per-volume rows."""
  expected = _summary_of_csv(rows)
  assert {(m, c) for m in summary for c in summary[m]} == set(expected)
  for (modality, name), entry in expected.items():
    got = summary[modality][name]
    for key in ("num_volumes", "ok", "absent", "missed", "spurious"):
      assert got[key] == entry[key], (modality, name, key)
    for metric in ("dice", "hd_vox", "hd_mm", "hd95_mm", "assd_mm"):
      if entry[metric] is None:
        assert got[metric]["mean"] is None, (modality, name, metric)
      else:
        assert got[metric]["mean"] == pytest.approx(entry[metric], rel=1e-12), (
            modality, name, metric)


def test_evaluate_writes_csv_json_and_table(phantom_prep, csa_run):
  result = run_command("csa_tf.evaluate", f"--model_dir={csa_run}")
  assert "LGE Dice (%) LV" in result.stdout
  rows = list(csv.DictReader(open(csa_run / "eval" / "per_volume.csv")))
  # One test patient (3 patients, test fraction 0.34), two modalities, three classes.
  keys = [(r["patient_id"], r["modality"], r["class_name"]) for r in rows]
  assert sorted(keys) == sorted((p, m, c) for p in ("patient3",)
                                for m in ("lge", "bssfp") for c, _ in CLASSES)
  assert all(r["class_index"] == str([c for c, _ in CLASSES].index(r["class_name"]) + 1)
             for r in rows)
  expected = _recomputed_metrics(csa_run, phantom_prep)
  for row, key in zip(rows, keys):
    want = expected[key]
    assert row["status"] == want["status"], key
    for metric in ("dice", "hd_vox", "hd_mm"):
      if metric in want:
        assert float(row[metric]) == pytest.approx(want[metric], rel=1e-9), (key, metric)
      else:
        assert row[metric] == "", (key, metric)
  # The values tell classes and modalities apart (a shifted class or modality shows).
  assert len({round(float(r["dice"]), 9) for r in rows if r["dice"]}) > 1

  summary = json.load(open(csa_run / "eval" / "summary.json"))
  assert summary["method"] == "csa" and "absent" in summary["missing_structure_policy"]
  _check_summary_json(summary["summary"], rows)
  # The printed table's row: Dice (%) then HD (voxels), LGE then bSSFP, LV/myo/RV.
  table_row = [line for line in result.stdout.splitlines()
               if line.startswith("| CSA (ours) |")]
  assert len(table_row) == 1
  cells = [c.strip() for c in table_row[0].strip("|").split("|")][1:]
  means = _summary_of_csv(rows)
  assert cells == [
      "-" if means[(m, c)][metric] is None else
      f"{means[(m, c)][metric] * (100 if metric == 'dice' else 1):.2f}"
      for metric in ("dice", "hd_vox") for m in ("lge", "bssfp") for c, _ in CLASSES]


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
  runs = tmp_path / "repro" / "runs"
  per_volume = {m: list(csv.DictReader(open(runs / m / "eval" / "per_volume.csv")))
                for m in ("msbn", "csa")}
  # Each run's summary is that of its own per-volume rows ...
  for method, rows in per_volume.items():
    report = json.load(open(runs / method / "eval" / "summary.json"))
    _check_summary_json(report["summary"], rows)
  # ... and table.csv holds those summaries' means (Dice in %, 4 decimals) beside the
  # published values (paper Table 1).
  cells = {(r["method"], r["source"], r["modality"], r["metric"], r["class"]): r["value"]
           for r in csv.DictReader(open(tmp_path / "repro" / "table.csv"))}
  metrics = ("dice", "hd_vox", "hd_mm", "hd95_mm", "assd_mm")
  ours = {k: v for k, v in cells.items() if k[1] == "ours"}
  assert len(ours) == 2 * len(metrics) * 2 * 3
  for method, rows in per_volume.items():
    means = _summary_of_csv(rows)
    for metric in metrics:
      for modality in ("lge", "bssfp"):
        for name, _ in CLASSES:
          mean = means[(modality, name)][metric]
          scale = 100 if metric == "dice" else 1
          want = "nan" if mean is None else f"{mean * scale:.4f}"
          assert ours[(method, "ours", modality, metric, name)] == want, (method, metric)
  assert cells[("csa", "paper", "lge", "dice", "LV")] == "91.89"
  assert cells[("msbn", "paper", "bssfp", "hd_vox", "RV")] == "5.1"
  assert {k[3] for k in cells if k[1] == "paper"} == {"dice", "hd_vox"}
  # Wilcoxon rows: patient-level Dice, the mean over each patient's non-absent classes.
  wilcoxon = list(csv.DictReader(open(tmp_path / "repro" / "wilcoxon.csv")))
  assert {(r["method"], r["modality"]) for r in wilcoxon} == {("msbn", "lge"),
                                                              ("msbn", "bssfp")}

  def patient_mean(method, modality):
    by_patient = {}
    for r in per_volume[method]:
      if r["modality"] == modality and r["status"] != "absent":
        by_patient.setdefault(r["patient_id"], []).append(float(r["dice"]))
    return float(np.mean([np.mean(v) for v in by_patient.values()])), len(by_patient)

  for row in wilcoxon:
    reference, patients = patient_mean("csa", row["modality"])
    assert int(row["patients"]) == patients == 1
    assert float(row["mean_dice_reference"]) == pytest.approx(reference, rel=1e-12)
    assert float(row["mean_dice_method"]) == pytest.approx(
        patient_mean("msbn", row["modality"])[0], rel=1e-12)
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
