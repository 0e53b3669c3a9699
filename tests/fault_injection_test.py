"""Hostile-user cases (issue 12): each is refused in one line, and nothing is lost.

One test per case, reproduced as the report describes it. Cases that need a trained run
or a subprocess are marked integration.
"""
import errno
import json
import os
import re
import shutil
import signal
import socket
import time

import nibabel as nib
import numpy as np
import pytest

from csa_tf import cli
from csa_tf import interrupts
from csa_tf.configs import train_config as config_lib
from csa_tf.configs.options import ConfigError
from csa_tf.data import discovery
from csa_tf.data.mscmr import prepare_mscmr
from csa_tf.data.prepared import PreparedDataset
from csa_tf.errors import CsaInputError, Interrupted
from csa_tf.io import atomic
from csa_tf.io import nifti
from csa_tf.io.run_dir import RunDir
from tests.helpers import TINY_TRAIN_FLAGS, make_config, make_mscmr_release, run_command
from tests.helpers import start_command, write_nifti


def test_csa_pair_naming_no_tap_is_a_config_error(tmp_path):
  with pytest.raises(ConfigError, match=r"csa_pairs: g3:g99 names 'g99', which is not "
                     r"one of the network's taps \(g1, g2, .*, g10\)"):
    make_config(tmp_path, csa_pairs=(("g3", "g99"),))
  # Every tap of the network is accepted.
  config = make_config(tmp_path, csa_pairs=tuple(
      (tap, tap) for tap in config_lib.FEATURE_TAPS))
  assert len(config.csa_pairs) == 10


@pytest.mark.integration
def test_unknown_csa_pair_creates_no_model_dir(tiny_prep, tmp_path):
  run_dir = tmp_path / "run"
  result = run_command("csa_tf.train", f"--data_dir={tiny_prep.prep_dir}", f"--model_dir={run_dir}",
                       "--csa_pairs=g3:g99", *TINY_TRAIN_FLAGS, expect=2)
  assert result.stderr.splitlines() == [
      "error: --csa_pairs: g3:g99 names 'g99', which is not one of the network's taps "
      "(g1, g2, g3, g4, g5, g6, g7, g8, g9, g10)"]
  assert not run_dir.exists()


@pytest.mark.parametrize("value,wanted", [("1", True), ("true", True), ("YES", True),
                                          ("0", False), ("", False), ("false", False),
                                          ("no", False)])
def test_traceback_switch_reads_its_value(monkeypatch, value, wanted):
  # CSA_TF_TRACEBACK=0 used to turn tracebacks on (any value did).
  monkeypatch.setenv("CSA_TF_TRACEBACK", value)
  assert cli.traceback_wanted() is wanted


def test_traceback_switch_unset_means_one_line(monkeypatch):
  monkeypatch.delenv("CSA_TF_TRACEBACK", raising=False)
  assert cli.traceback_wanted() is False


def test_zero_padded_duplicate_patient_is_refused_naming_both(tmp_path):
  raw = tmp_path / "raw"
  make_mscmr_release(raw, num_patients=2, modalities=("LGE",))
  first = raw / "images" / "patient2_LGE.nii.gz"
  second = raw / "images" / "patient02_LGE.nii.gz"
  second.write_bytes(first.read_bytes())
  # The second name sorts first in the folder walk, so it is the one named as the copy.
  with pytest.raises(CsaInputError) as error:
    prepare_mscmr(str(raw), str(tmp_path / "prep"), modalities=("lge",), crop_size=32)
  assert str(error.value) == (f"{first}: duplicate of {second}; keep one copy under "
                              f"{raw}")
  assert not (tmp_path / "prep").exists()


def test_number_groups_compare_as_numbers_only_for_digits(tmp_path):
  import re  # pylint: disable=g-import-not-at-top
  for name in ("a_7.txt", "b_7.txt", "a_07.txt"):
    (tmp_path / name).write_text("")
  pattern = re.compile(r"([ab])_(\d+)\.txt")
  with pytest.raises(CsaInputError, match=r"a_7\.txt: duplicate of .*a_07\.txt"):
    discovery.find_files(str(tmp_path), pattern)
  os.remove(tmp_path / "a_07.txt")
  assert sorted(discovery.find_files(str(tmp_path), pattern)) == [("a", "7"), ("b", "7")]


def test_unreadable_file_is_permission_denied_not_a_format_error(tmp_path, monkeypatch):
  path = make_mscmr_release(tmp_path / "raw", num_patients=1, modalities=("LGE",))
  image = os.path.join(path, "images", "patient1_LGE.nii.gz")
  # The suite may run as root, for whom chmod 000 still reads: the test denies access
  # the way the operating system would report it to anyone else.
  real_access = os.access
  monkeypatch.setattr(os, "access", lambda p, mode: (
      False if os.fspath(p) == image else real_access(p, mode)))
  with pytest.raises(CsaInputError) as error:
    nifti.read_volume(image, kind="image")
  assert str(error.value) == f"{image}: permission denied (the file cannot be read)"


