"""Shared pytest fixtures; the builders behind them are in tests/helpers.py.

Session-scoped fixtures are built once per test session and are read-only: a test that
needs to change one copies it (or builds its own with the helpers).
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # pylint: disable=g-import-not-at-top

from tests import helpers  # pylint: disable=g-import-not-at-top


@pytest.fixture
def mscmr_release(tmp_path):
  return helpers.make_mscmr_release(tmp_path / "raw")


@pytest.fixture
def mmwhs_release(tmp_path):
  return helpers.make_mmwhs_release(tmp_path / "raw")


@pytest.fixture(scope="session")
def tiny_prep(tmp_path_factory):
  """The opened helpers.TINY_PREP PREP (lge, bssfp, t2; crop 32). Read-only."""
  from csa_tf.data.prepared import PreparedDataset  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("tiny_prep")
  return PreparedDataset.open(helpers.make_tiny_prep(str(root)))


@pytest.fixture(scope="session")
def tiny_run(tiny_prep, tmp_path_factory):
  """The config of a 2-step CSA run on tiny_prep, logged every step. Read-only."""
  return helpers.train_tiny_run(tmp_path_factory.mktemp("tiny_run") / "csa",
                                tiny_prep.prep_dir)
