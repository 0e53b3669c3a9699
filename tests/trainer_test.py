"""Tests for the training loop: checkpoints, overfitting, determinism, resume, BN sets."""
import glob
import os

import numpy as np
import pytest
import tensorflow as tf

from csa_tf.configs import train_config as config_lib
from csa_tf.errors import CsaInputError
from csa_tf.io.run_dir import RunDir
from csa_tf.model.bundle import ModelBundle
from csa_tf.training import term_gradients
from csa_tf.training.trainer import Trainer
from tests.helpers import make_config, quiet


def weights(bundle):
  return [v.numpy() for net in bundle.unique_networks for v in net.weights]


@pytest.mark.integration
@pytest.mark.parametrize("method", ["single", "csa", "joint"])
def test_checkpoint_holds_every_weight_and_restores_logits(tiny_prep, tmp_path, method):
  config = make_config(tmp_path / method, method=method, train_steps=2)
  trainer = Trainer(config, tiny_prep, log=quiet)
  trainer.train()
  # A fresh bundle differs from the trained one in every weight (random kernels, and
  # BN gammas/betas/moving statistics moved by training), so equality after restore
  # shows that every weight, each modality's BN included, came from the checkpoint.
  # (Checking key names is not enough: a variable is stored once, under the first path
  # that reaches it, which can be the optimizer's.)
  restored = ModelBundle(config).build()
  trained = weights(trainer.bundle)
  # 33 kernels per network and gamma, beta, mean, variance per BN set at 31 sites:
  # "single" has two one-BN-set networks, "csa" one with two sets, "joint" one shared set.
  expected_count = {"single": 2 * (33 + 4 * 31), "csa": 33 + 2 * 4 * 31,
                    "joint": 33 + 4 * 31}[method]
  assert len(trained) == sum(len(n.weights) for n in restored.unique_networks) == (
      expected_count)
  for a, b in zip(trained, weights(restored)):
    assert not np.array_equal(a, b)
  restored.restore(RunDir(config.model_dir).latest_checkpoint())
  for a, b in zip(trained, weights(restored)):
    np.testing.assert_array_equal(a, b)
  images = tf.random.normal([2, 32, 32, 1], seed=1)
  for modality in config.modalities:
    np.testing.assert_array_equal(trainer.bundle.logits(images, modality).numpy(),
                                  restored.logits(images, modality).numpy())


def _segmentation_loss(terms, modalities):
  # 1 + Dice is >= 0, so "halves" is meaningful (UMMKD's Dice loss is in [-1, 0]).
  return sum(1 + terms[f"dice_{m}"] + terms[f"ce_{m}"] for m in modalities)


@pytest.mark.integration
def test_tiny_overfit_halves_the_loss(tiny_prep, tmp_path):
  config = make_config(tmp_path / "overfit", feature_base=4, batch_size=4,
                       dropout_rate=0.0)
  trainer = Trainer(config, tiny_prep, log=quiet)
  batches = next(iter(trainer.dataset(0)))
  first = None
  for _ in range(60):
    terms = {k: float(v) for k, v in trainer.train_step(batches).items()}
    first = first if first is not None else _segmentation_loss(terms, config.modalities)
  last = _segmentation_loss(terms, config.modalities)
  assert last <= 0.5 * first, (first, last)


def _deterministic_config(model_dir, steps, **overrides):
  # A checkpoint at step 2 whatever the length: BN statistics are re-estimated before
  # each checkpoint, so a run resumed from step 2 must have met that one too.
  return make_config(model_dir, deterministic=True, train_steps=steps,
                     checkpoint_every=2, **overrides)


@pytest.fixture(scope="module")
def straight_run(tiny_prep, tmp_path_factory):
  """(config, final weights) of a seeded, deterministic 4-step run. Read-only."""
  config = _deterministic_config(tmp_path_factory.mktemp("straight") / "run", 4)
  trainer = Trainer(config, tiny_prep, log=quiet)
  trainer.train()
  return config, weights(trainer.bundle)


@pytest.mark.integration
def test_seeded_runs_with_op_determinism_are_identical(tiny_prep, straight_run, tmp_path):
  trainer = Trainer(_deterministic_config(tmp_path / "again", 4), tiny_prep, log=quiet)
  trainer.train()
  for a, b in zip(straight_run[1], weights(trainer.bundle)):
    np.testing.assert_array_equal(a, b)


# Slow: tests/reliability_test.py's SIGKILL test checks the same bit-exact resume
# through the command line in the default run.
@pytest.mark.slow
def test_resume_equals_uninterrupted(tiny_prep, straight_run, tmp_path):
  Trainer(_deterministic_config(tmp_path / "resumed", 2), tiny_prep, log=quiet).train()
  resumed = Trainer(_deterministic_config(tmp_path / "resumed", 4), tiny_prep, log=quiet)
  resumed.train()
  assert int(resumed.step.numpy()) == 4 and int(resumed.optimizer.iterations.numpy()) == 4
  for a, b in zip(straight_run[1], weights(resumed.bundle)):
    np.testing.assert_array_equal(a, b)


