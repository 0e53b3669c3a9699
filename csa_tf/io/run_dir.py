"""The run folder (`--model_dir`): the one place that knows its layout.

Layout:
  RUN/config.json            the resolved TrainConfig, with its format version
  RUN/versions.json          Python, platform, git commit and library versions
  RUN/checkpoints/           tf.train.CheckpointManager's checkpoints (model, optimizer,
                             step, dropout seed states); the latest one is resumed,
                             evaluated, exported
  RUN/train/                 TensorBoard events (scalars; images when enabled)
  RUN/training_data.json     the PREP the run trains on: its path, fingerprint and the
                             training patients per modality (resume and evaluate check it)
  RUN/config_history.jsonl   one line per start or resumption: when, from which step,
                             which resumable settings changed
  RUN/final_losses.json      the step reached and the last loss terms, once finished
  RUN/eval/per_volume.csv    per volume and class metrics of `csa_tf.evaluate`
  RUN/eval/summary.json      their summary (per_volume_<split>.csv / summary_<split>.json
                             for a split other than test)
  RUN/figures/               `csa_tf.visualize`'s PNGs (default output folder)
  RUN/phantom_data/{raw,prep}  the demo's phantoms and their PREP (no --data_dir given)
  RUN/lock.json              present while a command writes into RUN: who holds the
                             folder (pid, host, command, start; csa_tf/io/run_lock.py).
                             Not part of the run's results; gone once it ends

Format versions (issue 10, "Folders made by today's code"): config.json carries
`format_version`; a file without one was written before versions were recorded and is
version 1. A newer version than this csa_tf reads is refused with one line saying what
to redo, never half-read.

TensorFlow is imported only by the methods that restore networks, so the cheap checks
(a missing config, a PREP that does not fit) fail fast.
"""
import json
import os
from typing import Dict, Optional

from csa_tf.configs.train_config import TrainConfig
from csa_tf import tf_runtime
from csa_tf.errors import CsaInputError
from csa_tf.io import atomic

CONFIG_FILE = "config.json"
VERSIONS_FILE = "versions.json"
CHECKPOINT_SUBDIR = "checkpoints"
TENSORBOARD_SUBDIR = "train"
FINAL_LOSSES_FILE = "final_losses.json"
TRAINING_DATA_FILE = "training_data.json"
CONFIG_HISTORY_FILE = "config_history.jsonl"
EVAL_SUBDIR = "eval"
FIGURES_SUBDIR = "figures"
PHANTOM_DATA_SUBDIR = "phantom_data"
LOCK_FILE = "lock.json"

# The key of config.json that holds its format version (absent: version 1).
FORMAT_VERSION_KEY = "format_version"
# Version 1: the TrainConfig fields as TrainConfig.to_json writes them.
CONFIG_FORMAT_VERSION = 1


