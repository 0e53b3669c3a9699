"""The unpaired training loop: one batch per modality per step, Eq. 5, Adam, checkpoints.

A run lives in `model_dir` (csa_tf/io/run_dir.py: checkpoints, resumed automatically,
the debug record, TensorBoard events, the final loss terms). The host side of the loop
is csa_tf/training/step_loop.py. Under --strategy the step runs on every replica on its
share of each modality's batch, with the global batch's losses and BN statistics
(csa_tf/training/distribution.py); with --mixed_precision the networks compute in
bfloat16 or float16 while variables and losses stay float32.
"""
import contextlib
import functools
import shutil
import time
from typing import Callable, Dict, Optional

import keras
import tensorflow as tf

from csa_tf import interrupts
from csa_tf.training import bn_recalibration
from csa_tf.configs import train_config as config_lib
from csa_tf.data import label_scarcity
from csa_tf.data import pipeline as data
from csa_tf.training import distribution
from csa_tf.training import objective
from csa_tf.training import checkpoints
from csa_tf.training import resume_checks
from csa_tf.training import step_loop
from csa_tf.io import run_record
from csa_tf.training import summary_images
from csa_tf.training import term_gradients
from csa_tf.errors import Interrupted, param
from csa_tf.io.run_dir import RunDir
from csa_tf.io.run_lock import RunLock
from csa_tf.model.bundle import ModelBundle
from csa_tf.data.prepared import PreparedDataset

# The step function's output key for image summary tensors (absent when they are off).
IMAGES_KEY = "_images"
# A replica step's output key for its (global) finiteness decision.
_FINITE_KEY = "_finite"


def learning_rate_schedule(config: config_lib.TrainConfig):
  """Paper Sec. 3: 1e-4 decayed by 5% every 1000 iterations (staircase)."""
  return keras.optimizers.schedules.ExponentialDecay(
      config.learning_rate, decay_steps=config.lr_decay_steps,
      decay_rate=config.lr_decay_rate, staircase=True)