@pytest.mark.integration
def test_reproduce_with_no_methods_is_one_line_and_writes_nothing(tiny_prep, tmp_path):
  out = tmp_path / "out"
  result = run_command("experiments.reproduce", "--dataset=mscmr",
                       f"--data_dir={tiny_prep.prep_dir}", f"--output_dir={out}", "--methods=",
                       expect=2)
  assert result.stderr.splitlines() == [
      "error: --methods is empty; name one or more of single, ummkd, joint, msbn, "
      "affinity, csa"]
  assert not out.exists()


# ---------------------------------------------------------------------------------------
# SIGINT / SIGTERM.
# ---------------------------------------------------------------------------------------
def _interrupting_log(signum, at_step):
  """A progress log that sends this process `signum` once step `at_step` is logged."""
  lines = []
  def log(line):
    lines.append(line)
    if line.startswith(f"step {at_step}/"):
      os.kill(os.getpid(), signum)
  return log, lines


@pytest.mark.integration
def test_sigint_finishes_the_step_checkpoints_it_and_the_same_call_resumes(tiny_prep,
                                                                           tmp_path):
  from csa_tf.training.trainer import Trainer  # pylint: disable=g-import-not-at-top
  config = make_config(tmp_path / "run", method="msbn", modalities=("lge", "bssfp"),
                       train_steps=6, log_every=1, checkpoint_every=100)
  log, lines = _interrupting_log(signal.SIGINT, at_step=3)
  previous = signal.getsignal(signal.SIGINT)
  with pytest.raises(Interrupted) as stopped:
    Trainer(config, tiny_prep, log=log).train()
  assert stopped.value.signum == signal.SIGINT
  run = RunDir(config.model_dir)
  checkpoint = run.latest_checkpoint()
  assert os.path.basename(checkpoint) == "ckpt-3"
  assert str(stopped.value) == (f"interrupted by SIGINT (Ctrl-C) at step 3; checkpoint "
                                f"{checkpoint}; run the same command again to resume")
  assert not any(line.startswith("step 4/") for line in lines)
  assert signal.getsignal(signal.SIGINT) is previous  # handlers restored
  assert not os.path.exists(run.final_losses_path)

  resumed = []
  terms = Trainer(config, tiny_prep, log=resumed.append).train()
  assert f"resumed from {checkpoint} at step 3" in resumed
  assert os.path.basename(run.latest_checkpoint()) == "ckpt-6" and terms


@pytest.mark.parametrize("signum,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_command_exits_128_plus_the_signal_with_one_line(capsys, signum,
                                                                     status):
  def main(argv):
    del argv
    raise Interrupted("interrupted by X at step 3; checkpoint C; run the same command "
                      "again to resume", signum)
  with pytest.raises(SystemExit) as exited:
    cli.run_main(main)(["prog"])
  assert exited.value.code == status
  assert capsys.readouterr().err == ("interrupted by X at step 3; checkpoint C; run the "
                                     "same command again to resume\n")


def test_signal_during_staged_write_removes_the_staging(tmp_path):
  destination = tmp_path / "out"
  with pytest.raises(Interrupted) as stopped:
    with interrupts.raise_on_signals():
      with atomic.StagedFolder(str(destination)) as staging:
        with open(os.path.join(staging.path, "part.txt"), "w") as f:
          f.write("half")
        os.kill(os.getpid(), signal.SIGTERM)
  assert stopped.value.signum == signal.SIGTERM
  assert str(stopped.value) == ("interrupted by SIGTERM; stopped without leaving partial "
                                "output")
  assert os.listdir(tmp_path) == []


def test_a_second_signal_stops_at_once(tmp_path):
  with pytest.raises(Interrupted, match=r"interrupted twice \(SIGINT \(Ctrl-C\)\)"):
    with interrupts.StopRequest() as stop:
      os.kill(os.getpid(), signal.SIGTERM)
      assert stop.signum == signal.SIGTERM
      os.kill(os.getpid(), signal.SIGINT)