class RunDir:
  """A run folder: its paths, its config, its networks and its evaluation outputs.

  Args:
    path: the run folder (it need not exist yet: training creates it).

  Attributes:
    path: the folder, as given.
    checkpoint_path: the checkpoint `networks()` restored (None before).
  """

  def __init__(self, path: str):
    self.path = path
    self.checkpoint_path: Optional[str] = None
    self._config: Optional[TrainConfig] = None
    self._bundle = None
    self._segmenters: Dict[int, object] = {}

  def __repr__(self) -> str:
    return f"RunDir({self.path!r})"

  def _join(self, *parts: str) -> str:
    return os.path.join(self.path, *parts)

  # -- Paths. ----------------------------------------------------------------------------
  @property
  def config_path(self) -> str:
    return self._join(CONFIG_FILE)

  @property
  def versions_path(self) -> str:
    return self._join(VERSIONS_FILE)

  @property
  def checkpoint_dir(self) -> str:
    return self._join(CHECKPOINT_SUBDIR)

  @property
  def tensorboard_dir(self) -> str:
    return self._join(TENSORBOARD_SUBDIR)

  @property
  def final_losses_path(self) -> str:
    return self._join(FINAL_LOSSES_FILE)

  @property
  def training_data_path(self) -> str:
    return self._join(TRAINING_DATA_FILE)

  @property
  def config_history_path(self) -> str:
    return self._join(CONFIG_HISTORY_FILE)

  @property
  def eval_dir(self) -> str:
    return self._join(EVAL_SUBDIR)

  @property
  def figures_dir(self) -> str:
    return self._join(FIGURES_SUBDIR)

  @property
  def phantom_data_dir(self) -> str:
    return self._join(PHANTOM_DATA_SUBDIR)

  @property
  def demo_raw_dir(self) -> str:
    """The demo's phantom release (when training without --data_dir)."""
    return self._join(PHANTOM_DATA_SUBDIR, "raw")

  @property
  def demo_prep_dir(self) -> str:
    """The demo's prepared data (when training without --data_dir)."""
    return self._join(PHANTOM_DATA_SUBDIR, "prep")

  @property
  def lock_path(self) -> str:
    """The lock file of the folder's one writer (csa_tf/io/run_lock.py)."""
    return self._join(LOCK_FILE)

  def per_volume_path(self, split: str = "test") -> str:
    """The evaluation's per volume and class CSV of a split."""
    name = "per_volume.csv" if split == "test" else f"per_volume_{split}.csv"
    return self._join(EVAL_SUBDIR, name)

  def summary_path(self, split: str = "test") -> str:
    """The evaluation's summary JSON of a split."""
    name = "summary.json" if split == "test" else f"summary_{split}.json"
    return self._join(EVAL_SUBDIR, name)

  # -- The config. -----------------------------------------------------------------------
  def is_run(self) -> bool:
    """Whether the folder holds a run's config (was trained, or is being trained).

    A lock file (a command writing into the run right now) changes nothing here.
    """
    return os.path.isfile(self.config_path)

  @property
  def config(self) -> TrainConfig:
    """The run's config (read once; see `load_config`)."""
    if self._config is None:
      self._config = self.load_config()
    return self._config

  def load_config(self) -> TrainConfig:
    """Reads config.json.

    Raises:
      CsaInputError: the folder holds no config.json (not a csa_tf run), the file is
        unreadable, or it has a format version newer than this csa_tf reads.
    """
    path = self.config_path
    if not os.path.isfile(path):
      raise CsaInputError(f"{self.path}: not a csa_tf model dir (no {CONFIG_FILE})")
    try:
      with open(path, encoding="utf-8") as f:
        values = json.load(f)
    except (OSError, ValueError) as error:
      raise CsaInputError(f"{path}: unreadable run config ({error})") from None
    if not isinstance(values, dict):
      raise CsaInputError(f"{path}: unreadable run config (not a JSON object)")
    values = dict(values)
    version = values.pop(FORMAT_VERSION_KEY, 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
      raise CsaInputError(f"{path}: unreadable run config ({FORMAT_VERSION_KEY} "
                          f"{version!r} is not a positive integer)")
    if version > CONFIG_FORMAT_VERSION:
      raise CsaInputError(
          f"{path}: run config of format version {version}, this csa_tf reads versions up "
          f"to {CONFIG_FORMAT_VERSION}; use the newer csa_tf that trained it, or train "
          "the run again with this one")
    try:
      return TrainConfig.from_json(values)
    except (ValueError, TypeError, KeyError) as error:
      raise CsaInputError(f"{path}: unreadable run config ({error})") from None

  def write_config(self, config: TrainConfig) -> None:
    """Writes config.json (atomically, with the current format version)."""
    os.makedirs(self.path, exist_ok=True)
    values = dict(config.to_json())
    values[FORMAT_VERSION_KEY] = CONFIG_FORMAT_VERSION
    atomic.write_json(self.config_path, values, sort_keys=True)
    self._config = config

  # -- The networks. ---------------------------------------------------------------------
  def latest_checkpoint(self) -> str:
    """The path of the newest checkpoint.

    Raises:
      CsaInputError: the run holds no checkpoint.
    """
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    path = tf.train.latest_checkpoint(self.checkpoint_dir)
    if not path:
      raise CsaInputError(f"{self.path}: no checkpoint found under {CHECKPOINT_SUBDIR}/")
    return path

  def networks(self):
    """The run's ModelBundle with the latest checkpoint's weights (restored once).

    Float32 compute and per-device BN whatever the run trained with: variables are
    float32, so a checkpoint restores into it (see csa_tf/model/bundle.py).

    Raises:
      CsaInputError: no config, no checkpoint, or one that does not fit the networks.
    """
    if self._bundle is None:
      config = self.config
      checkpoint = self.latest_checkpoint()
      # TensorFlow loads only now, after the cheap checks, so that they fail fast; and
      # without its CPU start-up notices (csa_tf/tf_runtime.py).
      tf_runtime.import_tensorflow()
      from csa_tf.model.bundle import ModelBundle  # pylint: disable=g-import-not-at-top
      bundle = ModelBundle(config)
      self.checkpoint_path = bundle.restore(checkpoint)
      self._bundle = bundle
    return self._bundle

  def segmenter(self, *, batch_size: int = 16):
    """A SliceSegmenter of the restored networks (one per batch size, kept)."""
    if batch_size not in self._segmenters:
      bundle = self.networks()
      from csa_tf.model.segmenter import SliceSegmenter  # pylint: disable=g-import-not-at-top
      self._segmenters[batch_size] = SliceSegmenter(bundle, batch_size=batch_size)
    return self._segmenters[batch_size]

  # -- Outputs of training and evaluation. -----------------------------------------------
  def read_final_losses(self) -> Optional[dict]:
    """final_losses.json ({"step": ..., loss terms}), or None before training ends."""
    if not os.path.isfile(self.final_losses_path):
      return None
    with open(self.final_losses_path, encoding="utf-8") as f:
      return json.load(f)

  def write_final_losses(self, values: dict) -> None:
    atomic.write_json(self.final_losses_path, values, sort_keys=True)

  def read_training_data(self) -> Optional[dict]:
    """training_data.json, or None for a run that has none (new, or made before it)."""
    if not os.path.isfile(self.training_data_path):
      return None
    try:
      with open(self.training_data_path, encoding="utf-8") as f:
        return json.load(f)
    except (OSError, ValueError) as error:
      raise CsaInputError(f"{self.training_data_path}: unreadable ({error})") from None

  def write_training_data(self, record: dict) -> None:
    atomic.write_json(self.training_data_path, record, sort_keys=True)

  def append_config_history(self, entry: dict) -> None:
    """Adds one JSON line to config_history.jsonl (the whole file rewritten atomically)."""
    previous = ""
    if os.path.isfile(self.config_history_path):
      with open(self.config_history_path, encoding="utf-8") as f:
        previous = f.read()
    atomic.write_text(self.config_history_path,
                      previous + json.dumps(entry, sort_keys=True) + "\n")

  def has_summary(self, split: str = "test") -> bool:
    return os.path.isfile(self.summary_path(split))

  def read_summary(self, split: str = "test") -> dict:
    """The evaluation summary of a split, as csa_tf.evaluate wrote it.

    Raises:
      CsaInputError: the run was not evaluated on that split, or the file is unreadable.
    """
    path = self.summary_path(split)
    if not os.path.isfile(path):
      raise CsaInputError(f"{path}: not found; the run was not evaluated on its {split} "
                          "split")
    try:
      with open(path, encoding="utf-8") as f:
        return json.load(f)
    except (OSError, ValueError) as error:
      raise CsaInputError(f"{path}: unreadable evaluation summary ({error})") from None
