"""Tests for csa_tf.data: the unpaired, seeded, resumable batch streams."""
import numpy as np
import pytest

from csa_tf.data import pipeline as data
from csa_tf.errors import CsaInputError
from csa_tf.data.prepared import PreparedDataset
from csa_tf.data.mscmr import prepare_mscmr
from tests.helpers import make_mscmr_release


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  # Two modalities only (not tiny_prep's three): a modality it lacks is one of the cases.
  root = tmp_path_factory.mktemp("data")
  prepare_mscmr(make_mscmr_release(root / "raw"), str(root / "prep"), crop_size=32,
                test_fraction=0.2)
  return PreparedDataset.open(str(root / "prep"))


def _take(dataset, n):
  return [{m: (x.numpy(), y.numpy()) for m, (x, y) in element.items()}
          for element in dataset.take(n)]


def test_two_modality_batches_shapes_dtypes_and_unpaired(prepared):
  dataset = data.unpaired_batches(prepared, ["lge", "bssfp"], batch_size=4, seed=0)
  batches = _take(dataset, 6)
  for element in batches:
    for modality in ("lge", "bssfp"):
      images, labels = element[modality]
      assert images.shape == (4, 32, 32, 1) and images.dtype == np.float32
      assert labels.shape == (4, 32, 32) and labels.dtype == np.int32
      assert labels.max() <= 3
  # Not aligned copies: the streams draw different slices, and the per-step slice
  # indices of the two modalities are not the same sequence.
  lge = np.stack([b["lge"][1] for b in batches])
  bssfp = np.stack([b["bssfp"][1] for b in batches])
  assert not np.array_equal(lge, bssfp)
  lge_images, _ = prepared.train_slices("lge")
  bssfp_images, _ = prepared.train_slices("bssfp")
  def indices(element_images, pool):
    flat = pool.reshape(len(pool), -1)
    return [int(np.argmin(np.abs(flat - x.reshape(-1)).sum(1))) for x in element_images]
  lge_order = sum((indices(b["lge"][0][..., 0], lge_images) for b in batches), [])
  bssfp_order = sum((indices(b["bssfp"][0][..., 0], bssfp_images) for b in batches), [])
  assert lge_order != bssfp_order


def test_seeded_and_resumable(prepared):
  a = _take(data.unpaired_batches(prepared, ["lge", "bssfp"], batch_size=3, seed=5), 5)
  b = _take(data.unpaired_batches(prepared, ["lge", "bssfp"], batch_size=3, seed=5), 5)
  c = _take(data.unpaired_batches(prepared, ["lge", "bssfp"], batch_size=3, seed=6), 5)
  resumed = _take(data.unpaired_batches(prepared, ["lge", "bssfp"], batch_size=3, seed=5,
                                        start_step=3), 2)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x["lge"][0], y["lge"][0])
  assert any(not np.array_equal(x["lge"][0], y["lge"][0]) for x, y in zip(a, c))
  for x, y in zip(a[3:], resumed):
    np.testing.assert_array_equal(x["bssfp"][0], y["bssfp"][0])


def test_every_slice_once_per_epoch():
  images = np.arange(10, dtype=np.float32)[:, None, None] * np.ones((10, 8, 8), np.float32)
  labels = np.zeros((10, 8, 8), np.uint8)
  stream = data.modality_batches(images, labels, batch_size=4, seed=0)
  seen = np.concatenate([x[:, 0, 0, 0].numpy() for x, _ in stream.take(5)])
  assert sorted(seen[:10].tolist()) == list(range(10))
  assert sorted(seen[10:20].tolist()) == list(range(10))


def test_batch_larger_than_dataset():
  images = np.random.rand(3, 8, 8).astype(np.float32)
  stream = data.modality_batches(images, np.zeros((3, 8, 8), np.uint8), batch_size=8,
                                 seed=0)
  x, _ = next(iter(stream))
  assert x.shape == (8, 8, 8, 1)


def test_unknown_modality_is_an_error(prepared):
  with pytest.raises(CsaInputError, match="t2"):
    data.unpaired_batches(prepared, ["lge", "t2"], batch_size=2, seed=0)
