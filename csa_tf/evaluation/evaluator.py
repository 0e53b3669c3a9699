r"""Evaluates a trained run on its prepared test split (paper Tables 1-3; REFERENCE.md §6).

  python -m csa_tf.evaluate --model_dir=RUN [--data_dir=PREP] [--split=test]

Segments every test volume slice by slice through its own modality's BN statistics,
pastes the prediction back into the original voxel grid (undoing the crop), computes per
class 3D Dice, Hausdorff distance in voxels (like the paper) and in mm, HD95 and ASSD, and
writes RUN/eval/per_volume.csv and RUN/eval/summary.json, then prints the table.
"""
import csv
import io
import math
import os
from typing import Callable, Dict, List, Optional


from csa_tf.configs import train_config as config_lib
from csa_tf import metrics
from csa_tf.evaluation import tables
from csa_tf.errors import CsaInputError
from csa_tf.io.nifti import write_atomically
from csa_tf.data.prepared import PreparedDataset
from csa_tf.io.run_record import write_json

EVAL_SUBDIR = "eval"
CSV_COLUMNS = ("patient_id", "modality", "class_index", "class_name", "status") + (
    metrics.METRIC_KEYS)


def check_compatible(config: config_lib.TrainConfig, prepared: PreparedDataset) -> None:
  """Raises CsaInputError when PREP cannot be evaluated with this run's networks."""
  meta = os.path.join(prepared.prep_dir, "prep_meta.json")
  if prepared.spec.name != config.dataset:
    raise CsaInputError(f"{meta}: dataset {prepared.spec.name!r}, but the run was trained "
                        f"on {config.dataset!r}")
  if prepared.spec.num_classes != config.num_classes:
    raise CsaInputError(f"{meta}: {prepared.spec.num_classes} classes, but the run has "
                        f"{config.num_classes}")
  missing = [m for m in config.modalities if m not in prepared.modalities]
  if missing:
    raise CsaInputError(f"{meta}: lacks modalities {', '.join(missing)} of the run")


def evaluate_run(model_dir: str, data_dir: Optional[str] = None, *, split: str = "test",
                 batch_size: int = 16, log: Callable[[str], None] = print) -> dict:
  """Evaluates the latest checkpoint of model_dir; returns the summary dict (as written).

  Raises:
    CsaInputError: model_dir or PREP is missing or does not fit the run.
  """
  config = config_lib.load_config(model_dir)
  prepared = PreparedDataset.open(data_dir or config.data_dir)
  check_compatible(config, prepared)
  # TensorFlow loads only after the cheap checks, so that they fail fast.
  from csa_tf.model.segmenter import SliceSegmenter  # pylint: disable=g-import-not-at-top
  from csa_tf.model.bundle import ModelBundle  # pylint: disable=g-import-not-at-top
  bundle = ModelBundle(config)
  checkpoint = bundle.restore(model_dir)
  segmenter = SliceSegmenter(bundle, batch_size=batch_size)
  spec = prepared.spec
  rows: List[Dict] = []
  for modality in config.modalities:
    entries = prepared.entries_for(split, modality)
    if not entries:
      raise CsaInputError(f"{prepared.prep_dir}: no {split} volumes of {modality}")
    for index, entry in enumerate(entries, start=1):
      volume = prepared.load(entry)
      predicted = volume.geometry.from_slices(segmenter.labels(volume.image, modality))
      result = metrics.volume_metrics(predicted, volume.original_label,
                                      num_classes=spec.num_classes, spacing=volume.spacing)
      for class_index, values in result.items():
        rows.append(dict(patient_id=entry.patient_id, modality=modality,
                         class_index=class_index, class_name=spec.class_names[class_index],
                         **values))
      dice = ", ".join(f"{spec.class_names[c]} {100 * v['dice']:.1f}"
                       for c, v in result.items())
      log(f"[{modality} {index}/{len(entries)}] {entry.patient_id}: Dice {dice}")
  summary = metrics.summarize(rows)
  out_dir = os.path.join(model_dir, EVAL_SUBDIR)
  os.makedirs(out_dir, exist_ok=True)
  write_csv(os.path.join(out_dir, "per_volume.csv" if split == "test"
                         else f"per_volume_{split}.csv"), rows)
  report = dict(dataset=spec.name, method=config.method, split=split,
                checkpoint=os.path.basename(checkpoint), modalities=list(config.modalities),
                class_names=list(spec.class_names),
                missing_structure_policy=metrics.MISSING_STRUCTURE_POLICY,
                summary=summary)
  write_json(os.path.join(out_dir, "summary.json" if split == "test"
                          else f"summary_{split}.json"), json_safe(report))
  log(tables.markdown_tables(spec, config.modalities,
                             {config.method: summary}))
  return report


def write_csv(path: str, rows: List[Dict]) -> None:
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore")
  writer.writeheader()
  for row in rows:
    writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v)
                     for k, v in row.items()})
  def write(tmp):
    with open(tmp, "w", encoding="utf-8", newline="") as f:
      f.write(buffer.getvalue())
  write_atomically(path, write)


def json_safe(value):
  """Replaces NaN/Inf by None so the JSON is standard."""
  if isinstance(value, float):
    return value if math.isfinite(value) else None
  if isinstance(value, dict):
    return {k: json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [json_safe(v) for v in value]
  return value
