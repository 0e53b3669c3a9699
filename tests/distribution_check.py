r"""Compares a MirroredStrategy step on 2 logical CPUs with the single-device step.

Run by tests/distribution_test.py in a subprocess, because the CPU can only be split into
logical devices before TensorFlow initialises:

  python -m tests.distribution_check --prep_dir=PREP --model_dir=DIR --method=csa

The networks compute in float64 here: the distributed step is the single-device step up
to rounding, but in float32 the gradients of conv -> BN layers (a cancellation in BN's
backward pass) differ between one and two devices by up to ~3% of their largest element
(measured once with --dtype=float32 on 2 CPU cores: g10_conv's kernel), which would hide
a real error of that size. In float64 the gradients agree to ~3e-14.

Prints one JSON line with the largest differences; the test asserts on them.
"""
import argparse
import functools
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top


def split_cpu(count):
  cpu = tf.config.list_physical_devices("CPU")[0]
  tf.config.set_logical_device_configuration(
      cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)])


def relative_difference(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--prep_dir", required=True)
  parser.add_argument("--model_dir", required=True)
  parser.add_argument("--method", default="csa")
  parser.add_argument("--replicas", type=int, default=2)
  parser.add_argument("--dtype", default="float64", choices=["float64", "float32"])
  parser.add_argument("--term_gradients", action="store_true",
                      help="also compare the --log_term_gradients norms (slower)")
  args = parser.parse_args()
  split_cpu(args.replicas)

  from csa_tf.training import distribution  # pylint: disable=g-import-not-at-top
  from csa_tf.model import bundle as model_bundle  # pylint: disable=g-import-not-at-top
  from csa_tf.data.prepared import PreparedDataset  # pylint: disable=g-import-not-at-top
  from csa_tf.training.trainer import Trainer  # pylint: disable=g-import-not-at-top
  from tests.helpers import make_config, quiet  # pylint: disable=g-import-not-at-top
  if args.dtype == "float64":
    model_bundle.DTYPE_POLICIES["off"] = "float64"

  prepared = PreparedDataset.open(args.prep_dir)
  batch_size = 2 * args.replicas
  base = dict(data_dir=args.prep_dir, method=args.method, train_steps=1,
              batch_size=batch_size, dropout_rate=0.0, bn_recalibration_batches=0)
  single = Trainer(make_config(os.path.join(args.model_dir, "single"), **base), prepared,
                   log=quiet)
  strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(args.replicas)])
  mirrored = Trainer(make_config(os.path.join(args.model_dir, "mirrored"),
                                 strategy="mirrored", **base),
                     prepared, log=quiet, strategy=strategy)
  # Start from the same weights whatever the strategy did with the initialisers.
  for source, target in zip(single.bundle.trainable_variables,
                            mirrored.bundle.trainable_variables):
    target.assign(source)

  result = {"replicas": mirrored.num_replicas,
            "dtype": str(single.bundle.trainable_variables[0].dtype)}
  global_batch = next(iter(single.dataset(0)))
  shards = next(iter(distribution.distribute_global_batches(
      strategy, lambda: single.dataset(0), global_batch_size=batch_size)))
  local = strategy.experimental_local_results
  result["shards_equal_global_batch"] = all(
      np.array_equal(np.concatenate([t.numpy() for t in local(shards[m][i])]),
                     global_batch[m][i].numpy())
      for m in global_batch for i in (0, 1))
  result["shard_sizes"] = [int(t.shape[0]) for t in local(shards["lge"][0])]

  # Loss terms and gradients, before any update; with --term_gradients also the
  # per-term gradient norms of --log_term_gradients (the step's gradients are the same
  # with or without them: tests/trainer_test.py).
  diagnostics = args.term_gradients
  grads_single, terms_single, _ = tf.function(functools.partial(
      single.replica_gradients, with_term_gradients=diagnostics))(global_batch)

  @tf.function
  def mirrored_gradients(per_replica):
    grads, terms, _ = strategy.run(functools.partial(
        mirrored.replica_gradients, with_term_gradients=diagnostics),
        args=(per_replica,))
    # What Keras' optimizer applies: the sum of the replicas' gradients.
    summed = [None if g is None else
              strategy.reduce(tf.distribute.ReduceOp.SUM, g, axis=None) for g in grads]
    return summed, terms

  grads_mirrored, terms_mirrored = mirrored_gradients(shards)
  # grad_norm is the norm of each replica's share of the gradient, not a loss term.
  result["terms"] = {name: {"single": float(value),
                            "replicas": [float(v) for v in local(terms_mirrored[name])]}
                     for name, value in terms_single.items() if name != "grad_norm"}
  result["max_term_difference"] = max(
      abs(r - t["single"]) / max(abs(t["single"]), 1e-12)
      for name, t in result["terms"].items() for r in t["replicas"]
      if not name.startswith("grad_norm_"))
  # The term gradient norms are the global batch's on every replica.
  result["max_term_gradient_difference"] = max(
      (abs(r - t["single"]) / max(abs(t["single"]), 1e-12)
       for name, t in result["terms"].items() for r in t["replicas"]
       if name.startswith("grad_norm_")), default=None)
  names = [v.path for v in single.bundle.trainable_variables]
  differences = sorted((relative_difference(m, s), name) for m, s, name in
                       zip(grads_mirrored, grads_single, names) if s is not None)
  result["max_gradient_difference"], result["worst_gradient"] = differences[-1]
  result["gradients_compared"] = len(differences)
  result["trainable_variables"] = len(names)

  # One full step each: Adam's first moment after step 1 is 0.1 * the applied gradient,
  # so it checks the optimizer's aggregation; BN moving statistics check sync BN.
  single.train_step(global_batch)
  mirrored.train_step(shards)

  def optimizer_state(trainer):
    return [v.numpy() for v in trainer.optimizer.variables if len(v.shape) > 0]

  def statistics(trainer):
    return [v.numpy() for net in trainer.bundle.unique_networks
            for v in net.non_trainable_weights]

  result["max_optimizer_state_difference"] = max(
      relative_difference(m, s)
      for m, s in zip(optimizer_state(mirrored), optimizer_state(single)))
  result["max_bn_statistics_difference"] = max(
      relative_difference(m, s) for m, s in zip(statistics(mirrored), statistics(single)))
  result["max_weight_difference"], result["worst_weight"] = max(
      (relative_difference(m.numpy(), s.numpy()), name) for m, s, name in
      zip(mirrored.bundle.trainable_variables, single.bundle.trainable_variables, names))
  print(json.dumps(result))


if __name__ == "__main__":
  main()
