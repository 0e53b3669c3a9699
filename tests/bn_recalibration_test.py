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


def _conv(x, kernel):
  return tf.nn.conv2d(tf.constant(x, tf.float64), tf.cast(kernel, tf.float64), 1,
                      "SAME").numpy()


def _first_sites_moments(net, modality, images):
  """Batch (mean, variance) of the inputs of net's first two BN sites, dropout off.

  An independent float64 forward pass (REFERENCE.md section 1): site 1
  (g1_rb1.unit1.bn) sees g1_conv(images); site 2 (g1_rb1.unit2.bn) sees unit1's conv of
  the leaky ReLU (slope 0.2) of site 1's output, which in training mode is normalised
  with the batch's own mean and (population) variance. Dropout sits between unit1's conv
  and site 2, so site 2 shows whether it was off.
  """
  axes = (0, 1, 2)
  x0 = _conv(np.asarray(images, np.float64), net.g1_conv.kernel)
  mean0, var0 = x0.mean(axis=axes), x0.var(axis=axes)
  bn = net.g1_rb1.unit1.bn.bn_for(modality)
  y = (x0 - mean0) / np.sqrt(var0 + bn.epsilon) * bn.gamma.numpy() + bn.beta.numpy()
  x1 = _conv(np.where(y > 0, y, 0.2 * y), net.g1_rb1.unit1.conv.kernel)
  return [(mean0, var0), (x1.mean(axis=axes), x1.var(axis=axes))]


def _check_first_sites(net, modalities, batches):
  """Each modality's first two BN sites hold the mean of its batches' moments."""
  sites = net.bn_layers()[:2]
  assert [s.path for s in sites] == [f"{net.name}/g1_rb1/unit1/bn",
                                     f"{net.name}/g1_rb1/unit2/bn"]
  for modality in modalities:
    per_batch = [_first_sites_moments(net, modality, b[modality][0]) for b in batches]
    for index, site in enumerate(sites):
      bn = site.bn_for(modality)
      mean = np.mean([moments[index][0] for moments in per_batch], axis=0)
      var = np.mean([moments[index][1] for moments in per_batch], axis=0)
      np.testing.assert_allclose(bn.moving_mean.numpy(), mean, rtol=1e-4, atol=1e-8,
                                 err_msg=f"{modality} site {index + 1} mean")
      np.testing.assert_allclose(bn.moving_variance.numpy(), var, rtol=1e-4, atol=1e-9,
                                 err_msg=f"{modality} site {index + 1} variance")


def _distinct_bn_parameters(net, seed):
  """Gives every modality's BN its own gamma and beta (fresh ones are all 1 and 0)."""
  rng = np.random.default_rng(seed)
  for site in net.bn_layers():
    for key in site.bn_keys:
      bn = getattr(site, f"bn_{key}")
      bn.gamma.assign(rng.uniform(0.5, 1.5, bn.gamma.shape))
      bn.beta.assign(rng.normal(0.0, 0.5, bn.beta.shape))


def test_statistics_are_each_modalitys_dropout_free_batch_moments():
  keras.utils.set_random_seed(0)
  config = _config()
  bundle = ModelBundle(config).build()
  net = bundle.unique_networks[0]
  _distinct_bn_parameters(net, 6)
  batches = [_batch(7), _batch(8)]
  # Start from statistics that are neither 0/1 nor any batch's, so that leftovers show.
  for site in net.bn_layers():
    for m in ("lge", "bssfp"):
      site.bn_for(m).moving_mean.assign(tf.fill(site.bn_for(m).moving_mean.shape, 3.0))
  assert recalibrate_batch_norm(bundle, config, batches) == 62  # 31 sites x 2 modalities
  _check_first_sites(net, ("lge", "bssfp"), batches)
  first = net.bn_layers()[0]
  assert not np.allclose(first.bn_for("lge").moving_mean.numpy(),
                         first.bn_for("bssfp").moving_mean.numpy(), rtol=0.1)


def test_single_setting_recalibrates_each_network():
  keras.utils.set_random_seed(0)
  config = _config("single")
  bundle = ModelBundle(config).build()
  batch = _batch(5)
  assert recalibrate_batch_norm(bundle, config, [batch]) == 62  # 31 sites x 2 nets
  for modality, net in bundle.networks.items():
    _check_first_sites(net, (modality,), [batch])
