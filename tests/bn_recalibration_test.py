"""Tests for csa_tf.training.bn_recalibration: dropout-free BN statistics, independent of history."""
import keras
import numpy as np
import tensorflow as tf

from csa_tf.training.bn_recalibration import recalibrate_batch_norm
from csa_tf.model.bundle import ModelBundle
from tests.helpers import make_config


def _config(method="msbn"):
  return make_config(method=method, crop_size=16, batch_size=3)


def _batch(seed):
  rng = np.random.default_rng(seed)
  return {m: (tf.constant(rng.normal(size=(3, 16, 16, 1)), tf.float32),
              tf.constant(rng.integers(0, 4, (3, 16, 16)), tf.int32))
          for m in ("lge", "bssfp")}


def _dropouts(bundle):
  return [l for net in bundle.unique_networks for l in net.sublayers()
          if isinstance(l, keras.layers.Dropout)]


def test_one_batch_gives_inference_equal_to_dropout_free_training_mode():
  keras.utils.set_random_seed(0)
  config = _config()
  bundle = ModelBundle(config).build()
  batch = _batch(1)
  recalibrate_batch_norm(bundle, config, [batch])
  assert all(d.rate == 0.25 for d in _dropouts(bundle))
  for modality, (images, _) in batch.items():
    inference = bundle.logits(images, modality, training=False).numpy()
    for d in _dropouts(bundle):
      d.rate = 0.0
    # Training mode normalises with this batch's statistics: the same numbers.
    reference = bundle.logits(images, modality, training=True).numpy()
    for d in _dropouts(bundle):
      d.rate = 0.25
    np.testing.assert_allclose(inference, reference, rtol=1e-3, atol=1e-4)


def test_result_does_not_depend_on_previous_statistics():
  keras.utils.set_random_seed(0)
  config = _config()
  bundle = ModelBundle(config).build()
  norms = [l for l in bundle.unique_networks[0].sublayers()
           if isinstance(l, keras.layers.BatchNormalization)]
  batches = [_batch(2), _batch(3)]
  recalibrate_batch_norm(bundle, config, batches)
  first = [n.moving_variance.numpy().copy() for n in norms]
  rng = np.random.default_rng(4)
  for n in norms:
    n.moving_mean.assign(rng.normal(size=n.moving_mean.shape))
    n.moving_variance.assign(rng.uniform(1, 5, size=n.moving_variance.shape))
  recalibrate_batch_norm(bundle, config, batches)
  for a, n in zip(first, norms):
    np.testing.assert_array_equal(a, n.moving_variance.numpy())
  # The average of two batches' statistics differs from either batch's alone.
  recalibrate_batch_norm(bundle, config, batches[:1])
  assert any(not np.array_equal(a, n.moving_variance.numpy()) for a, n in zip(first, norms))


def test_single_setting_recalibrates_each_network():
  keras.utils.set_random_seed(0)
  config = _config("single")
  bundle = ModelBundle(config).build()
  assert recalibrate_batch_norm(bundle, config, [_batch(5)]) == 62  # 31 sites x 2 nets
