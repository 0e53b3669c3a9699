"""Evaluates a trained run on its prepared test split (paper Tables 1-3; REFERENCE.md §6).

`evaluate_run` is what `python -m csa_tf.evaluate` runs: every volume is segmented slice
by slice through its own modality's BN statistics, put back on its original voxel grid
(background outside the crop box), and scored by csa_tf.metrics (medpy 0.5.2's values)
against the whole label file as the PREP stores it, leaving out the stray islands
preparation reported (csa_tf.data.heart_region); the outputs go to the paths
`RunDir.per_volume_path` and `RunDir.summary_path` name.

PREPs made before csa_tf stored the whole label are scored, as then, against the label
inside the crop box pasted back; one line says so where a box leaves part of an image
out (summary.json's "scored_against" records it either way).
"""
import collections
import math
import os
from concurrent import futures
from typing import Callable, Deque, Dict, List, Optional

from csa_tf import metrics, threads
from csa_tf.evaluation import cross_release, tables
from csa_tf.errors import CsaInputError
from csa_tf.io import atomic
from csa_tf.data.prepared import SPLITS_FILE, PreparedDataset
from csa_tf.io.run_dir import RunDir
from csa_tf.io.run_lock import RunLock

CSV_COLUMNS = ("patient_id", "modality", "class_index", "class_name", "status") + (
    metrics.METRIC_KEYS) + metrics.COUNT_KEYS

# summary.json's "scored_against": what the ground truth of the evaluation was.
SCORED_AGAINST_FILE = "label files (as stored in the PREP), stray islands excluded"
SCORED_AGAINST_CROP = ("label inside the crop box, pasted back (a PREP made before csa_tf "
                       "stored whole label files)")


def evaluate_run(model_dir: str, data_dir: Optional[str] = None, *, split: str = "test",
                 batch_size: int = 16, workers: Optional[int] = None,
                 log: Callable[[str], None] = print) -> dict:
  """Evaluates the latest checkpoint of model_dir; returns the summary dict (as written).

  `workers` volumes are scored at a time while the next are segmented (default: the
  cores this process may use); the outputs do not depend on it.

  A PREP of another release of the run's training cohort is evaluated with a warning
  line, recorded as the summary's "cross_release_warning" (cross_release.py).

  Raises:
    CsaInputError: model_dir or PREP is missing or does not fit the run, the PREP's
      test split holds patients the run was trained on, or another process is writing
      into model_dir (csa_tf/io/run_lock.py).
  """
  run = RunDir(model_dir)
  config = run.config
  prepared = PreparedDataset.open(data_dir or config.data_dir)
  prepared.check_fits(config)
  if split == "test":
    check_no_leak(run, prepared, config)
  warning = cross_release.cross_release_warning(run, prepared)
  if warning:
    log(f"warning: {warning}")
  # It writes into the run folder (eval/): its one writer from now on, so that a
  # training under way is refused at once, not after the evaluation.
  with RunLock(model_dir, log=log):
    return _evaluate(run, prepared, split=split, batch_size=batch_size,
                     workers=workers, log=log, warning=warning)


