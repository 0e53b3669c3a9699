r"""Trains and evaluates the six settings of Tables 1-3 on the same data and seed.

  python -m experiments.reproduce --dataset=mscmr --data_dir=PREP --output_dir=DIR \
      [--methods=single,ummkd,joint,msbn,affinity,csa] [--train_steps=N] \
      [--train_flag=--feature_base=8 ...]

Each method runs `python -m csa_tf.train` (with experiments/<dataset>.flags) and
`python -m csa_tf.evaluate` in DIR/runs/<method>; a method whose run reached
--train_steps and was evaluated is not run again, and an interrupted one resumes from its
checkpoint. Writes DIR/table.md and DIR/table.csv (ours beside the paper's published
numbers) and the Wilcoxon signed-rank test of CSA against each other method on
patient-level Dice (DIR/wilcoxon.csv), as in the paper's text.
"""
import csv
import math
import os
import shutil
import subprocess
import sys
import time
from typing import Dict, List, Mapping

import numpy as np
from absl import flags
from scipy import stats

from csa_tf.configs import train_config as config_lib
from csa_tf.configs import datasets
from csa_tf.evaluation import tables
from csa_tf import cli
from csa_tf.errors import CsaInputError
from csa_tf.io import atomic
from csa_tf.io.run_dir import RunDir

FLAGS = flags.FLAGS
HERE = os.path.dirname(os.path.abspath(__file__))


def define_flags():
  """Defines this command's flags (only when run as a command, never on import)."""
  flags.DEFINE_enum("dataset", "mscmr", list(datasets.DATASETS),
                    "Dataset (Table 1 or 2-3).")
  flags.DEFINE_string("data_dir", None, "Prepared data (PREP) of that dataset.")
  flags.DEFINE_string("output_dir", None, "Where runs and tables go.")
  flags.DEFINE_list("methods", list(config_lib.METHOD_ORDER), "Settings to run.")
  flags.DEFINE_integer("train_steps", None, "Override the flagfile's --train_steps.")
  flags.DEFINE_integer("seed", 0, "Seed shared by every method.")
  flags.DEFINE_string("flagfile_for_train", None,
                      "Training flagfile; default experiments/<dataset>.flags.")
  flags.DEFINE_multi_string("train_flag", [], "Extra flag passed to csa_tf.train "
                            "(repeatable), e.g. --train_flag=--feature_base=8.")


class CommandFailed(CsaInputError):
  """A csa_tf command run by reproduce failed; `last_line` is its last output line."""

  def __init__(self, message: str, last_line: str):
    super().__init__(message)
    self.last_line = last_line


def run_logged(command: List[str], log_path: str) -> None:
  """Runs a command, teeing its output to log_path.

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


def method_done(run_dir: str, train_steps: int) -> bool:
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


def patient_dice(run_dir: str) -> Dict[str, Dict[str, float]]:
  """{modality: {patient_id: mean foreground Dice}} from a run's per-volume CSV."""
  values: Dict[str, Dict[str, List[float]]] = {}
  with open(RunDir(run_dir).per_volume_path(), encoding="utf-8") as f:
    for row in csv.DictReader(f):
      if row["dice"] == "":
        continue  # "absent": the class is in neither mask (metrics policy)
      values.setdefault(row["modality"], {}).setdefault(row["patient_id"], []).append(
          float(row["dice"]))
  return {m: {p: float(np.mean(v)) for p, v in ps.items()} for m, ps in values.items()}


def wilcoxon_rows(dice: Mapping[str, Mapping[str, Mapping[str, float]]],
                  reference: str = "csa") -> List[Dict]:
  """Wilcoxon signed-rank test of `reference` against each other method, per modality."""
  rows = []
  if reference not in dice:
    return rows
  for method, by_modality in dice.items():
    if method == reference:
      continue
    for modality, ours in dice[reference].items():
      theirs = by_modality.get(modality, {})
      patients = sorted(set(ours) & set(theirs))
      a = np.array([ours[p] for p in patients])
      b = np.array([theirs[p] for p in patients])
      try:
        p_value = float(stats.wilcoxon(a, b).pvalue) if len(patients) else math.nan
      except ValueError:
        p_value = math.nan  # every difference is zero: the test is undefined
      rows.append(dict(reference=reference, method=method, modality=modality,
                       patients=len(patients), mean_dice_reference=float(np.mean(a)),
                       mean_dice_method=float(np.mean(b)), p_value=p_value))
  return rows


