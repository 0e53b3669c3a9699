"""CsaNet is keras.ops only: it runs under the JAX backend with the TF backend's weights."""
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("jax", reason="the jax extra (pip install -e '.[jax]') is not installed")

from csa_tf.model.csa_net import CsaNet  # pylint: disable=wrong-import-position

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.integration
def test_jax_backend_gives_the_tensorflow_logits(tmp_path):
  net = CsaNet(4, ["lge", "bssfp"], feature_base=2)
  net.build((None, 32, 32, 1))
  # Other BN statistics per modality, so that the check sees each modality's own BN.
  for site in net.bn_layers():
    for index, key in enumerate(site.bn_keys):
      bn = site.bn_for(key)
      bn.moving_mean.assign(np.full(bn.moving_mean.shape, 0.1 * (index + 1), np.float32))
  weights = str(tmp_path / "net.weights.h5")
  net.save_weights(weights)
  images = np.random.default_rng(0).normal(size=(2, 32, 32, 1)).astype(np.float32)
  np.save(tmp_path / "images.npy", images)
  env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
  result = subprocess.run(
      [sys.executable, "-m", "tests.jax_check", weights, str(tmp_path / "images.npy"),
       str(tmp_path / "out.npz")], cwd=ROOT, env=env, capture_output=True, text=True,
      timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  out = np.load(tmp_path / "out.npz")
  assert list(out["loaded_modules"]) == []  # no TensorFlow under the JAX backend
  for modality in ("lge", "bssfp"):
    np.testing.assert_allclose(out[f"logits_{modality}"],
                               net(images, modality=modality).numpy(), atol=1e-5,
                               rtol=1e-4)
  assert not np.allclose(out["logits_lge"], out["logits_bssfp"])
  assert np.isfinite(out["gradient_norm"]) and out["gradient_norm"] > 0
