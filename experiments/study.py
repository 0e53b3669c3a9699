r"""Trains and evaluates settings and named variants over several seeds, and compares them.

  python -m experiments.study --data_dir=PREP --output_dir=OUT \
      [--methods=single,msbn,csa] [--seeds=0,1,2] [--train_steps=N] \
      [--variant=NAME ...] [--variant_flag=NAME:--flag=value ...] [--train_flag=...]

Every entry (each of --methods, and each --variant, a CSA run with its --variant_flag
flags unless they name another --method) runs once per seed in OUT/runs/<entry>/seed<k>
through experiments/runner.py, as experiments.reproduce runs its six settings: a run
already trained to --train_steps and evaluated is not run again, an interrupted one
resumes from its checkpoint, so the same command can be rerun after a stop. Training
uses experiments/<dataset>.flags (--flagfile_for_train to change), then --train_flag
flags, then the entry's own. Writes OUT/study.csv (one row per entry, seed, test volume
and class), OUT/study.md (mean ± std over seeds per class and modality; each entry
against MSBN and Single, or those of --against, a Wilcoxon signed-rank test over
patients and seeds) and
OUT/study.png (Dice per entry with error bars).

A variant may set its own step count (--variant_flag=NAME:--train_steps=K), e.g. to give
3D runs the wall time of the 2D runs they are compared with; --train_steps sets the rest.
"""
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple

from absl import flags

from csa_tf import cli
from csa_tf.configs import train_config as config_lib
from csa_tf.errors import CsaInputError
from csa_tf.io import atomic
from experiments import runner
from experiments import study_tables

FLAGS = flags.FLAGS
HERE = os.path.dirname(os.path.abspath(__file__))
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")
_STEPS = "--train_steps="


def define_flags():
  """Defines this command's flags (only when run as a command, never on import)."""
  flags.DEFINE_string("data_dir", None, "Prepared data (PREP).")
  flags.DEFINE_string("output_dir", None, "Where runs and the study's outputs go.")
  flags.DEFINE_list("methods", ["single", "msbn", "csa"], "Settings to run.")
  flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds; every entry runs once per seed.")
  flags.DEFINE_integer("train_steps", None, "Override the flagfile's --train_steps.")
  flags.DEFINE_multi_string("variant", [], "A named variant (repeatable); its flags "
                            "come from --variant_flag.")
  flags.DEFINE_multi_string("variant_flag", [], "NAME:--flag=value, a csa_tf.train flag "
                            "of variant NAME (repeatable, so list values keep commas).")
  flags.DEFINE_multi_string("train_flag", [], "Extra flag passed to every csa_tf.train "
                            "(repeatable), e.g. --train_flag=--feature_base=8.")
  flags.DEFINE_list("against", None, "Entries every other entry is tested against "
                    "(each one in the study); default msbn and single, where in it.")
  flags.DEFINE_string("flagfile_for_train", None,
                      "Training flagfile; default experiments/<the PREP's dataset>.flags.")


def parse_entries(methods: Sequence[str], variants: Sequence[str],
                  variant_flags: Sequence[str]) -> List[Tuple[str, List[str]]]:
  """[(entry name, its own csa_tf.train flags)]: the methods, then the variants.

  Raises:
    CsaInputError: an unknown method, a bad or repeated name, a --variant_flag that is
      not NAME:--flag or names no --variant, or nothing to run.
  """
  entries: Dict[str, List[str]] = {}
  for method in methods:
    if method not in config_lib.METHODS:
      raise CsaInputError(f"--methods: unknown method {method!r}; expected some of "
                          f"{', '.join(config_lib.METHOD_ORDER)}")
    if method in entries:
      raise CsaInputError(f"--methods: {method} is listed twice")
    entries[method] = [f"--method={method}"]
  variant_flags_of: Dict[str, List[str]] = {name: [] for name in variants}
  for name in variants:
    if not _NAME.fullmatch(name):
      raise CsaInputError(f"--variant={name}: use lower-case letters, digits, '_', '-' "
                          "or '.' (it names a folder)")
    if name in entries or list(variants).count(name) > 1:
      raise CsaInputError(f"--variant={name}: the name is used twice (methods and "
                          "variants share one namespace)")
  for item in variant_flags:
    name, sep, flag = item.partition(":")
    if not sep or not flag.startswith("--"):
      raise CsaInputError(f"--variant_flag={item}: expected NAME:--flag=value")
    if name not in variant_flags_of:
      raise CsaInputError(f"--variant_flag={item}: no --variant={name}")
    steps = flag[len(_STEPS):]
    if flag.startswith(_STEPS) and not (steps.isdigit() and int(steps) > 0):
      raise CsaInputError(f"--variant_flag={item}: --train_steps must be a positive "
                          "integer")
    variant_flags_of[name].append(flag)
  for name, own in variant_flags_of.items():
    has_method = any(f.startswith("--method=") for f in own)
    entries[name] = ([] if has_method else ["--method=csa"]) + own
  if not entries:
    raise CsaInputError("--methods and --variant are empty; name a setting or a variant")
  return list(entries.items())


