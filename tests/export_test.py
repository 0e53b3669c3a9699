"""Tests for csa_tf.export: the serving models reproduce the trained networks."""
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from csa_tf.serving import exporter as export
from csa_tf.errors import CsaInputError
from csa_tf.io.run_dir import RunDir
from csa_tf.model.bundle import ModelBundle

# Every test reads the session's trained tiny run: the integration tier.
pytestmark = pytest.mark.integration


def test_exported_models_equal_the_restored_training_networks(tiny_run, tmp_path):
  written = export.export_run(tiny_run.model_dir, str(tmp_path / "out"),
                              log=lambda _: None)
  assert sorted(written) == ["bssfp", "lge"]
  bundle = ModelBundle(tiny_run).build()
  bundle.restore(RunDir(tiny_run.model_dir).latest_checkpoint())
  # A batch of another size and a larger field of view than the training crop.
  images = tf.random.normal([3, 48, 40, 1], seed=4)
  outputs = {}
  for modality, folder in written.items():
    expected = tf.nn.softmax(bundle.logits(images, modality), axis=-1).numpy()
    serve = tf.saved_model.load(os.path.join(folder, "saved_model")).signatures[
        "serving_default"]
    result = serve(images=images)
    np.testing.assert_allclose(result["probabilities"].numpy(), expected, atol=1e-6)
    np.testing.assert_array_equal(result["classes"].numpy(), expected.argmax(-1))
    outputs[modality] = expected
    model = keras.saving.load_model(os.path.join(folder, "model.keras"))
    np.testing.assert_allclose(
        tf.nn.softmax(model(images, modality=modality), axis=-1).numpy(), expected,
        atol=1e-6)
    assert {k for w in model.weights for k in (w.path,) if "/bn_" in k} and not any(
        f"bn_{other}" in w.path for w in model.weights for other in written
        if other != modality)
    description = json.load(open(os.path.join(folder, "model.json")))
    assert description["modality"] == modality
    assert description["class_names"] == ["background", "LV", "myo", "RV"]
    assert description["label_values"] == [0, 500, 200, 600]
    assert description["inputs"]["shape"] == [None, None, None, 1]
    assert "z-scored" in description["preprocessing"]
  # Each modality's BN statistics are baked in: the two exports differ.
  assert not np.allclose(outputs["lge"], outputs["bssfp"])


def test_existing_export_is_not_replaced_without_overwrite(tiny_run, tmp_path):
  export.export_run(tiny_run.model_dir, str(tmp_path), log=lambda _: None)
  with pytest.raises(CsaInputError, match="exists; pass overwrite=True to replace it"):
    export.export_run(tiny_run.model_dir, str(tmp_path), log=lambda _: None)
  export.export_run(tiny_run.model_dir, str(tmp_path), overwrite=True, log=lambda _: None)