def _evaluate(run: RunDir, prepared: PreparedDataset, *, split: str, batch_size: int,
              log: Callable[[str], None], workers: Optional[int] = None,
              warning: Optional[str] = None) -> dict:
  """`evaluate_run` after its checks, under the run folder's lock."""
  config = run.config
  # TensorFlow loads only after the cheap checks, so that they fail fast.
  segmenter = run.segmenter(batch_size=batch_size)
  checkpoint = run.checkpoint_path
  spec = prepared.spec
  rows: List[Dict] = []
  cropped_only: List[str] = []

  def collect(job) -> None:
    """Adds one scored volume's rows and logs its line (in the volumes' order)."""
    modality, index, count, patient_id, result = job.result()
    for class_index, values in result.items():
      rows.append(dict(patient_id=patient_id, modality=modality,
                       class_index=class_index, class_name=spec.class_names[class_index],
                       **values))
    dice = ", ".join(f"{spec.class_names[c]} {100 * v['dice']:.1f}"
                     for c, v in result.items())
    log(f"[{modality} {index}/{count}] {patient_id}: Dice {dice}")

  # Volumes are scored in worker threads while the next ones are segmented (the
  # distance transforms release the GIL), at most `workers` at a time so that memory
  # holds only that many volumes; results are collected in order, so the rows and log
  # lines do not depend on the number of workers.
  workers = workers or threads.usable_cores()
  pending: Deque[futures.Future] = collections.deque()
  with futures.ThreadPoolExecutor(max_workers=workers,
                                  thread_name_prefix="csa_tf-score") as pool:
    for modality in config.modalities:
      entries = prepared.entries_for(split, modality)
      if not entries:
        raise CsaInputError(f"{prepared.prep_dir}: no {split} volumes of {modality}")
      for index, entry in enumerate(entries, start=1):
        volume = prepared.load(entry)
        inputs = volume.inputs(config.in_channels)
        predicted = volume.geometry.from_slices(segmenter.labels(inputs, modality))
        reference, ignore, whole_file = volume.scoring_reference()
        if not whole_file:
          cropped_only.append(f"{modality}/{entry.patient_id}")
          if len(cropped_only) == 1:
            log(f"note: {prepared.prep_dir} was prepared before csa_tf stored whole "
                "label files: its volumes are scored against the label inside the crop "
                "box (what the box cut is not scored); prepare it again to score "
                "against the label files")
        pending.append(pool.submit(_score, modality, index, len(entries),
                                   entry.patient_id, predicted, reference, ignore,
                                   spec.num_classes, volume.spacing))
        while len(pending) >= workers:
          collect(pending.popleft())
    while pending:
      collect(pending.popleft())
  summary = metrics.summarize(rows)
  os.makedirs(run.eval_dir, exist_ok=True)
  write_csv(run.per_volume_path(split), rows)
  report = dict(dataset=spec.name, method=config.method, split=split,
                checkpoint=os.path.basename(checkpoint),
                checkpoint_step=checkpoint_step(checkpoint),
                data_dir=os.path.abspath(prepared.prep_dir),
                prep_fingerprint=prepared.fingerprint(),
                patients=prepared.patients(split, config.modalities),
                modalities=list(config.modalities),
                class_names=list(spec.class_names),
                missing_structure_policy=metrics.MISSING_STRUCTURE_POLICY,
                scored_against=(SCORED_AGAINST_CROP if cropped_only
                                else SCORED_AGAINST_FILE),
                release=prepared.release, cross_release_warning=warning,
                summary=summary)
  atomic.write_json(run.summary_path(split), json_safe(report), sort_keys=True)
  log(tables.markdown_tables(spec, config.modalities,
                             {config.method: summary}))
  return report


def _score(modality, index, count, patient_id, predicted, reference, ignore,
           num_classes, spacing):
  """One volume's metrics (a worker thread's job), with what `collect` logs."""
  result = metrics.volume_metrics(predicted, reference, ignore=ignore,
                                  num_classes=num_classes, spacing=spacing)
  return modality, index, count, patient_id, result


def checkpoint_step(checkpoint: str) -> int:
  """The training step of a checkpoint path ".../ckpt-20" (CheckpointManager's names)."""
  return int(os.path.basename(checkpoint).rsplit("-", 1)[1])


def trained_patients(run: RunDir) -> Optional[Dict[str, List[str]]]:
  """{modality: patient ids} the run trained on, or None when that is not known.

  From the run's training_data.json; for a run made before it, from the train split of
  the PREP its config names, when that folder is still there.
  """
  record = run.read_training_data()
  if record is not None:
    return record["train_patients"]
  config = run.config
  try:
    prepared = PreparedDataset.open(config.data_dir)
  except CsaInputError:
    return None
  return prepared.patients("train", config.modalities)


def check_no_leak(run: RunDir, prepared: PreparedDataset, config) -> None:
  """Refuses a test split that holds patients the run was trained on.

  Raises:
    CsaInputError: naming the PREP's splits file and the patients of each modality.
  """
  trained = trained_patients(run)
  if trained is None:
    return
  tested = prepared.patients("test", config.modalities)
  leaks = {m: sorted(set(tested[m]) & set(trained.get(m, ()))) for m in tested}
  leaks = {m: ids for m, ids in leaks.items() if ids}
  if leaks:
    listed = "; ".join(f"{m}: {', '.join(ids)}" for m, ids in leaks.items())
    raise CsaInputError(
        f"{os.path.join(prepared.prep_dir, SPLITS_FILE)}: its test patients include "
        f"patients the run in {run.path} was trained on ({listed}); evaluate on the "
        "run's own PREP or on one prepared with the same split")


def write_csv(path: str, rows: List[Dict]) -> None:
  """The per-volume CSV: CSV_COLUMNS, NaN (an "absent" class) as an empty cell."""
  atomic.write_csv(path, CSV_COLUMNS,
                   ({k: ("" if isinstance(v, float) and math.isnan(v) else v)
                     for k, v in row.items()} for row in rows))


def json_safe(value):
  """Replaces NaN/Inf by None so the JSON is standard."""
  if isinstance(value, float):
    return value if math.isfinite(value) else None
  if isinstance(value, dict):
    return {k: json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [json_safe(v) for v in value]
  return value
