"""--input_slices: a slice with its neighbours as channels (REFERENCE.md section 1)."""
import os

import numpy as np
import pytest

from csa_tf.configs.options import ConfigError
from csa_tf.data import prepared
from csa_tf.data.input_slices import stack_neighbours
from csa_tf.errors import CsaInputError
from tests.helpers import make_config, make_mscmr_release


def _constant_slices(count):
  """[count, 2, 3] slices, slice k all k: each channel then shows which slice it is."""
  return np.repeat(np.arange(count, dtype=np.float32), 6).reshape(count, 2, 3)


def test_three_slices_are_previous_self_next_and_edges_mirror():
  inputs = stack_neighbours(_constant_slices(4), 3)
  assert inputs.shape == (4, 2, 3, 3) and inputs.dtype == np.float32
  # Slice 0 has no previous slice: its next one (1) stands in; slice 3 likewise (2).
  assert [tuple(inputs[k, 0, 0]) for k in range(4)] == [(1, 0, 1), (0, 1, 2), (1, 2, 3),
                                                        (2, 3, 2)]


def test_one_slice_volume_and_one_channel():
  assert [tuple(v) for v in stack_neighbours(_constant_slices(1), 3)[:, 0, 0]] == [
      (0, 0, 0)]
  one = stack_neighbours(_constant_slices(3), 1)
  assert one.shape == (3, 2, 3, 1)
  np.testing.assert_array_equal(one[..., 0], _constant_slices(3))


def test_stored_neighbours_are_used_instead_of_the_stack():
  slices = _constant_slices(2)
  neighbours = np.stack([slices + 10, slices + 20], axis=-1)
  inputs = stack_neighbours(slices, 3, neighbours)
  assert [tuple(inputs[k, 0, 0]) for k in range(2)] == [(10, 0, 20), (11, 1, 21)]
  with pytest.raises(CsaInputError, match=r"neighbours of shape \(2, 2, 3, 1\)"):
    stack_neighbours(slices, 3, neighbours[..., :1])


def test_other_counts_are_refused():
  with pytest.raises(CsaInputError, match=r"input_slices=2: expected one of \(1, 3\)"):
    stack_neighbours(_constant_slices(2), 2)
  with pytest.raises(ConfigError) as error:
    make_config(in_channels=2)
  assert "2" in str(error.value) and "1, 3" in str(error.value)
  assert make_config(in_channels=3).in_channels == 3


def test_neighbours_survive_save_and_load(tmp_path):
  slices = _constant_slices(3)
  volume = prepared.PreparedVolume(
      patient_id="p", modality="ct", image=slices, label=np.zeros((3, 2, 3), np.uint8),
      geometry=prepared.VolumeGeometry((2, 3, 3), np.array([[0, 1], [1, 1], [2, 1]]),
                                       (0, 0), 3),
      spacing=(1.0, 1.0, 1.0), affine=np.eye(4),
      neighbours=np.stack([slices - 1, slices + 1], -1))
  path = str(tmp_path / "v.npz")
  prepared.save_volume(path, volume)
  loaded = prepared.load_volume(path)
  np.testing.assert_array_equal(loaded.neighbours, volume.neighbours)
  np.testing.assert_array_equal(loaded.inputs(3), volume.inputs(3))
  volume.neighbours = None
  prepared.save_volume(path, volume)
  assert prepared.load_volume(path).neighbours is None


def test_training_inputs_are_neighbours_within_each_volume(tiny_prep):
  images, labels = tiny_prep.train_slices("lge")
  inputs, same_labels = tiny_prep.train_slices("lge", input_slices=3)
  assert inputs.shape == images.shape + (3,)
  np.testing.assert_array_equal(inputs[..., 1], images)
  np.testing.assert_array_equal(same_labels, labels)
  # Every labelled slice's channels are its own volume's slices, in slice order.
  expected = []
  for entry in tiny_prep.entries_for("train", "lge"):
    volume = tiny_prep.load(entry)
    keep = volume.label.reshape(len(volume.label), -1).max(axis=1) > 0
    for k in np.flatnonzero(keep):
      below, above = (k - 1 if k > 0 else k + 1), (k + 1 if k + 1 < len(keep) else k - 1)
      expected.append(np.stack([volume.image[below], volume.image[k], volume.image[above]],
                               -1))
  np.testing.assert_array_equal(inputs, np.stack(expected))


@pytest.mark.integration
def test_a_three_slice_run_trains_evaluates_and_predicts(tiny_prep, tmp_path):
  import nibabel as nib  # pylint: disable=g-import-not-at-top
  from csa_tf.evaluation.evaluator import evaluate_run  # pylint: disable=g-import-not-at-top
  from csa_tf.io.run_dir import RunDir  # pylint: disable=g-import-not-at-top
  from csa_tf.serving.predictor import predict_files  # pylint: disable=g-import-not-at-top
  from csa_tf.training.trainer import Trainer  # pylint: disable=g-import-not-at-top
  config = make_config(tmp_path / "run", data_dir=tiny_prep.prep_dir, method="csa",
                       modalities=("lge", "bssfp"), in_channels=3, train_steps=2)
  Trainer(config, tiny_prep, log=lambda line: None).train()
  run = RunDir(config.model_dir)
  assert run.config.in_channels == 3
  assert run.networks().networks["lge"].in_channels == 3
  report = evaluate_run(config.model_dir, log=lambda line: None)
  assert report["checkpoint_step"] == 2
  raw = make_mscmr_release(tmp_path / "raw", num_patients=1, modalities=("LGE",))
  source = os.path.join(raw, "images", "patient1_LGE.nii.gz")
  target = str(tmp_path / "seg.nii.gz")
  predict_files(config.model_dir, "lge", source, target, log=lambda line: None)
  assert nib.load(target).shape == nib.load(source).shape
