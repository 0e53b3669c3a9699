r"""Trains and evaluates the six settings of Tables 1-3 on the same data and seed.

  python -m experiments.reproduce --dataset=mscmr --data_dir=PREP --output_dir=DIR \
      [--methods=single,ummkd,joint,msbn,affinity,csa] [--train_steps=N] \
      [--train_flag=--feature_base=8 ...]

Each method runs `python -m csa_tf.train` (with experiments/<dataset>.flags) and
`python -m csa_tf.evaluate` in DIR/runs/<method>; a method whose run reached
--train_steps and was evaluated is not run again, and an interrupted one resumes from its
checkpoint (experiments/runner.py, shared with experiments.study). Writes DIR/table.md and DIR/table.csv (ours beside the paper's published
numbers) and the Wilcoxon signed-rank test of CSA against each other method on
patient-level Dice (DIR/wilcoxon.csv), as in the paper's text.
"""
import math
import os
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
from experiments import runner

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


# The run folder's tests and its patient-level Dice, as experiments.study reads them.
method_done = runner.run_done
patient_dice = runner.patient_dice


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
    runner.train_and_evaluate(
        method, run_dir, data_dir=data_dir,
        train_flags=[f"--flagfile={flagfile}", f"--method={method}", f"--seed={seed}",
                     *extra_flags],
        train_steps=train_steps, new_dirs=new_dirs, refused_name=f"--method={method}")
    report = RunDir(run_dir).read_summary()
    summaries[method] = report["summary"]
    modalities = report["modalities"]
    dice[method] = patient_dice(run_dir)
  text = write_outputs(output_dir, spec, modalities, summaries, wilcoxon_rows(dice))
  print(text)
  return text


def main(argv):
  del argv
  runner.check_train_steps(FLAGS.train_steps)
  flagfile = FLAGS.flagfile_for_train or os.path.join(HERE, f"{FLAGS.dataset}.flags")
  reproduce(FLAGS.dataset, FLAGS.data_dir, FLAGS.output_dir, methods=FLAGS.methods,
            train_steps=FLAGS.train_steps, seed=FLAGS.seed, flagfile=flagfile,
            extra_flags=FLAGS.train_flag)


if __name__ == "__main__":
  cli.run(main, define_flags, required=("data_dir", "output_dir"))
