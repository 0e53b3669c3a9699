"""Tests of CsaNet(spatial_dims=3): the 3D counterpart of REFERENCE.md section 1's network."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from csa_tf.model.csa_net import CsaNet
from csa_tf.model.csa_net import depth_to_space
from tests.csa_net_test import _table_bn_channels
from tests.csa_net_test import _table_convs


def _net_3d(modalities=("ct", "mr"), num_classes=3, **kwargs):
  kwargs.setdefault("feature_base", 2)
  net = CsaNet(num_classes, modalities, spatial_dims=3, **kwargs)
  net.build((None, None, None, None, 1))
  return net


def _count(variables):
  return sum(int(np.prod(v.shape)) for v in variables)


def test_weight_counts_are_the_2d_table_with_cubic_kernels():
  # Every k x k kernel of the REFERENCE.md table becomes k x k x k; BN is unchanged.
  f, c = 2, 3
  net = _net_3d(num_classes=c, feature_base=f)
  expected = sum(k ** 3 * cin * cout for k, cin, cout in _table_convs(f, c))
  assert [tuple(k.shape[:3]) for k in net.conv_kernels] == [
      (k, k, k) for k, _, _ in _table_convs(f, c)]
  assert _count(net.conv_kernels) == expected
  bn = [w for site in net.bn_layers() for w in site.weights]
  assert len(net.bn_layers()) == 31
  assert _count(bn) == 2 * 4 * sum(_table_bn_channels(f, c))  # two modalities
  assert _count(net.weights) == expected + _count(bn)


def test_output_and_taps_keep_the_patch_depth():
  net = _net_3d(feature_base=2)
  images = tf.random.normal([2, 5, 32, 24, 1], seed=0)
  logits, features = net.call_with_features(images, modality="ct")
  assert logits.shape == (2, 5, 32, 24, 3)
  for name, (divisor, channels) in net.tap_specs.items():
    assert features[name].shape == (2, 5, 32 // divisor, 24 // divisor, channels), name


def test_depth_to_space_3d_is_the_2d_one_slice_by_slice():
  x = tf.random.normal([2, 3, 2, 4, 4 * 5], seed=1)
  got = depth_to_space(x, 2)
  assert got.shape == (2, 3, 4, 8, 5)
  for d in range(3):
    np.testing.assert_array_equal(got[:, d].numpy(),
                                  tf.nn.depth_to_space(x[:, d], 2).numpy())


def test_training_pass_touches_only_its_modality_bn():
  net = _net_3d()
  images = tf.random.normal([1, 2, 16, 16, 1], seed=2)

  def stats(modality):
    return [w.numpy().copy() for site in net.bn_layers()
            for w in site.bn_for(modality).non_trainable_weights]

  ct_before, mr_before = stats("ct"), stats("mr")
  net(images, modality="ct", training=True)
  for a, b in zip(mr_before, stats("mr")):
    np.testing.assert_array_equal(a, b)
  assert all(not np.array_equal(a, b) for a, b in zip(ct_before, stats("ct")))


def test_convolutions_see_across_slices():
  # A change in the last slice reaches the first slice's logits: the stack is 3D, not a
  # 2D network applied per slice.
  net = _net_3d()
  rng = np.random.default_rng(3)
  for v in net.conv_kernels:
    v.assign(rng.normal(0.0, 1.0 / np.sqrt(np.prod(v.shape[:-1])), v.shape))
  images = rng.normal(size=(1, 4, 16, 16, 1)).astype(np.float32)
  changed = images.copy()
  changed[:, -1] += 1.0
  first = net(images, modality="ct")[:, 0].numpy()
  first_changed = net(changed, modality="ct")[:, 0].numpy()
  assert np.abs(first - first_changed).max() > 1e-6


def test_keras_file_round_trip(tmp_path):
  net = _net_3d(dropout_rate=0.1)
  images = tf.random.normal([1, 3, 16, 16, 1], seed=4)
  path = str(tmp_path / "net3d.keras")
  net.save(path)
  loaded = keras.models.load_model(path)
  assert isinstance(loaded, CsaNet) and loaded.spatial_dims == 3
  assert loaded.get_config() == net.get_config()
  for m in ("ct", "mr"):
    np.testing.assert_array_equal(loaded(images, modality=m).numpy(),
                                  net(images, modality=m).numpy())


def test_2d_configs_without_spatial_dims_still_load():
  # Exports written before 3D existed have no spatial_dims in their config.
  config = CsaNet(3, ["ct"], feature_base=2).get_config()
  assert config.pop("spatial_dims") == 2
  assert CsaNet.from_config(config).spatial_dims == 2


def test_bad_inputs_raise():
  net = _net_3d()
  with pytest.raises(ValueError, match="NDHWC"):
    net(tf.zeros([1, 16, 16, 1]), modality="ct")
  with pytest.raises(ValueError, match="depth 1"):
    net(tf.zeros([1, 1, 16, 16, 1]), modality="ct")
  with pytest.raises(ValueError, match="height 12"):
    net(tf.zeros([1, 2, 12, 16, 1]), modality="ct")
  with pytest.raises(ValueError, match="spatial_dims"):
    CsaNet(3, ["ct"], spatial_dims=1)
  with pytest.raises(ValueError, match="NHWC"):
    CsaNet(3, ["ct"], feature_base=2)(tf.zeros([1, 2, 16, 16, 1]), modality="ct")
