r"""The paper's network on a GPU under JAX: images/s, memory and FLOP utilisation.

  KERAS_BACKEND=jax python -m benchmarks.gpu_report [--output=docs/gpu_benchmarks.md]
  KERAS_BACKEND=jax python -m benchmarks.gpu_report --dry_run   # tiny sizes, any CPU

For the GPU machine that has JAX but no TensorFlow (benchmarks/gpu_report.sh runs it
there). Times the forward + backward pass of `CsaNet` at the paper's size (feature_base
16, 224x224, 4 classes, one modality's batch of 8 slices, training mode) jitted under
the JAX backend, in float32 and in bfloat16 (Keras' mixed_bfloat16 policy), against the
same device's measured peak: a large jitted matmul in the same dtype. Every figure is
of the Keras network under JAX, never of csa_tf's TensorFlow training loop.
"""
import datetime
import os
import statistics
import sys
import time

from absl import flags

from csa_tf import cli
from csa_tf.errors import CsaInputError

FLAGS = flags.FLAGS


def define_flags():
  """Defines this command's flags (only when run as a command, never on import)."""
  flags.DEFINE_bool("dry_run", False, "Tiny sizes (feature_base 2, 32x32, batch 2) on "
                    "any device, to check the script itself.")
  flags.DEFINE_string("output", None, "Also write the Markdown report here.")
  flags.DEFINE_integer("rounds", 5, "Timed rounds per figure (median, min, max).")

PAPER = dict(feature_base=16, size=224, batch=8, matmul=8192, steps=10)
DRY = dict(feature_base=2, size=32, batch=2, matmul=256, steps=2)


def _timed(function, args, steps: int, rounds: int):
  """Seconds per call of a jitted `function(*args)` in each round, after a warm-up."""
  import jax  # pylint: disable=g-import-not-at-top
  jax.block_until_ready(function(*args))
  seconds = []
  for _ in range(rounds):
    start = time.perf_counter()
    for _ in range(steps):
      out = function(*args)
    jax.block_until_ready(out)
    seconds.append((time.perf_counter() - start) / steps)
  return seconds


def matmul_tflops(size: int, dtype: str, steps: int, rounds: int):
  """TFLOP/s of an n x n matmul in each round."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  keys = jax.random.split(jax.random.PRNGKey(0))
  a, b = (jax.random.normal(k, (size, size), dtype=dtype) for k in keys)
  seconds = _timed(jax.jit(jnp.matmul), (a, b), steps, rounds)
  return [2 * size ** 3 / s / 1e12 for s in seconds]


def network_step(sizes, dtype_policy: str, rounds: int):
  """{images_per_second (per round), tflops (per round), gflops_per_image,
  peak_memory_bytes} of one jitted forward + backward of CsaNet in training mode."""
  import jax  # pylint: disable=g-import-not-at-top
  import keras  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from csa_tf.model import flops  # pylint: disable=g-import-not-at-top
  from csa_tf.model.csa_net import CsaNet  # pylint: disable=g-import-not-at-top
  keras.config.set_dtype_policy(dtype_policy)
  try:
    net = CsaNet(4, ["lge", "bssfp"], feature_base=sizes["feature_base"])
    size = sizes["size"]
    net.build((None, size, size, 1))
  finally:
    keras.config.set_dtype_policy("float32")
  images = np.random.default_rng(0).normal(
      size=(sizes["batch"], size, size, 1)).astype(np.float32)
  trainable = [v.value for v in net.trainable_variables]
  non_trainable = [v.value for v in net.non_trainable_variables]

  def loss(weights, fixed, x):
    logits, _ = net.stateless_call(weights, fixed, x, modality="lge", training=True)
    return keras.ops.mean(keras.ops.square(keras.ops.cast(logits, "float32")))
  step = jax.jit(jax.grad(loss))
  seconds = _timed(step, (trainable, non_trainable, images), sizes["steps"], rounds)
  per_image = flops.forward_flops_per_image(net, size, size)
  step_flops = flops.TRAINING_PASSES * per_image * sizes["batch"]
  stats = jax.devices()[0].memory_stats() or {}
  return {"images_per_second": [sizes["batch"] / s for s in seconds],
          "tflops": [step_flops / s / 1e12 for s in seconds],
          "gflops_per_image": per_image / 1e9,
          "peak_memory_bytes": stats.get("peak_bytes_in_use")}


def _fmt(values, digits=1):
  return (f"{statistics.median(values):.{digits}f} "
          f"({min(values):.{digits}f}-{max(values):.{digits}f})")


def report(sizes, rounds: int) -> str:
  """Measures everything; returns the Markdown report."""
  import jax  # pylint: disable=g-import-not-at-top
  import keras  # pylint: disable=g-import-not-at-top
  device = jax.devices()[0]
  label = f"Keras network under JAX on {device.device_kind}"
  rows = []
  for name, policy, matmul_dtype in (("float32", "float32", "float32"),
                                     ("bf16", "mixed_bfloat16", "bfloat16")):
    peak = matmul_tflops(sizes["matmul"], matmul_dtype, sizes["steps"], rounds)
    step = network_step(sizes, policy, rounds)
    utilization = [t / max(peak) for t in step["tflops"]]
    memory = step["peak_memory_bytes"]
    rows.append(f"| {name} | {_fmt(step['images_per_second'])} | "
                f"{_fmt(step['tflops'], 2)} | {_fmt(peak, 2)} | "
                f"{_fmt(utilization, 3)} | "
                f"{'n/a' if memory is None else f'{memory / 2 ** 30:.2f}'} |")
  mode = "dry run (tiny sizes)" if FLAGS.dry_run else "paper size"
  lines = [
      "# GPU benchmarks: the Keras network under JAX", "",
      f"{label}; {mode}: feature_base {sizes['feature_base']}, "
      f"{sizes['size']}x{sizes['size']}, batch {sizes['batch']} slices of one modality, "
      f"training-mode forward + backward, jitted. Measured "
      f"{datetime.date.today().isoformat()} with `{' '.join(['python -m benchmarks.gpu_report'] + sys.argv[1:])}`; "
      f"JAX {jax.__version__}, Keras {keras.__version__}, {device.platform}. "
      "Median (min-max) over "
      f"{rounds} rounds of {sizes['steps']} steps. Utilisation: the step's TFLOP/s "
      f"(3 forward passes of {sizes['size']}x{sizes['size']} images, "
      "csa_tf/model/flops.py) over the best round of an "
      f"{sizes['matmul']}x{sizes['matmul']} matmul in the same dtype on the same "
      "device. These are figures of the architecture under JAX, not of csa_tf's "
      "TensorFlow training loop.", "",
      f"| precision ({label}) | images/s | step TFLOP/s | matmul TFLOP/s | "
      "utilisation | peak memory (GiB) |",
      "|---|---|---|---|---|---|", *rows]
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  import keras  # pylint: disable=g-import-not-at-top
  if keras.backend.backend() != "jax":
    raise CsaInputError(f"KERAS_BACKEND={keras.backend.backend()}: run with "
                        "KERAS_BACKEND=jax (benchmarks.gpu_report times the network "
                        "under JAX)")
  text = report(DRY if FLAGS.dry_run else PAPER, FLAGS.rounds)
  print(text, end="")
  if FLAGS.output:
    with open(FLAGS.output + ".tmp", "w") as f:
      f.write(text)
    os.replace(FLAGS.output + ".tmp", FLAGS.output)


if __name__ == "__main__":
  # Before Keras loads (in main): the network is timed under JAX.
  os.environ.setdefault("KERAS_BACKEND", "jax")
  cli.run(main, define_flags)
