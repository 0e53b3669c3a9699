"""Tests for csa_tf.visualize: every figure is written and readable."""
import os
import shutil

import matplotlib.image
import pytest

from csa_tf.visualization import figures as visualize
from csa_tf.errors import CsaInputError

# Every test reads the session's trained tiny run: the integration tier.
pytestmark = pytest.mark.integration


def _check_png(path):
  assert os.path.getsize(path) > 1000, path
  image = matplotlib.image.imread(path)
  assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_figures_of_one_run(tiny_run, tmp_path):
  written = visualize.make_figures(tiny_run.model_dir, output_dir=str(tmp_path / "fig"),
                                   num_slices=2, log=lambda _: None)
  names = sorted(os.path.basename(p) for p in written)
  assert names == sorted(["segmentation_lge.png", "segmentation_bssfp.png",
                          "feature_maps_lge.png", "feature_maps_bssfp.png",
                          "affinity_g3_g4.png", "training_curves.png"])
  for path in written:
    _check_png(path)
  scalars = visualize.read_scalars(tiny_run.model_dir)
  assert list(scalars["loss/total"][0]) == [1, 2]


def test_reproduce_dir_gives_one_column_per_method_in_paper_order(tiny_run, tmp_path):
  runs_dir = tmp_path / "runs"
  for method in ("csa", "msbn"):  # copies of one run under two methods' names
    shutil.copytree(tiny_run.model_dir, runs_dir / method)
  main = str(runs_dir / "csa")
  runs = visualize.collect_runs(main, reproduce_dir=str(runs_dir))
  assert [r.label for r in runs] == ["MSBN", "CSA (ours)"]
  written = visualize.make_figures(main, output_dir=str(tmp_path / "fig"),
                                   reproduce_dir=str(runs_dir), num_slices=1,
                                   feature_tap="g1", log=lambda _: None)
  for path in written:
    _check_png(path)


def test_bad_tap_and_missing_run_are_reported(tiny_run, tmp_path):
  with pytest.raises(CsaInputError, match="^feature_tap=g42: expected one of"):
    visualize.make_figures(tiny_run.model_dir, output_dir=str(tmp_path),
                           feature_tap="g42", log=lambda _: None)
  with pytest.raises(CsaInputError, match="not a csa_tf model dir"):
    visualize.make_figures(tiny_run.model_dir, compare_runs=[str(tmp_path)],
                           log=lambda _: None)