# Slow: the in-process SIGINT test above and the exit-status test below cover the
# trainer's stop and the command's exit in the default run.
@pytest.mark.slow
def test_sigterm_to_train_exits_143_with_one_line(tiny_prep, tmp_path):
  run_dir = tmp_path / "run"
  process = start_command("csa_tf.train", f"--data_dir={tiny_prep.prep_dir}",
                          f"--model_dir={run_dir}", "--method=msbn",
                          "--feature_base=2", "--batch_size=2", "--train_steps=400",
                          "--log_every=1", "--bn_recalibration_batches=1")
  first = ""
  while not first.startswith("step 2/"):
    first = process.stdout.readline()
    assert first or process.poll() is None, process.stderr.read()[-3000:]
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=300)
  assert process.returncode == 143, stderr[-3000:]
  line, = stderr.splitlines()
  match = re.fullmatch(r"interrupted by SIGTERM at step (\d+); checkpoint (\S+); run the "
                       r"same command again to resume", line)
  assert match and 2 <= int(match.group(1)) < 400, line
  assert os.path.isfile(match.group(2) + ".index")


# ---------------------------------------------------------------------------------------
# Full disk, read-only folders.
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("code,words", [(errno.ENOSPC, "No space left on device"),
                                        (errno.EROFS, "Read-only file system"),
                                        (errno.EACCES, "Permission denied")])
def test_disk_and_permission_errors_are_one_line(capsys, code, words):
  def main(argv):
    del argv
    raise OSError(code, os.strerror(code), "/data/run/eval/summary.json")
  with pytest.raises(SystemExit) as exited:
    cli.run_main(main)(["prog"])
  assert exited.value.code == 2
  assert capsys.readouterr().err == f"error: /data/run/eval/summary.json: {words}\n"


def test_other_os_errors_keep_their_traceback():
  def main(argv):
    del argv
    raise OSError(errno.EIO, "Input/output error", "/dev/sdz")
  with pytest.raises(OSError, match="Input/output error"):
    cli.run_main(main)(["prog"])


@pytest.mark.integration
def test_full_disk_at_checkpoint_removes_the_temporary_files(tiny_prep, tmp_path,
                                                            monkeypatch):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from csa_tf.training.trainer import Trainer  # pylint: disable=g-import-not-at-top
  config = make_config(tmp_path / "run", method="msbn", modalities=("lge", "bssfp"),
                       train_steps=2)
  trainer = Trainer(config, tiny_prep, log=lambda line: None)
  checkpoints = trainer.manager.directory
  def full_disk(checkpoint_number):
    # What TensorFlow leaves when the disk fills mid-save.
    os.makedirs(os.path.join(checkpoints, f"ckpt-{checkpoint_number}_temp"))
    with open(os.path.join(checkpoints, f"ckpt-{checkpoint_number}_temp", "part"),
              "w") as f:
      f.write("x" * 1000)
    raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")
  monkeypatch.setattr(trainer.manager, "save", full_disk)
  with pytest.raises(CsaInputError) as error:
    trainer.train()
  assert str(error.value) == (
      f"{checkpoints}: cannot write checkpoint ckpt-2 (No space left on device); its "
      "temporary files were removed; free space or fix the folder's permissions, then "
      "run the same command again to resume from the last checkpoint")
  assert os.listdir(checkpoints) == []


# Each command as its CLI runs it (cli.run_main): a read-only disk, then Ctrl-C.
def _command_exit(work, capsys):
  """Runs work() as a command's main; returns (exit status, stderr lines)."""
  def main(argv):
    del argv
    work()
  with pytest.raises(SystemExit) as exited:
    cli.run_main(main)(["prog"])
  return exited.value.code, capsys.readouterr().err.splitlines()


def _read_only(monkeypatch):
  """Every temporary file or folder csa_tf makes fails as on a read-only mount."""
  def refuse(suffix="", prefix="tmp", dir=None):  # pylint: disable=redefined-builtin
    # The name the system call was refused for, as the tempfile module reports it.
    raise OSError(errno.EROFS, os.strerror(errno.EROFS),
                  os.path.join(dir, f"{prefix}k2x9a7qd{suffix}"))
  monkeypatch.setattr(atomic.tempfile, "mkdtemp", refuse)
  monkeypatch.setattr(atomic.tempfile, "mkstemp", refuse)


def _signal_after(monkeypatch, owner, name, *, call, signum=signal.SIGINT):
  """owner.name sends this process signum when its call-th call returns."""
  real = getattr(owner, name)
  calls = []
  def wrapper(*args, **kwargs):
    result = real(*args, **kwargs)
    calls.append(1)
    if len(calls) == call:
      os.kill(os.getpid(), signum)
    return result
  monkeypatch.setattr(owner, name, wrapper)


def test_prep_on_a_read_only_disk_is_one_line(tmp_path, monkeypatch, capsys):
  raw = make_mscmr_release(tmp_path / "raw", num_patients=2)
  _read_only(monkeypatch)
  status, err = _command_exit(
      lambda: prepare_mscmr(raw, str(tmp_path / "prep"), crop_size=32), capsys)
  assert (status, err) == (2, [f"error: {tmp_path / 'prep'}: Read-only file system"])
  assert sorted(os.listdir(tmp_path)) == ["raw"]


