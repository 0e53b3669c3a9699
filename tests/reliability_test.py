"""Interruptions, numerical faults and unsafe files never lose work or mislead.

  * A training process killed with SIGKILL and started again with the same command ends
    with exactly the weights of an uninterrupted run.
  * A non-finite loss stops training with the step and the loss term named, keeping the
    last good checkpoint.
  * No user file is ever unpickled, the raw data folder is never written to, and
    outputs appear atomically (whole, or not at all).
"""
import os
import re
import signal
import time

import numpy as np
import pytest

from csa_tf import losses
from csa_tf.data import prepared
from csa_tf.cli import run_main
from csa_tf.errors import CsaInputError, NonFiniteLossError
from csa_tf.io.atomic import write_atomically
from csa_tf.data import mmwhs_pnp
from csa_tf.data.mmwhs import prepare_mmwhs
from csa_tf.data.mscmr import prepare_mscmr
from tests.helpers import ROOT, make_config, make_mmwhs_release, make_mscmr_release, quiet
from tests.helpers import start_command

CROP = 32


@pytest.fixture
def prep_dir(tiny_prep):
  return tiny_prep.prep_dir


# ---------------------------------------------------------------------------------------
# SIGKILL and restart.
# ---------------------------------------------------------------------------------------
# Tiny and deterministic. Checkpoints at steps 4 and 8 and the final one at 10: the kill
# comes once the first is on disk, so the restart resumes mid-run and passes another
# checkpoint step before it ends. MSBN has all the state CSA has (two modalities' BN
# sets and input streams, dropout, optimizer, BN re-estimation) in a graph that traces
# faster.
KILL_TRAIN_FLAGS = ["--method=msbn", "--feature_base=2", "--batch_size=2",
                    "--bn_recalibration_batches=1", "--deterministic", "--train_steps=10",
                    "--checkpoint_every=4", "--log_every=1"]


def _start_training(prep, model_dir):
  return start_command("csa_tf.train", f"--data_dir={prep}", f"--model_dir={model_dir}",
                       *KILL_TRAIN_FLAGS, merge_stderr=True)


def _finish(process, timeout=600):
  output, _ = process.communicate(timeout=timeout)
  return process.returncode, output


def _latest_tensors(model_dir):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  path = tf.train.latest_checkpoint(os.path.join(str(model_dir), "checkpoints"))
  reader = tf.train.load_checkpoint(path)
  names = [n for n in reader.get_variable_to_shape_map()
           if n != "_CHECKPOINTABLE_OBJECT_GRAPH"]
  return path, {name: reader.get_tensor(name) for name in names}


@pytest.mark.integration
def test_sigkill_then_same_command_equals_uninterrupted(prep_dir, tmp_path):
  straight_dir, killed_dir = tmp_path / "straight", tmp_path / "killed"
  # The uninterrupted run goes alongside the one to be killed (2 cores: the wall time of
  # the test is about two runs, not three).
  straight = _start_training(prep_dir, straight_dir)
  victim = _start_training(prep_dir, killed_dir)
  state_file = killed_dir / "checkpoints" / "checkpoint"
  deadline = time.monotonic() + 600
  while not state_file.exists() and victim.poll() is None and time.monotonic() < deadline:
    time.sleep(0.02)
  alive = victim.poll() is None
  victim.send_signal(signal.SIGKILL)
  code, output = _finish(victim)
  assert alive and code == -signal.SIGKILL, output[-3000:]
  assert not (killed_dir / "final_losses.json").exists()

  code, output = _finish(_start_training(prep_dir, killed_dir))
  assert code == 0, output[-3000:]
  resumed = re.search(r"resumed from \S+ at step (\d+)", output)
  assert resumed and 0 < int(resumed.group(1)) < 10, output[-3000:]
  assert "finished step 10" in output
  code, straight_output = _finish(straight)
  assert code == 0, straight_output[-3000:]

  path_a, tensors_a = _latest_tensors(straight_dir)
  path_b, tensors_b = _latest_tensors(killed_dir)
  assert os.path.basename(path_a) == os.path.basename(path_b) == "ckpt-10"
  assert sorted(tensors_a) == sorted(tensors_b)
  weights = [name for name in tensors_a if name.startswith("net/")]
  assert len(weights) > 50
  # Bit-exact: every weight and BN statistic, and the optimizer's moments and step.
  for name in tensors_a:
    np.testing.assert_array_equal(tensors_a[name], tensors_b[name], err_msg=name)