def test_step_term_gradients_are_the_diagnostics_of_its_batch(tiny_prep, tmp_path):
  # The training step's own diagnostics (its tape, loss / R, no fp16 scale here), run
  # eagerly, equal term_gradients.term_gradient_norms of the same batch, and leave the
  # step's gradient as it is. Dropout 0 and BN moving statistics reset between the
  # passes, so that every pass sees the same network.
  config = make_config(tmp_path / "run", dropout_rate=0.0, log_term_gradients=True)
  trainer = Trainer(config, tiny_prep, log=quiet)
  batches = next(iter(trainer.dataset(0)))
  start = weights(trainer.bundle)

  def reset():
    for variable, value in zip(
        [v for net in trainer.bundle.unique_networks for v in net.weights], start):
      variable.assign(value)
  plain, plain_terms, _ = trainer.replica_gradients(batches)
  reset()
  gradients, terms, _ = trainer.replica_gradients(batches, with_term_gradients=True)
  reset()
  expected = term_gradients.term_gradient_norms(trainer.bundle, batches, config)
  assert sorted(k for k in terms if k.startswith("grad_norm_")) == sorted(expected)
  assert "grad_norm_dice_lge" not in plain_terms
  for name, value in expected.items():
    np.testing.assert_allclose(float(terms[name]), float(value), rtol=1e-5)
  for a, b in zip(plain, gradients):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# Slow (~70 s, most of it tracing the diagnostic step):