def test_ctrl_c_during_prep_leaves_no_output(tmp_path, monkeypatch, capsys):
  from csa_tf.data import preparation  # pylint: disable=g-import-not-at-top
  raw = make_mscmr_release(tmp_path / "raw", num_patients=3)
  _signal_after(monkeypatch, preparation, "prepare_volume", call=2)
  status, err = _command_exit(
      lambda: prepare_mscmr(raw, str(tmp_path / "prep"), crop_size=32), capsys)
  assert (status, err) == (130, ["interrupted by SIGINT (Ctrl-C); stopped without "
                                 "leaving partial output"])
  assert sorted(os.listdir(tmp_path)) == ["raw"]


def _two_lge_inputs(tmp_path):
  raw = make_mscmr_release(tmp_path / "raw", num_patients=2, modalities=("LGE",), seed=5)
  return os.path.join(raw, "images")


@pytest.mark.integration
def test_predict_on_a_read_only_disk_and_ctrl_c_during_predict(tiny_run, tmp_path,
                                                                monkeypatch, capsys):
  from csa_tf.model.segmenter import SliceSegmenter  # pylint: disable=g-import-not-at-top
  from csa_tf.serving.predictor import predict_files  # pylint: disable=g-import-not-at-top
  inputs = _two_lge_inputs(tmp_path)
  out = tmp_path / "seg"
  out.mkdir()
  def predict():
    predict_files(tiny_run.model_dir, "lge", inputs, str(out), log=lambda line: None)

  with monkeypatch.context() as patch:
    _read_only(patch)
    status, err = _command_exit(predict, capsys)
  assert (status, err) == (2, [f"error: {out / 'patient1_LGE.nii.gz'}: Read-only file "
                               "system"])
  assert os.listdir(out) == []

  # Ctrl-C while the second volume is segmented: the first output is whole, the second
  # never started, and no temporary is left.
  _signal_after(monkeypatch, SliceSegmenter, "labels", call=2)
  status, err = _command_exit(predict, capsys)
  assert (status, err) == (130, ["interrupted by SIGINT (Ctrl-C); stopped without "
                                 "leaving partial output"])
  assert os.listdir(out) == ["patient1_LGE.nii.gz"]
  assert nifti.read_volume(str(out / "patient1_LGE.nii.gz"), kind="label").data.shape == (
      40, 48, 5)


@pytest.mark.integration
def test_ctrl_c_during_export_leaves_no_output(tiny_run, tmp_path, monkeypatch, capsys):
  from csa_tf.serving import exporter  # pylint: disable=g-import-not-at-top
  _signal_after(monkeypatch, exporter.atomic, "write_json", call=1)
  status, err = _command_exit(
      lambda: exporter.export_run(tiny_run.model_dir, str(tmp_path / "export"),
                                  log=lambda line: None), capsys)
  assert (status, err) == (130, ["interrupted by SIGINT (Ctrl-C); stopped without "
                                 "leaving partial output"])
  assert os.listdir(tmp_path) == []


@pytest.mark.integration
def test_visualize_on_a_read_only_disk_is_one_line(tiny_run, tmp_path, monkeypatch,
                                                    capsys):
  from csa_tf.visualization.figures import make_figures  # pylint: disable=g-import-not-at-top
  figures = tmp_path / "figures"
  _read_only(monkeypatch)
  status, err = _command_exit(
      lambda: make_figures(tiny_run.model_dir, output_dir=str(figures), num_slices=1,
                           log=lambda line: None), capsys)
  assert status == 2 and len(err) == 1
  assert re.fullmatch(rf"error: {re.escape(str(figures))}/\w+\.png: Read-only file "
                      "system", err[0]), err
  assert not figures.exists() or os.listdir(figures) == []


# ---------------------------------------------------------------------------------------
# Resuming on other settings or data; evaluating on a leaking split; stale tables.
# ---------------------------------------------------------------------------------------
def _prep_with_other_split(tiny_prep, tmp_path):
  """The tiny release prepared again with the first seed that gives another test split."""
  from csa_tf.data.prepared import PreparedDataset  # pylint: disable=g-import-not-at-top
  raw = os.path.join(os.path.dirname(tiny_prep.prep_dir), "raw")
  for seed in range(1, 20):
    prep_dir = str(tmp_path / f"prep_seed{seed}")
    prepare_mscmr(raw, prep_dir, modalities=list(tiny_prep.modalities), crop_size=32,
                  test_fraction=0.25, seed=seed)
    other = PreparedDataset.open(prep_dir)
    if other.splits["test"] != tiny_prep.splits["test"]:
      return other
  raise AssertionError("no seed gave another split")


