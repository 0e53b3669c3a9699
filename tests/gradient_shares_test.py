"""experiments.gradient_shares: the CSA gradient's share of the segmentation gradient."""
import numpy as np
import pytest

from experiments import gradient_shares


@pytest.mark.integration
def test_shares_are_the_ratio_of_the_terms_own_gradient_norms(tiny_prep):
  from csa_tf.data import pipeline  # pylint: disable=g-import-not-at-top
  from csa_tf.configs import train_config as config_lib  # pylint: disable=g-import-not-at-top
  from csa_tf.model.bundle import ModelBundle  # pylint: disable=g-import-not-at-top
  from csa_tf.training.term_gradients import term_gradient_norms  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  readings = (("cosine", "count", "mean_then_square"), ("dot", "fraction",
                                                         "square_then_mean"))
  rows = gradient_shares.gradient_shares(tiny_prep.prep_dir, feature_base=2, batch_size=2,
                                         lam=0.5, seed=3, readings=readings)
  assert [(r["affinity"], r["area_norm"], r["reduction"]) for r in rows] == list(readings)
  for row, (affinity, area_norm, reduction) in zip(rows, readings):
    assert row["share"] == row["csa"] / row["segmentation"] and row["csa"] > 0
    # The CSA norm agrees with the training loop's diagnostics on the same batch and
    # weights (csa_tf/training/term_gradients.py), computed apart.
    config = config_lib.TrainConfig.for_data(
        dict(method="csa", feature_base=2, batch_size=2, lam=0.5, seed=3,
             csa_affinity=affinity, csa_area_norm=area_norm, csa_reduction=reduction,
             model_dir="unused"),
        spec=tiny_prep.spec, available_modalities=tiny_prep.modalities,
        crop_size=tiny_prep.crop_size, data_dir=tiny_prep.prep_dir)
    batches = next(iter(pipeline.unpaired_batches(tiny_prep, config.modalities,
                                                  batch_size=2, seed=3)))
    tf.keras.utils.set_random_seed(3)
    norms = term_gradient_norms(ModelBundle(config).build(), batches, config)
    np.testing.assert_allclose(row["csa"], float(norms["grad_norm_csa"]), rtol=1e-4)
  # The two readings differ by orders of magnitude (the point of the study's table a).
  assert rows[1]["share"] > 100 * rows[0]["share"]
  text = gradient_shares.markdown(rows)
  assert text.startswith("| affinity | area norm |") and text.count("\n") == 4


@pytest.mark.integration
def test_shares_at_a_trained_runs_checkpoint(tiny_prep, tiny_run):
  from csa_tf.io.run_dir import RunDir  # pylint: disable=g-import-not-at-top
  checkpoint = RunDir(tiny_run.model_dir).latest_checkpoint()
  reading = (("cosine", "fraction", "mean_then_square"),)
  fresh, trained = (gradient_shares.gradient_shares(
      tiny_prep.prep_dir, feature_base=2, batch_size=2, lam=0.5, seed=0,
      readings=reading, checkpoint=path)[0] for path in (None, checkpoint))
  # Another network: another CSA loss on the same batch.
  assert trained["csa_loss"] != fresh["csa_loss"] and trained["share"] > 0
  from csa_tf.errors import CsaInputError  # pylint: disable=g-import-not-at-top
  with pytest.raises(CsaInputError, match="checkpoint does not match"):
    gradient_shares.gradient_shares(tiny_prep.prep_dir, feature_base=4, batch_size=2,
                                    lam=0.5, seed=0, readings=reading,
                                    checkpoint=checkpoint)
