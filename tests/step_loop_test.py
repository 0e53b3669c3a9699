"""Tests of the host-wait-free step loop (csa_tf/training/step_loop.py) and the trainer's
use of it: call boundaries, the in-graph fault record, and K steps per call."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from csa_tf import losses
from csa_tf.errors import NonFiniteLossError
from csa_tf.training import step_loop
from tests.helpers import make_config, quiet


def weights(bundle):
  return [v.numpy() for net in bundle.unique_networks for v in net.weights]


def _chunks(start, train_steps, k, events):
  step, sizes = start, []
  while step < train_steps:
    size = step_loop.next_chunk(step, start=start, train_steps=train_steps,
                                steps_per_loop=k, event_every=events)
    sizes.append(size)
    step += size
  return sizes


def test_calls_end_at_the_first_step_the_events_and_the_last_step():
  # Log every 5, checkpoint every 4, no image summaries, K = 3, 11 steps.
  assert _chunks(0, 11, 3, (5, 4, 0)) == [1, 3, 1, 3, 2, 1]  # ends 1, 4, 5, 8, 10, 11
  assert _chunks(0, 6, 1, (100, 100, 0)) == [1] * 6
  # A resumed run's first step is a call of its own (its progress line times tracing).
  assert _chunks(4, 9, 8, (100, 100, 0)) == [1, 4]
  assert _chunks(0, 7, 100, (100, 100, 0)) == [1, 6]


def test_fault_record_keeps_the_first_bad_step_and_its_terms():
  record = step_loop.FaultRecord()

  @tf.function
  def step(number, dice):
    terms = {"dice_lge": dice, "ce_lge": tf.constant(0.5),
             "grad_norm_csa": tf.constant(np.inf)}  # a diagnostic: never checked
    finite = step_loop.all_finite(terms)
    record.record(number, terms, finite)
    return finite

  assert bool(step(tf.constant(1, tf.int64), tf.constant(-0.3)))
  record.raise_if_faulted("CKPT")  # nothing yet
  assert not bool(step(tf.constant(2, tf.int64), tf.constant(np.nan)))
  step(tf.constant(3, tf.int64), tf.constant(np.inf))  # later faults change nothing
  assert record.names == ("dice_lge", "ce_lge")
  with pytest.raises(NonFiniteLossError) as info:
    record.raise_if_faulted("CKPT")
  assert str(info.value) == ("non-finite loss at step 2: dice_lge=nan; the last good "
                             "checkpoint in CKPT is kept")


@pytest.mark.integration
def test_steps_per_loop_gives_the_same_run_bit_for_bit(tiny_prep, tmp_path, monkeypatch):
  from csa_tf.training.trainer import Trainer  # pylint: disable=g-import-not-at-top
  runs = {}
  # "prefetched": K=3 with the batches prefetched through prefetch_to_device, as on a
  # GPU (here to the CPU, the only device there is), consumed inside the K-step loop.
  for name, k, device in (("k1", 1, None), ("k3", 3, None),
                          ("prefetched", 3, "/device:CPU:0")):
    monkeypatch.setattr(step_loop, "input_device", lambda device=device: device)
    config = make_config(tmp_path / name, deterministic=True, train_steps=7,
                         log_every=5, steps_per_loop=k)
    trainer = Trainer(config, tiny_prep, log=quiet)
    trainer.train()
    with open(os.path.join(config.model_dir, "final_losses.json")) as f:
      runs[name] = (json.load(f), weights(trainer.bundle),
                    int(trainer.optimizer.iterations.numpy()))
  for name in ("k3", "prefetched"):
    assert runs[name][0] == runs["k1"][0] and runs[name][2] == runs["k1"][2] == 7
    for a, b in zip(runs["k1"][1], runs[name][1]):
      np.testing.assert_array_equal(a, b)


def test_no_gpu_leaves_the_batches_where_they_are():
  dataset = tf.data.Dataset.range(3)
  device = step_loop.input_device()
  assert device is None or "GPU" in device
  assert step_loop.prefetch_to_device(dataset, None) is dataset
  prefetched = step_loop.prefetch_to_device(dataset, "/device:CPU:0")
  assert [int(x) for x in prefetched] == [0, 1, 2]


@pytest.mark.integration
def test_a_fault_between_host_reads_is_named_and_stops_the_updates(tiny_prep, tmp_path,
                                                                   monkeypatch):
  from csa_tf.training.trainer import Trainer  # pylint: disable=g-import-not-at-top
  config = make_config(tmp_path / "run", method="msbn", train_steps=9, log_every=100,
                       checkpoint_every=6, steps_per_loop=4, bn_recalibration_batches=0)
  trainer = Trainer(config, tiny_prep, log=quiet)
  real_dice = losses.dice_loss

  def dice_nan_at_step_3(probs, labels, **kwargs):
    value = real_dice(probs, labels, **kwargs)
    # trainer.step counts the steps done: 2 during the 3rd step, finite again after it.
    return tf.where(tf.equal(trainer.step, 2), tf.constant(np.nan, value.dtype), value)

  monkeypatch.setattr(losses, "dice_loss", dice_nan_at_step_3)
  with pytest.raises(NonFiniteLossError, match=r"^non-finite loss at step 3: "
                     r"dice_lge=nan, dice_bssfp=nan, total=nan; the last good checkpoint in "):
    trainer.train()
  # Calls of steps 1 and 2-5, then the checkpoint at 6 finds the fault: steps 3-6 were
  # run but not applied, and nothing was written.
  assert int(trainer.optimizer.iterations.numpy()) == 2
  checkpoints = os.path.join(config.model_dir, "checkpoints")
  assert not os.path.isdir(checkpoints) or not os.listdir(checkpoints)
  assert not os.path.exists(os.path.join(config.model_dir, "final_losses.json"))
