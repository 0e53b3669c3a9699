"""Typed training configuration and the six settings of Tables 1-3 (REFERENCE.md section 3).

Every training option is declared once, here, as a field of `TrainConfig` (or, for the
demo's generated data, `DemoDataConfig`) with its type, default, allowed values, range
and help text (see csa_tf/configs/options.py). `csa_tf.train` generates its flags from
these declarations; experiments/*.flags set them; `validate` checks them; config.json
stores them by field name. Each option list (methods, CSA area norms and reductions,
strategies, mixed-precision modes) is declared here once and imported where needed.
"""
import dataclasses
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from csa_tf.configs import datasets
from csa_tf.configs import options
from csa_tf.configs.options import ConfigError, option
from csa_tf.configs.downsampling import size_problem

# The network's input channels a run may ask for: the slice alone, or the slice between
# its two neighbours (REFERENCE.md section 1: UMMKD stacked three adjacent slices).
INPUT_SLICES = (1, 3)
# 2: the paper's network on slices; 3: its 3D counterpart on patches of consecutive
# slices (the paper's future work; csa_tf/model/csa_net.py).
SPATIAL_DIMS = (2, 3)


@dataclasses.dataclass(frozen=True)
class MethodSpec:
  """What distinguishes one row of Tables 1-3 from another.

  Attributes:
    label: the row's name in the paper's tables.
    separate_networks: one network per modality ("Single").
    shared_bn: one BN set for all modalities ("Joint"), fed the concatenated batch.
    extra_loss: None, "kd" (UMMKD), "affinity" or "csa"; weighted by lambda in Eq. 5.
  """
  label: str
  separate_networks: bool = False
  shared_bn: bool = False
  extra_loss: Optional[str] = None


# The settings of Tables 1-3, in the tables' row order.
METHODS = {
    "single": MethodSpec("Single", separate_networks=True),
    "ummkd": MethodSpec("UMMKD", extra_loss="kd"),
    "joint": MethodSpec("Joint", shared_bn=True),
    "msbn": MethodSpec("MSBN"),
    "affinity": MethodSpec("Affinity", extra_loss="affinity"),
    "csa": MethodSpec("CSA (ours)", extra_loss="csa"),
}
METHOD_ORDER = tuple(METHODS)
METHOD_LABELS = {name: spec.label for name, spec in METHODS.items()}

