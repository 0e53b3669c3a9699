"""Pre-activation conv unit: BN -> leaky ReLU -> conv3x3 -> dropout (REFERENCE.md s. 1)."""
from typing import Sequence

import keras

from csa_tf.model.modality_batch_norm import ModalityBatchNorm

# UMMKD's leaky ReLU slope (Keras' LeakyReLU default is 0.3; REFERENCE.md section 1).
LEAKY_SLOPE = 0.2
# UMMKD's kernel initializer; its convolutions have no bias (REFERENCE.md section 1).
KERNEL_STDDEV = 0.01


def conv2d(filters: int, kernel_size: int, *, padding: str = "same",
           dilation_rate: int = 1, name=None, dtype=None) -> keras.layers.Conv2D:
  """Returns a bias-free Conv2D with UMMKD's TruncatedNormal(0.01) kernel initializer.

  A fresh initializer per layer: one seeded instance shared across layers would give
  every layer the same kernel values.
  """
  return keras.layers.Conv2D(
      filters, kernel_size, padding=padding, dilation_rate=dilation_rate,
      use_bias=False,
      kernel_initializer=keras.initializers.TruncatedNormal(stddev=KERNEL_STDDEV),
      name=name, dtype=dtype)


@keras.saving.register_keras_serializable(package="csa_tf")
class PreActivationConv(keras.layers.Layer):
  """BN (one per modality) -> leaky ReLU(0.2) -> conv3x3 'same' -> dropout.

  The unit that residual blocks repeat twice and group 9 uses without a residual.

  Args:
    filters: output channels.
    modalities: modality keys; one BN set each (see `ModalityBatchNorm`).
    dilation_rate: conv dilation (2 in the dilated residual blocks of group 8).
    dropout_rate: Keras drop rate; 0.25 is the paper's TF1 keep_prob 0.75.
    shared_bn: one BN for all modalities (the "Joint" setting).
    **kwargs: base Layer arguments (name, dtype, trainable).
  """

  def __init__(self, filters: int, modalities: Sequence[str], *, dilation_rate: int = 1,
               dropout_rate: float = 0.25, shared_bn: bool = False, **kwargs):
    super().__init__(**kwargs)
    self.filters = int(filters)
    self.modalities = tuple(modalities)
    self.dilation_rate = int(dilation_rate)
    self.dropout_rate = float(dropout_rate)
    self.shared_bn = bool(shared_bn)
    self.bn = ModalityBatchNorm(self.modalities, shared=shared_bn, name="bn",
                                dtype=self.dtype_policy)
    self.conv = conv2d(self.filters, 3, dilation_rate=self.dilation_rate, name="conv",
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
    })
    return config
