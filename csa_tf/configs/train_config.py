"""Typed training configuration and the six settings of Tables 1-3 (REFERENCE.md section 3).

Only entry points parse flags; they build a `TrainConfig` and library code reads that.
"""
import dataclasses
from typing import List, Optional, Tuple

from csa_tf.errors import CsaInputError


@dataclasses.dataclass(frozen=True)
class MethodSpec:
  """What distinguishes one row of Tables 1-3 from another.

  Attributes:
    separate_networks: one network per modality ("Single").
    shared_bn: one BN set for all modalities ("Joint"), fed the concatenated batch.
    extra_loss: None, "kd" (UMMKD), "affinity" or "csa"; weighted by lambda in Eq. 5.
  """
  separate_networks: bool = False
  shared_bn: bool = False
  extra_loss: Optional[str] = None


METHODS = {
    "single": MethodSpec(separate_networks=True),
    "ummkd": MethodSpec(extra_loss="kd"),
    "joint": MethodSpec(shared_bn=True),
    "msbn": MethodSpec(),
    "affinity": MethodSpec(extra_loss="affinity"),
    "csa": MethodSpec(extra_loss="csa"),
}
METHOD_ORDER = ("single", "ummkd", "joint", "msbn", "affinity", "csa")
METHOD_LABELS = {"single": "Single", "ummkd": "UMMKD", "joint": "Joint", "msbn": "MSBN",
                 "affinity": "Affinity", "csa": "CSA (ours)"}

