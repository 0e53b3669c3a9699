"""What experiments.study writes: its rows, its mean ± std table, paired tests and figure.

Pure functions of the runs' per-volume rows, so they are tested without training.
"""
import math
import warnings
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from scipy import stats

from csa_tf.metrics import DISTANCE_KEYS

# One row per entry, seed, volume and class (OUT/study.csv).
CSV_COLUMNS = ("method", "seed", "modality", "patient_id", "class_name", "dice"
               ) + DISTANCE_KEYS + ("status",)
# The settings every entry is compared with, when the study has them.
REFERENCES = ("msbn", "single")
# Named in study.md beside every p value.
TEST_NAME = "Wilcoxon signed-rank test (two-sided), pairs of patient-level Dice"


def _number(text: str) -> float:
  return math.nan if text in ("", None) else float(text)


def seed_means(rows: Sequence[Mapping], metric: str = "dice"
               ) -> Dict[Tuple[str, str, str], Dict[int, float]]:
  """{(entry, modality, class_name): {seed: mean of metric over that seed's volumes}}.

  Volumes whose metric is empty (an "absent" class, or a distance of a missed class)
  are left out of the mean, as csa_tf.metrics.summarize does.
  """
  values: Dict[Tuple[str, str, str], Dict[int, List[float]]] = {}
  for row in rows:
    value = _number(row[metric])
    if math.isnan(value):
      continue
    key = (row["method"], row["modality"], row["class_name"])
    values.setdefault(key, {}).setdefault(int(row["seed"]), []).append(value)
  return {key: {seed: float(np.mean(v)) for seed, v in by_seed.items()}
          for key, by_seed in values.items()}


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
  """Mean and sample standard deviation (ddof=1; 0 for one value) over seeds."""
  values = np.asarray(list(values), np.float64)
  if not len(values):
    return math.nan, math.nan
  return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def patient_dice(rows: Sequence[Mapping]) -> Dict[Tuple[str, str], Dict[Tuple[int, str],
                                                                         float]]:
  """{(entry, modality): {(seed, patient_id): mean Dice over the patient's classes}}
  (classes absent from both masks left out)."""
  values: Dict[Tuple[str, str], Dict[Tuple[int, str], List[float]]] = {}
  for row in rows:
    dice = _number(row["dice"])
    if math.isnan(dice):
      continue
    key = (row["method"], row["modality"])
    values.setdefault(key, {}).setdefault((int(row["seed"]), row["patient_id"]),
                                          []).append(dice)
  return {key: {pair: float(np.mean(v)) for pair, v in pairs.items()}
          for key, pairs in values.items()}


def paired_tests(rows: Sequence[Mapping], entries: Sequence[str],
                 modalities: Sequence[str],
                 references: Sequence[str] = REFERENCES) -> List[Dict]:
  """Each entry against each of references (those in the study; default MSBN and
  Single), per modality.

  Pairs are (seed, patient): the same patient's Dice under the same seed, so that n is
  patients x seeds. p is NaN where every difference is zero or there is no pair.

  Returns:
    Rows {entry, reference, modality, n, mean_entry, mean_reference, p_value}.
  """
  dice = patient_dice(rows)
  out = []
  for reference in references:
    if reference not in entries:
      continue
    for entry in entries:
      if entry == reference:
        continue
      for modality in modalities:
        ours = dice.get((entry, modality), {})
        theirs = dice.get((reference, modality), {})
        pairs = sorted(set(ours) & set(theirs))
        a = np.array([ours[p] for p in pairs])
        b = np.array([theirs[p] for p in pairs])
        p_value = _wilcoxon(a, b)
        out.append(dict(entry=entry, reference=reference, modality=modality,
                        n=len(pairs), mean_entry=float(np.mean(a)) if pairs else math.nan,
                        mean_reference=float(np.mean(b)) if pairs else math.nan,
                        p_value=p_value))
  return out


