"""The unpaired training loop: one batch per modality per step, Eq. 5, Adam, checkpoints.

A run lives in `model_dir`: checkpoints/ (model, optimizer, step; resumed automatically),
config.json and versions.json (the debug record), train/ (TensorBoard events).
"""
import json
import os
import time
from typing import Callable, Dict, Optional

import keras
import numpy as np
import tensorflow as tf

from csa_tf import bn_recalibration
from csa_tf import config as config_lib
from csa_tf import data
from csa_tf import objective
from csa_tf import run_record
from csa_tf.errors import CsaInputError, NonFiniteLossError
from csa_tf.model_bundle import CHECKPOINT_SUBDIR, ModelBundle
from csa_tf.prepared import PreparedDataset


def learning_rate_schedule(config: config_lib.TrainConfig):
  """Paper Sec. 3: 1e-4 decayed by 5% every 1000 iterations (staircase)."""
  return keras.optimizers.schedules.ExponentialDecay(
      config.learning_rate, decay_steps=config.lr_decay_steps,
      decay_rate=config.lr_decay_rate, staircase=True)


def check_model_dir(model_dir: str, config: config_lib.TrainConfig) -> None:
  """Refuses to resume a model dir whose run had another architecture or data.

  Raises:
    CsaInputError: naming config.json and the fields that differ.
  """
  path = os.path.join(model_dir, config_lib.CONFIG_FILE)
  if not os.path.isfile(path):
    return
  previous = config_lib.load_config(model_dir).to_json()
  current = config.to_json()
  differing = [f"{name} {previous.get(name)!r} -> {current[name]!r}"
               for name in config_lib.ARCHITECTURE_FIELDS
               if previous.get(name) != current[name]]
  if differing:
    raise CsaInputError(f"{path}: this model dir was trained with other settings "
                        f"({'; '.join(differing)}); use a new --model_dir")


