"""The network(s) of one training setting, built and checkpointed the same way everywhere.

"Single" holds one CsaNet per modality; every other setting holds one CsaNet shared by all
modalities (with modality-specific BN, or one shared BN set for "Joint"). Training,
evaluation, prediction, figures and export all build the networks through `ModelBundle`.
"""
from typing import Dict, List

import keras
import tensorflow as tf

from csa_tf.configs.train_config import MIXED_PRECISION_POLICIES, TrainConfig
from csa_tf.errors import CsaInputError, param
from csa_tf.model.csa_net import CsaNet

# Mixed-precision mode -> Keras dtype policy (declared with the option it serves).
DTYPE_POLICIES = MIXED_PRECISION_POLICIES


class ModelBundle:
  """The networks of a run, keyed by modality.

  Variables are always float32, so a checkpoint restores into any bundle of the run:
  training builds it with the run's mixed precision and synchronised BN; evaluation,
  figures and export build the default (float32 compute, per-device BN).

  Args:
    config: the run's config.
    mixed_precision: a mode of MIXED_PRECISION_POLICIES (compute dtype of the networks,
      "off": float32). The policy is given to the networks rather than set globally, so
      that one process can hold float32 and mixed-precision bundles side by side.
    synchronized_bn: BatchNorm batch statistics all-reduced across tf.distribute
      replicas (see csa_tf/training/distribution.py); off on a single device, where Keras'
      synchronised moments would only change the rounding.

  Attributes:
    networks: modality -> CsaNet (the same object for every modality unless "single").
  """

  def __init__(self, config: TrainConfig, *, mixed_precision: str = "off",
               synchronized_bn: bool = False):
    self.config = config
    self.synchronized_bn = synchronized_bn
    if mixed_precision not in DTYPE_POLICIES:
      raise CsaInputError(f"{param('mixed_precision', mixed_precision)}: expected one of "
                          f"{', '.join(DTYPE_POLICIES)}")
    policy = DTYPE_POLICIES[mixed_precision]
    if (mixed_precision == "bf16" and config.spatial_dims == 3
        and not tf.config.list_logical_devices("GPU")):
      # Measured with TF 2.21: on the CPU the filter gradient of a bfloat16 3D
      # convolution is NaN or off by ~100% for some shapes (batch 2, depth 2), right for
      # others; 2D and float16 are fine. Refused rather than trusted shape by shape.
      raise CsaInputError(f"{param('mixed_precision', mixed_precision)} with "
                          f"{param('spatial_dims', 3)} on the CPU: TensorFlow's CPU "
                          "gradient of a bfloat16 3D convolution is wrong for some shapes "
                          "(NaN at batch 2, depth 2); use fp16 or off on the CPU (bf16 "
                          "3D needs a GPU)")
    spec = config.method_spec
    kwargs = dict(feature_base=config.feature_base, in_channels=config.in_channels,
                  dropout_rate=config.dropout_rate, spatial_dims=config.spatial_dims)
    if policy is not None:
      kwargs["dtype"] = keras.DTypePolicy(policy)
    if spec.separate_networks:
      self.networks: Dict[str, CsaNet] = {
          m: CsaNet(config.num_classes, [m], name=f"csa_net_{m}", **kwargs)
          for m in config.modalities}
    else:
      net = CsaNet(config.num_classes, list(config.modalities), shared_bn=spec.shared_bn,
                   **kwargs)
      self.networks = {m: net for m in config.modalities}
    self._built = False

  @property
  def unique_networks(self) -> List[CsaNet]:
    seen, out = set(), []
    for net in self.networks.values():
      if id(net) not in seen:
        seen.add(id(net))
        out.append(net)
    return out

  def build(self) -> "ModelBundle":
    """Creates every variable (each modality's BN included) with one tiny forward pass."""
    if not self._built:
      size = self.config.crop_size
      depth = self.config.input_patch_depth
      dummy = tf.zeros([1] + ([depth] if depth else []) + [size, size,
                                                           self.config.in_channels])
      for modality, net in self.networks.items():
        net(dummy, modality=modality, training=False)
      if self.synchronized_bn:
        # A run-time property of the BN layers (read when a step is traced), not part
        # of the architecture: checkpoints and exported models do not depend on it.
        for net in self.unique_networks:
          for layer in net._flatten_layers(include_self=False):  # pylint: disable=protected-access
            if isinstance(layer, keras.layers.BatchNormalization):
              layer.synchronized = True
      self._built = True
    return self

  @property
  def trainable_variables(self) -> List[tf.Variable]:
    return [v for net in self.unique_networks for v in net.trainable_variables]

  @property
  def conv_kernels(self) -> List[tf.Variable]:
    return [k for net in self.unique_networks for k in net.conv_kernels]

  @property
  def rng_state_variables(self) -> List[tf.Variable]:
    """Variables that are not weights: the dropout layers' random seed states.

    Training checkpoints keep them so that a resumed run draws the same dropout masks
    as an uninterrupted one.
    """
    out = []
    for net in self.unique_networks:
      weight_ids = {id(w) for w in net.weights}
      out += [v for v in net.variables if id(v) not in weight_ids]
    return out

  def checkpoint_items(self) -> Dict[str, tf.Module]:
    """Named objects for tf.train.Checkpoint (direct attributes, see REFERENCE.md §7)."""
    if self.config.method_spec.separate_networks:
      return {f"net_{m}": net for m, net in self.networks.items()}
    return {"net": self.unique_networks[0]}

  def logits(self, images: tf.Tensor, modality: str, *, training: bool = False):
    """Logits [B, H, W, C] of images [B, H, W, in_channels] through modality's BN."""
    return self.networks[modality](images, modality=modality, training=training)

  def restore(self, checkpoint_path: str) -> str:
    """Restores a checkpoint's network weights; returns its path.

    A run's latest checkpoint is `csa_tf.io.run_dir.RunDir(model_dir).latest_checkpoint()`
    (or restore through `RunDir.networks()`); optimizer and step are left out.

    Raises:
      CsaInputError: the checkpoint's variables do not fit these networks.
    """
    self.build()
    checkpoint = tf.train.Checkpoint(**self.checkpoint_items())
    try:
      checkpoint.restore(checkpoint_path).expect_partial().assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as error:
      # TF's message goes on to print variable values; the first sentence says enough.
      detail = str(error).splitlines()[0].split(". Showing")[0][:300]
      raise CsaInputError(f"{checkpoint_path}: checkpoint does not match this run's "
                          f"networks ({detail})") from None
    return checkpoint_path
