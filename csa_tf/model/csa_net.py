"""UMMKD's 2D segmenter with modality-specific BN, the network of every setting in the paper.

"Nine convolutional operation groups, one deconvolutional group and one softmax layer"
(paper Sec. 3); the layer-by-layer layout is pinned in REFERENCE.md section 1.

`spatial_dims=3` builds its 3D counterpart (the paper's future work): the same groups,
taps, dilation, shortcuts and modality-specific BN with 3x3x3 (5x5x5) kernels on patches
of consecutive slices [B, D, H, W, C]. It pools and upsamples in-plane only: a patch of
a few slices is thin, and the stack's ~40 convolutions already see across all of it, so
the depth of every tap is the patch's depth D, free of the in-plane size rule.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import keras
from keras import ops

from csa_tf.configs import train_config
from csa_tf.configs.downsampling import DOWNSAMPLE
from csa_tf.configs.downsampling import size_problem
from csa_tf.model.modality_batch_norm import ModalityBatchNorm
from csa_tf.model.modality_batch_norm import validate_modalities
from csa_tf.model.pre_activation_conv import LEAKY_SLOPE
from csa_tf.model.pre_activation_conv import PreActivationConv
from csa_tf.model.pre_activation_conv import conv_layer
from csa_tf.model.residual_block import ResidualBlock

# (group, [(attribute, channel multiple of feature_base, dilation)]) for groups 2-8; every
# entry is a residual block. Group 1 (plain conv + RB) and groups 9-10 are written out.
_RESIDUAL_GROUPS = (
    ("g2", (("g2_rb1", 2, 1),)),
    ("g3", (("g3_rb1", 4, 1), ("g3_rb2", 4, 1))),
    ("g4", (("g4_rb1", 8, 1), ("g4_rb2", 8, 1))),
    ("g5", (("g5_rb1", 16, 1), ("g5_rb2", 16, 1))),
    ("g6", (("g6_rb1", 16, 1), ("g6_rb2", 16, 1))),
    ("g7", (("g7_rb1", 32, 1), ("g7_rb2", 32, 1))),
    ("g8", (("g8_drb1", 32, 2), ("g8_drb2", 32, 2))),
)
# Groups followed by a 2x2 max-pool (after their feature tap).
_POOLED_GROUPS = ("g1", "g2", "g3")


@keras.saving.register_keras_serializable(package="csa_tf")
class CsaNet(keras.Model):
  """Segmentation FCN with shared convolutions and one BN set per modality.

  Layout (REFERENCE.md section 1, F = feature_base, C = num_classes):
    g1 conv3x3 in->F, RB(F), pool | g2 RB(2F), pool | g3 RB(4F) x2, pool |
    g4 RB(8F) x2 | g5 RB(16F) x2 | g6 RB(16F) x2 | g7 RB(32F) x2 | g8 DRB(32F) x2 |
    g9 (BN-lReLU-conv3x3-dropout)(32F) x2 |
    g10 symmetric pad 1 + conv3x3 valid (64*8C) -> BN -> lReLU -> depth_to_space(8) |
    out symmetric pad 2 + conv5x5 valid (C) -> logits.
  No conv bias, TruncatedNormal(0.01) kernels, leaky ReLU slope 0.2, Dropout(0.25),
  BN momentum 0.9 / epsilon 1e-3, 31 BN sites.

  The modality is a Python string keyword (`net(x, modality="lge")`); inside a
  `tf.function` each modality traces its own graph, which is intended.

  All sub-layers are direct attributes (no lists or dicts): `tf.train.Checkpoint` drops
  the variables of layers held in Keras-tracked containers (REFERENCE.md section 7).

  Args:
    num_classes: output classes, background included.
    modalities: modality keys, e.g. ("lge", "bssfp"); any number.
    feature_base: F, the channels of group 1 (16 in UMMKD).
    in_channels: input channels (1 slice; 3 for UMMKD's stacked adjacent slices).
    dropout_rate: Keras drop rate (0.25 = the paper's TF1 keep_prob 0.75).
    shared_bn: one BN set for all modalities (the "Joint" setting).
    spatial_dims: 2 (slices [B, H, W, C]) or 3 (patches [B, D, H, W, C], see above).
    name: model name.
    **kwargs: base Model arguments (dtype, trainable).

  Raises:
    ValueError: bad sizes or modality keys.
  """

  # Feature taps: g1..g9 are group outputs before any max-pool; g10 follows depth_to_space.
  FEATURE_NAMES = train_config.FEATURE_TAPS

  def __init__(self, num_classes: int, modalities: Sequence[str], *,
               feature_base: int = 16, in_channels: int = 1,
               dropout_rate: float = 0.25, shared_bn: bool = False,
               spatial_dims: int = 2, name: str = "csa_net", **kwargs):
    super().__init__(name=name, **kwargs)
    if spatial_dims not in (2, 3):
      raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    for arg_name, value in (("num_classes", num_classes), ("feature_base", feature_base),
                            ("in_channels", in_channels)):
      if int(value) != value or value < 1:
        raise ValueError(f"{arg_name} must be a positive integer, got {value!r}")
    if not 0.0 <= dropout_rate < 1.0:
      raise ValueError(f"dropout_rate must be in [0, 1), got {dropout_rate!r}")
    self.num_classes = int(num_classes)
    self.modalities = validate_modalities(modalities)
    self.feature_base = int(feature_base)
    self.in_channels = int(in_channels)
    self.dropout_rate = float(dropout_rate)
    self.shared_bn = bool(shared_bn)
    self.spatial_dims = int(spatial_dims)

    f = self.feature_base
    dtype = self.dtype_policy
    block_kwargs = dict(dropout_rate=self.dropout_rate, shared_bn=self.shared_bn,
                        spatial_dims=self.spatial_dims, dtype=dtype)
    conv_kwargs = dict(spatial_dims=self.spatial_dims, dtype=dtype)
    self.g1_conv = conv_layer(f, 3, name="g1_conv", **conv_kwargs)
    self.g1_rb1 = ResidualBlock(f, self.modalities, name="g1_rb1", **block_kwargs)
    for _, blocks in _RESIDUAL_GROUPS:
      for attr, multiple, dilation in blocks:
        setattr(self, attr, ResidualBlock(multiple * f, self.modalities,
                                          dilation_rate=dilation, name=attr,
                                          **block_kwargs))
    self.g9_unit1 = PreActivationConv(32 * f, self.modalities, name="g9_unit1",
                                      **block_kwargs)
    self.g9_unit2 = PreActivationConv(32 * f, self.modalities, name="g9_unit2",
                                      **block_kwargs)
    # 8x8 phase-shift upsampling to 8C channels (UMMKD's deconv group).
    self.g10_conv = conv_layer(self._g10_conv_channels, 3, padding="valid",
                               name="g10_conv", **conv_kwargs)
    self.g10_bn = ModalityBatchNorm(self.modalities, shared=self.shared_bn, name="g10_bn",
                                    dtype=dtype)
    self.out_conv = conv_layer(self.num_classes, 5, padding="valid", name="out_conv",
                               **conv_kwargs)

  @property
  def _g10_conv_channels(self) -> int:
    return DOWNSAMPLE * DOWNSAMPLE * DOWNSAMPLE * self.num_classes

  @staticmethod
  def feature_specs(feature_base: int = 16,
                    num_classes: Optional[int] = None) -> Dict[str, Tuple[int, int]]:
    """Returns {tap name: (scale divisor, channels)} of the feature taps.

    A tap of an H x W input has spatial size (H / divisor, W / divisor) (3D: a D x H x W
    input gives (D, H / divisor, W / divisor)). "g10" has 8 * num_classes channels and
    is left out when `num_classes` is None.
    """
    f = feature_base
    specs = {"g1": (1, f), "g2": (2, 2 * f), "g3": (4, 4 * f), "g4": (8, 8 * f),
             "g5": (8, 16 * f), "g6": (8, 16 * f), "g7": (8, 32 * f), "g8": (8, 32 * f),
             "g9": (8, 32 * f)}
    if num_classes is not None:
      specs["g10"] = (1, DOWNSAMPLE * num_classes)
    return specs

  @property
  def tap_specs(self) -> Dict[str, Tuple[int, int]]:
    """`feature_specs` of this network (all ten taps)."""
    return self.feature_specs(self.feature_base, self.num_classes)

  def _check_input_shape(self, shape) -> None:
    if len(shape) != 2 + self.spatial_dims:
      layout = "NHWC images" if self.spatial_dims == 2 else "NDHWC patches"
      raise ValueError(f"{self.name}: expected {layout}, got shape {tuple(shape)}")
    if self.spatial_dims == 3 and shape[1] is not None and shape[1] < 2:
      # The heads' symmetric padding (2 at the output conv) needs two slices.
      raise ValueError(f"{self.name}: patch depth {shape[1]} must be at least 2")
    for axis, size in (("height", shape[-3]), ("width", shape[-2])):
      problem = None if size is None else size_problem(size)
      if problem:
        raise ValueError(f"{self.name}: image {axis} {size} {problem}")
    if shape[-1] is not None and shape[-1] != self.in_channels:
      raise ValueError(f"{self.name}: images have {shape[-1]} channels, expected "
                       f"in_channels={self.in_channels}")

  def build(self, input_shape):
    # Explicit build (no tracing of `call`) so that every modality's BN exists before a
    # checkpoint restore or a `.keras` load; spatial sizes may be None.
    input_shape = tuple(input_shape)
    self._check_input_shape(input_shape)
    batch = input_shape[0]

    def shape_at(divisor, channels, pad=0):
      h, w = input_shape[-3], input_shape[-2]
      in_plane = (None if h is None else h // divisor + 2 * pad,
                  None if w is None else w // divisor + 2 * pad)
      if self.spatial_dims == 3:
        d = input_shape[1]
        in_plane = (None if d is None else d + 2 * pad,) + in_plane
      return (batch,) + in_plane + (channels,)

    f = self.feature_base
    self.g1_conv.build(input_shape)
    shape = shape_at(1, f)
    self.g1_rb1.build(shape)
    divisor = 1
    for group, blocks in _RESIDUAL_GROUPS:
      if group in ("g2", "g3", "g4"):
        divisor *= 2  # the pool after g1, g2, g3
      for attr, multiple, _ in blocks:
        block = getattr(self, attr)
        block.build(shape_at(divisor, shape[-1]))
        shape = shape_at(divisor, multiple * f)
    self.g9_unit1.build(shape)
    self.g9_unit2.build(shape)
    # The two valid convs see symmetrically padded inputs (pad 1 and pad 2).
    self.g10_conv.build(shape_at(DOWNSAMPLE, shape[-1], pad=1))
    self.g10_bn.build(shape_at(DOWNSAMPLE, self._g10_conv_channels))
    self.out_conv.build(shape_at(1, DOWNSAMPLE * self.num_classes, pad=2))

  def call(self, images, *, modality: str, training=False, return_features=False):
    """Returns logits [B, H, W, num_classes] of `modality`'s images [B, H, W, in_channels]
    (3D: [B, D, H, W, num_classes] of [B, D, H, W, in_channels]).

    With `return_features=True` returns (logits, {tap name: activation}) from the same
    forward pass; prefer `call_with_features`.

    Raises:
      ValueError: unknown modality, or a static H or W that breaks `size_problem`.
    """
    if not isinstance(modality, str) or modality not in self.modalities:
      raise ValueError(f"{self.name}: unknown modality {modality!r}; expected one of "
                       f"{self.modalities}")
    self._check_input_shape(images.shape)
    features = {}
    kw = dict(modality=modality, training=training)

    x = self.g1_conv(images)
    x = self.g1_rb1(x, **kw)
    features["g1"] = x
    x = self._max_pool(x)
    for group, blocks in _RESIDUAL_GROUPS:
      for attr, _, _ in blocks:
        x = getattr(self, attr)(x, **kw)
      features[group] = x
      if group in _POOLED_GROUPS:
        x = self._max_pool(x)
    x = self.g9_unit1(x, **kw)
    x = self.g9_unit2(x, **kw)
    features["g9"] = x
    x = self.g10_conv(self._pad_spatial(x, 1))
    x = self.g10_bn(x, **kw)
    x = ops.leaky_relu(x, negative_slope=LEAKY_SLOPE)
    x = depth_to_space(x, DOWNSAMPLE)
    features["g10"] = x
    logits = self.out_conv(self._pad_spatial(x, 2))
    if return_features:
      return logits, features
    return logits

  def call_with_features(self, images, *, modality: str, training=False):
    """Returns (logits, {"g1".."g10": activation}) from one forward pass.

    Taps "g1".."g9" are each group's output before its max-pool (g1 at H, g2 at H/2,
    g3 at H/4, g4..g9 at H/8); "g10" is the 8C-channel map after depth_to_space (H).
    In 3D every tap keeps the patch's depth D.
    """
    return self(images, modality=modality, training=training, return_features=True)

  def compute_output_shape(self, input_shape):
    return tuple(input_shape[:-1]) + (self.num_classes,)

  def _max_pool(self, x):
    """2x2 max-pool in-plane (3D: pool (1, 2, 2), depth kept)."""
    if self.spatial_dims == 2:
      return ops.max_pool(x, pool_size=2, strides=2, padding="valid")
    # Depth is kept, so the slices are pooled as a batch of images: TF's CPU MaxPool3D
    # has no float16 kernel (its 2D pool has one), and the result is the same.
    shape = ops.shape(x)
    pooled = ops.max_pool(ops.reshape(x, (-1, shape[2], shape[3], shape[4])),
                          pool_size=2, strides=2, padding="valid")
    pooled_shape = ops.shape(pooled)
    return ops.reshape(pooled, (-1, shape[1], pooled_shape[1], pooled_shape[2], shape[4]))

  def _pad_spatial(self, x, pad: int):
    """Symmetric padding by `pad` on every spatial axis, for the heads' valid convs."""
    return ops.pad(x, [[0, 0]] + [[pad, pad]] * self.spatial_dims + [[0, 0]],
                   mode="symmetric")

  def sublayers(self) -> List[keras.layers.Layer]:
    """Every sub-layer, depth-first in construction (= forward) order.

    Blocks, convs, dropouts and each modality's BatchNormalization: for callers that
    look for the layers of one kind (tests of layer settings, BN re-estimation).
    """
    return self._sublayers_in_order()

  def _sublayers_in_order(self):
    """Depth-first sub-layers in construction (= forward) order."""
    ordered = []

    def walk(layer):
      # pylint: disable-next=protected-access
      for child in layer._flatten_layers(include_self=False, recursive=False):
        ordered.append(child)
        walk(child)

    walk(self)
    return ordered

  @property
  def conv_kernels(self) -> List[keras.Variable]:
    """The 33 conv kernels in forward order (the L2 term's weights; no BN; 3D: Conv3D).

    A property holding variables only: Keras' `.keras` saving walks properties, and one
    returning layers would file those layers under its name.
    """
    return [layer.kernel for layer in self._sublayers_in_order()
            if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv3D))]

  def bn_layers(self) -> List[ModalityBatchNorm]:
    """Returns the 31 modality BN sites in forward order."""
    return [layer for layer in self._sublayers_in_order()
            if isinstance(layer, ModalityBatchNorm)]

  def get_config(self):
    config = super().get_config()
    config.update({
        "num_classes": self.num_classes,
        "modalities": list(self.modalities),
        "feature_base": self.feature_base,
        "in_channels": self.in_channels,
        "dropout_rate": self.dropout_rate,
        "shared_bn": self.shared_bn,
        "spatial_dims": self.spatial_dims,
    })
    return config

  @classmethod
  def from_config(cls, config):
    return cls(**config)


def depth_to_space(x, block: int):
  """[B, H, W, block * block * C] -> [B, H * block, W * block, C], TensorFlow's
  `depth_to_space` (DCR order: output (h * block + i, w * block + j, c) is input
  (h, w, (i * block + j) * C + c)) in keras.ops, so the network runs on any backend.

  A 3D map [B, D, H, W, block * block * C] is upsampled in-plane, slice by slice, to
  [B, D, H * block, W * block, C].
  """
  if len(x.shape) == 5:
    shape = ops.shape(x)
    slices = depth_to_space(ops.reshape(x, (-1, shape[2], shape[3], shape[4])), block)
    return ops.reshape(slices, (shape[0], shape[1]) + tuple(ops.shape(slices)[1:]))
  shape = ops.shape(x)
  channels = x.shape[-1] // (block * block)
  x = ops.reshape(x, (shape[0], shape[1], shape[2], block, block, channels))
  x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
  return ops.reshape(x, (shape[0], shape[1] * block, shape[2] * block, channels))