class Trainer:
  """Trains the networks of one setting on a prepared dataset."""

  def __init__(self, config: config_lib.TrainConfig, prepared: PreparedDataset, *,
               log: Callable[[str], None] = print):
    self.config = config
    self.prepared = prepared
    self.log = log
    if config.deterministic:
      tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(config.seed)
    self.bundle = ModelBundle(config).build()
    self.optimizer = keras.optimizers.Adam(learning_rate=learning_rate_schedule(config))
    # Built before the first step: lazy building retraces the step (REFERENCE.md §7).
    self.optimizer.build(self.bundle.trainable_variables)
    self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    # Dropout seed states as direct attributes (not a list: REFERENCE.md §7).
    rng_states = {f"rng_state_{i}": v
                  for i, v in enumerate(self.bundle.rng_state_variables)}
    self.checkpoint = tf.train.Checkpoint(step=self.step, optimizer=self.optimizer,
                                          **self.bundle.checkpoint_items(), **rng_states)
    self.manager = tf.train.CheckpointManager(
        self.checkpoint, os.path.join(config.model_dir, CHECKPOINT_SUBDIR),
        max_to_keep=config.keep_checkpoints)
    self._train_step = tf.function(self._step, jit_compile=config.jit_compile)
    self._recalibration_batches = None

  def _step(self, batches):
    with tf.GradientTape() as tape:
      total, terms = objective.compute_losses(self.bundle, batches, self.config,
                                              training=True)
    variables = self.bundle.trainable_variables
    gradients = tape.gradient(total, variables)
    self.optimizer.apply_gradients(zip(gradients, variables))
    terms = dict(terms, total=total)
    return terms

  def restore_latest(self) -> int:
    """Restores the latest checkpoint if there is one; returns the step reached."""
    if self.manager.latest_checkpoint:
      self.checkpoint.restore(self.manager.latest_checkpoint).assert_existing_objects_matched()
      self.log(f"resumed from {self.manager.latest_checkpoint} at step "
               f"{int(self.step.numpy())}")
    return int(self.step.numpy())

  def recalibration_batches(self):
    """The fixed training batches BN statistics are re-estimated on (seeded, cached)."""
    if self._recalibration_batches is None:
      count = self.config.bn_recalibration_batches
      stream = data.unpaired_batches(
          self.prepared, self.config.modalities, batch_size=self.config.batch_size,
          seed=self.config.seed + 1, labelled_only=self.config.labelled_slices_only)
      self._recalibration_batches = list(stream.take(count)) if count else []
    return self._recalibration_batches

  def save(self) -> str:
    """Re-estimates BN statistics (see bn_recalibration) and writes a checkpoint."""
    bn_recalibration.recalibrate_batch_norm(self.bundle, self.config,
                                            self.recalibration_batches())
    return self.manager.save(checkpoint_number=int(self.step.numpy()))

  def dataset(self, start_step: int) -> tf.data.Dataset:
    return data.unpaired_batches(
        self.prepared, self.config.modalities, batch_size=self.config.batch_size,
        seed=self.config.seed, start_step=start_step, augment=self.config.augment,
        labelled_only=self.config.labelled_slices_only)

  def train(self) -> Dict[str, float]:
    """Runs (or resumes) training to config.train_steps; returns the last loss terms.

    Raises:
      NonFiniteLossError: a loss term became NaN/Inf; the last good checkpoint is kept.
    """
    config = self.config
    check_model_dir(config.model_dir, config)
    run_record.write_run_record(config.model_dir, config)
    start = self.restore_latest()
    if start >= config.train_steps:
      self.log(f"already trained to step {start} (--train_steps={config.train_steps}); "
               "nothing to do")
      return {}
    writer = tf.summary.create_file_writer(os.path.join(config.model_dir, "train"))
    schedule = learning_rate_schedule(config)
    last: Dict[str, float] = {}
    window_start, window_steps = time.perf_counter(), 0
    run_start = time.perf_counter()
    self.log(f"training {config.method} on {','.join(config.modalities)} from step {start} "
             f"to {config.train_steps} (batch {config.batch_size} per modality)")
    for batches in self.dataset(start).take(config.train_steps - start):
      terms = self._train_step(batches)
      step = int(self.step.assign_add(1).numpy())
      last = {name: float(value) for name, value in terms.items()}
      bad = [name for name, value in last.items() if not np.isfinite(value)]
      if bad:
        raise NonFiniteLossError(
            f"non-finite loss at step {step}: {', '.join(f'{n}={last[n]}' for n in bad)}; "
            f"the last good checkpoint in {self.manager.directory} is kept")
      window_steps += 1
      if step % config.log_every == 0 or step == config.train_steps or step == start + 1:
        elapsed = time.perf_counter() - window_start
        rate = window_steps / elapsed if elapsed > 0 else float("nan")
        lr = float(schedule(step - 1))
        self.log(progress_line(step, config.train_steps, last, lr, rate,
                               first=step == start + 1))
        with writer.as_default(step=step):
          for name, value in last.items():
            tf.summary.scalar(f"loss/{name}", value)
          tf.summary.scalar("learning_rate", lr)
          tf.summary.scalar("steps_per_second", rate)
        writer.flush()
        window_start, window_steps = time.perf_counter(), 0
      if step % config.checkpoint_every == 0 and step < config.train_steps:
        self.save()
    path = self.save()
    writer.close()
    self.log(f"finished step {int(self.step.numpy())} in "
             f"{format_duration(time.perf_counter() - run_start)}; checkpoint {path}")
    run_record.write_json(os.path.join(config.model_dir, "final_losses.json"),
                          dict(step=int(self.step.numpy()), **last))
    return last


def progress_line(step: int, total_steps: int, terms: Dict[str, float], lr: float,
                  steps_per_second: float, *, first: bool = False) -> str:
  """One progress line: step, every loss term, learning rate, speed and ETA.

  The first step of a run includes tracing the step function, so it reports that time
  instead of a speed.
  """
  shown = " ".join(f"{name} {value:.4g}" for name, value in terms.items()
                   if name != "total")
  if first:
    speed = f"first step (tracing) {1 / steps_per_second:.1f} s"
  else:
    eta = (total_steps - step) / steps_per_second if steps_per_second > 0 else float("nan")
    speed = f"{steps_per_second:.2f} steps/s | ETA {format_duration(eta)}"
  return (f"step {step}/{total_steps} | loss {terms.get('total', float('nan')):.4f} | "
          f"{shown} | lr {lr:.2e} | {speed}")


def format_duration(seconds: float) -> str:
  if not np.isfinite(seconds):
    return "?"
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def read_final_losses(model_dir: str) -> Optional[dict]:
  path = os.path.join(model_dir, "final_losses.json")
  if not os.path.isfile(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)