def test_prep_fingerprint_follows_content_not_path(tiny_prep, tmp_path):
  from csa_tf.data.prepared import PreparedDataset  # pylint: disable=g-import-not-at-top
  moved = tmp_path / "moved"
  shutil.copytree(tiny_prep.prep_dir, moved)
  assert PreparedDataset.open(str(moved)).fingerprint() == tiny_prep.fingerprint()
  other = _prep_with_other_split(tiny_prep, tmp_path)
  assert other.fingerprint() != tiny_prep.fingerprint()
  assert len(tiny_prep.fingerprint()) == 64


@pytest.mark.integration
def test_resume_with_other_settings_or_data_is_refused_and_history_kept(tiny_prep,
                                                                        tmp_path):
  from csa_tf.training.trainer import Trainer  # pylint: disable=g-import-not-at-top
  def train(**overrides):
    values = dict(method="msbn", modalities=("lge", "bssfp"), train_steps=2,
                  data_dir=tiny_prep.prep_dir)
    values.update(overrides)
    config = make_config(tmp_path / "run", **values)
    from csa_tf.data.prepared import PreparedDataset  # pylint: disable=g-import-not-at-top
    return Trainer(config, PreparedDataset.open(config.data_dir),
                   log=lambda line: None).train()
  train()
  run = RunDir(str(tmp_path / "run"))
  config_before = open(run.config_path).read()
  # Another learning rate and lambda: both named, nothing written.
  with pytest.raises(CsaInputError) as error:
    train(train_steps=3, learning_rate=0.5, lam=2.0)
  assert str(error.value) == (
      f"{run.config_path}: this model dir was trained with other settings "
      "(learning_rate 0.001 -> 0.5; lam 0.5 -> 2.0); resume with the run's own settings "
      "or use a new model_dir")
  assert open(run.config_path).read() == config_before
  # Another split of the same scans: refused by content, whatever the path.
  other = _prep_with_other_split(tiny_prep, tmp_path)
  with pytest.raises(CsaInputError, match=(
      rf"^{re.escape(other.prep_dir)}: not the data this run was trained on "
      rf"\({re.escape(run.training_data_path)} records "
      rf"{re.escape(os.path.abspath(tiny_prep.prep_dir))}, whose content differs")):
    train(train_steps=3, data_dir=other.prep_dir)
  assert open(run.config_path).read() == config_before
  # The same PREP moved elsewhere, with more steps and another log cadence: resumes.
  moved = tmp_path / "moved_prep"
  shutil.copytree(tiny_prep.prep_dir, moved)
  train(train_steps=3, data_dir=str(moved), log_every=7)
  with open(run.config_history_path) as f:
    history = [json.loads(line) for line in f]
  assert [(h["event"], h["step"]) for h in history] == [("started", 0), ("resumed", 2)]
  assert history[0]["changed"] == {}
  assert history[1]["changed"] == {"data_dir": [tiny_prep.prep_dir, str(moved)],
                                   "train_steps": [2, 3], "log_every": [100, 7]}


@pytest.mark.integration
def test_evaluate_refuses_a_split_that_leaks_training_patients(tiny_prep, tiny_run,
                                                               tmp_path):
  from csa_tf.evaluation.evaluator import evaluate_run  # pylint: disable=g-import-not-at-top
  run_dir = tmp_path / "run"
  shutil.copytree(tiny_run.model_dir, run_dir)
  other = _prep_with_other_split(tiny_prep, tmp_path)
  leaked = sorted(set(other.splits["test"]) - set(tiny_prep.splits["test"]))
  with pytest.raises(CsaInputError) as error:
    evaluate_run(str(run_dir), other.prep_dir, log=lambda line: None)
  message = str(error.value)
  assert message.startswith(f"{os.path.join(other.prep_dir, 'splits.json')}: its test "
                            f"patients include patients the run in {run_dir} was trained "
                            "on (lge: ")
  assert all(patient in message for patient in leaked)
  assert not os.path.exists(RunDir(str(run_dir)).eval_dir)
  # Its own PREP is evaluated, and the summary says what was evaluated on what.
  report = evaluate_run(str(run_dir), log=lambda line: None)
  assert report["checkpoint_step"] == 2 and report["checkpoint"] == "ckpt-2"
  assert report["data_dir"] == os.path.abspath(tiny_prep.prep_dir)
  assert report["prep_fingerprint"] == tiny_prep.fingerprint()
  assert report["patients"] == {m: list(tiny_prep.splits["test"])
                                for m in tiny_run.modalities}