def write_outputs(output_dir: str, spec, modalities, summaries, wilcoxon) -> str:
  labelled = {m: summaries[m] for m in config_lib.METHOD_ORDER if m in summaries}
  markdown = tables.markdown_tables(spec, modalities, labelled, paper_rows=True)
  lines = [f"# Tables on {output_dir}", "",
           "Rows are ours; each '[paper]' row holds the published values. Dice in %, HD in "
           "voxels (paper convention).", "", markdown, "",
           "## Wilcoxon signed-rank test on patient-level Dice (CSA vs each method)", "",
           "| method | modality | patients | CSA mean Dice | method mean Dice | p |",
           "|---|---|---|---|---|---|"]
  for row in wilcoxon:
    lines.append(f"| {row['method']} | {row['modality']} | {row['patients']} | "
                 f"{100 * row['mean_dice_reference']:.2f} | "
                 f"{100 * row['mean_dice_method']:.2f} | {row['p_value']:.3g} |")
  text = "\n".join(lines) + "\n"
  atomic.write_text(os.path.join(output_dir, "table.md"), text)
  csv_lines = ["method,source,modality,metric,class,value"]
  for method, summary in labelled.items():
    for metric in ("dice", "hd_vox", "hd_mm", "hd95_mm", "assd_mm"):
      for modality in modalities:
        for index, name in enumerate(spec.foreground_names):
          value = tables.summary_value(summary, modality, name, metric)
          csv_lines.append(f"{method},ours,{modality},{metric},{name},{value:.4f}")
          paper = tables.PAPER[spec.name].get(method, {}).get(modality, {}).get(metric)
          if paper:
            csv_lines.append(f"{method},paper,{modality},{metric},{name},{paper[index]}")
  atomic.write_text(os.path.join(output_dir, "table.csv"), "\n".join(csv_lines) + "\n")
  w_lines = ["reference,method,modality,patients,mean_dice_reference,mean_dice_method,"
             "p_value"] + [",".join(str(r[k]) for k in (
                 "reference", "method", "modality", "patients", "mean_dice_reference",
                 "mean_dice_method", "p_value")) for r in wilcoxon]
  atomic.write_text(os.path.join(output_dir, "wilcoxon.csv"), "\n".join(w_lines) + "\n")
  return text


def reproduce(dataset: str, data_dir: str, output_dir: str, *, methods: List[str],
              train_steps, seed: int, flagfile: str, extra_flags: List[str]) -> str:
  """Runs every method (skipping finished ones) and writes the tables; returns Markdown."""
  from csa_tf.data.prepared import PreparedDataset  # pylint: disable=g-import-not-at-top
  spec = datasets.get_spec(dataset)
  PreparedDataset.open(data_dir, dataset=dataset)
  if not methods:
    raise CsaInputError("--methods is empty; name one or more of "
                        f"{', '.join(config_lib.METHOD_ORDER)}")
  for method in methods:
    if method not in config_lib.METHODS:
      raise CsaInputError(f"--methods: unknown method {method!r}; expected some of "
                          f"{', '.join(config_lib.METHOD_ORDER)}")
  if not os.path.isfile(flagfile):
    raise CsaInputError(f"{flagfile}: training flagfile not found")
  new_dirs = [d for d in (output_dir, os.path.join(output_dir, "runs"))
              if not os.path.isdir(d)]
  os.makedirs(output_dir, exist_ok=True)
  summaries, dice = {}, {}
  modalities = None
  for method in methods:
    run_dir = os.path.join(output_dir, "runs", method)
    fresh = not os.path.isdir(run_dir)
    os.makedirs(run_dir, exist_ok=True)
    train_command = [sys.executable, "-m", "csa_tf.train", f"--flagfile={flagfile}",
                     f"--data_dir={data_dir}", f"--model_dir={run_dir}",
                     f"--method={method}", f"--seed={seed}"] + list(extra_flags)
    if train_steps:
      train_command.append(f"--train_steps={train_steps}")
    config_steps = train_steps
    start = time.perf_counter()
    if config_steps and method_done(run_dir, config_steps):
      print(f"== {method}: finished earlier, not retrained", flush=True)
    else:
      print(f"== {method}: training in {run_dir}", flush=True)
      log_path = os.path.join(run_dir, "reproduce.log")
      try:
        run_logged(train_command, log_path)
      except CommandFailed as error:
        if fresh and not RunDir(run_dir).is_run():
          # Training refused to start (a bad --train_flag, say): leave no folder that
          # holds only this log; the error line already says why.
          _remove_new_run(run_dir, new_dirs)
          raise CsaInputError(f"csa_tf.train refused to start --method={method}: "
                              f"{error.last_line}") from None
        raise
      run_logged([sys.executable, "-m", "csa_tf.evaluate", f"--model_dir={run_dir}",
                  f"--data_dir={data_dir}"], log_path)
      print(f"== {method}: done in {time.perf_counter() - start:.0f} s", flush=True)
    report = RunDir(run_dir).read_summary()
    summaries[method] = report["summary"]
    modalities = report["modalities"]
    dice[method] = patient_dice(run_dir)
  text = write_outputs(output_dir, spec, modalities, summaries, wilcoxon_rows(dice))
  print(text)
  return text


def _remove_new_run(run_dir: str, new_dirs: List[str]) -> None:
  """Removes a run folder this invocation made, and the parents it made if now empty."""
  shutil.rmtree(run_dir, ignore_errors=True)
  for folder in reversed(new_dirs):
    try:
      os.rmdir(folder)  # Only when empty: other methods' runs stay.
    except OSError:
      break


def main(argv):
  del argv
  if FLAGS.train_steps is not None and FLAGS.train_steps < 1:
    raise CsaInputError(f"--train_steps={FLAGS.train_steps}: must be a positive integer")
  flagfile = FLAGS.flagfile_for_train or os.path.join(HERE, f"{FLAGS.dataset}.flags")
  reproduce(FLAGS.dataset, FLAGS.data_dir, FLAGS.output_dir, methods=FLAGS.methods,
            train_steps=FLAGS.train_steps, seed=FLAGS.seed, flagfile=flagfile,
            extra_flags=FLAGS.train_flag)


if __name__ == "__main__":
  cli.run(main, define_flags, required=("data_dir", "output_dir"))