# ---------------------------------------------------------------------------------------
# Non-finite loss.
# ---------------------------------------------------------------------------------------
@pytest.mark.integration
def test_non_finite_loss_stops_with_step_and_term_and_keeps_last_checkpoint(
    prep_dir, tmp_path, monkeypatch, capsys):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from csa_tf.training.trainer import Trainer  # pylint: disable=g-import-not-at-top
  config = make_config(tmp_path / "run", data_dir=prep_dir, crop_size=CROP, method="msbn",
                       train_steps=6, checkpoint_every=2, bn_recalibration_batches=0)
  trainer = Trainer(config, prepared.PreparedDataset.open(prep_dir), log=quiet)
  real_dice = losses.dice_loss

  def dice_nan_from_step_4(probs, labels, **kwargs):
    # Traced once into the step function, so the switch is a graph op on the run's own
    # step counter (steps completed so far): NaN on the 4th step, a checkpoint step.
    value = real_dice(probs, labels, **kwargs)
    return tf.where(trainer.step >= 3, tf.constant(np.nan, value.dtype), value)

  monkeypatch.setattr(losses, "dice_loss", dice_nan_from_step_4)
  with pytest.raises(NonFiniteLossError) as info:
    trainer.train()
  message = str(info.value)
  assert "step 4" in message and "dice_lge=nan" in message, message
  checkpoints = os.path.join(config.model_dir, "checkpoints")
  assert os.path.basename(tf.train.latest_checkpoint(checkpoints)) == "ckpt-2"
  assert not [n for n in os.listdir(checkpoints) if n.startswith(("ckpt-4", "ckpt-6"))]
  assert not os.path.exists(os.path.join(config.model_dir, "final_losses.json"))

  # The command-line path: run again (it resumes from step 2 and meets the same fault),
  # and the user sees one line and exit status 2.
  capsys.readouterr()
  with pytest.raises(SystemExit) as exit_info:
    run_main(lambda argv: trainer.train())(["csa_tf.train"])
  assert exit_info.value.code == 2
  lines = capsys.readouterr().err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: non-finite loss at step 4: ")
  assert "dice_lge=nan" in lines[0] and "last good checkpoint" in lines[0]
  assert os.path.basename(tf.train.latest_checkpoint(checkpoints)) == "ckpt-2"


# ---------------------------------------------------------------------------------------
# No pickles.
# ---------------------------------------------------------------------------------------
def _object_npz(path, **extra):
  np.savez(path, image=np.array([{"code": "runs on unpickling"}], dtype=object), **extra)
  return str(path)


def test_prepared_volume_with_object_array_is_refused(tmp_path):
  path = _object_npz(tmp_path / "patient1.npz")
  with pytest.raises(CsaInputError, match="pickled Python object array") as info:
    prepared.load_volume(path)
  assert str(info.value).startswith(path + ":")


def test_pnp_test_volume_with_object_array_is_refused(tmp_path):
  path = str(tmp_path / "image_ct_1003.npz")
  np.savez(path, np.array([None, "x"], dtype=object), np.zeros((4, 4, 1)))
  with pytest.raises(CsaInputError, match="pickled Python object array") as info:
    mmwhs_pnp.read_test_npz(path)
  assert str(info.value).startswith(path + ":")


def _call_arguments(text, start):
  """The text between an opening parenthesis (ending at start) and its match."""
  depth = 1
  for end in range(start, len(text)):
    depth += {"(": 1, ")": -1}.get(text[end], 0)
    if depth == 0:
      return text[start:end]
  return text[start:]