def test_reproduce_treats_an_evaluation_of_an_older_checkpoint_as_not_done(tmp_path):
  from experiments.reproduce import method_done  # pylint: disable=g-import-not-at-top
  run = RunDir(str(tmp_path))
  run.write_final_losses({"step": 30})
  os.makedirs(run.eval_dir)
  atomic.write_json(run.summary_path(), {"checkpoint_step": 20})
  assert not method_done(str(tmp_path), 30)  # trained on, killed during evaluation
  atomic.write_json(run.summary_path(), {"checkpoint": "ckpt-30"})
  assert not method_done(str(tmp_path), 30)  # a summary that does not say
  atomic.write_json(run.summary_path(), {"checkpoint_step": 30})
  assert method_done(str(tmp_path), 30)
  assert not method_done(str(tmp_path), 40)


# ---------------------------------------------------------------------------------------
# --overwrite replaces only what csa_tf made.
# ---------------------------------------------------------------------------------------
def _tree(root):
  return sorted(os.path.relpath(os.path.join(d, f), root)
                for d, _, files in os.walk(root) for f in files)


def test_prep_overwrite_keeps_a_users_files(tmp_path):
  raw = make_mscmr_release(tmp_path / "raw", num_patients=2, modalities=("LGE", "C0"))
  prep = tmp_path / "prep"
  kwargs = dict(modalities=("lge", "bssfp"), crop_size=32, test_fraction=0.5)
  prepare_mscmr(raw, str(prep), **kwargs)
  prepare_mscmr(raw, str(prep), overwrite=True, **kwargs)  # its own output: replaced
  (prep / "notes.txt").write_text("my notes")
  (prep / "volumes" / "lge" / "readme.md").write_text("mine too")
  before = _tree(prep)
  with pytest.raises(CsaInputError) as error:
    prepare_mscmr(raw, str(prep), overwrite=True, **kwargs)
  assert str(error.value) == (
      f"{prep}: holds files csa_tf did not make (notes.txt, volumes/lge/readme.md); "
      "overwrite replaces only a csa_tf preparation: move them out or choose another "
      "output_dir")
  assert _tree(prep) == before
  assert (prep / "notes.txt").read_text() == "my notes"


@pytest.mark.integration
def test_prep_overwrite_on_the_raw_folders_parent_deletes_nothing(tmp_path):
  # The report's case: --raw_dir=S/raw --output_dir=S --overwrite, S holding notes.txt.
  root = tmp_path / "S"
  raw = make_mscmr_release(root / "raw", num_patients=2, modalities=("LGE",))
  (root / "notes.txt").write_text("keep me")
  before = _tree(root)
  result = run_command("data_prep.mscmr", f"--raw_dir={raw}", f"--output_dir={root}",
                       "--modalities=lge", "--crop_size=32", "--overwrite", expect=2)
  assert result.stderr.splitlines() == [
      f"error: --output_dir={root}: contains --raw_dir={raw}; replacing it would delete "
      "the source; choose another folder"]
  assert _tree(root) == before


@pytest.mark.integration
def test_export_overwrite_keeps_a_folder_it_did_not_make(tiny_run, tmp_path):
  from csa_tf.serving.exporter import export_run  # pylint: disable=g-import-not-at-top
  out = tmp_path / "export"
  (out / "lge").mkdir(parents=True)
  (out / "lge" / "weights_i_trained.h5").write_text("precious")
  with pytest.raises(CsaInputError) as error:
    export_run(tiny_run.model_dir, str(out), overwrite=True, log=lambda line: None)
  assert str(error.value) == (
      f"{out / 'lge'}: holds files csa_tf did not make (weights_i_trained.h5); overwrite "
      "replaces only an export; move them out or choose another output_dir")
  assert _tree(out) == ["lge/weights_i_trained.h5"]


@pytest.mark.integration
def test_export_killed_while_replacing_leaves_the_old_export_whole(tiny_run, tmp_path):
  import time  # pylint: disable=g-import-not-at-top
  from csa_tf.serving.exporter import export_run  # pylint: disable=g-import-not-at-top
  out = tmp_path / "export"
  export_run(tiny_run.model_dir, str(out), log=lambda line: None)
  def contents():
    return {path: (out / path).read_bytes() for path in _tree(out)
            if not path.startswith(".")}
  before = contents()
  process = start_command("csa_tf.export", f"--model_dir={tiny_run.model_dir}",
                          f"--output_dir={out}", "--overwrite")
  deadline = time.monotonic() + 300
  # Killed once the new export is being written beside the old one.
  while (not any(name.startswith(".lge.tmp-") for name in os.listdir(out))
         and process.poll() is None and time.monotonic() < deadline):
    time.sleep(0.01)
  alive = process.poll() is None
  process.kill()
  process.communicate(timeout=60)
  assert alive, "export finished before it could be killed"
  assert contents() == before