def _wilcoxon(a: np.ndarray, b: np.ndarray) -> float:
  """Two-sided p of the signed-rank test; NaN where it is undefined (no pair, or every
  difference zero)."""
  if not len(a):
    return math.nan
  with warnings.catch_warnings():
    # Tiny n (a test study): scipy warns of its normal approximation; p is still its.
    warnings.simplefilter("ignore", RuntimeWarning)
    try:
      return float(stats.wilcoxon(a, b).pvalue)
    except ValueError:
      return math.nan


def _cell(values: Optional[Mapping[int, float]], scale: float = 1.0) -> str:
  if not values:
    return "-"
  mean, std = mean_std(values.values())
  return f"{scale * mean:.2f} ± {scale * std:.2f}"


def markdown(rows: Sequence[Mapping], entries: Sequence[str], modalities: Sequence[str],
             class_names: Sequence[str], seeds: Sequence[int], *, title: str,
             references: Sequence[str] = REFERENCES) -> str:
  """study.md: Dice and HD (voxels) as mean ± std over seeds, then the paired tests of
  each entry against each of references."""
  dice = seed_means(rows, "dice")
  hd = seed_means(rows, "hd_vox")
  lines = [f"# {title}", "",
           f"Mean ± standard deviation over seeds {', '.join(map(str, seeds))} of each "
           "seed's mean over test volumes (sample std, ddof 1). Dice in %, HD in voxels.",
           ""]
  for name, table, scale in (("Dice (%)", dice, 100.0), ("HD (voxels)", hd, 1.0)):
    for modality in modalities:
      lines += [f"## {name}, {modality}", "",
                "| entry | " + " | ".join(class_names) + " |",
                "|---" * (len(class_names) + 1) + "|"]
      for entry in entries:
        cells = [_cell(table.get((entry, modality, c)), scale) for c in class_names]
        lines.append(f"| {entry} | " + " | ".join(cells) + " |")
      lines.append("")
  tests = paired_tests(rows, entries, modalities, references)
  if tests:
    lines += ["## Paired tests", "", f"{TEST_NAME}: n pairs = patients x seeds.", "",
              "| entry | against | modality | n | entry Dice (%) | reference Dice (%) | p |",
              "|---|---|---|---|---|---|---|"]
    for t in tests:
      lines.append(f"| {t['entry']} | {t['reference']} | {t['modality']} | {t['n']} | "
                   f"{100 * t['mean_entry']:.2f} | {100 * t['mean_reference']:.2f} | "
                   f"{t['p_value']:.3g} |")
    lines.append("")
  return "\n".join(lines)


def figure(rows: Sequence[Mapping], entries: Sequence[str], modalities: Sequence[str],
           path: str) -> str:
  """study.png: per modality, each entry's mean foreground Dice with its std over seeds."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  from csa_tf.io import atomic  # pylint: disable=g-import-not-at-top
  per_patient = patient_dice(rows)
  fig, axes = plt.subplots(1, len(modalities), squeeze=False,
                           figsize=(1.2 + 0.9 * len(entries) * len(modalities), 3.4))
  for ax, modality in zip(axes[0], modalities):
    means, stds = [], []
    for entry in entries:
      by_seed: Dict[int, List[float]] = {}
      for (seed, _), value in per_patient.get((entry, modality), {}).items():
        by_seed.setdefault(seed, []).append(value)
      mean, std = mean_std([np.mean(v) for v in by_seed.values()])
      means.append(100 * mean)
      stds.append(100 * std)
    ax.bar(range(len(entries)), means, yerr=stds, capsize=3, color="#4c72b0")
    ax.set_xticks(range(len(entries)))
    ax.set_xticklabels(entries, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("mean foreground Dice (%)")
    ax.set_title(modality.upper(), fontsize=10)
  fig.tight_layout()
  atomic.write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=110))
  plt.close(fig)
  return path
