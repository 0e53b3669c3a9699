r"""GPU smoke check: which GPUs TensorFlow sees, and whether a convolution runs on one.

  python -m csa_tf.gpu_check [--require_gpu]

The Docker image runs it before every command (docker/entrypoint.sh). It prints
TensorFlow's version and the CUDA / cuDNN versions it was built for, each visible GPU,
and the result of a small convolution (cuDNN) and matrix product (cuBLAS) on the first
GPU. With no GPU it prints one line starting with "WARNING" and exits 0 (1 with
--require_gpu), so CPU-only use keeps working.
"""
from typing import Callable, List

from absl import flags

from csa_tf import cli

FLAGS = flags.FLAGS

WARNING_NO_GPU = ("WARNING: TensorFlow sees no GPU; csa_tf will run on the CPU. On a GPU "
                  "host start the container with `docker run --gpus all` (NVIDIA "
                  "Container Toolkit) and check `nvidia-smi` there.")


def check(*, require_gpu: bool = False, log: Callable[[str], None] = print) -> int:
  """Prints the report; returns the exit status (1 only for a required, missing GPU).

  A GPU that is visible but fails the smoke test (e.g. missing CUDA libraries or a
  driver too old for them) is always an error.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  info = tf.sysconfig.get_build_info()
  log(f"csa_tf gpu_check: TensorFlow {tf.__version__} (built for CUDA "
      f"{info.get('cuda_version', '-')}, cuDNN {info.get('cudnn_version', '-')})")
  gpus: List = tf.config.list_physical_devices("GPU")
  if not gpus:
    log(WARNING_NO_GPU)
    return 1 if require_gpu else 0
  for gpu in gpus:
    details = tf.config.experimental.get_device_details(gpu)
    log(f"  {gpu.name}: {details.get('device_name', '?')}, compute capability "
        f"{details.get('compute_capability', '?')}")
  try:
    with tf.device("/GPU:0"):
      images = tf.random.normal([2, 32, 32, 8])
      kernel = tf.random.normal([3, 3, 8, 8])
      conv = tf.nn.conv2d(images, kernel, strides=1, padding="SAME")
      product = tf.linalg.matmul(tf.reshape(conv, [-1, 8]), kernel[0, 0])
      value = float(tf.reduce_sum(product))
    log(f"  smoke test on /GPU:0 ({conv.device.split('/')[-1]}): conv2d and matmul ran "
        f"(checksum {value:.3g})")
  except (tf.errors.OpError, RuntimeError) as error:
    log(f"ERROR: GPU smoke test failed: {str(error).splitlines()[0]}")
    return 1
  return 0


def define_flags():
  """Defines this command's flags (only when run as a command, never on import)."""
  flags.DEFINE_bool("require_gpu", False, "Exit 1 when TensorFlow sees no GPU.")


def main(argv: List[str]) -> int:
  del argv
  return check(require_gpu=FLAGS.require_gpu)


if __name__ == "__main__":
  cli.run(main, define_flags, tensorflow=True)