# ---------------------------------------------------------------------------------------
# A crop larger than the image: training and prediction see the same z-scores.
# ---------------------------------------------------------------------------------------
def test_crop_larger_than_image_gives_prediction_the_training_z_scores(tmp_path):
  import nibabel as nib  # pylint: disable=g-import-not-at-top
  from csa_tf.data.prepared import PreparedDataset  # pylint: disable=g-import-not-at-top
  from csa_tf.serving.predictor import slice_geometry  # pylint: disable=g-import-not-at-top
  raw = make_mscmr_release(tmp_path / "raw", num_patients=2, modalities=("LGE",),
                           shape=(40, 48, 5))
  prep = tmp_path / "prep"
  prepare_mscmr(raw, str(prep), modalities=("lge",), crop_size=64, test_fraction=0.5)
  prepared = PreparedDataset.open(str(prep))
  entry = prepared.entries_for("train", "lge")[0]
  volume = prepared.load(entry)
  path = os.path.join(raw, "images", f"{entry.patient_id}_LGE.nii.gz")
  image = np.asarray(nib.load(path).dataobj, dtype=np.float32)
  served = slice_geometry(image.shape, np.eye(4), dataset="mscmr",
                          field_of_view="full", crop_size=64)
  assert served.crop_size == 48 and volume.geometry.crop_size == 64
  fed = served.network_slices(image)
  trained = volume.image
  # Both boxes hold the whole 40 x 48 slice: compare it pixel by pixel.
  (r_fed, c_fed), (r_tr, c_tr) = served.crop_origin, volume.geometry.crop_origin
  np.testing.assert_allclose(fed[:, -r_fed:-r_fed + 40, -c_fed:-c_fed + 48],
                             trained[:, -r_tr:-r_tr + 40, -c_tr:-c_tr + 48],
                             rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------
# MS-CMRSeg stored LPS instead of RAS: the same slices, the same predictions.
# ---------------------------------------------------------------------------------------
def _store_lps(path, out_path):
  """Writes the scan at path again with its first two array axes reversed (LPS-like)."""
  import nibabel as nib  # pylint: disable=g-import-not-at-top
  img = nib.load(path)
  data = np.asarray(img.dataobj)
  flip = np.diag([-1.0, -1.0, 1.0, 1.0])
  flip[0, 3], flip[1, 3] = data.shape[0] - 1, data.shape[1] - 1
  os.makedirs(os.path.dirname(out_path), exist_ok=True)
  nib.save(nib.Nifti1Image(data[::-1, ::-1].copy(), img.affine @ flip), out_path)


def test_mscmr_prep_reads_the_header_orientation(tmp_path):
  from csa_tf.data.prepared import PreparedDataset  # pylint: disable=g-import-not-at-top
  raw = make_mscmr_release(tmp_path / "raw", num_patients=2, modalities=("LGE",))
  lps_raw = tmp_path / "lps_raw"
  for root, _, files in os.walk(raw):
    for name in files:
      source = os.path.join(root, name)
      _store_lps(source, os.path.join(lps_raw, os.path.relpath(source, raw)))
  kwargs = dict(modalities=("lge",), crop_size=32, test_fraction=0.5)
  prepare_mscmr(raw, str(tmp_path / "prep"), **kwargs)
  prepare_mscmr(str(lps_raw), str(tmp_path / "lps_prep"), **kwargs)
  ras, lps = (PreparedDataset.open(str(tmp_path / name)) for name in ("prep", "lps_prep"))
  assert ras.orientation == lps.orientation == "header"
  for entry in ras.entries:
    a, b = ras.load(entry), lps.load(entry)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.label, b.label)
    # Each pastes back onto its own file's grid.
    np.testing.assert_array_equal(b.original_label, a.original_label[::-1, ::-1])


@pytest.mark.integration
def test_predict_on_an_lps_copy_equals_the_ras_prediction(tiny_run, tmp_path):
  import nibabel as nib  # pylint: disable=g-import-not-at-top
  from csa_tf.serving.predictor import predict_files  # pylint: disable=g-import-not-at-top
  raw = make_mscmr_release(tmp_path / "raw", num_patients=1, modalities=("LGE",),
                           seed=7)
  ras_in = os.path.join(raw, "images", "patient1_LGE.nii.gz")
  lps_in = str(tmp_path / "lps" / "patient1_LGE.nii.gz")
  _store_lps(ras_in, lps_in)
  outputs = {}
  for name, source in (("ras", ras_in), ("lps", lps_in)):
    target = str(tmp_path / f"{name}_seg.nii.gz")
    predict_files(tiny_run.model_dir, "lge", source, target, log=lambda line: None)
    outputs[name] = nib.load(target)
    np.testing.assert_array_equal(outputs[name].affine, nib.load(source).affine)
  ras_labels = np.asarray(outputs["ras"].dataobj)
  # Not vacuous: the prediction has foreground and is not symmetric under the flip.
  assert len(np.unique(ras_labels)) > 1
  assert (ras_labels != ras_labels[::-1, ::-1]).any()
  np.testing.assert_array_equal(np.asarray(outputs["lps"].dataobj),
                                ras_labels[::-1, ::-1])


