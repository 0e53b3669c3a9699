"""Pre-activation conv unit: BN -> leaky ReLU -> conv3x3 -> dropout (REFERENCE.md s. 1)."""
from typing import Sequence

import keras

from csa_tf.model.modality_batch_norm import ModalityBatchNorm

# UMMKD's leaky ReLU slope (Keras' LeakyReLU default is 0.3; REFERENCE.md section 1).
LEAKY_SLOPE = 0.2
# UMMKD's kernel initializer; its convolutions have no bias (REFERENCE.md section 1).
KERNEL_STDDEV = 0.01


def conv_layer(filters: int, kernel_size: int, *, spatial_dims: int = 2,
               padding: str = "same", dilation_rate: int = 1, name=None,
               dtype=None) -> keras.layers.Layer:
  """Returns a bias-free Conv2D (or Conv3D with `spatial_dims=3`, a cubic kernel) with
  UMMKD's TruncatedNormal(0.01) kernel initializer.

  A fresh initializer per layer: one seeded instance shared across layers would give
  every layer the same kernel values.

  Raises:
    ValueError: `spatial_dims` is not 2 or 3.
  """
  if spatial_dims not in (2, 3):
    raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
  layer = keras.layers.Conv2D if spatial_dims == 2 else keras.layers.Conv3D
  return layer(
      filters, kernel_size, padding=padding, dilation_rate=dilation_rate,
      use_bias=False,
      kernel_initializer=keras.initializers.TruncatedNormal(stddev=KERNEL_STDDEV),
      name=name, dtype=dtype)


@keras.saving.register_keras_serializable(package="csa_tf")
class PreActivationConv(keras.layers.Layer):
  """BN (one per modality) -> leaky ReLU(0.2) -> conv3x3 (3D: 3x3x3) 'same' -> dropout.

  The unit that residual blocks repeat twice and group 9 uses without a residual.

  Args:
    filters: output channels.
    modalities: modality keys; one BN set each (see `ModalityBatchNorm`).
    dilation_rate: conv dilation (2 in the dilated residual blocks of group 8).
    dropout_rate: Keras drop rate; 0.25 is the paper's TF1 keep_prob 0.75.
    shared_bn: one BN for all modalities (the "Joint" setting).
    spatial_dims: 2 (NHWC inputs) or 3 (NDHWC inputs, Conv3D).
    **kwargs: base Layer arguments (name, dtype, trainable).
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
    self.bn = ModalityBatchNorm(self.modalities, shared=shared_bn, name="bn",
                                dtype=self.dtype_policy)
    self.conv = conv_layer(self.filters, 3, spatial_dims=self.spatial_dims,
                           dilation_rate=self.dilation_rate, name="conv",
                           dtype=self.dtype_policy)
    self.dropout = keras.layers.Dropout(self.dropout_rate, name="dropout",
                                        dtype=self.dtype_policy)

  def build(self, input_shape):
    self.bn.build(input_shape)
    self.conv.build(input_shape)

  def call(self, x, *, modality: str, training=None):
    x = self.bn(x, modality=modality, training=training)
    x = keras.ops.leaky_relu(x, negative_slope=LEAKY_SLOPE)
    x = self.conv(x)
    return self.dropout(x, training=training)

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