# S_c of Eq. 3: the class's pixel count at the feature resolution (the paper), that count
# over all pixels, or 1 (see csa_tf.losses.class_affinity_matrices).
AREA_NORMS = ("count", "fraction", "none")
# Eq. 4 literally (square of the mean difference) or the mean of squared differences.
REDUCTIONS = ("mean_then_square", "square_then_mean")
# a_mn of Eq. 3: the cosine of the masked channels (as written), or their masked dot
# product (sum over the region; divided by S_c = count, a mean over the region, as the
# FSP matrices of Yim et al., CVPR 2017, which Eq. 4 resembles).
AFFINITIES = ("cosine", "dot")
# "Joint": each modality's batch through the one BN set in its own forward pass
# (REFERENCE.md section 1), or both batches concatenated into one.
JOINT_BN = ("separate", "concat")
# Adjacent intermediate layers at several feature scales: the paper picks "feature maps
# from the intermediate layer" and "layers relatively close to each other" at "multiple
# feature scales" (Sec. 3, Implementation; Sec. 1). g3 (H/4, 4F) is average-pooled onto
# g4 (H/8, 8F); g5/g6 (16F) and g7/g8 (32F) are at H/8. g9/g10 are left out as "too
# closely related to the ground truth mask".
DEFAULT_CSA_PAIRS = (("g3", "g4"), ("g5", "g6"), ("g7", "g8"))
# The network's feature taps, one per group (csa_tf/model/csa_net.py; REFERENCE.md s. 1):
# g1..g9 are group outputs before any max-pool, g10 follows depth_to_space.
FEATURE_TAPS = ("g1", "g2", "g3", "g4", "g5", "g6", "g7", "g8", "g9", "g10")
# tf.distribute strategies (csa_tf/training/distribution.py).
STRATEGIES = ("default", "mirrored", "multi_worker")
# Mixed-precision mode -> Keras dtype policy of the networks (csa_tf/model/bundle.py):
# float32 variables, half-precision compute; None is Keras' float32 default.
MIXED_PRECISION_POLICIES = {"off": None, "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}



def parse_csa_pairs(text: Sequence[str]) -> Tuple[Tuple[str, str], ...]:
  """Parses ["g3:g4", "g5:g6"] into (("g3", "g4"), ("g5", "g6")).

  Raises:
    ConfigError: an entry is not of the form l:k.
  """
  pairs = []
  for item in text:
    parts = item.split(":")
    if len(parts) != 2 or not all(parts):
      raise ConfigError("{csa_pairs}: {item} is not of the form layer:layer (e.g. g3:g4)",
                        "csa_pairs", item=repr(item))
    pairs.append((parts[0], parts[1]))
  return tuple(pairs)


def format_csa_pairs(pairs: Sequence[Tuple[str, str]]) -> Tuple[str, ...]:
  """(("g3", "g4"),) -> ("g3:g4",): the form of --csa_pairs and parse_csa_pairs."""
  return tuple(f"{l}:{k}" for l, k in pairs)


def parse_patient_counts(text: Sequence[str]) -> Tuple[Tuple[str, int], ...]:
  """Parses ["lge:5", "t2:3"] into (("lge", 5), ("t2", 3)).

  Raises:
    ConfigError: an entry is not modality:count with a positive integer count, or a
      modality is given twice.
  """
  counts = []
  for item in text:
    modality, _, count = item.partition(":")
    if not modality or not count.isdigit() or int(count) < 1:
      raise ConfigError("{labelled_train_patients}: {item} is not of the form "
                        "modality:count with a positive count (e.g. lge:5)",
                        "labelled_train_patients", item=repr(item))
    if modality in dict(counts):
      raise ConfigError("{labelled_train_patients}: {modality} is given twice",
                        "labelled_train_patients", modality=repr(modality))
    counts.append((modality, int(count)))
  return tuple(counts)


def format_patient_counts(counts: Sequence[Tuple[str, int]]) -> Tuple[str, ...]:
  """(("lge", 5),) -> ("lge:5",): the form of --labelled_train_patients."""
  return tuple(f"{modality}:{count}" for modality, count in counts)


_PAPER_PAIRS = " or ".join(",".join(datasets.get_spec(name).paper_modalities)
                           for name in datasets.DATASETS)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Everything a training run needs. Defaults are the paper's (see experiments/*.flags).

  Each field's declaration (its `option`) holds its help text, allowed values and range;
  read them there, or with `python -m csa_tf.train --helpfull`.
  """
  model_dir: str = option(
      help="Run folder: checkpoints, config, TensorBoard.", flag_default=None,
      on_resume=True)
  data_dir: str = option(
      help="Prepared data (PREP). Default: generate phantoms under "
      "<model_dir>/phantom_data.", flag_default=None,
      # Its path may change on resume; its content may not (the trainer compares the
      # PREP's fingerprint with the one the run recorded).
      on_resume=True)
  # Facts of the prepared data, read from it rather than set by the user.
  dataset: str = option(help="The prepared data's dataset.", choices=datasets.DATASETS,
                        flag=None)
  num_classes: int = option(help="Classes of the prepared data, background included.",
                            check=options.positive_integer, flag=None)
  crop_size: int = option(help="In-plane size of the prepared slices.",
                          check=size_problem, flag=None)
  modalities: Tuple[str, ...] = option(
      datasets.MSCMR.paper_modalities,
      help="Modalities to train on; default the paper's pair of the dataset "
      f"({_PAPER_PAIRS}).", flag_default=())
  method: str = option(
      "csa", choices=METHOD_ORDER,
      help="Setting of Tables 1-3: " + ", ".join(METHOD_ORDER) + ".")
  train_steps: int = option(
      1000, check=options.positive_integer,
      help="Total training steps (resume continues to it).",
      on_resume=True)
  batch_size: int = option(8, check=options.positive_integer,
                           help="Slices per modality per step (paper: 8).")
  feature_base: int = option(16, check=options.positive_integer,
                             help="Channels of the first group (REFERENCE: 16).")
  in_channels: int = option(
      1, choices=INPUT_SLICES, flag="input_slices",
      help="Slices fed to the network as channels: 1 (the slice), or 3 (the slice with "
      "its two neighbours, UMMKD's input; edge slices repeat their neighbour).")
  spatial_dims: int = option(
      2, choices=SPATIAL_DIMS,
      help="2: the paper's network on slices; 3: its 3D counterpart (3x3x3 convolutions, "
      "the same groups and taps) on patches of --patch_depth consecutive slices.")
  patch_depth: int = option(
      8, check=options.at_least(2),
      help="Consecutive slices per training patch and evaluation window with "
      "--spatial_dims=3 (volumes with fewer slices are padded by edge slices).")
  dropout_rate: float = option(
      0.25, check=options.in_interval(0, 1, low_open=False, high_open=True),
      help="Dropout rate (paper's keep_prob 0.75).")
  learning_rate: float = option(1e-4, check=options.positive,
                                help="Adam learning rate (paper: 1e-4).")
  lr_decay_rate: float = option(
      0.95, check=options.in_interval(0, 1, low_open=True, high_open=False),
      help="Learning-rate factor per decay period.")
  lr_decay_steps: int = option(1000, check=options.positive_integer,
                               help="Steps per learning-rate decay period.")
  alpha: float = option(1.0, check=options.non_negative,
                        help="Weight of the Dice losses (Eq. 5).")
  beta: float = option(1.0, check=options.non_negative,
                       help="Weight of the cross-entropy losses (Eq. 5).")
  # `lambda` is a Python keyword: the field is `lam`, the flag --lambda.
  lam: float = option(0.5, check=options.non_negative, flag="lambda",
                      help="Weight of the extra loss: CSA, affinity or KD (Eq. 5).")
  l2_weight: float = option(1e-4, check=options.non_negative,
                            help="Weight decay on conv kernels (0.5*||W||^2).")
  csa_pairs: Tuple[Tuple[str, str], ...] = option(
      DEFAULT_CSA_PAIRS, parse=parse_csa_pairs, unparse=format_csa_pairs,
      help="CSA layer pairs l:k (taps g1..g10); default: adjacent intermediate groups at "
      "two scales.")
  csa_area_norm: str = option(
      "count", choices=AREA_NORMS,
      help="S_c of Eq. 3: class pixel count (paper), fraction, or none.")
  csa_reduction: str = option(
      "mean_then_square", choices=REDUCTIONS,
      help="Eq. 4 literally (mean_then_square) or mean of squares.")
  csa_affinity: str = option(
      "cosine", choices=AFFINITIES,
      help="a_mn of Eq. 3: cosine of the masked channels (as written) or their masked "
      "dot product, then divided by S_c.")
  joint_bn: str = option(
      "separate", choices=JOINT_BN,
      help="Joint: one forward pass per modality through the shared BN set (separate, "
      "REFERENCE.md section 1) or one pass of the concatenated batches (concat).")
  kd_temperature: float = option(2.0, check=options.positive,
                                 help="UMMKD's softmax temperature.")
  seed: int = option(0, help="Seed of weights, dropout and the input streams.")
  deterministic: bool = option(False, help="Enable TF op determinism (slower).",
                               on_resume=True)
  jit_compile: bool = option(False, help="Compile the training step with XLA.",
                             on_resume=True)
  mixed_precision: str = option(
      "off", choices=tuple(MIXED_PRECISION_POLICIES),
      help="Mixed precision: bfloat16 or float16 compute (fp16 with dynamic loss "
      "scaling); variables and losses stay float32.")
  augment: bool = option(False,
                         help="Random flips and intensity jitter (not in the paper).")
  labelled_slices_only: bool = option(
      True, flag="all_slices", inverse_flag=True,
      help="Train on unlabelled slices too (default: only slices with some foreground).")
  labelled_train_patients: Tuple[Tuple[str, int], ...] = option(
      (), parse=parse_patient_counts, unparse=format_patient_counts, repeatable=True,
      help="Label scarcity: modality:count trains that modality on the labelled slices "
      "of only count of its training patients (a fixed seeded draw, the same for every "
      "--seed and method; see csa_tf/data/label_scarcity.py); repeatable or a comma "
      "list, e.g. lge:5,t2:3. The test split is untouched. Default: every patient.")
  checkpoint_every: int = option(500, check=options.positive_integer,
                                 help="Steps between checkpoints.", on_resume=True)
  bn_recalibration_batches: int = option(
      20, check=options.non_negative,
      help="Training batches per modality on which BN statistics are re-estimated with "
      "dropout off before each checkpoint (0: off; see "
      "csa_tf/training/bn_recalibration.py).")
  keep_checkpoints: int = option(3, check=options.positive_integer,
                                 help="Checkpoints kept (older ones are deleted).",
                                 on_resume=True)
  log_every: int = option(50, check=options.positive_integer,
                          help="Steps between progress lines and scalars.",
                          on_resume=True)
  steps_per_loop: int = option(
      1, check=options.positive_integer,
      help="Training steps per tf.function call (fewer host round trips; a call ends "
      "early at a log, checkpoint or image summary step). With --deterministic every "
      "value gives the same run (see csa_tf/training/step_loop.py).",
      on_resume=True)
  image_summary_every: int = option(
      0, check=options.non_negative,
      help="Steps between TensorBoard image summaries: segmentation overlays and the "
      "first CSA pair's affinity matrices (0: never; see "
      "csa_tf/training/summary_images.py).",
      on_resume=True)
  log_term_gradients: bool = option(
      False,
      help="At every log step, log the gradient norm over the shared conv kernels of "
      "each Eq. 5 term as weighted (TensorBoard grad_norm/<term>, final_losses.json "
      "grad_norm_<term>; see csa_tf/training/term_gradients.py).",
      on_resume=True)
  strategy: str = option(
      "default", choices=STRATEGIES,
      help="tf.distribute strategy: default (one device), mirrored (all local GPUs), "
      "multi_worker (cluster from TF_CONFIG). --batch_size is the global batch per "
      "modality, split over the replicas.",
      on_resume=True)

  @property
  def method_spec(self) -> MethodSpec:
    return METHODS[self.method]

  @classmethod
  def for_data(cls, values: Mapping[str, Any], *, spec: datasets.DatasetSpec,
               available_modalities: Sequence[str], crop_size: int,
               data_dir: str) -> "TrainConfig":
    """The validated config of training on prepared data with the user's option values.

    Args:
      values: field values the user chose (e.g. `options.values_from_flags`); an empty
        or absent `modalities` means the dataset's paper pair (those of it the data
        hold).
      spec: the data's dataset.
      available_modalities: the modalities the data hold (or will hold).
      crop_size: the data's crop size.
      data_dir: the prepared data folder (named in messages).

    Raises:
      ConfigError: a value out of range, or a modality the data do not hold.
    """
    modalities = tuple(values.get("modalities") or ()) or tuple(
        m for m in spec.paper_modalities if m in available_modalities)
    for modality in modalities:
      if modality not in available_modalities:
        raise ConfigError("{modalities}: {modality} is not in {data_dir} (prepared: "
                          "{available})", "modalities", modality=repr(modality),
                          data_dir=data_dir, available=", ".join(available_modalities))
    return cls(**dict(values, data_dir=data_dir, dataset=spec.name,
                      num_classes=spec.num_classes, crop_size=crop_size,
                      modalities=modalities)).validate()

  @property
  def input_patch_depth(self) -> Optional[int]:
    """Slices per network input along depth: patch_depth in 3D runs, None in 2D."""
    return self.patch_depth if self.spatial_dims == 3 else None

  def validate(self) -> "TrainConfig":
    """Checks values a user can get wrong; returns self.

    Raises:
      ConfigError: naming the field(s) and the problem.
    """
    options.check_options(self)
    if len(self.modalities) < 1 or len(set(self.modalities)) != len(self.modalities):
      raise ConfigError("{modalities}={value}: list each modality once", "modalities",
                        value=",".join(self.modalities))
    if self.method != "single" and len(self.modalities) < 2:
      raise ConfigError("{method}={value} needs at least two {modalities}", "method",
                        "modalities", value=self.method)
    if self.spatial_dims == 3 and self.in_channels != 1:
      # A 3D patch already holds the neighbouring slices along its depth.
      raise ConfigError("{spatial_dims}=3 takes one slice per voxel: drop "
                        "{in_channels}={value}", "spatial_dims", "in_channels",
                        value=self.in_channels)
    if self.jit_compile and self.strategy != "default":
      # Not built or tested: XLA would have to compile the replica function with its
      # all-reduces inside.
      raise ConfigError("{jit_compile} is not supported with {strategy}={value}",
                        "jit_compile", "strategy", value=self.strategy)
    for modality, _ in self.labelled_train_patients:
      if modality not in self.modalities:
        raise ConfigError("{labelled_train_patients}: {modality} is not a modality of "
                          "this run ({modalities}={value})", "labelled_train_patients",
                          "modalities", modality=repr(modality),
                          value=",".join(self.modalities))
    if self.method_spec.extra_loss in ("csa", "affinity") and not self.csa_pairs:
      raise ConfigError("{csa_pairs}: at least one layer pair is needed", "csa_pairs")
    for pair in self.csa_pairs:
      for tap in pair:
        if tap not in FEATURE_TAPS:
          raise ConfigError("{csa_pairs}: {pair} names {tap}, which is not one of the "
                            "network's taps ({taps})", "csa_pairs",
                            pair=":".join(pair), tap=repr(tap),
                            taps=", ".join(FEATURE_TAPS))
    return self

  def changes_from(self, previous: "TrainConfig", *, on_resume: bool
                   ) -> Dict[str, Tuple[Any, Any]]:
    """The fields whose value differs from `previous`: {name: (previous, this)}.

    Args:
      previous: the config a run was started (or last resumed) with.
      on_resume: True: only the fields that may change when a run resumes (declared
        with `option(on_resume=True)`); False: only those that may not.
    """
    old, new = previous.to_json(), self.to_json()
    return {name: (old.get(name), new[name])
            for name, (_, meta) in options.declarations(TrainConfig).items()
            if meta.on_resume == on_resume and old.get(name) != new[name]}

  def to_json(self) -> dict:
    out = dataclasses.asdict(self)
    out["modalities"] = list(self.modalities)
    out["csa_pairs"] = [list(pair) for pair in self.csa_pairs]
    out["labelled_train_patients"] = dict(self.labelled_train_patients)
    return out

  @classmethod
  def from_json(cls, values: dict) -> "TrainConfig":
    known = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in values.items() if k in known}
    if "joint_bn" not in values and values.get("method") == "joint":
      # A Joint run made before the option passed both batches in one forward.
      values["joint_bn"] = "concat"
    values["modalities"] = tuple(values["modalities"])
    values["csa_pairs"] = tuple(tuple(pair) for pair in values.get("csa_pairs", ()))
    # Runs made before the option trained on every patient.
    values["labelled_train_patients"] = tuple(
        (m, int(n)) for m, n in values.get("labelled_train_patients", {}).items())
    return cls(**values)


@dataclasses.dataclass(frozen=True)
class DemoDataConfig:
  """The phantoms `csa_tf.train` generates and prepares when it is given no PREP."""
  dataset: str = option("mscmr", choices=datasets.DATASETS,
                        help="Phantom dataset layout when no --data_dir is given.")
  phantom_patients: int = option(8, check=options.positive_integer,
                                 help="Phantom patients when no --data_dir.")
  phantom_scale: float = option(
      0.25, check=options.in_interval(0, 1, low_open=True, high_open=False),
      help="Phantom in-plane scale when no --data_dir.")
  crop_size: int = option(
      64, check=size_problem,
      help="Crop size of the phantom preparation when no --data_dir (a real PREP's crop "
      "size is read from it).")

  @property
  def spec(self) -> datasets.DatasetSpec:
    return datasets.get_spec(self.dataset)

  def validate(self) -> "DemoDataConfig":
    """Checks every value; returns self.

    Raises:
      ConfigError: naming the field and the problem.
    """
    options.check_options(self)
    return self

