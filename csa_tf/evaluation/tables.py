"""Results in the layout of the paper's Tables 1-3, with the published numbers.

Table 1 (MS-CMRSeg): Dice (%) and Hausdorff distance per class for LGE and bSSFP.
Tables 2 and 3 (MM-WHS): Dice (%) and Hausdorff distance per class for CT and MRI.
The paper's HD values are square roots of integers, i.e. voxel units (REFERENCE.md §6).
"""
import math
from typing import Dict, List, Mapping, Sequence, Tuple

from csa_tf.configs.train_config import METHOD_LABELS
from csa_tf.configs.datasets import DatasetSpec

MODALITY_TITLES = {"lge": "LGE", "bssfp": "bSSFP", "t2": "T2", "ct": "CT", "mr": "MRI"}

# Published values (paper Tables 1-3): method -> modality -> metric -> per-class values in
# the dataset's class order (LV, myo, RV; LVM, LAC, LVC, AA).
PAPER = {
    "mscmr": {
        "single": {"lge": {"dice": (90.17, 80.31, 86.51), "hd_vox": (6.63, 3.61, 25.10)},
                   "bssfp": {"dice": (92.89, 85.11, 88.76), "hd_vox": (47.80, 2.45, 11.58)}},
        "ummkd": {"lge": {"dice": (90.41, 80.48, 86.99), "hd_vox": (5.00, 3.46, 8.66)},
                  "bssfp": {"dice": (93.38, 85.69, 89.91), "hd_vox": (3.00, 2.24, 5.39)}},
        "joint": {"lge": {"dice": (90.22, 80.91, 86.61), "hd_vox": (4.00, 6.08, 5.12)},
                  "bssfp": {"dice": (92.74, 85.19, 89.12), "hd_vox": (3.16, 2.45, 5.00)}},
        "msbn": {"lge": {"dice": (90.23, 80.81, 86.08), "hd_vox": (5.75, 3.61, 5.48)},
                 "bssfp": {"dice": (93.46, 85.57, 89.91), "hd_vox": (3.00, 2.24, 5.10)}},
        "affinity": {"lge": {"dice": (90.65, 81.18, 87.27), "hd_vox": (5.00, 3.16, 9.72)},
                     "bssfp": {"dice": (93.54, 85.93, 89.93),
                               "hd_vox": (3.00, 2.24, 5.10)}},
        "csa": {"lge": {"dice": (91.89, 83.39, 87.66), "hd_vox": (4.12, 3.00, 5.00)},
                "bssfp": {"dice": (93.48, 85.72, 90.64), "hd_vox": (3.00, 2.24, 4.12)}},
    },
    "mmwhs": {
        "single": {"ct": {"dice": (78.17, 85.84, 93.07, 81.08),
                          "hd_vox": (5.00, 10.63, 5.00, 13.38)},
                   "mr": {"dice": (87.56, 90.29, 91.66, 94.26),
                          "hd_vox": (8.50, 15.03, 4.47, 6.00)}},
        "ummkd": {"ct": {"dice": (78.73, 83.47, 93.29, 81.41),
                         "hd_vox": (5.83, 14.40, 6.01, 13.97)},
                  "mr": {"dice": (87.89, 91.68, 91.88, 95.32),
                         "hd_vox": (10.05, 8.94, 4.47, 3.61)}},
        "joint": {"ct": {"dice": (77.92, 83.96, 93.51, 80.08),
                         "hd_vox": (5.39, 14.32, 4.24, 13.30)},
                  "mr": {"dice": (84.03, 88.41, 90.92, 94.67),
                         "hd_vox": (6.40, 40.17, 9.84, 4.47)}},
        "msbn": {"ct": {"dice": (78.82, 86.07, 94.40, 80.57),
                        "hd_vox": (5.00, 10.63, 4.24, 13.93)},
                 "mr": {"dice": (87.57, 92.30, 91.88, 96.02),
                        "hd_vox": (4.12, 9.06, 4.47, 3.00)}},
        "affinity": {"ct": {"dice": (78.63, 87.13, 94.35, 79.49),
                            "hd_vox": (6.00, 10.63, 4.89, 15.13)},
                     "mr": {"dice": (85.31, 91.06, 91.84, 92.24),
                            "hd_vox": (10.05, 12.08, 5.00, 67.09)}},
        "csa": {"ct": {"dice": (79.27, 87.46, 94.22, 81.42),
                       "hd_vox": (5.39, 10.30, 4.24, 15.80)},
                "mr": {"dice": (88.89, 91.18, 92.53, 96.07),
                       "hd_vox": (4.12, 9.49, 4.12, 2.83)}},
    },
}

METRIC_TITLES = {"dice": "Dice (%)", "hd_vox": "HD (voxels)", "hd_mm": "HD (mm)",
                 "hd95_mm": "HD95 (mm)", "assd_mm": "ASSD (mm)"}


def table_groups(spec: DatasetSpec, modalities: Sequence[str]) -> List[List[Tuple[str, str]]]:
  """Tables as lists of (metric, modality) column groups, in the paper's layout."""
  if spec.name == "mscmr":
    return [[("dice", m) for m in modalities] + [("hd_vox", m) for m in modalities]]
  return [[("dice", m) for m in modalities], [("hd_vox", m) for m in modalities]]


def summary_value(summary: Mapping, modality: str, class_name: str, metric: str) -> float:
  """A mean from a metrics.summarize() result (Dice in %), NaN if missing."""
  try:
    value = summary[modality][class_name][metric]["mean"]
  except KeyError:
    return math.nan
  return 100.0 * value if metric == "dice" else value


def markdown_tables(spec: DatasetSpec, modalities: Sequence[str],
                    rows: Dict[str, Mapping], *, paper_rows: bool = False) -> str:
  """Markdown tables: one row per entry of rows {method key (or any label): summary}.

  Method keys are shown as the paper's row names (METHOD_LABELS). With paper_rows, a
  "[paper]" row with the published values follows each method's row.
  """
  out = []
  for groups in table_groups(spec, modalities):
    header = ["Method"]
    for metric, modality in groups:
      header += [f"{MODALITY_TITLES.get(modality, modality)} {METRIC_TITLES[metric]} {name}"
                 for name in spec.foreground_names]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, summary in rows.items():
      label = METHOD_LABELS.get(key, key)
      cells = [label]
      for metric, modality in groups:
        cells += [_fmt(summary_value(summary, modality, name, metric))
                  for name in spec.foreground_names]
      lines.append("| " + " | ".join(cells) + " |")
      published = PAPER.get(spec.name, {}).get(key)
      if paper_rows and published:
        cells = [f"{label} [paper]"]
        for metric, modality in groups:
          values = published.get(modality, {}).get(metric)
          cells += ([_fmt(v) for v in values] if values
                    else ["-"] * len(spec.foreground_names))
        lines.append("| " + " | ".join(cells) + " |")
    out.append("\n".join(lines))
  return "\n\n".join(out) + "\n"


def _fmt(value: float) -> str:
  return "-" if value is None or not math.isfinite(value) else f"{value:.2f}"