def test_no_code_path_can_unpickle():
  """Every np.load passes allow_pickle=False; pickle-based loaders are not used at all."""
  offenders = []
  for package in ("csa_tf", "data_prep", "experiments", "benchmarks"):
    for folder, _, files in os.walk(os.path.join(ROOT, package)):
      for name in files:
        if not name.endswith(".py"):
          continue
        path = os.path.join(folder, name)
        text = open(path, encoding="utf-8").read()
        for call in re.finditer(r"\b(np|numpy)\.load\(", text):
          arguments = _call_arguments(text, call.end())
          if "allow_pickle=False" not in arguments:
            offenders.append(f"{path}: np.load({arguments})")
        if re.search(r"^\s*(import|from)\s+(pickle|cPickle|joblib|dill|cloudpickle)\b"
                     r"|read_pickle|torch\.load", text, re.M):
          offenders.append(f"{path}: uses a pickle-based loader")
  assert not offenders, offenders


# ---------------------------------------------------------------------------------------
# The raw data folder is only read.
# ---------------------------------------------------------------------------------------
def _snapshot(folder):
  out = []
  for root, dirs, files in os.walk(folder):
    for name in dirs + files:
      path = os.path.join(root, name)
      stat = os.lstat(path)
      out.append((os.path.relpath(path, folder), stat.st_size, stat.st_mtime_ns,
                  stat.st_mode))
  return sorted(out)


@pytest.mark.parametrize("dataset", ["mscmr", "mmwhs"])
def test_preparation_never_writes_to_raw(tmp_path, dataset):
  if dataset == "mscmr":
    raw = make_mscmr_release(tmp_path / "raw", num_patients=3)
    prepare = prepare_mscmr
  else:
    raw = make_mmwhs_release(tmp_path / "raw", num_patients=2)
    prepare = prepare_mmwhs
  before = _snapshot(raw)
  prepare(raw, str(tmp_path / "prep"), crop_size=CROP, test_fraction=0.5)
  prepare(raw, str(tmp_path / "prep"), crop_size=CROP, test_fraction=0.5, overwrite=True)
  assert _snapshot(raw) == before
  assert sorted(os.listdir(tmp_path)) == ["prep", "raw"]


@pytest.mark.parametrize("dataset", ["mscmr", "mmwhs"])
def test_output_inside_raw_is_refused(tmp_path, dataset):
  if dataset == "mscmr":
    raw = make_mscmr_release(tmp_path / "raw", num_patients=2)
    prepare = prepare_mscmr
  else:
    raw = make_mmwhs_release(tmp_path / "raw", num_patients=1)
    prepare = prepare_mmwhs
  before = _snapshot(raw)
  # Also through a link that points into the raw folder.
  os.symlink(os.path.join(raw, "images" if dataset == "mscmr" else "ct_train"),
             tmp_path / "link")
  for output_dir in (raw, os.path.join(raw, "prep"), str(tmp_path / "link" / "prep")):
    with pytest.raises(CsaInputError, match="lies inside raw_dir=.*never written to"):
      prepare(raw, output_dir, crop_size=CROP)
  assert _snapshot(raw) == before


# ---------------------------------------------------------------------------------------
# Atomic outputs.
# ---------------------------------------------------------------------------------------
def test_write_atomically_keeps_the_old_file_when_a_write_fails(tmp_path):
  path = tmp_path / "summary.json"
  path.write_text("old")

  def half_then_crash(tmp):
    open(tmp, "w").write("ne")
    raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    write_atomically(str(path), half_then_crash)
  assert path.read_text() == "old"
  assert os.listdir(tmp_path) == ["summary.json"]


def test_write_atomically_gives_ordinary_permissions(tmp_path):
  umask = os.umask(0o022)
  try:
    write_atomically(str(tmp_path / "a.txt"), lambda tmp: open(tmp, "w").write("a"))
  finally:
    os.umask(umask)
  # Not mkstemp's owner-only 0600: predictions and tables are meant to be shared.
  assert os.stat(tmp_path / "a.txt").st_mode & 0o777 == 0o644
