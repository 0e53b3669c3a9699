"""Runs CsaNet under KERAS_BACKEND=jax (set before Keras loads) for tests/jax_backend_test.py.

  KERAS_BACKEND=jax python -m tests.jax_check WEIGHTS.weights.h5 INPUT.npy OUTPUT.npz

Builds the network of tests/jax_backend_test.py, loads the weights the TensorFlow
backend saved, and writes the logits of each modality (inference) and a training-mode
forward and gradient check. Imports nothing of TensorFlow.
"""
import sys

import keras
import numpy as np


def main(weights_path, input_path, output_path):
  import jax  # pylint: disable=g-import-not-at-top
  from csa_tf.model.csa_net import CsaNet  # pylint: disable=g-import-not-at-top
  assert keras.backend.backend() == "jax", keras.backend.backend()
  images = np.load(input_path)
  # The weights are loaded below: skip drawing TruncatedNormal kernels, which JAX
  # compiles once per kernel shape in eager mode (about a minute on 2 CPU cores).
  keras.initializers.TruncatedNormal.__call__ = (
      lambda self, shape, dtype=None: keras.ops.zeros(shape, dtype=dtype))
  net = CsaNet(4, ["lge", "bssfp"], feature_base=2)
  net.build((None,) + images.shape[1:])
  net.load_weights(weights_path)
  out = {f"logits_{m}": np.asarray(net(images, modality=m)) for m in ("lge", "bssfp")}
  # Training mode (dropout, batch statistics) through jax.grad of a stateless call.
  trainable = [v.value for v in net.trainable_variables]
  non_trainable = [v.value for v in net.non_trainable_variables]

  def loss(weights):
    logits, _ = net.stateless_call(weights, non_trainable, images, modality="lge",
                                   training=True)
    return keras.ops.mean(keras.ops.square(logits))
  gradients = jax.jit(jax.grad(loss))(trainable)
  out["gradient_norm"] = np.sqrt(sum(float(np.sum(np.square(g))) for g in gradients))
  out["loaded_modules"] = np.array(sorted(m for m in sys.modules
                                          if m.split(".")[0] == "tensorflow"))
  np.savez(output_path, **out)


if __name__ == "__main__":
  main(*sys.argv[1:4])
