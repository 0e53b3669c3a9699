"""Tests for the training loop: checkpoints, overfitting, determinism, resume."""

import numpy as np
import pytest
import tensorflow as tf

from csa_tf.configs import train_config as config_lib
from csa_tf.training import objective
from csa_tf.errors import CsaInputError
from csa_tf.io.run_dir import RunDir
from csa_tf.model.bundle import ModelBundle
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


@pytest.mark.integration
def test_resume_equals_uninterrupted(tiny_prep, straight_run, tmp_path):
  Trainer(_deterministic_config(tmp_path / "resumed", 2), tiny_prep, log=quiet).train()
  resumed = Trainer(_deterministic_config(tmp_path / "resumed", 4), tiny_prep, log=quiet)
  resumed.train()
  assert int(resumed.step.numpy()) == 4 and int(resumed.optimizer.iterations.numpy()) == 4
  for a, b in zip(straight_run[1], weights(resumed.bundle)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.integration
def test_model_dir_of_other_setting_is_refused(tiny_prep, straight_run):
  # The trained run's folder is left as it was: the refusal comes before any write.
  model_dir = straight_run[0].model_dir
  with pytest.raises(CsaInputError, match="config.json.*method 'csa' -> 'msbn'"):
    Trainer(_deterministic_config(model_dir, 4, method="msbn"), tiny_prep,
            log=quiet).train()


@pytest.mark.integration
def test_three_modalities_train_and_share_one_network(tiny_prep, tmp_path):
  config = make_config(tmp_path / "three", modalities=("lge", "bssfp", "t2"),
                       train_steps=2)
  trainer = Trainer(config, tiny_prep, log=quiet)
  terms = trainer.train()
  assert len(trainer.bundle.unique_networks) == 1
  assert {"dice_t2", "ce_t2", "csa"} <= set(terms)
  assert all(np.isfinite(v) for v in terms.values())


def test_step_on_one_modality_leaves_other_bn_statistics(tiny_prep, tmp_path):
  config = make_config(tmp_path / "bn", method="msbn", modalities=("lge", "bssfp"))
  bundle = ModelBundle(config).build()
  net = bundle.networks["lge"]
  def stats(modality):
    return [v.numpy().copy() for bn in net.bn_layers() for v in
            (bn.bn_for(modality).moving_mean, bn.bn_for(modality).moving_variance)]
  before_bssfp, before_lge = stats("bssfp"), stats("lge")
  lge_only = config_lib.TrainConfig(**dict(config.to_json(), modalities=("lge",),
                                           method="single", csa_pairs=()))
  images = tf.random.normal([2, 32, 32, 1], seed=3)
  labels = tf.zeros([2, 32, 32], tf.int32)
  objective.forward(bundle, {"lge": (images, labels)}, lge_only, training=True)
  for a, b in zip(before_bssfp, stats("bssfp")):
    np.testing.assert_array_equal(a, b)
  assert any(not np.array_equal(a, b) for a, b in zip(before_lge, stats("lge")))


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
