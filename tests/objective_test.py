"""Tests of csa_tf/training/objective.py: paper Eq. 5 put together, and BN routing.

Every expected number is computed apart from objective.py: logits and feature taps come
straight from the networks (`net(...)`, `net.call_with_features`), each term from the
public losses in csa_tf.losses (the one-mask "Affinity" loss and L2 in NumPy), and the
total from this file's own arithmetic. The networks are tiny (feature_base 2, 16x16
inputs) with fixed seeded weights large enough that every term is well above rounding,
and each modality's BN set holds its own values, so that routing a batch through another
modality's BN set changes the numbers.
"""
import functools
import dataclasses
import itertools

import numpy as np
import pytest
import tensorflow as tf

from csa_tf import losses
from csa_tf.model.bundle import ModelBundle
from csa_tf.training import objective
from tests.helpers import make_config

TWO = ("lge", "bssfp")
THREE = ("lge", "bssfp", "t2")
SIZE = 16
# Distinct from each other and from 1, so a swap of alpha and beta or a dropped lambda
# changes the total (Eq. 5).
ALPHA, BETA, LAM = 0.7, 1.9, 3.1
# Not the default 2.0, so a hard-coded temperature shows.
KD_TEMPERATURE = 0.6
# The extra term's name per setting (REFERENCE.md section 3); None: no extra term.
EXTRA_TERM = {"single": None, "ummkd": "kd", "joint": None, "msbn": None,
              "affinity": "affinity", "csa": "csa"}
# Relative tolerance between objective.py and the independent float32/float64 sums.
RTOL = 1e-5


def _config(method, modalities=TWO, **overrides):
  # Dropout 0: training-mode passes are deterministic too. square_then_mean and
  # "fraction" (TINY_CONFIG) are not the defaults, so they must be passed through.
  values = dict(method=method, modalities=modalities, crop_size=SIZE, dropout_rate=0.0,
                alpha=ALPHA, beta=BETA, lam=LAM, kd_temperature=KD_TEMPERATURE,
                csa_reduction="square_then_mean")
  values.update(overrides)
  return make_config(**values)


def _fix_weights(bundle, seed=0):
  """Seeded weights: He-like kernels, and every BN set (each modality's) different.

  Fresh TruncatedNormal(0.01) kernels give logits of ~1e-3, and KD and affinity terms
  of ~1e-14; these give logits of ~1 and terms of 1e-4 and more.
  """
  rng = np.random.default_rng(seed)
  draw = {"gamma": lambda shape: rng.uniform(0.5, 1.5, shape),
          "beta": lambda shape: rng.normal(0.0, 0.2, shape),
          "moving_mean": lambda shape: rng.normal(0.0, 0.2, shape),
          "moving_variance": lambda shape: rng.uniform(0.5, 1.5, shape),
          "kernel": lambda shape: rng.normal(0.0, 1.1 / np.sqrt(np.prod(shape[:-1])),
                                             shape)}
  for net in bundle.unique_networks:
    for weight in net.weights:
      weight.assign(draw[weight.path.split("/")[-1]](weight.shape).astype(np.float32))
  return bundle


