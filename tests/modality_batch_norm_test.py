"""Tests of csa_tf.model.modality_batch_norm.ModalityBatchNorm."""
import numpy as np
import pytest
import tensorflow as tf

from csa_tf.model.modality_batch_norm import ModalityBatchNorm


def _stats(bn):
  return bn.moving_mean.numpy().copy(), bn.moving_variance.numpy().copy()


def test_one_bn_per_modality_as_direct_attributes():
  layer = ModalityBatchNorm(["lge", "bssfp", "t2"])
  layer.build((None, 4, 4, 3))
  for modality in ("lge", "bssfp", "t2"):
    bn = getattr(layer, f"bn_{modality}")
    assert bn.built and bn.momentum == 0.9 and bn.epsilon == 1e-3
    assert layer.bn_for(modality) is bn
  assert len({id(layer.bn_for(m)) for m in layer.modalities}) == 3
  # gamma, beta, moving mean, moving variance per modality.
  assert len(layer.weights) == 12


def test_training_updates_only_the_called_modality():
  layer = ModalityBatchNorm(("lge", "bssfp"))
  x = tf.random.normal([4, 3, 3, 2], mean=5.0, seed=1)
  layer(x, modality="bssfp")  # builds both
  before_lge, before_bssfp = _stats(layer.bn_lge), _stats(layer.bn_bssfp)
  # training=None (and False) must not move the statistics (REFERENCE.md section 7).
  layer(x, modality="lge")
  layer(x, modality="lge", training=False)
  np.testing.assert_array_equal(_stats(layer.bn_lge)[0], before_lge[0])
  layer(x, modality="lge", training=True)
  after_lge, after_bssfp = _stats(layer.bn_lge), _stats(layer.bn_bssfp)
  # momentum 0.9: moving_mean = 0.9 * 0 + 0.1 * batch mean.
  np.testing.assert_allclose(after_lge[0], 0.1 * tf.reduce_mean(x, axis=(0, 1, 2)).numpy(),
                             rtol=1e-5)
  for before, after in zip(before_bssfp, after_bssfp):
    np.testing.assert_array_equal(before, after)


def test_training_output_uses_batch_statistics_with_epsilon():
  layer = ModalityBatchNorm(("ct", "mr"))
  x = tf.random.normal([2, 4, 4, 1], seed=2)
  y = layer(x, modality="ct", training=True).numpy()
  mean, var = np.mean(x.numpy()), np.var(x.numpy())
  np.testing.assert_allclose(y, (x.numpy() - mean) / np.sqrt(var + 1e-3), atol=1e-5)


def test_shared_mode_has_one_bn_for_all_modalities():
  layer = ModalityBatchNorm(("lge", "bssfp"), shared=True)
  layer.build((None, 2, 2, 5))
  assert layer.bn_for("lge") is layer.bn_for("bssfp") is layer.bn_shared
  assert not hasattr(layer, "bn_lge")
  assert len(layer.weights) == 4


def test_bad_modalities_raise():
  with pytest.raises(ValueError, match="sequence"):
    ModalityBatchNorm("lge")
  with pytest.raises(ValueError, match="duplicate"):
    ModalityBatchNorm(("lge", "lge"))
  with pytest.raises(ValueError, match="identifier"):
    ModalityBatchNorm(("LGE-1",))
  with pytest.raises(ValueError):
    ModalityBatchNorm(())
  layer = ModalityBatchNorm(("lge",))
  with pytest.raises(ValueError, match="unknown modality"):
    layer(tf.zeros([1, 1, 1, 1]), modality="ct")


def test_checkpoint_holds_every_modality_bn_variable(tmp_path):
  layer = ModalityBatchNorm(("lge", "bssfp", "t2"))
  layer.build((None, 2, 2, 3))
  for v in layer.weights:
    v.assign(np.random.default_rng(0).uniform(1, 2, v.shape).astype(np.float32))
  path = tf.train.Checkpoint(layer=layer).write(str(tmp_path / "ckpt"))
  names = [n for n, _ in tf.train.list_variables(path) if n.startswith("layer/")]
  assert len(names) == 12
  fresh = ModalityBatchNorm(("lge", "bssfp", "t2"))
  fresh.build((None, 2, 2, 3))
  tf.train.Checkpoint(layer=fresh).read(path).assert_consumed()
  for a, b in zip(layer.weights, fresh.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_config_round_trip():
  layer = ModalityBatchNorm(("ct", "mr"), shared=True, name="site")
  clone = ModalityBatchNorm.from_config(layer.get_config())
  assert clone.modalities == ("ct", "mr") and clone.shared and clone.name == "site"
  assert clone.momentum == 0.9 and clone.epsilon == 1e-3
