"""Tests of CsaNet and its blocks against REFERENCE.md section 1."""
import numpy as np
import pytest
import tensorflow as tf
import keras

from csa_tf import losses
from csa_tf.model.csa_net import CsaNet
from csa_tf.model.residual_block import ResidualBlock

# Pinned at feature_base 16 (from the REFERENCE.md section 1 table, written out below).
CONV_WEIGHTS_F16_C4 = 36_941_072  # MS-CMRSeg: 4 classes
CONV_WEIGHTS_F16_C5 = 39_302_168  # MM-WHS: 5 classes ("about 39 M")
BN_WEIGHTS_F16_C4_PER_MODALITY = 4 * 9_584  # gamma, beta, mean, variance


def _table_convs(f, c, in_channels=1):
  """(kernel size, in, out) of every conv, straight from the REFERENCE.md table."""
  convs = [(3, in_channels, f)]
  def rb(cin, cout, count=1):
    for _ in range(count):
      convs.extend([(3, cin, cout), (3, cout, cout)])
      cin = cout
  rb(f, f)                                  # g1
  rb(f, 2 * f)                              # g2
  rb(2 * f, 4 * f); rb(4 * f, 4 * f)        # g3
  rb(4 * f, 8 * f); rb(8 * f, 8 * f)        # g4
  rb(8 * f, 16 * f); rb(16 * f, 16 * f)     # g5
  rb(16 * f, 16 * f, 2)                     # g6
  rb(16 * f, 32 * f); rb(32 * f, 32 * f)    # g7
  rb(32 * f, 32 * f, 2)                     # g8 (dilated)
  convs.extend([(3, 32 * f, 32 * f)] * 2)   # g9
  convs.append((3, 32 * f, 8 * 8 * 8 * c))  # g10
  convs.append((5, 8 * c, c))               # out
  return convs


def _table_bn_channels(f, c):
  """Input channels of every BN site: two per RB (before each conv), g9 x2, g10."""
  blocks = [(f, f), (f, 2 * f), (2 * f, 4 * f), (4 * f, 4 * f), (4 * f, 8 * f),
            (8 * f, 8 * f), (8 * f, 16 * f), (16 * f, 16 * f), (16 * f, 16 * f),
            (16 * f, 16 * f), (16 * f, 32 * f), (32 * f, 32 * f), (32 * f, 32 * f),
            (32 * f, 32 * f)]
  channels = [ch for cin, cout in blocks for ch in (cin, cout)]
  return channels + [32 * f, 32 * f, 8 * 8 * 8 * c]


def _count(variables):
  return sum(int(np.prod(v.shape)) for v in variables)


def _bn_weights(net):
  return [w for site in net.bn_layers() for w in site.weights]


def _small_net(modalities=("lge", "bssfp"), **kwargs):
  kwargs.setdefault("feature_base", 2)
  net = CsaNet(3, modalities, **kwargs)
  net.build((None, None, None, 1))
  return net


def test_weight_counts_at_feature_base_16():
  net = CsaNet(4, ("lge", "bssfp"), feature_base=16)
  net.build((None, None, None, 1))  # no forward pass at full size
  table = _table_convs(16, 4)
  assert sum(k * k * cin * cout for k, cin, cout in table) == CONV_WEIGHTS_F16_C4
  assert sum(k * k * cin * cout for k, cin, cout in _table_convs(16, 5)) == (
      CONV_WEIGHTS_F16_C5)
  kernels = net.conv_kernels
  assert [tuple(k.shape) for k in kernels] == [(s, s, cin, cout) for s, cin, cout in table]
  assert _count(kernels) == CONV_WEIGHTS_F16_C4
  assert sum(_table_bn_channels(16, 4)) * 4 == BN_WEIGHTS_F16_C4_PER_MODALITY
  assert _count(_bn_weights(net)) == 2 * BN_WEIGHTS_F16_C4_PER_MODALITY
  # Nothing else: no conv bias anywhere.
  assert _count(net.weights) == CONV_WEIGHTS_F16_C4 + 2 * BN_WEIGHTS_F16_C4_PER_MODALITY
  assert all(k.path.endswith("/kernel") for k in kernels)