# ---------------------------------------------------------------------------------------
# An MS-CMRSeg label on another voxel grid than its image.
# ---------------------------------------------------------------------------------------
def _label_with_affine(raw, change):
  """Rewrites patient2's LGE label with its image's affine changed by change(affine)."""
  label = os.path.join(raw, "labels", "LGE", "patient2_LGE_manual.nii.gz")
  image = nib.load(os.path.join(raw, "images", "patient2_LGE.nii.gz"))
  affine = image.affine.copy()
  change(affine, image.shape)
  write_nifti(label, np.asanyarray(nib.load(label).dataobj), affine)
  return label


def _shift_50mm(affine, shape):
  affine[0, 3] += 50.0  # 50 mm along x: 50 voxels of 1 mm, far outside the tolerance


def _flip_x(affine, shape):
  # The same world box read from the other x end: voxel i now lies where the image's
  # voxel (nx - 1 - i) lies, so the label is mirrored against its image.
  affine[:3, 3] += affine[:3, 0] * (shape[0] - 1)
  affine[:3, 0] *= -1


@pytest.mark.parametrize("change", [_shift_50mm, _flip_x])
def test_label_on_another_grid_is_refused(tmp_path, change):
  raw = make_mscmr_release(tmp_path / "raw", num_patients=3)
  label = _label_with_affine(raw, change)
  out = tmp_path / "prep"
  with pytest.raises(CsaInputError) as info:
    prepare_mscmr(raw, str(out), crop_size=32)
  assert str(info.value) == (f"{label}: label affine differs from its image's; the two "
                             "do not lie on the same voxel grid")
  assert not out.exists()


def test_label_affine_within_tolerance_is_accepted(tmp_path):
  raw = make_mscmr_release(tmp_path / "raw", num_patients=3)

  def nudge(affine, shape):
    # 1e-4 mm: float rounding of a header, ten times under the 1e-3 mm tolerance.
    affine[:3, 3] += 1e-4
  label = _label_with_affine(raw, nudge)
  prepare_mscmr(raw, str(tmp_path / "prep"), crop_size=32)
  prepared = PreparedDataset.open(str(tmp_path / "prep"))
  entry, = [e for e in prepared.entries
            if e.patient_id == "patient2" and e.modality == "lge"]
  raw_label = np.asanyarray(nib.load(label).dataobj)
  # Accepted as it is: the same foreground voxel count as the raw label.
  assert (prepared.load(entry).label > 0).sum() == (raw_label > 0).sum()


# ---------------------------------------------------------------------------------------
# Two writers on one run folder (the lock itself: tests/run_lock_test.py).
# ---------------------------------------------------------------------------------------
@pytest.mark.integration
def test_second_trainer_on_one_model_dir_exits_2_at_once(tiny_prep, tmp_path):
  model_dir = tmp_path / "run"
  flags = (f"--data_dir={tiny_prep.prep_dir}", f"--model_dir={model_dir}",
           *TINY_TRAIN_FLAGS)
  first = start_command("csa_tf.train", *flags)
  try:
    # The first holds the lock once its flags are checked (before TensorFlow loads).
    lock_path = RunDir(str(model_dir)).lock_path
    deadline = time.monotonic() + 30
    while not os.path.exists(lock_path) and first.poll() is None:
      assert time.monotonic() < deadline, "the first trainer never took the lock"
      time.sleep(0.05)
    started = time.monotonic()
    second = run_command("csa_tf.train", *flags, expect=2, timeout=60)
    second_seconds = time.monotonic() - started
    assert first.poll() is None, "the first trainer ended before the second was refused"
  finally:
    out, err = first.communicate(timeout=120)
  holder = f"pid {first.pid} on host {socket.gethostname()} (csa_tf.train, started "
  lines = second.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(f"error: {model_dir}: in use by {holder}")
  assert second.stdout == ""
  # Refused before TensorFlow loads: the interpreter and the flags only.
  assert second_seconds < 10
  assert first.returncode == 0, err[-2000:]
  assert "finished step 2" in out
  assert not os.path.exists(lock_path)
  assert json.load(open(model_dir / "final_losses.json"))["step"] == 2