def _batches(modalities, seed=1, batch=2):
  """{modality: (images, labels)}: 4x4-pixel label blocks, a grey level per class.

  Each modality maps the classes to other grey levels, so the modalities' class
  prototypes and affinities differ (the KD, affinity and CSA terms are not ~0).
  """
  rng = np.random.default_rng(seed)
  out = {}
  for modality in modalities:
    blocks = rng.integers(0, 4, (batch, SIZE // 4, SIZE // 4))
    labels = np.kron(blocks, np.ones((1, 4, 4), np.int64))
    levels = rng.normal(0.0, 1.5, 4)
    images = levels[labels] + rng.normal(0.0, 0.3, labels.shape)
    out[modality] = (tf.constant(images[..., None], tf.float32),
                     tf.constant(labels, tf.int32))
  return out


@functools.lru_cache(maxsize=None)
def _fixed(method, modalities):
  """(config, bundle with fixed weights, batches). Shared across tests: read-only."""
  config = _config(method, modalities)
  return config, _fix_weights(ModelBundle(config).build()), _batches(modalities)


def _fresh(method, modalities=TWO, **overrides):
  """Like _fixed, for tests that change weights or BN statistics."""
  config = _config(method, modalities, **overrides)
  return config, _fix_weights(ModelBundle(config).build()), _batches(modalities)


def _avg_pool(x, size):
  """[B, h, w, C] average-pooled to [B, size, size, C] (h = w a multiple of size)."""
  factor = x.shape[1] // size
  return x.reshape(x.shape[0], size, factor, size, factor, x.shape[-1]).mean(axis=(2, 4))


def _one_mask_affinity(feat_l, feat_k, area_norm):
  """Eq. 2-3 with one all-ones mask, in NumPy: cos(x_m, y_n) / S over the whole batch."""
  x, y = np.asarray(feat_l, np.float64), np.asarray(feat_k, np.float64)
  size = min(x.shape[1], y.shape[1])
  x = _avg_pool(x, size).reshape(-1, x.shape[-1])
  y = _avg_pool(y, size).reshape(-1, y.shape[-1])
  cosine = (x.T @ y) / np.outer(np.linalg.norm(x, axis=0), np.linalg.norm(y, axis=0))
  # S = every position for "count"; count / positions = 1 for "fraction"; 1 for "none".
  return cosine / (x.shape[0] if area_norm == "count" else 1.0)


def _one_mask_affinity_loss(feats_a, feats_b, config):
  """The "Affinity" row's loss for one modality pair (REFERENCE.md section 2), NumPy."""
  per_pair = []
  for l, k in config.csa_pairs:
    diff = (_one_mask_affinity(feats_a[l], feats_a[k], config.csa_area_norm)
            - _one_mask_affinity(feats_b[l], feats_b[k], config.csa_area_norm))
    per_pair.append(np.mean(diff) ** 2 if config.csa_reduction == "mean_then_square"
                    else np.mean(diff ** 2))
  return np.mean(per_pair)


def _direct_outputs(bundle, batches, config):
  """Logits and taps of each modality's batch through its own network and BN set."""
  logits, feats = {}, {}
  for modality in config.modalities:
    logits[modality], feats[modality] = bundle.networks[modality].call_with_features(
        batches[modality][0], modality=modality, training=False)
  return logits, feats


def _pair_loss(name, a, b, logits, feats, batches, config):
  labels_a, labels_b = batches[a][1], batches[b][1]
  if name == "kd":
    return float(losses.kd_loss(logits[a], labels_a, logits[b], labels_b,
                                num_classes=config.num_classes,
                                temperature=KD_TEMPERATURE))
  if name == "affinity":
    return _one_mask_affinity_loss(feats[a], feats[b], config)
  return float(losses.csa_pairs_loss(
      feats[a], labels_a, feats[b], labels_b, config.csa_pairs,
      num_classes=config.num_classes, area_norm=config.csa_area_norm,
      reduction=config.csa_reduction, class_specific=True, affinity=config.csa_affinity))


def _expected_terms(bundle, batches, config):
  """Every term of Eq. 5, computed apart from objective.py."""
  logits, feats = _direct_outputs(bundle, batches, config)
  terms = {}
  for modality in config.modalities:
    probs = tf.nn.softmax(logits[modality], axis=-1)
    labels = batches[modality][1]
    terms[f"dice_{modality}"] = float(losses.dice_loss(probs, labels,
                                                       num_classes=config.num_classes))
    terms[f"ce_{modality}"] = float(losses.weighted_ce_loss(
        probs, labels, num_classes=config.num_classes))
  extra = EXTRA_TERM[config.method]
  if extra:
    # Averaged over modality pairs (REFERENCE.md sections 2-3; module docstring).
    terms[extra] = np.mean([_pair_loss(extra, a, b, logits, feats, batches, config)
                            for a, b in itertools.combinations(config.modalities, 2)])
  # L2 = weight * sum 0.5 ||W||^2 over every conv kernel of every distinct network.
  networks = {id(net): net for net in bundle.networks.values()}.values()
  kernels = [w.numpy().astype(np.float64) for net in networks for w in net.weights
             if w.path.endswith("/kernel")]
  assert len(kernels) == 33 * len(networks)
  terms["l2"] = config.l2_weight * sum(0.5 * np.sum(k ** 2) for k in kernels)
  return terms


def _expected_total(terms, modalities):
  """Eq. 5: alpha * sum Dice + beta * sum CE + lambda * extra + L2."""
  extra = sum(v for k, v in terms.items() if k in ("kd", "affinity", "csa"))
  return (ALPHA * sum(terms[f"dice_{m}"] for m in modalities)
          + BETA * sum(terms[f"ce_{m}"] for m in modalities) + LAM * extra + terms["l2"])


@pytest.mark.parametrize("method,modalities", [
    *(pytest.param(method, TWO, id=method) for method in EXTRA_TERM),
    # Three pairs: the extra term is their mean, not their sum.
    *(pytest.param(method, THREE, id=f"{method}-3") for method in ("ummkd", "affinity",
                                                                   "csa"))])
def test_total_is_eq5_of_independent_terms(method, modalities):
  config, bundle, batches = _fixed(method, modalities)
  total, terms = objective.compute_losses(bundle, batches, config, training=False)
  expected = _expected_terms(bundle, batches, config)
  # Exactly the documented keys: dice_/ce_ per modality, the extra term under its name
  # (none for single, joint, msbn), and l2.
  keys = {f"{t}_{m}" for t in ("dice", "ce") for m in modalities} | {"l2"}
  assert set(terms) == keys | ({EXTRA_TERM[method]} - {None})
  assert set(expected) == set(terms)
  for name, value in expected.items():
    np.testing.assert_allclose(float(terms[name]), value, rtol=RTOL, atol=1e-8,
                               err_msg=name)
  extra = EXTRA_TERM[method]
  if extra:
    # Each extra term is far above the tolerance (KD, the smallest, is ~0.01 of a total
    # of ~4), so lambda's weight shows in the total.
    assert expected[extra] > 0.01, expected[extra]
  np.testing.assert_allclose(float(total), _expected_total(expected, modalities),
                             rtol=RTOL)


def test_ummkd_adds_lambda_times_kd_at_the_configured_temperature():
  config, bundle, batches = _fixed("ummkd", TWO)
  total, terms = objective.compute_losses(bundle, batches, config, training=False)
  logits, _ = _direct_outputs(bundle, batches, config)
  kd = {t: float(losses.kd_loss(logits["lge"], batches["lge"][1], logits["bssfp"],
                                batches["bssfp"][1], num_classes=config.num_classes,
                                temperature=t))
        for t in (KD_TEMPERATURE, 2.0)}
  # Total minus the segmentation terms and L2 is lambda * KD at T = 0.6 ...
  seg = sum(ALPHA * float(terms[f"dice_{m}"]) + BETA * float(terms[f"ce_{m}"])
            for m in TWO)
  np.testing.assert_allclose(float(total) - seg - float(terms["l2"]),
                             LAM * kd[KD_TEMPERATURE], rtol=1e-4)
  np.testing.assert_allclose(float(terms["kd"]), kd[KD_TEMPERATURE], rtol=RTOL)
  # ... which is not KD at the default T = 2 (the prototypes' softmax is flatter there).
  assert kd[KD_TEMPERATURE] > 3 * kd[2.0], kd


def test_affinity_is_the_one_mask_loss_and_csa_the_class_masked_one():
  # Same architecture and seed: both bundles hold the same weights and features.
  config_aff, bundle_aff, batches = _fixed("affinity", TWO)
  config_csa, bundle_csa, _ = _fixed("csa", TWO)
  _, feats = _direct_outputs(bundle_csa, batches, config_csa)
  _, feats_aff = _direct_outputs(bundle_aff, batches, config_aff)
  np.testing.assert_array_equal(feats["bssfp"]["g8"], feats_aff["bssfp"]["g8"])
  kw = dict(num_classes=config_csa.num_classes, area_norm=config_csa.csa_area_norm,
            reduction=config_csa.csa_reduction)
  args = (feats["lge"], batches["lge"][1], feats["bssfp"], batches["bssfp"][1],
          config_csa.csa_pairs)
  one_mask = _one_mask_affinity_loss(feats["lge"], feats["bssfp"], config_aff)
  # The NumPy one-mask loss agrees with the library's class_specific=False.
  np.testing.assert_allclose(float(losses.csa_pairs_loss(*args, class_specific=False,
                                                         **kw)), one_mask, rtol=1e-4)
  class_masked = float(losses.csa_pairs_loss(*args, class_specific=True, **kw))
  affinity = float(objective.compute_losses(bundle_aff, batches, config_aff,
                                            training=False)[1]["affinity"])
  csa = float(objective.compute_losses(bundle_csa, batches, config_csa,
                                       training=False)[1]["csa"])
  np.testing.assert_allclose(affinity, one_mask, rtol=1e-4)
  np.testing.assert_allclose(csa, class_masked, rtol=RTOL)
  # The two rows are different losses on the same features, by far more than rounding.
  assert abs(csa - affinity) > 0.5 * max(csa, affinity), (csa, affinity)


def test_single_networks_share_nothing():
  config, bundle, batches = _fresh("single")
  lge, bssfp = bundle.networks["lge"], bundle.networks["bssfp"]
  assert lge is not bssfp and lge.modalities == ("lge",) and bssfp.modalities == ("bssfp",)
  assert not {id(v) for v in lge.variables} & {id(v) for v in bssfp.variables}
  images = batches["bssfp"][0]
  before = {name: net(images, modality=name, training=False).numpy()
            for name, net in (("lge", lge), ("bssfp", bssfp))}
  lge.g1_conv.kernel.assign_add(tf.fill(lge.g1_conv.kernel.shape, 0.5))
  # A change of lge's first kernel moves lge's output and leaves bssfp's bit for bit.
  assert np.abs(lge(images, modality="lge").numpy() - before["lge"]).max() > 0.1
  np.testing.assert_array_equal(bssfp(images, modality="bssfp").numpy(), before["bssfp"])


def test_csa_total_takes_the_dot_reading_when_asked():
  config, bundle, batches = _fresh("csa", csa_affinity="dot")
  total, terms = objective.compute_losses(bundle, batches, config, training=False)
  expected = _expected_terms(bundle, batches, config)
  np.testing.assert_allclose(float(terms["csa"]), expected["csa"], rtol=RTOL)
  np.testing.assert_allclose(float(total), _expected_total(expected, TWO), rtol=RTOL)
  cosine = _expected_terms(bundle, batches, dataclasses.replace(config,
                                                                csa_affinity="cosine"))
  # Not the cosine reading under another name.
  assert abs(expected["csa"] - cosine["csa"]) > 0.5 * max(expected["csa"], cosine["csa"])


def test_joint_has_one_bn_set_fed_each_modality_in_its_own_pass():
  config, bundle, batches = _fresh("joint")
  assert config.joint_bn == "separate"  # REFERENCE.md section 1
  net = bundle.networks["lge"]
  assert bundle.networks["bssfp"] is net and len(bundle.unique_networks) == 1
  logits, features = objective.forward(bundle, batches, config, training=True,
                                       with_features=True)
  for modality in ("lge", "bssfp"):
    # Training mode: the shared BN normalises with this modality's batch statistics.
    direct, taps = net.call_with_features(batches[modality][0], modality="lge",
                                          training=True)
    np.testing.assert_allclose(logits[modality], direct, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(features[modality]["g4"], taps["g4"], rtol=1e-5,
                               atol=1e-5)
  plain, _ = objective.forward(bundle, batches, config, training=True)
  np.testing.assert_allclose(plain["bssfp"], logits["bssfp"], rtol=1e-5, atol=1e-5)
  # ... not with those of the mixed batch.
  mixed = net(tf.concat([batches["lge"][0], batches["bssfp"][0]], axis=0), modality="lge",
              training=True)
  assert np.abs(logits["lge"] - mixed[:2]).max() > 0.1


def test_joint_concat_has_one_bn_set_fed_the_concatenated_batch():
  config, bundle, batches = _fresh("joint", joint_bn="concat")
  net = bundle.networks["lge"]
  assert bundle.networks["bssfp"] is net and len(bundle.unique_networks) == 1
  sites = net.bn_layers()
  assert len(sites) == 31
  for site in sites:
    assert site.bn_keys == ("shared",) and site.bn_for("lge") is site.bn_for("bssfp")
  logits, features = objective.forward(bundle, batches, config, training=True,
                                       with_features=True)
  joint = tf.concat([batches["lge"][0], batches["bssfp"][0]], axis=0)
  direct, taps = net.call_with_features(joint, modality="lge", training=True)
  # Training mode: the shared BN normalises with the statistics of the mixed batch ...
  np.testing.assert_allclose(logits["lge"], direct[:2], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(logits["bssfp"], direct[2:], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(features["bssfp"]["g4"], taps["g4"][2:], rtol=1e-5,
                             atol=1e-5)
  # ... not with those of one modality's batch alone.
  alone = net(batches["lge"][0], modality="lge", training=True)
  assert np.abs(logits["lge"] - alone).max() > 0.1


def _bn_statistics(net, modality):
  return [v.numpy().copy() for site in net.bn_layers()
          for v in (site.bn_for(modality).moving_mean, site.bn_for(modality).moving_variance)]


def _set_bn_statistics(net, modality, values):
  variables = [v for site in net.bn_layers()
               for v in (site.bn_for(modality).moving_mean,
                         site.bn_for(modality).moving_variance)]
  for variable, value in zip(variables, values):
    variable.assign(value)


# msbn takes forward()'s logits-only call, csa its call_with_features.
@pytest.mark.parametrize("method", ["msbn", "csa"])
def test_forward_routes_each_modality_through_its_own_bn_set(method):
  config, bundle, batches = _fresh(method)
  net = bundle.networks["lge"]
  logits, features = objective.forward(bundle, batches, config, training=False)
  for modality, other in (("lge", "bssfp"), ("bssfp", "lge")):
    images = batches[modality][0]
    direct, taps = net.call_with_features(images, modality=modality, training=False)
    np.testing.assert_allclose(logits[modality], direct, rtol=1e-5, atol=1e-6)
    # The other BN set gives other logits: routing through it would show.
    assert np.abs(logits[modality] - net(images, modality=other)).max() > 0.1
    if method == "csa":
      for name in ("g3", "g4", "g8"):
        np.testing.assert_allclose(features[modality][name], taps[name], rtol=1e-5,
                                   atol=1e-6)
  # Training mode: each modality's moving statistics move with its own batch only, as
  # when its batch alone goes through its BN set.
  initial = {m: _bn_statistics(net, m) for m in TWO}
  expected = {}
  for modality in TWO:
    net(batches[modality][0], modality=modality, training=True)
    expected[modality] = _bn_statistics(net, modality)
    _set_bn_statistics(net, modality, initial[modality])
  objective.forward(bundle, batches, config, training=True)
  for modality in TWO:
    got = _bn_statistics(net, modality)
    assert all(np.abs(a - b).max() > 1e-3 for a, b in zip(got, initial[modality]))
    for a, b in zip(got, expected[modality]):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
