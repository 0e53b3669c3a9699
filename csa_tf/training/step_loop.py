"""The host side of training: steps run in the graph, the host reads back only when due.

A step never waits on the host. Finiteness is checked in the graph (`FaultRecord`): the
first step with a non-finite loss term or gradient norm is recorded with its values and
is not applied, nor is any step after it; the loop raises at its next host read (a log
step, a checkpoint, the end) with the message naming that step. The loss values are
fetched on log steps only, and --steps_per_loop=K runs up to K steps per `tf.function`
call (`next_chunk` ends a call early where the host has work: a log, an image summary,
a checkpoint, the last step). On a GPU, the next batches are copied to the device while
a step runs (`prefetch_to_device`).
"""
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from csa_tf.errors import NonFiniteLossError
from csa_tf.training import term_gradients

# Loss terms one step can hold (Dice and CE per modality, CSA/KD/affinity, L2, total and
# grad_norm): well within this for any number of modalities a run can have.
_CAPACITY = 64


def input_device() -> Optional[str]:
  """The GPU a single-device run steps on, where its batches are prefetched; None on a
  CPU-only machine (the batches are already where the step runs)."""
  gpus = tf.config.list_logical_devices("GPU")
  return gpus[0].name if gpus else None


def prefetch_to_device(dataset: tf.data.Dataset, device: Optional[str]) -> tf.data.Dataset:
  """`dataset` with its next 2 elements copied to `device` ahead of the step (None: as
  is). Under tf.distribute, `distribution.distribute_global_batches` does the same."""
  if device is None:
    return dataset
  return dataset.apply(tf.data.experimental.prefetch_to_device(device, buffer_size=2))


def checked_names(terms: Dict[str, tf.Tensor]) -> Tuple[str, ...]:
  """The terms the finiteness check covers, in the step's order: every loss term and
  grad_norm.

  The per-term gradient norms of --log_term_gradients are diagnostics, not losses: a
  non-finite total gradient shows in grad_norm, and under fp16 a term's scaled gradient
  may overflow where the optimizer skips the step. Names starting with "_" are the
  step's other outputs (image summary tensors).
  """
  return tuple(name for name in terms
               if not name.startswith((term_gradients.PREFIX, "_")))


def all_finite(terms: Dict[str, tf.Tensor]) -> tf.Tensor:
  """Scalar bool: every checked term of one step is finite."""
  values = [tf.cast(terms[name], tf.float32) for name in checked_names(terms)]
  return tf.reduce_all(tf.math.is_finite(tf.stack(values)))


class FaultRecord:
  """The first non-finite step of a run and its loss terms, kept in graph variables.

  Create it where the step's variables are created (under a strategy, in its scope).
  `step` stays 0 until a step's terms are not all finite; it then holds that step's
  number (1-based) and `values` its checked terms, and never changes again.
  """

  def __init__(self):
    self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="fault_step")
    self.values = tf.Variable(tf.zeros([_CAPACITY], tf.float32), trainable=False,
                              name="fault_values")
    self.names: Tuple[str, ...] = ()

  def clear(self) -> tf.Tensor:
    """Scalar bool: no step has faulted yet."""
    return tf.equal(self.step, 0)

  def record(self, step: tf.Tensor, terms: Dict[str, tf.Tensor],
             finite: tf.Tensor) -> None:
    """In the graph: keeps `step` and its terms if they are not `finite` and no
    earlier step faulted. Sets `names` (in Python, when traced)."""
    self.names = checked_names(terms)
    values = tf.stack([tf.cast(terms[name], tf.float32) for name in self.names])
    values = tf.pad(values, [[0, _CAPACITY - len(self.names)]])
    first = tf.logical_and(tf.logical_not(finite), self.clear())
    self.step.assign(tf.where(first, tf.cast(step, tf.int64), self.step))
    self.values.assign(tf.where(first, values, self.values))

  def raise_if_faulted(self, checkpoint_dir: str) -> None:
    """On the host: raises NonFiniteLossError naming the faulted step and its
    non-finite terms (today's message); returns if no step faulted."""
    step = int(self.step.numpy())
    if not step:
      return
    values = self.values.numpy()[:len(self.names)]
    bad = [(name, float(value)) for name, value in zip(self.names, values)
           if not np.isfinite(value)]
    raise NonFiniteLossError(
        f"non-finite loss at step {step}: "
        f"{', '.join(f'{name}={value}' for name, value in bad)}; "
        f"the last good checkpoint in {checkpoint_dir} is kept")


class LatestTerms:
  """The last step's checked loss terms, kept in a graph variable for the host to read
  on log steps (a K-step call returns nothing, so that every step but the host's
  event steps runs in the same loop body, whatever K: see `next_chunk`)."""

  def __init__(self):
    self.values = tf.Variable(tf.zeros([_CAPACITY], tf.float32), trainable=False,
                              name="latest_terms")
    self.names: Tuple[str, ...] = ()

  def record(self, terms: Dict[str, tf.Tensor]) -> None:
    """In the graph: keeps the checked terms. Sets `names` (in Python, when traced)."""
    self.names = checked_names(terms)
    values = tf.stack([tf.cast(terms[name], tf.float32) for name in self.names])
    self.values.assign(tf.pad(values, [[0, _CAPACITY - len(self.names)]]))

  def read(self) -> Dict[str, float]:
    """On the host: {name: value} of the last recorded step."""
    values = self.values.numpy()
    return {name: float(value) for name, value in zip(self.names, values)}


def is_log_step(step: int, *, start: int, train_steps: int, log_every: int) -> bool:
  """Steps with a progress line: every log_every-th, the first of a run, the last."""
  return step % log_every == 0 or step == train_steps or step == start + 1


def next_chunk(step: int, *, start: int, train_steps: int, steps_per_loop: int,
               event_every: Sequence[int]) -> int:
  """How many steps the next `tf.function` call runs, after `step` steps done.

  At most steps_per_loop, and ending on the next step where the host has work: the
  first step of the run, a multiple of any of `event_every` (log, checkpoint and image
  summary intervals; 0 entries are ignored) or the last step.

  >>> next_chunk(0, start=0, train_steps=10, steps_per_loop=4, event_every=(5,))
  1
  >>> next_chunk(1, start=0, train_steps=10, steps_per_loop=4, event_every=(5,))
  4
  >>> next_chunk(5, start=0, train_steps=10, steps_per_loop=4, event_every=(5,))
  4
  """
  first = step + 1
  if first == start + 1:
    return 1
  last = min(step + steps_per_loop, train_steps)
  for every in event_every:
    if every > 0:
      due = (first + every - 1) // every * every  # the first multiple >= first
      last = min(last, due)
  return last - step


def progress_line(step: int, total_steps: int, terms: Dict[str, float], lr: float,
                  steps_per_second: float, *, first: bool = False) -> str:
  """One progress line: step, every loss term, learning rate, speed and ETA.

  The first step of a run includes tracing the step function, so it reports that time
  instead of a speed.
  """
  shown = " ".join(f"{name} {value:.4g}" for name, value in terms.items()
                   if name != "total" and not name.startswith(term_gradients.PREFIX))
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
