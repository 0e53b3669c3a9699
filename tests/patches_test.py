"""Tests of 3D patches: csa_tf/data/patches.py, the patch stream and the sliding window."""
import numpy as np
import pytest
import tensorflow as tf

from csa_tf.data import mmwhs_pnp
from csa_tf.data import patches
from csa_tf.data import pipeline
from csa_tf.data.prepared import PreparedDataset
from csa_tf.errors import CsaInputError
from csa_tf.model.bundle import ModelBundle
from csa_tf.model.segmenter import SliceSegmenter
from tests.helpers import make_config
from tests.mmwhs_pnp_test import write_pnp_example_files


def test_edge_padding_and_pad_to_depth():
  assert patches.edge_padding(8, 8) == (0, 0)
  assert patches.edge_padding(12, 8) == (0, 0)
  assert patches.edge_padding(5, 8) == (1, 2)
  volume = np.arange(5)[:, None, None] * np.ones((1, 2, 2))
  padded = patches.pad_to_depth(volume, 8)
  np.testing.assert_array_equal(padded[:, 0, 0], [0, 0, 1, 2, 3, 4, 4, 4])
  assert patches.pad_to_depth(volume, 4) is volume


@pytest.mark.parametrize("num_slices,depth,expected", [
    (8, 8, [0]), (10, 8, [0, 2]), (16, 8, [0, 4, 8]), (17, 8, [0, 4, 8, 9]),
    (5, 2, [0, 1, 2, 3]), (6, 3, [0, 1, 2, 3])])
def test_window_starts_cover_the_volume_with_half_overlap(num_slices, depth, expected):
  starts = patches.window_starts(num_slices, depth)
  assert starts == expected
  covered = np.zeros(num_slices, int)
  for start in starts:
    covered[start:start + depth] += 1
  assert covered.min() >= 1
  with pytest.raises(ValueError, match="fewer"):
    patches.window_starts(depth - 1, depth)


def test_train_patches_stay_inside_volumes_and_skip_unlabelled_windows(tiny_prep):
  depth = 3
  slices, labels, starts = patches.train_patches(tiny_prep, "lge", depth=depth)
  volumes = [tiny_prep.load(e) for e in tiny_prep.entries_for("train", "lge")]
  lengths = [max(len(v.image), depth) for v in volumes]
  assert len(slices) == len(labels) == sum(lengths)
  bounds = np.cumsum([0] + lengths)
  for start in starts:
    volume = np.searchsorted(bounds, start, side="right") - 1
    assert start + depth <= bounds[volume + 1]
    assert labels[start:start + depth].max() > 0
  every = patches.train_patches(tiny_prep, "lge", depth=depth, labelled_only=False)[2]
  assert len(every) == sum(n - depth + 1 for n in lengths) >= len(starts)
  first = tiny_prep.entries_for("train", "lge")[0].patient_id
  only_first = patches.train_patches(tiny_prep, "lge", depth=depth, patients=[first])
  assert len(only_first[0]) == lengths[0]
  with pytest.raises(CsaInputError, match="not prepared"):
    patches.train_patches(tiny_prep, "ct", depth=depth)


def test_pnp_records_have_no_volumes_to_cut_patches_from(tmp_path):
  # PnP-AdaNet's training records are separate slices, each with its own two
  # neighbours: consecutive records need not be consecutive slices.
  write_pnp_example_files(str(tmp_path / "release"))
  mmwhs_pnp.prepare_pnp(str(tmp_path / "release"), str(tmp_path / "prep"))
  prepared = PreparedDataset.open(str(tmp_path / "prep"))
  with pytest.raises(CsaInputError, match=r"^.*/prep: \S+ holds slices of the PnP-AdaNet "
                     "records, not a volume; 3D patches need whole volumes"):
    patches.train_patches(prepared, "ct", depth=2)