# test_step_term_gradients_are_the_diagnostics_of_its_batch checks the step's
# diagnostics eagerly in the default run.
@pytest.mark.slow
def test_term_gradients_are_logged_on_log_steps_and_change_nothing(tiny_prep, straight_run,
                                                                  tmp_path):
  # straight_run's 4 steps again with --log_term_gradients (may change on resume, so
  # no other setting): logged at steps 1 (the first) and 4 (the last) only, with the
  # same weights to float rounding (same forward pass and tape, no extra dropout
  # draws; but the log steps run in a graph of their own, not the K-step loop body, so
  # not bit for bit: up to 1.1e-6 apart after 4 steps, on weights and BN statistics
  # of order 1e-2 to 0.3, measured 2026-12-01).
  config = _deterministic_config(tmp_path / "diag", 4, log_term_gradients=True)
  assert config.changes_from(straight_run[0], on_resume=False) == {}
  trainer = Trainer(config, tiny_prep, log=quiet)
  trainer.train()
  for a, b in zip(straight_run[1], weights(trainer.bundle)):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
  terms = ("dice_lge", "dice_bssfp", "ce_lge", "ce_bssfp", "csa", "l2")
  final = RunDir(config.model_dir).read_final_losses()
  assert {k for k in final if k.startswith("grad_norm_")} == {
      f"grad_norm_{t}" for t in terms}
  assert all(final[f"grad_norm_{t}"] > 0 for t in terms)
  steps = {}
  for path in glob.glob(os.path.join(config.model_dir, "train", "events.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag.startswith("grad_norm/"):
          steps.setdefault(value.tag, []).append(event.step)
  assert steps == {f"grad_norm/{t}": [1, 4] for t in terms}


@pytest.mark.integration
def test_model_dir_of_other_setting_is_refused(tiny_prep, straight_run):
  # The trained run's folder is left as it was: the refusal comes before any write.
  model_dir = straight_run[0].model_dir
  with pytest.raises(CsaInputError, match="config.json.*method 'csa' -> 'msbn'"):
    Trainer(_deterministic_config(model_dir, 4, method="msbn"), tiny_prep,
            log=quiet).train()


# Slow: tests/objective_test.py checks the three-modality objective term by term in the
# default run; this trains it through the loop.
@pytest.mark.slow
def test_three_modalities_train_and_share_one_network(tiny_prep, tmp_path):
  config = make_config(tmp_path / "three", modalities=("lge", "bssfp", "t2"),
                       train_steps=2)
  trainer = Trainer(config, tiny_prep, log=quiet)
  terms = trainer.train()
  assert len(trainer.bundle.unique_networks) == 1
  assert {"dice_t2", "ce_t2", "csa"} <= set(terms)
  assert all(np.isfinite(v) for v in terms.values())


def _bn_values(net, modality, name):
  """One BN variable (e.g. "moving_mean") of modality's BN set at each of the 31 sites."""
  return [getattr(site.bn_for(modality), name).numpy() for site in net.bn_layers()]


def _random_batch(seed, size=16):
  # Grey levels 10 +- 30: the first conv's outputs (kernels of std 0.01) then have means
  # and variances far above float32 rounding of the BN statistics.
  rng = np.random.default_rng(seed)
  return (tf.constant(rng.normal(10.0, 30.0, (2, size, size, 1)), tf.float32),
          tf.constant(rng.integers(0, 4, (2, size, size)), tf.int32))


# The settings with one network and a BN set per modality (REFERENCE.md section 3).
# ummkd and affinity run the same forward paths as msbn (plain logits) and csa (feature
# taps), so they are opt-in.
@pytest.mark.integration
@pytest.mark.parametrize("method", ["msbn", pytest.param("ummkd", marks=pytest.mark.slow),
                                    pytest.param("affinity", marks=pytest.mark.slow),
                                    "csa"])
def test_train_step_moves_each_modality_bn_with_its_own_batch_only(tiny_prep, tmp_path,
                                                                     method):
  # Two steps of the compiled train_step from the same start, with the same lge batch
  # and different bssfp batches: lge's BN must end bit for bit the same, bssfp's not.
  # Routing every modality through one BN set, or mixing the batches' statistics, breaks
  # one or the other. Dropout 0: nothing random in the step; op determinism as in the
  # seeded-runs test above, so that "the same" means bit for bit on a GPU too.
  config = make_config(tmp_path / method, method=method, modalities=("lge", "bssfp"),
                       crop_size=16, dropout_rate=0.0, deterministic=True)
  trainer = Trainer(config, tiny_prep, log=quiet)
  net = trainer.bundle.networks["lge"]
  # Restoring every variable (weights, BN statistics, optimizer slots and iterations)
  # before the second step reuses the traced step, which costs most of the time.
  state = [v for n in trainer.bundle.unique_networks for v in n.variables]
  state += list(trainer.optimizer.variables)
  start = [v.numpy() for v in state]
  lge = _random_batch(1)
  kernel = net.g1_conv.kernel.numpy()
  statistics = ("moving_mean", "moving_variance")
  initial = {name: _bn_values(net, "lge", name) for name in statistics}
  runs = []
  for bssfp_seed in (2, 3):
    for variable, value in zip(state, start):
      variable.assign(value)
    batches = {"lge": lge, "bssfp": _random_batch(bssfp_seed)}
    trainer.train_step(batches)
    runs.append({m: {name: _bn_values(net, m, name)
                     for name in statistics + ("gamma", "beta")} for m in batches})
    # The first BN site normalises g1_conv(images): its moving statistics are the
    # momentum-0.9 update, from (0, 1), with that modality's batch moments alone.
    for modality, (images, _) in batches.items():
      conv = tf.nn.conv2d(images, kernel, strides=1, padding="SAME").numpy()
      site = net.bn_layers()[0].bn_for(modality)
      np.testing.assert_allclose(site.moving_mean.numpy(),
                                 0.1 * conv.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)
      np.testing.assert_allclose(site.moving_variance.numpy(),
                                 0.9 + 0.1 * conv.var(axis=(0, 1, 2)), rtol=1e-5)
      assert conv.var(axis=(0, 1, 2)).min() > 0.1
  first, second = runs
  for name in statistics:
    # Every one of the 31 sites moved in the step, and to the same values both times.
    assert len(first["lge"][name]) == len(initial[name]) == 31
    for a, b, before in zip(first["lge"][name], second["lge"][name], initial[name]):
      assert not np.array_equal(a, before)
      np.testing.assert_array_equal(a, b)
    assert all(not np.array_equal(a, b)
               for a, b in zip(first["bssfp"][name], second["bssfp"][name]))
  # gamma and beta move with the gradient: in msbn only lge's own loss reaches lge's;
  # the KD, affinity and CSA terms couple both modalities' BN parameters by design.
  for name in ("gamma", "beta"):
    assert all(not np.array_equal(a, b)
               for a, b in zip(first["bssfp"][name], second["bssfp"][name]))
    if method == "msbn":
      for a, b in zip(first["lge"][name], second["lge"][name]):
        np.testing.assert_array_equal(a, b)


def test_config_round_trip_and_bad_values(tmp_path):
  config = make_config(tmp_path)
  assert config_lib.TrainConfig.from_json(config.to_json()) == config
  # The library names the field; csa_tf.train spells it as its flag (render).
  for field, value, named in (("train_steps", -1, "train_steps=-1"),
                              ("method", "fancy", "method=fancy"),
                              ("lr_decay_rate", 1.5, "lr_decay_rate"),
                              ("modalities", ("lge",), "method=csa needs at least two")):
    with pytest.raises(CsaInputError, match="^" + named) as info:
      make_config(tmp_path, **{field: value})
    assert info.value.render(lambda name: f"--{name}").startswith("--" + named)