def parse_seeds(seeds: Sequence[str]) -> List[int]:
  """The seeds as integers, each once.

  Raises:
    CsaInputError: a seed that is not a non-negative integer, a repeat, or none.
  """
  parsed = []
  for seed in seeds:
    if not str(seed).strip().isdigit():
      raise CsaInputError(f"--seeds: {seed!r} is not a non-negative integer")
    parsed.append(int(seed))
  if not parsed or len(set(parsed)) != len(parsed):
    raise CsaInputError(f"--seeds={','.join(map(str, seeds))}: list each seed once")
  return parsed


def run_study(data_dir: str, output_dir: str, *, entries: List[Tuple[str, List[str]]],
              seeds: List[int], train_steps, flagfile: str,
              extra_flags: Sequence[str],
              against: Optional[Sequence[str]] = None) -> str:
  """Runs every entry for every seed (skipping finished runs); writes and returns
  study.md's text, whose paired tests test each entry against each of `against`
  (None: MSBN and Single, those in the study).

  Raises:
    CsaInputError: a bad PREP or flagfile, an `against` entry not in the study, or a
      run that training refused to start.
  """
  from csa_tf.data.prepared import PreparedDataset  # pylint: disable=g-import-not-at-top
  names = [name for name, _ in entries]
  unknown = [name for name in against or () if name not in names]
  if unknown:
    raise CsaInputError(f"--against: {', '.join(unknown)} is not an entry of the study "
                        f"({', '.join(names)})")
  prepared = PreparedDataset.open(data_dir)
  if not os.path.isfile(flagfile):
    raise CsaInputError(f"{flagfile}: training flagfile not found")
  new_dirs = [d for d in (output_dir, os.path.join(output_dir, "runs"))
              if not os.path.isdir(d)]
  os.makedirs(output_dir, exist_ok=True)
  rows: List[Dict] = []
  modalities: List[str] = []
  for name, own_flags in entries:
    # The runner passes the step count last and checks a run's last checkpoint against
    # it, so a variant's own --train_steps goes there rather than among its flags.
    own_steps = [int(f[len(_STEPS):]) for f in own_flags if f.startswith(_STEPS)]
    own_flags = [f for f in own_flags if not f.startswith(_STEPS)]
    for seed in seeds:
      run_dir = os.path.join(output_dir, "runs", name, f"seed{seed}")
      runner.train_and_evaluate(
          f"{name} seed {seed}", run_dir, data_dir=data_dir,
          train_flags=[f"--flagfile={flagfile}", f"--seed={seed}", *extra_flags,
                       *own_flags],
          train_steps=own_steps[-1] if own_steps else train_steps,
          new_dirs=new_dirs + [os.path.join(output_dir, "runs", name)])
      for row in runner.per_volume_rows(run_dir):
        rows.append(dict(row, method=name, seed=seed))
        if row["modality"] not in modalities:
          modalities.append(row["modality"])
  atomic.write_csv(os.path.join(output_dir, "study.csv"), study_tables.CSV_COLUMNS, rows)
  text = study_tables.markdown(rows, names, modalities, prepared.spec.foreground_names,
                               seeds, title=f"Study on {data_dir}",
                               references=against or study_tables.REFERENCES)
  atomic.write_text(os.path.join(output_dir, "study.md"), text)
  study_tables.figure(rows, names, modalities, os.path.join(output_dir, "study.png"))
  print(text)
  return text


def main(argv):
  del argv
  runner.check_train_steps(FLAGS.train_steps)
  entries = parse_entries(FLAGS.methods, FLAGS.variant, FLAGS.variant_flag)
  seeds = parse_seeds(FLAGS.seeds)
  flagfile = FLAGS.flagfile_for_train
  if flagfile is None:
    from csa_tf.data.prepared import PreparedDataset  # pylint: disable=g-import-not-at-top
    dataset = PreparedDataset.open(FLAGS.data_dir).spec.name
    flagfile = os.path.join(HERE, f"{dataset}.flags")
  run_study(FLAGS.data_dir, FLAGS.output_dir, entries=entries, seeds=seeds,
            train_steps=FLAGS.train_steps, flagfile=flagfile, extra_flags=FLAGS.train_flag,
            against=FLAGS.against)


if __name__ == "__main__":
  cli.run(main, define_flags, required=("data_dir", "output_dir"))