# Fields that fix the shape of what a model dir holds: resuming with other values is an
# error, not a silent restart.
ARCHITECTURE_FIELDS = ("method", "modalities", "feature_base", "num_classes",
                       "in_channels", "crop_size", "dataset")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Everything a training run needs. Defaults are the paper's (see experiments/*.flags)."""
  model_dir: str
  data_dir: str
  dataset: str
  num_classes: int
  crop_size: int
  modalities: Tuple[str, ...] = ("lge", "bssfp")
  method: str = "csa"
  train_steps: int = 1000
  batch_size: int = 8
  feature_base: int = 16
  in_channels: int = 1
  dropout_rate: float = 0.25
  learning_rate: float = 1e-4
  lr_decay_rate: float = 0.95
  lr_decay_steps: int = 1000
  alpha: float = 1.0
  beta: float = 1.0
  lam: float = 0.5
  l2_weight: float = 1e-4
  csa_pairs: Tuple[Tuple[str, str], ...] = (("g3", "g4"), ("g5", "g6"), ("g7", "g8"))
  csa_area_norm: str = "count"
  csa_reduction: str = "mean_then_square"
  kd_temperature: float = 2.0
  seed: int = 0
  deterministic: bool = False
  jit_compile: bool = False
  mixed_precision: str = "off"
  augment: bool = False
  labelled_slices_only: bool = True
  checkpoint_every: int = 500
  bn_recalibration_batches: int = 20
  keep_checkpoints: int = 3
  log_every: int = 50
  # TensorBoard images every this many steps (0: never); see csa_tf/training/summary_images.py.
  image_summary_every: int = 0
  # tf.distribute: "default" (one device), "mirrored" (local GPUs), "multi_worker".
  strategy: str = "default"

  @property
  def method_spec(self) -> MethodSpec:
    return METHODS[self.method]

  def validate(self) -> "TrainConfig":
    """Checks values a user can get wrong; returns self.

    Raises:
      CsaInputError: naming the flag and the problem.
    """
    if self.method not in METHODS:
      raise CsaInputError(f"--method={self.method}: unknown method; expected one of "
                          f"{', '.join(METHOD_ORDER)}")
    positive = dict(train_steps=self.train_steps, batch_size=self.batch_size,
                    feature_base=self.feature_base, lr_decay_steps=self.lr_decay_steps,
                    checkpoint_every=self.checkpoint_every, log_every=self.log_every,
                    keep_checkpoints=self.keep_checkpoints, in_channels=self.in_channels)
    for name, value in positive.items():
      if value < 1:
        raise CsaInputError(f"--{name}={value}: must be a positive integer")
    for name in ("learning_rate", "kd_temperature"):
      if not getattr(self, name) > 0:
        raise CsaInputError(f"--{name}={getattr(self, name)}: must be positive")
    for name in ("alpha", "beta", "lam", "l2_weight"):
      if not getattr(self, name) >= 0:
        raise CsaInputError(f"--{name}={getattr(self, name)}: must be >= 0")
    if not 0 < self.lr_decay_rate <= 1:
      raise CsaInputError(f"--lr_decay_rate={self.lr_decay_rate}: must be in (0, 1]")
    if not 0 <= self.dropout_rate < 1:
      raise CsaInputError(f"--dropout_rate={self.dropout_rate}: must be in [0, 1)")
    if self.bn_recalibration_batches < 0:
      raise CsaInputError(f"--bn_recalibration_batches={self.bn_recalibration_batches}: "
                          "must be >= 0")
    if self.image_summary_every < 0:
      raise CsaInputError(f"--image_summary_every={self.image_summary_every}: must be >= 0")
    if len(self.modalities) < 1 or len(set(self.modalities)) != len(self.modalities):
      raise CsaInputError(f"--modalities={','.join(self.modalities)}: list each modality "
                          "once")
    if self.method != "single" and len(self.modalities) < 2:
      raise CsaInputError(f"--method={self.method} needs at least two --modalities")
    if self.crop_size % 8:
      raise CsaInputError(f"crop size {self.crop_size} is not a multiple of 8")
    if self.csa_area_norm not in ("count", "fraction", "none"):
      raise CsaInputError(f"--csa_area_norm={self.csa_area_norm}: expected count, "
                          "fraction or none")
    if self.csa_reduction not in ("mean_then_square", "square_then_mean"):
      raise CsaInputError(f"--csa_reduction={self.csa_reduction}: expected "
                          "mean_then_square or square_then_mean")
    if self.mixed_precision not in ("off", "bf16", "fp16"):
      raise CsaInputError(f"--mixed_precision={self.mixed_precision}: expected off, bf16 "
                          "or fp16")
    if self.strategy not in ("default", "mirrored", "multi_worker"):
      raise CsaInputError(f"--strategy={self.strategy}: expected default, mirrored or "
                          "multi_worker")
    if self.jit_compile and self.strategy != "default":
      # Not built or tested: XLA would have to compile the replica function with its
      # all-reduces inside.
      raise CsaInputError(f"--jit_compile is not supported with --strategy={self.strategy}")
    if self.method_spec.extra_loss in ("csa", "affinity") and not self.csa_pairs:
      raise CsaInputError("--csa_pairs: at least one layer pair is needed")
    return self

  def to_json(self) -> dict:
    out = dataclasses.asdict(self)
    out["modalities"] = list(self.modalities)
    out["csa_pairs"] = [list(pair) for pair in self.csa_pairs]
    return out

  @classmethod
  def from_json(cls, values: dict) -> "TrainConfig":
    known = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in values.items() if k in known}
    values["modalities"] = tuple(values["modalities"])
    values["csa_pairs"] = tuple(tuple(pair) for pair in values.get("csa_pairs", ()))
    return cls(**values)


def parse_csa_pairs(text: List[str]) -> Tuple[Tuple[str, str], ...]:
  """Parses ["g3:g4", "g5:g6"] into (("g3", "g4"), ("g5", "g6")).

  Raises:
    CsaInputError: an entry is not of the form l:k.
  """
  pairs = []
  for item in text:
    parts = item.split(":")
    if len(parts) != 2 or not all(parts):
      raise CsaInputError(f"--csa_pairs: {item!r} is not of the form layer:layer "
                          "(e.g. g3:g4)")
    pairs.append((parts[0], parts[1]))
  return tuple(pairs)