def test_bn_sites_and_bn_weights_scale_with_modalities():
  counts = []
  for modalities in (("lge",), ("lge", "bssfp"), ("lge", "bssfp", "t2")):
    net = _small_net(modalities)
    sites = net.bn_layers()
    assert len(sites) == 31
    assert [site.bn_for("lge").moving_mean.shape[0] for site in sites] == (
        _table_bn_channels(2, 3))
    counts.append(_count(_bn_weights(net)))
    assert _count(net.conv_kernels) == sum(
        k * k * cin * cout for k, cin, cout in _table_convs(2, 3))
  assert counts[0] == 4 * sum(_table_bn_channels(2, 3))
  assert counts == [counts[0], 2 * counts[0], 3 * counts[0]]
  shared = _small_net(("lge", "bssfp", "t2"), shared_bn=True)
  assert _count(_bn_weights(shared)) == counts[0]
  assert all(site.bn_keys == ("shared",) for site in shared.bn_layers())


def test_output_and_feature_tap_shapes():
  net = _small_net()
  images = tf.random.normal([2, 16, 24, 1], seed=0)
  logits, features = net.call_with_features(images, modality="bssfp")
  assert logits.shape == (2, 16, 24, 3)
  assert tuple(features) == CsaNet.FEATURE_NAMES
  specs = CsaNet.feature_specs(2, num_classes=3)
  assert specs == net.tap_specs and "g10" not in CsaNet.feature_specs(2)
  for name, (divisor, channels) in specs.items():
    assert features[name].shape == (2, 16 // divisor, 24 // divisor, channels), name
  assert specs["g3"] == (4, 8) and specs["g4"] == (8, 16) and specs["g10"] == (1, 24)
  # Same forward pass: the logits equal a plain call's (inference is deterministic).
  np.testing.assert_array_equal(logits.numpy(), net(images, modality="bssfp").numpy())


def test_bad_inputs_raise():
  net = _small_net()
  with pytest.raises(ValueError, match="multiple of 8"):
    net(tf.zeros([1, 12, 16, 1]), modality="lge")
  with pytest.raises(ValueError, match="multiple of 8"):
    net(tf.zeros([1, 16, 20, 1]), modality="lge")
  with pytest.raises(ValueError, match="channels"):
    net(tf.zeros([1, 16, 16, 3]), modality="lge")
  with pytest.raises(ValueError, match="unknown modality"):
    net(tf.zeros([1, 16, 16, 1]), modality="ct")
  with pytest.raises(ValueError, match="multiple of 8"):
    CsaNet(3, ("lge",), feature_base=2).build((None, 20, 16, 1))


def _moving_stats(net, modality):
  return [v.numpy().copy() for site in net.bn_layers()
          for v in (site.bn_for(modality).moving_mean, site.bn_for(modality).moving_variance)]


def test_training_pass_touches_only_its_modality_bn():
  net = _small_net()
  images = tf.random.normal([2, 16, 16, 1], seed=1)
  lge_before, bssfp_before = _moving_stats(net, "lge"), _moving_stats(net, "bssfp")
  net(images, modality="lge")  # inference: nothing moves
  for a, b in zip(lge_before, _moving_stats(net, "lge")):
    np.testing.assert_array_equal(a, b)
  net(images, modality="lge", training=True)
  for a, b in zip(bssfp_before, _moving_stats(net, "bssfp")):
    np.testing.assert_array_equal(a, b)
  lge_after = _moving_stats(net, "lge")
  assert all(not np.array_equal(a, b) for a, b in zip(lge_before, lge_after))


def _randomize(net, seed):
  rng = np.random.default_rng(seed)
  for v in net.weights:
    v.assign(rng.uniform(0.5, 1.5, v.shape).astype(np.float32) / (
        np.sqrt(np.prod(v.shape[:-1])) if len(v.shape) == 4 else 1.0))


def test_checkpoint_saves_every_weight_and_restores_logits(tmp_path):
  modalities = ("lge", "bssfp", "t2")
  net = _small_net(modalities)
  _randomize(net, 0)
  images = tf.random.normal([2, 16, 16, 1], seed=2)
  expected = {m: net(images, modality=m).numpy() for m in modalities}
  path = tf.train.Checkpoint(model=net).write(str(tmp_path / "ckpt"))
  # Conv2D tracks its kernel as `_kernel` in the checkpoint graph.
  saved = {n.replace("/_kernel/", "/kernel/") for n, _ in tf.train.list_variables(path)
           if n.startswith("model/")}
  wanted = {"model/" + w.path.split("/", 1)[1] + "/.ATTRIBUTES/VARIABLE_VALUE"
            for w in net.weights}
  assert len(wanted) == len(net.weights) == 31 * 4 * 3 + 33
  assert wanted == saved
  fresh = _small_net(modalities)
  tf.train.Checkpoint(model=fresh).read(path).assert_existing_objects_matched()
  for a, b in zip(net.weights, fresh.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
  for m in modalities:
    np.testing.assert_array_equal(fresh(images, modality=m).numpy(), expected[m])


def test_keras_file_round_trip(tmp_path):
  net = _small_net(("ct", "mr"), dropout_rate=0.1, feature_base=4)
  _randomize(net, 1)
  images = tf.random.normal([1, 16, 16, 1], seed=3)
  path = str(tmp_path / "net.keras")
  net.save(path)
  loaded = keras.models.load_model(path)
  assert isinstance(loaded, CsaNet)
  assert loaded.get_config() == net.get_config()
  assert loaded.modalities == ("ct", "mr") and loaded.dropout_rate == 0.1
  for m in ("ct", "mr"):
    np.testing.assert_array_equal(loaded(images, modality=m).numpy(),
                                  net(images, modality=m).numpy())


def test_layer_settings_follow_the_reference():
  net = _small_net()
  layers = net.sublayers()
  convs = [l for l in layers if isinstance(l, keras.layers.Conv2D)]
  assert all(not c.use_bias for c in convs)
  assert all(isinstance(c.kernel_initializer, keras.initializers.TruncatedNormal)
             and c.kernel_initializer.stddev == 0.01 for c in convs)
  dropouts = [l for l in layers if isinstance(l, keras.layers.Dropout)]
  assert len(dropouts) == 30 and all(d.rate == 0.25 for d in dropouts)
  bns = [l for l in layers if isinstance(l, keras.layers.BatchNormalization)]
  assert len(bns) == 62 and all(b.momentum == 0.9 and b.epsilon == 1e-3 for b in bns)
  assert [c.dilation_rate for c in (net.g8_drb1.unit1.conv, net.g8_drb2.unit2.conv)] == [
      (2, 2), (2, 2)]
  assert net.g7_rb2.unit1.conv.dilation_rate == (1, 1)
  # TruncatedNormal(0.01) kernels stay within two standard deviations.
  kernel = net.g7_rb2.unit1.conv.kernel.numpy()
  assert np.abs(kernel).max() <= 0.02 and 0.007 < kernel.std() < 0.011


def test_residual_block_matches_manual_computation():
  # Inference with fresh BN (mean 0, var 1, gamma 1, beta 0): BN(x) = x / sqrt(1 + 1e-3).
  block = ResidualBlock(4, ("lge", "bssfp"))
  x = tf.random.normal([1, 4, 4, 2], seed=4)
  block.build(x.shape)
  y = block(x, modality="lge").numpy()

  def unit(inp, conv):
    act = inp / np.sqrt(np.float32(1.0 + 1e-3))
    act = np.where(act > 0, act, 0.2 * act)  # leaky ReLU slope 0.2
    return tf.nn.conv2d(act, conv.kernel, 1, "SAME").numpy()

  inner = unit(unit(x.numpy(), block.unit1.conv), block.unit2.conv)
  shortcut = np.pad(x.numpy(), [(0, 0), (0, 0), (0, 0), (1, 1)])  # zero pad 2 -> 4
  np.testing.assert_allclose(y, shortcut + inner, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="twice"):
    ResidualBlock(8, ("lge",)).build((None, 4, 4, 2))


def test_modalities_trace_separately_in_tf_function():
  net = _small_net()
  images = tf.random.normal([1, 8, 8, 1], seed=5)

  @tf.function
  def forward(x, modality):
    return net(x, modality=modality, training=False)

  for m in ("lge", "bssfp"):
    np.testing.assert_allclose(forward(images, m).numpy(),
                               net(images, modality=m).numpy(), rtol=1e-5, atol=1e-7)
  assert forward.experimental_get_tracing_count() == 2


def test_l2_loss_over_conv_kernels_excludes_bn():
  net = _small_net()
  _randomize(net, 6)
  kernels = net.conv_kernels
  expected = 1e-4 * sum(0.5 * np.sum(k.numpy() ** 2) for k in kernels)
  np.testing.assert_allclose(losses.l2_loss(kernels).numpy(), expected, rtol=1e-5)
  # The 33 kernels are every weight that is not a BN weight (no conv bias, no BN).
  bn_ids = {id(w) for w in _bn_weights(net)}
  assert len(kernels) == 33 and not bn_ids & {id(k) for k in kernels}
  assert {id(w) for w in net.weights} == bn_ids | {id(k) for k in kernels}
  # Behaviourally: a BN gamma leaves the L2 term alone; a kernel moves it by
  # 1e-4 * 0.5 * (new - old) sum of squares (Eq. 5's L2 term, REFERENCE.md section 2).
  before = losses.l2_loss(kernels).numpy()
  gamma = net.g1_rb1.unit1.bn.bn_for("lge").gamma
  gamma.assign(gamma * 3.0)
  assert losses.l2_loss(net.conv_kernels).numpy() == before
  kernel = net.g4_rb1.unit2.conv.kernel
  old = kernel.numpy()
  kernel.assign(2.0 * old)  # sum of squares x4: the L2 term grows by 3x its part
  np.testing.assert_allclose(losses.l2_loss(net.conv_kernels).numpy() - before,
                             1e-4 * 0.5 * 3.0 * np.sum(old.astype(np.float64) ** 2),
                             rtol=1e-3)


def test_convs_are_shared_and_bn_sites_are_per_modality():
  # Paper Eq. 1: the kernels are one set for every modality, BN is one set per modality.
  modalities = ("lge", "bssfp")
  net = _small_net(modalities)
  _randomize(net, 7)
  images = tf.random.normal([1, 16, 16, 1], seed=8)
  forward = {m: tf.function(lambda x, m=m: net(x, modality=m)) for m in modalities}

  def outputs():
    return {m: forward[m](images).numpy() for m in modalities}

  base = outputs()
  # _randomize gave the two modalities different BN sets.
  assert not np.allclose(base["lge"], base["bssfp"])
  rng = np.random.default_rng(9)
  kernels = net.conv_kernels
  assert len({id(k) for k in kernels}) == 33
  for kernel in kernels:
    old = kernel.numpy()
    kernel.assign(old + rng.normal(0.0, 0.5 * old.std(), old.shape).astype(old.dtype))
    changed = outputs()
    kernel.assign(old)
    # One variable drives both modalities' paths: each one's output moves.
    # (Unaffected outputs are bit-identical on this deterministic CPU path; see below.)
    for m in modalities:
      assert not np.array_equal(changed[m], base[m]), (kernel.path, m)
  sites = net.bn_layers()
  assert len(sites) == 31
  bns = [site.bn_for(m) for site in sites for m in modalities]
  assert len({id(bn) for bn in bns}) == 31 * len(modalities)
  for site in sites:
    for m, other in (modalities, modalities[::-1]):
      gamma = site.bn_for(m).gamma
      old = gamma.numpy()
      gamma.assign(old * 2.0 + 0.5)
      changed = outputs()
      gamma.assign(old)
      # Only the modality whose BN changed sees it; the other's output is bit-identical.
      assert not np.array_equal(changed[m], base[m]), (site.name, m)
      np.testing.assert_array_equal(changed[other], base[other], err_msg=site.name)
