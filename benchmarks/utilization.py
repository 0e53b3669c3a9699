"""How close a training step comes to its machine's limit.

The limit is measured, not looked up: `peak_gflops` times a large float32 matmul on the
device the step runs on (the best that device's BLAS does on dense work), in the same
rounds as the step, so that a change in machine load moves both. The step's work is the
analytic count of csa_tf/model/flops.py (2 FLOPs per multiply-add of its convolutions,
3 forward passes per image for forward + backward).
"""
import time
from typing import Callable, List

# A 2048^3 matmul: 17.2 GFLOP, large enough for the BLAS to reach its peak on a CPU
# (about 0.2 s per call on 2 cores) and small enough to time in several rounds.
MATMUL_SIZE = 2048
MATMULS_PER_CALL = 4


def matmul_runner(size: int = MATMUL_SIZE) -> Callable[[int], float]:
  """runner(n): seconds of n calls of MATMULS_PER_CALL chained float32 matmuls."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  a = tf.random.stateless_normal([size, size], seed=[0, 1]) / size ** 0.5
  b = tf.random.stateless_normal([size, size], seed=[0, 2]) / size ** 0.5

  @tf.function
  def chain(x):
    for _ in range(MATMULS_PER_CALL):
      x = tf.linalg.matmul(x, b)
    return tf.reduce_sum(x)

  def run(n):
    start = time.perf_counter()
    for _ in range(n):
      total = chain(a)
    float(total)  # wait for the last call
    return time.perf_counter() - start
  return run


def matmul_flops_per_call(size: int = MATMUL_SIZE) -> int:
  return 2 * size ** 3 * MATMULS_PER_CALL


def gflops_per_round(flops_per_step: float, seconds_per_step: List[float]) -> List[float]:
  """GFLOP/s of each round from its seconds per step."""
  return [flops_per_step / seconds / 1e9 for seconds in seconds_per_step]
