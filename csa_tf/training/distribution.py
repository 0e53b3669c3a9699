"""tf.distribute for training: strategies, per-replica shards of each step's batch, sums.

The losses of paper Eq. 5 are batch-global (Dice sums over the batch, CE weights its
classes by the batch's pixel counts, CSA pools each class over the batch) and BatchNorm
normalises with batch statistics. Under a strategy with R replicas each replica gets
B / R slices of every modality's batch of B, and csa_tf makes the step exactly the
single-device step on the global batch:

- every batch sum inside the losses is all-reduced across replicas (`replica_sum`,
  passed to the losses as `batch_sum`), so every replica holds the global loss;
- BatchNormalization runs with `synchronized=True` (batch statistics all-reduced);
- each replica differentiates loss / R, and Keras' optimizer sums the replicas'
  gradients. The gradient of an all-reduce sum is the all-reduce sum of the gradients,
  so that sum is the gradient of the global loss.

Only dropout differs: each replica draws its own masks.
"""
import json
import os
from typing import Callable, Optional

import tensorflow as tf

from csa_tf.errors import CsaInputError, param

STRATEGIES = ("default", "mirrored", "multi_worker")


def make_strategy(name: str) -> tf.distribute.Strategy:
  """Returns the tf.distribute strategy `name` (see STRATEGIES).

  "mirrored" uses every local GPU (the CPU when there is none); "multi_worker" reads the
  cluster from the TF_CONFIG environment variable and must be created before any other
  TensorFlow operation runs in the process.

  Raises:
    CsaInputError: unknown name, or TF_CONFIG is missing or unreadable for multi_worker.
  """
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "mirrored":
    return tf.distribute.MirroredStrategy()
  if name == "multi_worker":
    text = os.environ.get("TF_CONFIG")
    if not text:
      raise CsaInputError(f"{param('strategy', 'multi_worker')} needs the TF_CONFIG "
                          "environment "
                          "variable (cluster and task of this worker)")
    try:
      json.loads(text)["cluster"]["worker"]  # pylint: disable=expression-not-assigned
    except (ValueError, KeyError, TypeError):
      raise CsaInputError(f"TF_CONFIG={text!r}: expected JSON with cluster.worker and "
                          "task") from None
    return tf.distribute.MultiWorkerMirroredStrategy()
  raise CsaInputError(f"--strategy={name}: expected one of {', '.join(STRATEGIES)}")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """True for the worker that writes checkpoints and summaries (always, off cluster)."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return True
  return resolver.task_type == "chief" or (
      resolver.task_type == "worker" and resolver.task_id == 0
      and "chief" not in resolver.cluster_spec().as_dict())


def worker_id(strategy: tf.distribute.Strategy) -> int:
  resolver = getattr(strategy, "cluster_resolver", None)
  return int(resolver.task_id or 0) if resolver is not None else 0


def replica_sum(value: tf.Tensor) -> tf.Tensor:
  """Sum of `value` over all replicas (identity without a strategy); differentiable."""
  context = tf.distribute.get_replica_context()
  if context is None or context.num_replicas_in_sync == 1:
    return value
  return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


def check_batch_size(batch_size: int, num_replicas: int) -> int:
  """Returns the per-replica batch size.

  Raises:
    CsaInputError: batch_size is not a multiple of the number of replicas.
  """
  if batch_size % num_replicas:
    raise CsaInputError(f"{param('batch_size', batch_size)} (per modality) must be a "
                        "multiple of "
                        f"the {num_replicas} replicas")
  return batch_size // num_replicas


def shard_global_batches(dataset: tf.data.Dataset, *, global_batch_size: int,
                         input_context: tf.distribute.InputContext) -> tf.data.Dataset:
  """Turns a stream of global batches into this input pipeline's per-replica shards.

  For step s, replica r (numbered across all workers) gets slices
  [r * b, (r + 1) * b) of every modality's global batch s, b = global / replicas. An
  input pipeline serves its replicas in order, one element per replica per step, which
  is how `distribute_datasets_from_function` hands elements to them.

  Args:
    dataset: elements {modality: (images [B, ...], labels [B, ...])}, B = global.
    global_batch_size: B.
    input_context: from `Strategy.distribute_datasets_from_function`.

  Returns:
    A dataset with `replicas per pipeline` elements per step, each with batch B / R.
  """
  replicas = input_context.num_replicas_in_sync
  size = check_batch_size(global_batch_size, replicas)
  per_pipeline = replicas // input_context.num_input_pipelines
  first = input_context.input_pipeline_id * per_pipeline

  def take(element, replica):
    start = replica * size
    return tf.nest.map_structure(
        lambda t: tf.ensure_shape(t[start:start + size], [size] + t.shape[1:].as_list()),
        element)

  def shards(element):
    replica_ids = tf.data.Dataset.range(first, first + per_pipeline)
    return replica_ids.map(lambda replica: take(element, replica))

  return dataset.flat_map(shards)


def distribute_global_batches(strategy: tf.distribute.Strategy,
                              make_dataset: Callable[[], tf.data.Dataset], *,
                              global_batch_size: int):
  """A distributed dataset whose step s gives each replica its shard of global batch s."""
  def dataset_fn(input_context):
    return shard_global_batches(make_dataset(), global_batch_size=global_batch_size,
                                input_context=input_context)
  options = tf.distribute.InputOptions(experimental_fetch_to_device=True)
  return strategy.distribute_datasets_from_function(dataset_fn, options)


def first_replica(strategy: tf.distribute.Strategy, value):
  """This worker's first replica's value of a per-replica structure (or the value)."""
  return tf.nest.map_structure(
      lambda v: strategy.experimental_local_results(v)[0], value)


def non_chief_dir(model_dir: str, strategy: tf.distribute.Strategy) -> Optional[str]:
  """Where a non-chief worker writes what it must write (None for the chief)."""
  if is_chief(strategy):
    return None
  return os.path.join(model_dir, f".worker_{worker_id(strategy)}")
