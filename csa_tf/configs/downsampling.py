"""The network's total downsampling and the one size rule it puts on every input.

Groups 1-3 of the network (REFERENCE.md section 1) max-pool three times by 2, so an
image's height and width must each be a multiple of 8 (`DOWNSAMPLE`) for the
deconvolution group to restore the input size exactly. Every place that checks or pads a
size (the network, the training config, data preparation, prediction, export) asks this
module; it imports no TensorFlow, so configs and data preparation can check sizes without
loading it.
"""
import numbers
from typing import Optional

DOWNSAMPLE = 8


def size_problem(size) -> Optional[str]:
  """None when `size` is a positive multiple of DOWNSAMPLE, else what is wrong with it.

  Callers put the problem after the name and value at fault, e.g.
  f"crop_size={size}: {problem}", and raise the error type of their layer.
  """
  if (isinstance(size, numbers.Integral) and not isinstance(size, bool) and size > 0
      and size % DOWNSAMPLE == 0):
    return None
  return (f"must be a positive multiple of {DOWNSAMPLE} (the network downsamples by "
          f"{DOWNSAMPLE})")


def padded_size(size: int) -> int:
  """The smallest multiple of DOWNSAMPLE that is >= size."""
  return -(-int(size) // DOWNSAMPLE) * DOWNSAMPLE
