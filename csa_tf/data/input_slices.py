"""A slice with its neighbours as input channels (REFERENCE.md section 1: one slice by
default; UMMKD stacked three adjacent slices, an option: `--input_slices=3`)."""
from typing import Optional

import numpy as np

from csa_tf.configs.train_config import INPUT_SLICES
from csa_tf.errors import CsaInputError


def stack_neighbours(slices: np.ndarray, input_slices: int,
                     neighbours: Optional[np.ndarray] = None) -> np.ndarray:
  """The network input of every slice of one volume: [S, H, W] -> [S, H, W, input_slices].

  With 3, channel 0 is the previous slice, 1 the slice itself and 2 the next one along
  the volume's slice axis. An edge slice, which lacks one neighbour, repeats its other
  neighbour in its place (slice 0 gets channels 1, 0, 1: a mirror, so that the
  channels still show the anatomy either side of the slice); a one-slice volume repeats
  itself.

  Args:
    slices: z-scored slices [S, H, W] of one volume, in slice order.
    input_slices: 1 or 3 (INPUT_SLICES).
    neighbours: [S, H, W, 2] (previous, next) where the release stores each slice's own
      neighbours (the PnP-AdaNet records), used instead of the stack's; None otherwise.

  Returns:
    float32 [S, H, W, input_slices].

  Raises:
    CsaInputError: input_slices is not one of INPUT_SLICES, or the shapes disagree.
  """
  if input_slices not in INPUT_SLICES:
    raise CsaInputError(f"input_slices={input_slices}: expected one of {INPUT_SLICES}")
  slices = np.asarray(slices, np.float32)
  if slices.ndim != 3:
    raise CsaInputError(f"slices of shape {slices.shape}: expected [S, H, W]")
  if input_slices == 1:
    return slices[..., None]
  if neighbours is not None:
    if neighbours.shape != slices.shape + (2,):
      raise CsaInputError(f"neighbours of shape {neighbours.shape}: expected "
                          f"{slices.shape + (2,)}")
    return np.stack([neighbours[..., 0], slices, neighbours[..., 1]], axis=-1).astype(
        np.float32)
  mode = "reflect" if len(slices) > 1 else "edge"
  padded = np.pad(slices, ((1, 1), (0, 0), (0, 0)), mode=mode)
  return np.stack([padded[:-2], slices, padded[2:]], axis=-1)
