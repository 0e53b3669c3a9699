"""Modality-specific batch normalization (paper Sec. 2.2, Eq. 1; REFERENCE.md section 1)."""
from typing import Sequence

import keras

# The one BN set of the "Joint" setting is stored under this attribute suffix.
_SHARED_KEY = "shared"


def validate_modalities(modalities: Sequence[str]) -> tuple:
  """Returns `modalities` as a tuple after checking the keys are usable.

  Raises:
    ValueError: `modalities` is a bare string, empty, has duplicates, or a key that is not
      a lower-case Python identifier (keys become attribute names such as `bn_lge`).
  """
  if isinstance(modalities, str):
    raise ValueError(
        f"modalities must be a sequence of strings, got the string {modalities!r}")
  modalities = tuple(modalities)
  if not modalities:
    raise ValueError("modalities must name at least one modality")
  if len(set(modalities)) != len(modalities):
    raise ValueError(f"duplicate modality keys in {modalities}")
  for modality in modalities:
    if (not isinstance(modality, str) or not modality.isidentifier()
        or modality != modality.lower() or modality == _SHARED_KEY):
      raise ValueError(
          f"modality key {modality!r} must be a lower-case identifier such as 'lge' "
          f"(and not {_SHARED_KEY!r})")
  return modalities


@keras.saving.register_keras_serializable(package="csa_tf")
class ModalityBatchNorm(keras.layers.Layer):
  """One BatchNormalization per modality; `call` picks it by the modality key.

  The convolutions are shared across modalities while each modality keeps its own
  gamma, beta and moving statistics (paper Eq. 1). Each modality's batch goes through its
  own BN in its own forward pass, so its statistics never mix with another modality's.

  The per-modality BN layers are direct attributes (`bn_lge`, `bn_bssfp`, ...), not a
  dict or list: `tf.train.Checkpoint` silently drops BN variables held in Keras-tracked
  containers (REFERENCE.md section 7).

  Args:
    modalities: modality keys, e.g. ("lge", "bssfp").
    shared: one BN for all modalities instead (the "Joint" setting).
    momentum: moving-average momentum; 0.9 as in UMMKD (Keras' default is 0.99).
    epsilon: variance epsilon; 1e-3 as in UMMKD.
    **kwargs: base Layer arguments (name, dtype, trainable).

  Raises:
    ValueError: bad modality keys (see `validate_modalities`).
  """

  def __init__(self, modalities: Sequence[str], *, shared: bool = False,
               momentum: float = 0.9, epsilon: float = 1e-3, **kwargs):
    super().__init__(**kwargs)
    self.modalities = validate_modalities(modalities)
    self.shared = bool(shared)
    self.momentum = momentum
    self.epsilon = epsilon
    for key in self.bn_keys:
      setattr(self, f"bn_{key}", keras.layers.BatchNormalization(
          momentum=momentum, epsilon=epsilon, name=f"bn_{key}",
          dtype=self.dtype_policy))

  @property
  def bn_keys(self) -> tuple:
    """Suffixes of the BN attributes: the modalities, or ("shared",)."""
    return (_SHARED_KEY,) if self.shared else self.modalities

  def bn_for(self, modality: str) -> keras.layers.BatchNormalization:
    """Returns the BatchNormalization layer used for `modality`.

    Raises:
      ValueError: `modality` is not one of this layer's modalities.
    """
    if not isinstance(modality, str) or modality not in self.modalities:
      raise ValueError(
          f"unknown modality {modality!r}; expected one of {self.modalities}")
    return getattr(self, f"bn_{_SHARED_KEY if self.shared else modality}")

  def build(self, input_shape):
    # Build every modality's BN now, not lazily on first use, so that a model restored
    # from a checkpoint or a `.keras` file has all variables before weights are loaded.
    for key in self.bn_keys:
      getattr(self, f"bn_{key}").build(input_shape)

  def call(self, x, *, modality: str, training=None):
    # `training` must be True for the moving statistics to update (REFERENCE.md s. 7).
    return self.bn_for(modality)(x, training=training)

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self):
    config = super().get_config()
    config.update({
        "modalities": list(self.modalities),
        "shared": self.shared,
        "momentum": self.momentum,
        "epsilon": self.epsilon,
    })
    return config
