"""Training and evaluating one entry of an experiment in its own run folder, resumably.

Shared by experiments.reproduce (the six settings of Tables 1-3, one seed) and
experiments.study (settings and named variants, several seeds). Each run is
`python -m csa_tf.train` then `python -m csa_tf.evaluate` in a subprocess, its output
teed to RUN/experiment.log; a run whose evaluation is of the checkpoint at
--train_steps is not run again, and an interrupted one resumes from its checkpoint.
"""
import csv
import os
import shutil
import subprocess
import sys
import time
from typing import Dict, List, Sequence

import numpy as np

from csa_tf.errors import CsaInputError
from csa_tf.io.run_dir import RunDir

LOG_NAME = "experiment.log"


class CommandFailed(CsaInputError):
  """A csa_tf command run by an experiment failed; `last_line` is its last output line."""

  def __init__(self, message: str, last_line: str):
    super().__init__(message)
    self.last_line = last_line


def run_logged(command: List[str], log_path: str) -> None:
  """Runs a command, teeing its output to log_path (progress lines also to stdout).

  Raises:
    CommandFailed: the command exited non-zero; names the log and the command's last
      output line (its own `error: ...` line when it refused its input).
  """
  with open(log_path, "a", encoding="utf-8") as log:
    log.write("$ " + " ".join(command) + "\n")
    log.flush()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    last = ""
    for line in process.stdout:
      log.write(line)
      log.flush()
      if line.startswith(("step ", "finished", "resumed", "already", "|", "error")):
        print("    " + line.rstrip(), flush=True)
      last = line.strip() or last
    if process.wait():
      last = last[len("error: "):] if last.startswith("error: ") else last
      raise CommandFailed(f"{log_path}: `{' '.join(command[2:4])}` failed: {last}", last)


def check_train_steps(train_steps) -> None:
  """Raises CsaInputError for a --train_steps override that is not positive (None: the
  flagfile's)."""
  if train_steps is not None and train_steps < 1:
    raise CsaInputError(f"--train_steps={train_steps}: must be a positive integer")


def run_done(run_dir: str, train_steps: int) -> bool:
  """Whether the run reached train_steps and its evaluation is of that checkpoint.

  Decided from the checkpoint step the evaluation recorded, never from which files
  exist: a run trained further and killed before its evaluation was redone has a
  summary of an older checkpoint, and is not done.
  """
  run = RunDir(run_dir)
  final = run.read_final_losses()
  if final is None or final.get("step") != train_steps or not run.has_summary():
    return False
  return run.read_summary().get("checkpoint_step") == train_steps


def train_and_evaluate(name: str, run_dir: str, *, data_dir: str, train_flags: Sequence[str],
                       train_steps, new_dirs: Sequence[str] = (),
                       refused_name: str = "") -> None:
  """Trains (or resumes) and evaluates one run, unless it is done already.

  Args:
    name: what the progress lines call the run (e.g. "csa seed 1").
    run_dir: its own run folder.
    data_dir: the PREP.
    train_flags: csa_tf.train's flags besides --data_dir and --model_dir (flagfile,
      method, seed, ...).
    train_steps: --train_steps, or None for the flagfile's (then it always runs: the
      train command itself says "already trained").
    new_dirs: folders above run_dir that this experiment made, removed (when empty)
      with a run folder that training refused to start in.
    refused_name: how that refusal names the run (default: name).

  Raises:
    CsaInputError: training refused to start (its own error line, nothing left behind).
    CommandFailed: training or evaluation failed later (the run folder is kept).
  """
  if train_steps and run_done(run_dir, train_steps):
    print(f"== {name}: finished earlier, not retrained", flush=True)
    return
  fresh = not os.path.isdir(run_dir)
  os.makedirs(run_dir, exist_ok=True)
  command = [sys.executable, "-m", "csa_tf.train", f"--data_dir={data_dir}",
             f"--model_dir={run_dir}"] + list(train_flags)
  if train_steps:
    command.append(f"--train_steps={train_steps}")
  print(f"== {name}: training in {run_dir}", flush=True)
  start = time.perf_counter()
  log_path = os.path.join(run_dir, LOG_NAME)
  try:
    run_logged(command, log_path)
  except CommandFailed as error:
    if fresh and not RunDir(run_dir).is_run():
      # Training refused to start (a bad flag, say): leave no folder that holds only
      # this log; the error line already says why.
      remove_new_run(run_dir, new_dirs)
      raise CsaInputError(f"csa_tf.train refused to start {refused_name or name}: "
                          f"{error.last_line}") from None
    raise
  run_logged([sys.executable, "-m", "csa_tf.evaluate", f"--model_dir={run_dir}",
              f"--data_dir={data_dir}"], log_path)
  print(f"== {name}: done in {time.perf_counter() - start:.0f} s", flush=True)


def remove_new_run(run_dir: str, new_dirs: Sequence[str]) -> None:
  """Removes a run folder this invocation made, and the parents it made if now empty."""
  shutil.rmtree(run_dir, ignore_errors=True)
  for folder in reversed(list(new_dirs)):
    try:
      os.rmdir(folder)  # Only when empty: other runs stay.
    except OSError:
      break


def per_volume_rows(run_dir: str) -> List[Dict[str, str]]:
  """The run's evaluation rows (RUN/eval/per_volume.csv), as text."""
  with open(RunDir(run_dir).per_volume_path(), encoding="utf-8") as f:
    return list(csv.DictReader(f))


def patient_dice(run_dir: str) -> Dict[str, Dict[str, float]]:
  """{modality: {patient_id: mean foreground Dice}} from a run's per-volume CSV.

  A class absent from both masks (an empty Dice cell, the metrics policy) is left out
  of its patient's mean.
  """
  values: Dict[str, Dict[str, List[float]]] = {}
  for row in per_volume_rows(run_dir):
    if row["dice"] == "":
      continue
    values.setdefault(row["modality"], {}).setdefault(row["patient_id"], []).append(
        float(row["dice"]))
  return {m: {p: float(np.mean(v)) for p, v in ps.items()} for m, ps in values.items()}