def test_patch_stream_cuts_the_windows_and_is_seeded():
  rng = np.random.default_rng(0)
  slices = rng.normal(size=(12, 8, 8)).astype(np.float32)
  labels = rng.integers(0, 3, size=(12, 8, 8)).astype(np.uint8)
  starts = np.array([0, 3, 5, 9])

  def first_batches(seed, start_step=0):
    stream = pipeline.modality_patch_batches(slices, labels, starts, depth=3, batch_size=2,
                                             seed=seed, start_step=start_step)
    return [(i.numpy(), l.numpy()) for i, l in stream.take(3)]

  batches = first_batches(7)
  for images, batch_labels in batches:
    assert images.shape == (2, 3, 8, 8, 1) and batch_labels.shape == (2, 3, 8, 8)
    for image, label in zip(images, batch_labels):
      start = [s for s in starts if np.array_equal(slices[s:s + 3], image[..., 0])]
      assert len(start) == 1
      np.testing.assert_array_equal(label, labels[start[0]:start[0] + 3])
  for (a, b), (c, d) in zip(batches, first_batches(7)):
    np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(b, d)
  # A resumed stream continues where the first stopped.
  np.testing.assert_array_equal(first_batches(7, start_step=2)[0][0], batches[2][0])
  assert not np.array_equal(first_batches(8)[0][0], batches[0][0])
  with pytest.raises(CsaInputError, match="outside"):
    pipeline.modality_patch_batches(slices, labels, np.array([10]), depth=3, batch_size=1,
                                    seed=0)
  with pytest.raises(CsaInputError, match="no training patches"):
    pipeline.modality_patch_batches(slices, labels, np.array([], int), depth=3,
                                    batch_size=1, seed=0)


def test_augmented_patches_flip_images_and_labels_alike():
  slices = np.arange(6 * 4 * 4, dtype=np.float32).reshape((6, 4, 4))
  labels = (np.arange(6 * 4 * 4) % 3).reshape((6, 4, 4)).astype(np.uint8)
  stream = pipeline.modality_patch_batches(slices, labels, np.array([0, 2]), depth=4,
                                           batch_size=2, seed=3, augment=True)
  lookup = {float(v): int(l) for v, l in zip(slices.ravel(), labels.ravel())}
  for images, batch_labels in stream.take(4):
    # The intensity jitter is affine: undo it from two known voxels' order.
    flat = images.numpy()[..., 0].ravel()
    low, high = np.argmin(flat), np.argmax(flat)
    raw = np.round((flat - flat[low]) / (flat[high] - flat[low]) * 95)
    got = batch_labels.numpy().ravel()
    expected = [lookup[float(v)] for v in raw]
    # Each voxel's value names its position, so its label must come along with it.
    np.testing.assert_array_equal(got, expected)


def test_unpaired_patch_batches_of_a_prep(tiny_prep):
  stream = pipeline.unpaired_batches(tiny_prep, ["lge", "bssfp"], batch_size=2, seed=0,
                                     patch_depth=3)
  element = next(iter(stream))
  for modality in ("lge", "bssfp"):
    images, labels = element[modality]
    assert images.shape == (2, 3, 32, 32, 1) and labels.shape == (2, 3, 32, 32)


def test_sliding_window_averages_overlapping_windows(tiny_prep):
  # depth 4 over 5 slices: windows at 0 and 1; slices 1-3 average both windows.
  config = make_config(data_dir=tiny_prep.prep_dir, spatial_dims=3, patch_depth=4,
                       modalities=("lge", "bssfp"))
  bundle = ModelBundle(config).build()
  segmenter = SliceSegmenter(bundle, batch_size=4)  # one window per call
  volume = np.random.default_rng(1).normal(size=(5, 16, 16)).astype(np.float32)
  probs = segmenter.probs(volume, "lge")
  assert probs.shape == (5, 16, 16, config.num_classes)
  net = bundle.networks["lge"]

  def window_probs(start):
    images = tf.constant(volume[None, start:start + 4, ..., None])
    return tf.nn.softmax(net(images, modality="lge"), axis=-1).numpy()[0]

  first, second = window_probs(0), window_probs(1)
  np.testing.assert_allclose(probs[0], first[0], rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(probs[2], (first[2] + second[1]) / 2, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(probs[4], second[3], rtol=1e-5, atol=1e-7)
  # A volume thinner than a window is padded with its edge slices, and cut back.
  thin = segmenter.probs(volume[:2], "lge")
  padded = np.concatenate([volume[:1], volume[:2], volume[1:2]])
  expected = tf.nn.softmax(net(tf.constant(padded[None, ..., None]), modality="lge"),
                           axis=-1).numpy()[0, 1:3]
  np.testing.assert_allclose(thin, expected, rtol=1e-5, atol=1e-7)
