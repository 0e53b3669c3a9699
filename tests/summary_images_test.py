"""Tests for the TensorBoard images: overlays, heatmaps and the trainer's image events."""
import glob
import os

import numpy as np
import pytest
import tensorflow as tf

from csa_tf.training import summary_images
from csa_tf.training.trainer import Trainer
from tests.helpers import make_config, quiet


def test_overlay_colours_classes_and_keeps_background_grey():
  image = np.linspace(-2, 2, 64 * 64, dtype=np.float32).reshape(64, 64)
  labels = np.zeros((64, 64), np.int32)
  labels[10:20, 10:20] = 1
  labels[30:40, 30:40] = 3
  rgb = summary_images.overlay(image, labels, num_classes=4)
  assert rgb.shape == (64, 64, 3) and rgb.dtype == np.float32
  assert rgb.min() >= 0 and rgb.max() <= 1
  background = rgb[labels == 0]
  np.testing.assert_allclose(background[:, 0], background[:, 1])  # grey
  lv, rv = rgb[15, 15], rgb[35, 35]
  assert lv[0] > lv[1] and lv[0] > lv[2]  # red
  assert rv[2] > rv[0] and rv[2] > rv[1]  # blue
  assert summary_images.grey_to_unit(np.ones((4, 4))).max() == 0  # constant slice


def test_heatmap_is_white_at_zero_red_positive_blue_negative():
  rgb = summary_images.diverging_heatmap(np.array([[0.0, 2.0, -2.0]]))
  assert rgb.shape == (1, 3, 3) and rgb.min() >= 0 and rgb.max() <= 1
  np.testing.assert_allclose(rgb[0, 0], 1.0)
  assert rgb[0, 1, 0] > rgb[0, 1, 2] and rgb[0, 2, 2] > rgb[0, 2, 0]
  np.testing.assert_allclose(summary_images.diverging_heatmap(np.zeros((2, 2))), 1.0)


def test_panels_are_enlarged_and_side_by_side():
  panel = summary_images.segmentation_panel(np.zeros((32, 32)), np.zeros((32, 32)),
                                            np.ones((32, 32)), num_classes=4)
  assert panel.shape == (128, 3 * 128 + 2 * 4, 3)
  affinity = summary_images.affinity_panels({"lge": np.ones((8, 16)),
                                             "bssfp": -np.ones((8, 16))})
  assert affinity.shape == (128, 2 * 256 + 4, 3)


def read_images(model_dir):
  found = {}
  for path in glob.glob(os.path.join(model_dir, "train", "events.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.metadata.plugin_data.plugin_name == "images":
          # Image summaries are [width, height, encoded PNG...] string tensors.
          encoded = tf.make_ndarray(value.tensor)
          found.setdefault(value.tag, []).append(
              (event.step, tf.io.decode_png(encoded[2]).numpy()))
  return found


@pytest.mark.integration
@pytest.mark.parametrize("method", ["msbn"])
def test_trainer_writes_image_summaries(tiny_prep, tmp_path, method):
  config = make_config(tmp_path / "run", method=method, image_summary_every=2)
  Trainer(config, tiny_prep, log=quiet).train()
  images = read_images(config.model_dir)
  expected = {"segmentation/lge", "segmentation/bssfp"} | {
      f"affinity_g3_g4/{name}" for name in ("background", "LV", "myo", "RV")}
  assert set(images) == expected
  for tag, entries in images.items():
    assert [step for step, _ in entries] == [2], tag  # every 2 steps, of 2
  assert images["segmentation/lge"][0][1].shape == (128, 3 * 128 + 8, 3)
  assert images["affinity_g3_g4/LV"][0][1].shape[0] >= 128
