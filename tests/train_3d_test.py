"""3D runs (`--spatial_dims=3`): every setting's loss, and the commands end to end."""
import csv
import json

import nibabel as nib
import numpy as np
import pytest
import tensorflow as tf

from csa_tf.configs.options import ConfigError
from csa_tf.configs.train_config import METHOD_ORDER
from csa_tf.model.bundle import ModelBundle
from csa_tf.training import objective
from tests.helpers import make_config, run_command


@pytest.mark.parametrize("method,joint_bn", [(m, "separate") for m in METHOD_ORDER]
                         + [("joint", "concat")])
def test_every_setting_trains_on_3d_patches(method, joint_bn):
  # Eq. 5 of each setting on 5D batches, eagerly: finite terms, and a gradient on every
  # shared conv kernel (the CSA/affinity/KD term included where the setting has one).
  config = make_config(method=method, joint_bn=joint_bn, spatial_dims=3, patch_depth=2,
                       crop_size=16, modalities=("lge", "bssfp"), feature_base=1)
  bundle = ModelBundle(config).build()
  rng = np.random.default_rng(0)
  batches = {m: (tf.constant(rng.normal(size=(2, 2, 16, 16, 1)).astype(np.float32)),
                 tf.constant(rng.integers(0, 4, size=(2, 2, 16, 16)).astype(np.int32)))
             for m in config.modalities}
  with tf.GradientTape() as tape:
    total, terms = objective.compute_losses(bundle, batches, config)
  assert set(terms) == set(objective.term_names(config))
  assert all(np.isfinite(v.numpy()) for v in terms.values())
  extra = config.method_spec.extra_loss
  if extra is not None:
    assert terms[extra].numpy() > 0
  gradients = tape.gradient(total, bundle.conv_kernels)
  assert all(g is not None and np.abs(g.numpy()).max() > 0 for g in gradients)


def test_3d_options_are_checked():
  with pytest.raises(ConfigError, match="one slice per voxel"):
    make_config(spatial_dims=3, in_channels=3)
  with pytest.raises(ConfigError, match="patch_depth"):
    make_config(spatial_dims=3, patch_depth=1)
  with pytest.raises(ConfigError, match="spatial_dims"):
    make_config(spatial_dims=1)
  assert make_config().input_patch_depth is None
  assert make_config(spatial_dims=3, patch_depth=4).input_patch_depth == 4


@pytest.fixture(scope="module")
def mmwhs_prep(tmp_path_factory):
  root = tmp_path_factory.mktemp("mmwhs3d")
  run_command("data_prep.phantom", "--dataset=mmwhs", f"--output_dir={root / 'raw'}",
              "--num_patients=4", "--scale=0.25")
  run_command("data_prep.mmwhs", f"--raw_dir={root / 'raw'}",
              f"--output_dir={root / 'prep'}", "--crop_size=32")
  return root


@pytest.mark.integration
def test_3d_run_trains_evaluates_predicts_and_exports(mmwhs_prep):
  # The acceptance commands of issue 16, at tiny sizes.
  run = mmwhs_prep / "run"
  result = run_command("csa_tf.train", f"--data_dir={mmwhs_prep / 'prep'}",
                       f"--model_dir={run}", "--spatial_dims=3", "--patch_depth=8",
                       "--method=csa", "--train_steps=2", "--batch_size=1",
                       "--feature_base=2")
  assert "finished step 2" in result.stdout
  assert json.loads((run / "config.json").read_text())["spatial_dims"] == 3

  run_command("csa_tf.evaluate", f"--model_dir={run}")
  with open(run / "eval" / "per_volume.csv", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  assert {r["modality"] for r in rows} == {"ct", "mr"}
  assert all(0.0 <= float(r["dice"]) <= 1.0 for r in rows if r["dice"])

  image_path = sorted((mmwhs_prep / "raw" / "ct_train").glob("*_image.nii.gz"))[0]
  output = mmwhs_prep / "ct_pred.nii.gz"
  run_command("csa_tf.predict", f"--model_dir={run}", "--modality=ct",
              f"--input={image_path}", f"--output={output}")
  image, predicted = nib.load(str(image_path)), nib.load(str(output))
  assert predicted.shape == image.shape
  np.testing.assert_allclose(predicted.affine, image.affine)
  assert set(np.unique(np.asarray(predicted.dataobj))) <= {0, 205, 420, 500, 820}

  run_command("csa_tf.export", f"--model_dir={run}", f"--output_dir={mmwhs_prep / 'exp'}")
  description = json.loads((mmwhs_prep / "exp" / "ct" / "model.json").read_text())
  assert description["inputs"]["shape"] == [None, None, None, None, 1]
  assert description["inputs"]["layout"].startswith("NDHWC")

  # Figures: each chosen slice between its two neighbours, the taps' middle slice.
  figures = mmwhs_prep / "figures"
  run_command("csa_tf.visualize", f"--model_dir={run}", f"--output_dir={figures}")
  for name in ("segmentation_ct.png", "feature_maps_mr.png", "affinity_g3_g4.png"):
    assert (figures / name).stat().st_size > 0, name
