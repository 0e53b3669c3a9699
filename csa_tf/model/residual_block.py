"""Pre-activation residual block RB / dilated DRB of UMMKD's segmenter (REFERENCE.md s. 1)."""
from typing import Sequence

import keras

from csa_tf.model.pre_activation_conv import PreActivationConv


@keras.saving.register_keras_serializable(package="csa_tf")
class ResidualBlock(keras.layers.Layer):
  """x + (BN -> lReLU -> conv3x3 -> dropout) x 2, no activation after the add.

  When the block doubles the channels, the shortcut zero-pads x's channels (half of the
  input channel count on each side) instead of using a 1x1 conv, as UMMKD does.

  Args:
    filters: output channels; equal to or twice the input channels.
    modalities: modality keys; one BN set each.
    dilation_rate: 1 for RB, 2 for DRB.
    dropout_rate: Keras drop rate (0.25 = the paper's keep_prob 0.75).
    shared_bn: one BN set for all modalities (the "Joint" setting).
    spatial_dims: 2 (NHWC inputs) or 3 (NDHWC inputs, Conv3D).
    **kwargs: base Layer arguments (name, dtype, trainable).

  Raises:
    ValueError (at build): `filters` is neither the input channel count nor twice it.
  """

  def __init__(self, filters: int, modalities: Sequence[str], *, dilation_rate: int = 1,
               dropout_rate: float = 0.25, shared_bn: bool = False,
               spatial_dims: int = 2, **kwargs):
    super().__init__(**kwargs)
    self.filters = int(filters)
    self.spatial_dims = int(spatial_dims)
    self.modalities = tuple(modalities)
    self.dilation_rate = int(dilation_rate)
    self.dropout_rate = float(dropout_rate)
    self.shared_bn = bool(shared_bn)
    unit_kwargs = dict(dilation_rate=self.dilation_rate, dropout_rate=self.dropout_rate,
                       shared_bn=self.shared_bn, spatial_dims=self.spatial_dims,
                       dtype=self.dtype_policy)
    self.unit1 = PreActivationConv(self.filters, self.modalities, name="unit1",
                                   **unit_kwargs)
    self.unit2 = PreActivationConv(self.filters, self.modalities, name="unit2",
                                   **unit_kwargs)
    self._pad = (0, 0)

  def build(self, input_shape):
    in_channels = input_shape[-1]
    if in_channels is None or self.filters not in (in_channels, 2 * in_channels):
      raise ValueError(
          f"{self.name}: filters={self.filters} must equal the input channels "
          f"({in_channels}) or twice them")
    extra = self.filters - in_channels
    self._pad = (extra // 2, extra - extra // 2)
    self.unit1.build(input_shape)
    self.unit2.build(self.unit1.compute_output_shape(input_shape))

  def call(self, x, *, modality: str, training=None):
    inner = self.unit1(x, modality=modality, training=training)
    inner = self.unit2(inner, modality=modality, training=training)
    if self._pad != (0, 0):
      # Parameter-free shortcut for doubled channels (REFERENCE.md section 1).
      x = keras.ops.pad(x, [[0, 0]] * (1 + self.spatial_dims) + [list(self._pad)])
    return x + inner

  def compute_output_shape(self, input_shape):
    return tuple(input_shape[:-1]) + (self.filters,)

  def get_config(self):
    config = super().get_config()
    config.update({
        "filters": self.filters,
        "modalities": list(self.modalities),
        "dilation_rate": self.dilation_rate,
        "dropout_rate": self.dropout_rate,
        "shared_bn": self.shared_bn,
        "spatial_dims": self.spatial_dims,
    })
    return config
