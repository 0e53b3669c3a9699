"""Tests for tf.distribute training: shards, a 2-replica step, two workers on loopback."""
import json
import os
import socket

import numpy as np
import pytest
import tensorflow as tf

from csa_tf.training import distribution
from csa_tf.errors import CsaInputError
from tests import helpers


def test_shards_of_each_pipeline_cover_its_replicas_in_order():
  steps = tf.data.Dataset.range(3).map(
      lambda s: {"lge": (tf.fill([8, 2], s) * 100 + tf.range(8, dtype=tf.int64)[:, None],
                         tf.zeros([8], tf.int64))})
  # 4 replicas over 2 workers; worker 1 serves replicas 2 and 3.
  context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1,
                                       num_replicas_in_sync=4)
  shards = [e["lge"][0].numpy()[:, 0] for e in distribution.shard_global_batches(
      steps, global_batch_size=8, input_context=context)]
  assert [list(s) for s in shards] == [[4, 5], [6, 7], [104, 105], [106, 107],
                                       [204, 205], [206, 207]]


def test_batch_size_must_split_over_replicas():
  assert distribution.check_batch_size(8, 4) == 2
  with pytest.raises(CsaInputError,
                     match=r"^batch_size=6 \(per modality\) must be a multiple of "
                     "the 4 replicas") as info:
    distribution.check_batch_size(6, 4)
  # The library names the field; csa_tf.train spells it as its flag.
  assert info.value.render(lambda field: f"--{field}").startswith("--batch_size=6 ")
  with pytest.raises(CsaInputError, match="TF_CONFIG"):
    old = os.environ.pop("TF_CONFIG", None)
    try:
      distribution.make_strategy("multi_worker")
    finally:
      if old is not None:
        os.environ["TF_CONFIG"] = old


@pytest.mark.integration
def test_mirrored_step_on_two_devices_equals_single_device_step(tiny_prep, tmp_path):
  # A subprocess: the CPU is split into two logical devices before TF initialises.
  result = helpers.run_command("tests.distribution_check",
                               f"--prep_dir={tiny_prep.prep_dir}",
                               f"--model_dir={tmp_path}", "--method=csa")
  check = json.loads(result.stdout.strip().splitlines()[-1])
  assert check["replicas"] == 2 and check["shard_sizes"] == [2, 2]
  assert check["shards_equal_global_batch"]
  assert {"dice_lge", "ce_bssfp", "csa", "l2", "total"} <= set(check["terms"])
  # Every trainable variable has a gradient: the 33 shared conv kernels and gamma and
  # beta of 31 BN sites x 2 modalities: 33 + 2 * 2 * 31 = 157, as README "Multiple GPUs"
  # states.
  assert check["gradients_compared"] == check["trainable_variables"] == 157
  # float64 networks: equal up to rounding (see tests/distribution_check.py). Measured
  # on 2 CPU cores: terms 3e-15, gradients 3e-14, Adam's moments 6e-14, BN statistics
  # 5e-15 relative; the README states the bounds below.
  for key in ("max_term_difference", "max_gradient_difference",
              "max_optimizer_state_difference", "max_bn_statistics_difference"):
    assert check[key] < 1e-12, (key, check)
  # Measured 6e-12: Adam's first step moves a weight by lr * g / (|g| + epsilon), which
  # scales the rounding of a near-zero gradient element by up to lr / epsilon = 1e4.
  assert check["max_weight_difference"] < 1e-10, check


# Slow (~200 s on 2 shared CPU cores, tracing the diagnostic step twice in float64): the
# default run checks the step's diagnostics on one device (tests/trainer_test.py).
@pytest.mark.slow
def test_mirrored_term_gradient_norms_are_the_global_batchs(tiny_prep, tmp_path):
  result = helpers.run_command("tests.distribution_check",
                               f"--prep_dir={tiny_prep.prep_dir}",
                               f"--model_dir={tmp_path}", "--method=csa",
                               "--term_gradients")
  check = json.loads(result.stdout.strip().splitlines()[-1])
  assert {"grad_norm_dice_lge", "grad_norm_dice_bssfp", "grad_norm_ce_lge",
          "grad_norm_ce_bssfp", "grad_norm_csa", "grad_norm_l2"} <= set(check["terms"])
  # Each replica's norm is the global batch's (its share summed over replicas):
  # measured below 1e-12 relative in float64 on 2 CPU cores.
  assert check["max_term_gradient_difference"] < 1e-12, check


def _free_ports(count):
  sockets = [socket.socket() for _ in range(count)]
  for s in sockets:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


# About 100 s on 2 CPU cores (two TensorFlow processes tracing the same step): opt-in
# with `python -m pytest -m slow` to keep the default run within its time budget.
@pytest.mark.slow
def test_two_workers_on_loopback_train_and_checkpoint(tiny_prep, tmp_path):
  model_dir = tmp_path / "run"
  workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
  processes = []
  for index in range(2):
    tf_config = json.dumps({"cluster": {"worker": workers},
                            "task": {"type": "worker", "index": index}})
    processes.append(helpers.start_command(
        "csa_tf.train", f"--data_dir={tiny_prep.prep_dir}", f"--model_dir={model_dir}",
        "--strategy=multi_worker", "--feature_base=2", "--batch_size=4", "--train_steps=2",
        "--log_every=1", "--checkpoint_every=1", "--bn_recalibration_batches=1",
        "--image_summary_every=2", env={"TF_CONFIG": tf_config}))
  outputs = []
  try:
    for process in processes:
      stdout, stderr = process.communicate(timeout=540)
      outputs.append(stdout)
      assert process.returncode == 0, stdout[-2000:] + stderr[-3000:]
  finally:
    for process in processes:
      if process.poll() is None:
        process.kill()
  chief, worker = outputs
  assert "2 replicas of 2 (multi_worker)" in chief and "finished step 2" in chief
  assert "[worker 1] finished step 2" in worker
  # Both workers computed the same global losses.
  loss_lines = [[line.split("|")[1] for line in out.splitlines() if "step 2/2" in line]
                for out in outputs]
  assert loss_lines[0] and loss_lines[0] == loss_lines[1]
  assert (model_dir / "checkpoints" / "ckpt-2.index").exists()
  assert not (model_dir / ".worker_1").exists()
  final = json.load(open(model_dir / "final_losses.json"))
  assert final["step"] == 2 and np.isfinite(final["total"])