class Trainer:
  """Trains the networks of one setting on a prepared dataset.

  Args:
    config: the run's config.
    prepared: the opened PREP folder.
    log: where progress lines go.
    strategy: a tf.distribute strategy; default: `distribution.make_strategy` of
      config.strategy (MultiWorkerMirroredStrategy must exist before any other TF
      operation, so `csa_tf.train` creates it first and passes it in).

  Raises:
    CsaInputError: the batch size does not split evenly over the replicas.
    ConfigError: --labelled_train_patients asks for more patients than the PREP has
      (see `label_scarcity.train_patients`).
  """

  def __init__(self, config: config_lib.TrainConfig, prepared: PreparedDataset, *,
               log: Callable[[str], None] = print,
               strategy: Optional[tf.distribute.Strategy] = None):
    self.config = config
    self.prepared = prepared
    self.distributed = config.strategy != "default"
    self.strategy = strategy or distribution.make_strategy(config.strategy)
    self.num_replicas = self.strategy.num_replicas_in_sync
    distribution.check_batch_size(config.batch_size, self.num_replicas)
    # {modality: patients} under label scarcity, else None (every training patient).
    self.train_patients = label_scarcity.train_patients(
        prepared, config.modalities, dict(config.labelled_train_patients))
    self.chief = distribution.is_chief(self.strategy)
    if self.chief:
      self.log = log
    else:
      prefix = f"[worker {distribution.worker_id(self.strategy)}] "
      self.log = lambda message: log(prefix + message)
    if config.deterministic:
      tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(config.seed)
    with self._scope():
      self.bundle = ModelBundle(config, mixed_precision=config.mixed_precision,
                                synchronized_bn=self.distributed).build()
      optimizer = keras.optimizers.Adam(learning_rate=learning_rate_schedule(config))
      if config.mixed_precision == "fp16":
        # float16 gradients underflow without loss scaling; Keras 3's optimizer wrapper
        # scales dynamically (scale_loss() in the step, unscaling in apply_gradients).
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
      self.optimizer = optimizer
      # Built before the first step: lazy building retraces the step (REFERENCE.md §7).
      self.optimizer.build(self.bundle.trainable_variables)
      self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
      self.fault = step_loop.FaultRecord()
      self.latest = step_loop.LatestTerms()
    # Dropout seed states as direct attributes (not a list: REFERENCE.md §7).
    rng_states = {f"rng_state_{i}": v
                  for i, v in enumerate(self.bundle.rng_state_variables)}
    self.checkpoint = tf.train.Checkpoint(step=self.step, optimizer=self.optimizer,
                                          **self.bundle.checkpoint_items(), **rng_states)
    # Every worker saves (saving may need all of them), but only the chief into
    # model_dir; the others into a folder of their own that is removed at the end.
    self.output_dir = (distribution.non_chief_dir(config.model_dir, self.strategy)
                       or config.model_dir)
    self.manager = tf.train.CheckpointManager(
        self.checkpoint, RunDir(self.output_dir).checkpoint_dir,
        max_to_keep=config.keep_checkpoints)
    self._with_images = config.image_summary_every > 0
    step = self._distributed_step if self.distributed else self._step
    jit = {} if self.distributed else {"jit_compile": config.jit_compile}
    self._train_step = tf.function(step, **jit)
    # Up to --steps_per_loop steps per call, from the input iterator (see step_loop).
    self._train_steps = tf.function(functools.partial(self._steps, step))
    # The step with the per-term gradient norms, a function of its own that log steps
    # run: off, it is never traced and costs nothing.
    self._diagnostic_step = None
    if config.log_term_gradients:
      self._diagnostic_step = tf.function(
          functools.partial(step, with_term_gradients=True), **jit)
    self._recalibration_batches = None

  def _scope(self):
    return self.strategy.scope() if self.distributed else contextlib.nullcontext()

  def replica_gradients(self, batches, *, with_term_gradients: bool = False):
    """Gradients and loss terms of one replica's share of a step (or the whole step).

    On R > 1 replicas the losses are those of the global batch (batch sums all-reduced,
    see csa_tf/training/distribution.py) and the gradients are those of loss / R, so that their
    sum over replicas, which the optimizer applies, is the global batch's gradient.

    with_term_gradients (decided when the step is traced) adds the global batch's
    `term_gradients` norms, from the same forward pass (the tape is then persistent).

    Returns:
      (gradients, terms, images): gradients of `bundle.trainable_variables` (scaled by
      the loss scale under fp16), the loss terms with "total", and the image summary
      tensors of `summary_images.step_outputs` (None when image summaries are off).
    """
    batch_sum = distribution.replica_sum if self.distributed else None
    with tf.GradientTape(persistent=with_term_gradients) as tape:
      logits, features = objective.forward(self.bundle, batches, self.config,
                                           training=True, with_features=self._with_images)
      total, terms = objective.losses_from_outputs(self.bundle, batches, logits, features,
                                                   self.config, batch_sum=batch_sum)
      loss = total / self.num_replicas if self.num_replicas > 1 else total
      if self.config.mixed_precision == "fp16":
        loss = self.optimizer.scale_loss(loss)
    gradients = tape.gradient(loss, self.bundle.trainable_variables)
    diagnostics = {}
    if with_term_gradients:
      diagnostics = self._term_gradient_norms(tape, terms)
      del tape
    terms = dict(terms, **diagnostics)
    if self.config.mixed_precision != "fp16":
      # Checked like the loss terms: a finite loss with NaN gradients must not reach a
      # checkpoint. (Under fp16 the loss-scale optimizer skips overflowing steps itself.)
      terms["grad_norm"] = tf.linalg.global_norm(gradients)
    images = None
    if self._with_images:
      images = summary_images.step_outputs(batches, logits, features, self.config,
                                           batch_sum=batch_sum)
    return gradients, dict(terms, total=total), images

  def _term_gradient_norms(self, tape, terms) -> Dict[str, tf.Tensor]:
    """`term_gradients.norms_from_tape` of the step's own tape, differentiated as the
    step's loss is (loss / R, fp16 loss scaling) and summed over replicas."""
    fp16 = self.config.mixed_precision == "fp16"
    loss_scale = self.optimizer.dynamic_scale if fp16 else None
    factor = 1.0 / self.num_replicas
    if fp16:
      factor = factor * tf.cast(loss_scale, tf.float32)
    return term_gradients.norms_from_tape(
        tape, terms, self.config, term_gradients.shared_kernels(self.bundle),
        factor=factor, unscale=loss_scale,
        reduce=distribution.replica_sum if self.distributed else None)

  def train_step(self, batches) -> Dict[str, tf.Tensor]:
    """Runs one optimizer step, the compiled one `train` runs, without the bookkeeping.

    The step counts itself in `step` and records a fault (step_loop.FaultRecord);
    `train` also logs and checkpoints. For callers that drive their own loop on fixed
    batches (an overfitting check, a comparison of strategies).

    Args:
      batches: {modality: (images, labels)} of the global batch, or under a
        distribution strategy the per-replica shards of `distribute_global_batches`.

    Returns:
      The loss terms with "total" (and the image summary tensors under IMAGES_KEY when
      image summaries are on).
    """
    return self._train_step(batches)

  def _step(self, batches, with_term_gradients: bool = False):
    """One step in the graph: gradients, applied only while every step so far was
    finite (step_loop.FaultRecord); records a fault and counts the step."""
    gradients, terms, images = self.replica_gradients(
        batches, with_term_gradients=with_term_gradients)
    finite = step_loop.all_finite(terms)

    def apply():
      self._apply(gradients)
      return tf.constant(True)
    tf.cond(tf.logical_and(finite, self.fault.clear()), apply, lambda: tf.constant(False))
    self.fault.record(self.step + 1, terms, finite)
    self.step.assign_add(1)
    if images is not None:
      terms[IMAGES_KEY] = images
    return terms

  def _apply(self, gradients):
    self.optimizer.apply_gradients(zip(gradients, self.bundle.trainable_variables))

  def _replica_gradients(self, batches, with_term_gradients: bool):
    """A replica's share of a distributed step, before applying: (gradients, terms
    with the replicas' common finiteness under _FINITE_KEY, images)."""
    gradients, terms, images = self.replica_gradients(
        batches, with_term_gradients=with_term_gradients)
    # One decision for all replicas (grad_norm is each replica's own share).
    bad = distribution.replica_sum(
        tf.cast(tf.logical_not(step_loop.all_finite(terms)), tf.float32))
    terms[_FINITE_KEY] = tf.cast(tf.equal(bad, 0.0), tf.float32)
    return gradients, terms, images

  def _distributed_step(self, per_replica_batches, with_term_gradients: bool = False):
    gradients, outputs, images = self.strategy.run(
        functools.partial(self._replica_gradients,
                          with_term_gradients=with_term_gradients),
        args=(per_replica_batches,))
    # Every replica holds the same (global) loss values; the mean is that value. The
    # exception is grad_norm, the norm of a replica's share of the gradient: its mean
    # still turns NaN or Inf with any replica's, which is what it is checked for.
    terms = {name: self.strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
             for name, value in outputs.items()}
    finite = terms.pop(_FINITE_KEY) > 0.5

    # The whole replica function inside the branch: the optimizer's all-reduce cannot
    # sit under control flow within one.
    def apply():
      self.strategy.run(self._apply, args=(gradients,))
      return tf.constant(True)
    tf.cond(tf.logical_and(finite, self.fault.clear()), apply, lambda: tf.constant(False))
    self.fault.record(self.step + 1, terms, finite)
    self.step.assign_add(1)
    if images is not None:
      # Replica 0 holds the first slices of the global batch; the affinities are global.
      terms[IMAGES_KEY] = distribution.first_replica(self.strategy, images)
    return terms

  def _steps(self, step, iterator, num_steps):
    """`num_steps` (a tensor: no retracing) steps from `iterator`, every one in the
    same loop body; the last one's terms go to `latest`."""
    for _ in tf.range(num_steps):
      terms = step(next(iterator))
      terms.pop(IMAGES_KEY, None)
      self.latest.record(terms)

  def restore_latest(self) -> int:
    """Restores the latest checkpoint if there is one; returns the step reached.

    Every worker resumes from the chief's checkpoints in model_dir (a folder all workers
    must see).
    """
    latest = tf.train.latest_checkpoint(RunDir(self.config.model_dir).checkpoint_dir)
    if latest:
      self.checkpoint.restore(latest).assert_existing_objects_matched()
      self.log(f"resumed from {latest} at step {int(self.step.numpy())}")
    return int(self.step.numpy())

  def recalibration_batches(self):
    """The fixed training batches BN statistics are re-estimated on (seeded, cached)."""
    if self._recalibration_batches is None:
      count = self.config.bn_recalibration_batches
      stream = self._batches(seed=self.config.seed + 1)
      self._recalibration_batches = list(stream.take(count)) if count else []
    return self._recalibration_batches

  def save(self) -> str:
    """Re-estimates BN statistics (see bn_recalibration) and writes a checkpoint.

    Raises:
      NonFiniteLossError: a step has faulted (nothing is written).
    """
    self.fault.raise_if_faulted(self.manager.directory)
    # Under a strategy, in its cross-replica context: every worker re-estimates the
    # same statistics from the same batches on its own (synchronised BN falls back to
    # local moments outside a replica context), and assigning them updates every copy.
    # The batches' data variables must not become distributed: made outside the scope.
    batches = self.recalibration_batches()
    with self._scope():
      bn_recalibration.recalibrate_batch_norm(self.bundle, self.config, batches)
    return checkpoints.write_checkpoint(self.manager, int(self.step.numpy()))

  def dataset(self, start_step: int) -> tf.data.Dataset:
    """Global batches {modality: (images, labels)} from step start_step on."""
    return self._batches(seed=self.config.seed, start_step=start_step,
                         augment=self.config.augment)

  def _batches(self, *, seed: int, start_step: int = 0, augment: bool = False):
    """The run's unpaired training stream (slices, or 3D patches) from one seed."""
    return data.unpaired_batches(
        self.prepared, self.config.modalities, batch_size=self.config.batch_size,
        seed=seed, start_step=start_step, augment=augment,
        labelled_only=self.config.labelled_slices_only,
        input_slices=self.config.in_channels, patients=self.train_patients,
        patch_depth=self.config.input_patch_depth)

  def train(self) -> Dict[str, float]:
    """Runs (or resumes) training to config.train_steps; returns the last loss terms.

    The chief holds the run folder's lock throughout (csa_tf/io/run_lock.py); the
    other workers of multi_worker training write only into folders of their own.

    Raises:
      CsaInputError: another process is writing into model_dir (its lock is held).
      NonFiniteLossError: a loss term became NaN/Inf; the last good checkpoint is kept.
      Interrupted: SIGINT or SIGTERM arrived; the step under way was finished and
        checkpointed, and the same call resumes from it.
    """
    lock = (RunLock(self.config.model_dir, log=self.log) if self.chief
            else contextlib.nullcontext())
    with lock:
      return self._train()

  def _train(self) -> Dict[str, float]:
    """`train` under the run folder's lock."""
    config = self.config
    run = RunDir(self.output_dir)
    resumed = RunDir(config.model_dir).is_run()
    previous = RunDir(config.model_dir).load_config() if resumed else None
    resume_checks.check_model_dir(config.model_dir, config)
    data_record = resume_checks.training_data_record(self.prepared, config)
    resume_checks.check_training_data(RunDir(config.model_dir), data_record)
    run_record.write_run_record(self.output_dir, config)
    if run.read_training_data() is None:
      run.write_training_data(data_record)
    start = self.restore_latest()
    run.append_config_history({
        "time": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "event": "resumed" if resumed else "started", "step": start,
        "changed": {name: list(values) for name, values in
                    (config.changes_from(previous, on_resume=True) if previous
                     else {}).items()}})
    if start >= config.train_steps:
      self.log(f"already trained to step {start} "
               f"({param('train_steps', config.train_steps)}); "
               "nothing to do")
      return {}
    if self.chief:
      writer = tf.summary.create_file_writer(RunDir(config.model_dir).tensorboard_dir)
    else:
      writer = tf.summary.create_noop_writer()
    schedule = learning_rate_schedule(config)
    run_start = time.perf_counter()
    placement = ""
    if self.distributed:
      placement = (f", {self.num_replicas} replicas of "
                   f"{config.batch_size // self.num_replicas} ({config.strategy})")
    precision = "" if config.mixed_precision == "off" else f", {config.mixed_precision}"
    self.log(f"training {config.method} on {','.join(config.modalities)} from step {start} "
             f"to {config.train_steps} (batch {config.batch_size} per modality"
             f"{placement}{precision})")
    batches_stream = self.dataset(start).take(config.train_steps - start)
    if self.distributed:
      local_stream = batches_stream
      batches_stream = distribution.distribute_global_batches(
          self.strategy, lambda: local_stream, global_batch_size=config.batch_size)
    else:
      batches_stream = step_loop.prefetch_to_device(batches_stream,
                                                    step_loop.input_device())
    # A first Ctrl-C or SIGTERM lets the step under way finish and be checkpointed.
    with interrupts.StopRequest() as stop:
      last = self._loop(batches_stream, start, writer, schedule, stop)
      path = self.save()
      writer.close()
    if stop.requested and int(self.step.numpy()) < config.train_steps:
      raise Interrupted(
          f"interrupted by {interrupts.signal_name(stop.signum)} at step "
          f"{int(self.step.numpy())}; checkpoint {path}; run the same command again to "
          "resume", stop.signum)
    self.log(f"finished step {int(self.step.numpy())} in "
             f"{step_loop.format_duration(time.perf_counter() - run_start)}; checkpoint {path}")
    RunDir(self.output_dir).write_final_losses(dict(step=int(self.step.numpy()), **last))
    if not self.chief:
      shutil.rmtree(self.output_dir, ignore_errors=True)
    return last

  def _loop(self, batches_stream, start: int, writer, schedule,
            stop: interrupts.StopRequest) -> Dict[str, float]:
    """Steps through batches_stream (see `train` and step_loop); returns the last
    loss terms read."""
    config = self.config
    last: Dict[str, float] = {}
    iterator = iter(batches_stream)
    events = (config.log_every, config.checkpoint_every, config.image_summary_every)
    window_start, window_steps = time.perf_counter(), 0
    step = start
    while step < config.train_steps:
      count = step_loop.next_chunk(step, start=start, train_steps=config.train_steps,
                                   steps_per_loop=config.steps_per_loop,
                                   event_every=events)
      end = step + count
      logged = step_loop.is_log_step(end, start=start, train_steps=config.train_steps,
                                     log_every=config.log_every)
      # A step whose outputs the host needs (diagnostics, images) runs on its own, in a
      # function that returns them; every other step runs in the K-step loop body.
      single = None
      if logged and self._diagnostic_step is not None:
        single = self._diagnostic_step
      elif self._with_images and end % config.image_summary_every == 0:
        single = self._train_step
      plain = count - 1 if single is not None else count
      if plain:
        self._train_steps(iterator, tf.constant(plain))
      terms = single(next(iterator)) if single is not None else None
      step = end
      window_steps += count
      images = terms.pop(IMAGES_KEY, None) if terms is not None else None
      if logged:
        self.fault.raise_if_faulted(self.manager.directory)
        last = ({name: float(value) for name, value in terms.items()}
                if terms is not None else self.latest.read())
        elapsed = time.perf_counter() - window_start
        rate = window_steps / elapsed if elapsed > 0 else float("nan")
        lr = float(schedule(step - 1))
        self.log(step_loop.progress_line(step, config.train_steps, last, lr, rate,
                               first=step == start + 1))
        with writer.as_default(step=step):
          for name, value in last.items():
            if name.startswith(term_gradients.PREFIX):
              tf.summary.scalar(f"grad_norm/{name[len(term_gradients.PREFIX):]}", value)
            else:
              tf.summary.scalar(f"loss/{name}", value)
          tf.summary.scalar("learning_rate", lr)
          tf.summary.scalar("steps_per_second", rate)
        writer.flush()
        window_start, window_steps = time.perf_counter(), 0
      if images is not None and step % config.image_summary_every == 0:
        self.fault.raise_if_faulted(self.manager.directory)
        with writer.as_default(step=step):
          summary_images.write_image_summaries(images, config)
        writer.flush()
      if stop.requested:
        break
      if step % config.checkpoint_every == 0 and step < config.train_steps:
        self.save()
    return last
