"""MR appearance shared by both renderers: a smooth bias field and Rician noise."""
import math
from typing import List, Tuple

import numpy as np


def _sample_bias_waves(rng) -> List[Tuple[np.ndarray, float, float]]:
  """A smooth MR bias field: three long plane waves (wave vector /mm, amplitude, phase)."""
  waves = []
  for _ in range(3):
    direction = rng.normal(size=3)
    wave_vector = direction * 2 * math.pi / (np.linalg.norm(direction)
                                             * rng.uniform(250, 500))
    waves.append((wave_vector.astype(np.float32), rng.uniform(0.05, 0.12),
                  rng.uniform(0, 2 * math.pi)))
  return waves


def _bias_field(waves, x, y, z) -> np.ndarray:
  """The multiplicative bias field of `waves` at positions x, y, z (mm)."""
  field = np.zeros(np.broadcast_shapes(np.shape(x), np.shape(y), np.shape(z)), np.float32)
  for k, amplitude, phase in waves:
    field += np.float32(amplitude) * np.cos(k[0] * x + k[1] * y + k[2] * z + phase)
  return np.exp(field)


def _rician(values: np.ndarray, sigma: float, rng) -> np.ndarray:
  """Magnitude of the signal plus complex Gaussian noise."""
  real = values + sigma * rng.standard_normal(values.shape, np.float32)
  imag = sigma * rng.standard_normal(values.shape, np.float32)
  return np.sqrt(real * real + imag * imag)
