"""3D patches of consecutive slices from a PREP, for `--spatial_dims=3` runs.

A patch is a window of `depth` consecutive slices of one prepared volume at the PREP's
in-plane crop. Training draws windows at every start (stride 1); evaluation and
prediction cover a volume with windows overlapping by half a patch (`window_starts`) and
average the probabilities where they overlap. A volume with fewer slices than a patch is
padded with copies of its edge slices, the same on both ends, and the padding is cut
away again from the predictions.
"""
from typing import List, Optional, Sequence, Tuple

import numpy as np

from csa_tf.errors import CsaInputError


def edge_padding(num_slices: int, depth: int) -> Tuple[int, int]:
  """(before, after) edge slices that bring a volume of num_slices up to depth."""
  missing = max(0, depth - num_slices)
  return missing // 2, missing - missing // 2


def pad_to_depth(array: np.ndarray, depth: int) -> np.ndarray:
  """array [S, ...] with its edge slices repeated (`edge_padding`) to at least depth."""
  before, after = edge_padding(len(array), depth)
  if not before and not after:
    return array
  return np.pad(array, [(before, after)] + [(0, 0)] * (array.ndim - 1), mode="edge")


def window_starts(num_slices: int, depth: int) -> List[int]:
  """Starts of windows of `depth` slices covering range(num_slices) (>= depth) with an
  overlap of half a patch: stride max(1, depth // 2), the last window flush with the
  end."""
  if num_slices < depth:
    raise ValueError(f"{num_slices} slices are fewer than a window of {depth}")
  stride = max(1, depth // 2)
  starts = list(range(0, num_slices - depth + 1, stride))
  if starts[-1] != num_slices - depth:
    starts.append(num_slices - depth)
  return starts


def train_patches(prepared, modality: str, *, depth: int, labelled_only: bool = True,
                  patients: Optional[Sequence[str]] = None
                  ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The training volumes of one modality as one slice store and its patch windows.

  Args:
    prepared: the opened PREP (`PreparedDataset`).
    modality: the modality key.
    depth: slices per patch.
    labelled_only: keep only windows with some foreground (as 2D runs keep labelled
      slices).
    patients: only these training patients (label scarcity); None: all.

  Returns:
    (slices [S, crop, crop] float32, labels [S, crop, crop] uint8, starts [N] int64):
    the volumes (each padded to `depth`) one after another, and the first slice of every
    window of `depth` slices that lies inside one volume.

  Raises:
    CsaInputError: the modality was not prepared, its volumes are stored as separate
      slices with side-channel neighbours (no consecutive slices to stack), or it has no
      training patch.
  """
  if modality not in prepared.modalities:
    raise CsaInputError(f"{prepared.prep_dir}: modality {modality!r} was not prepared "
                        f"(has {', '.join(prepared.modalities)})")
  slices, labels, starts = [], [], []
  offset = 0
  for entry in prepared.entries_for("train", modality):
    if patients is not None and entry.patient_id not in patients:
      continue
    volume = prepared.load(entry)
    if volume.neighbours is not None:
      raise CsaInputError(f"{prepared.prep_dir}: {entry.file} holds slices of the "
                          "PnP-AdaNet records, not a volume; 3D patches need whole "
                          "volumes (prepare the release's NIfTI volumes)")
    image = pad_to_depth(volume.image, depth)
    label = pad_to_depth(volume.label, depth)
    foreground = label.reshape(len(label), -1).max(axis=1) > 0
    for start in range(len(image) - depth + 1):
      if not labelled_only or foreground[start:start + depth].any():
        starts.append(offset + start)
    slices.append(image)
    labels.append(label)
    offset += len(image)
  if not starts:
    raise CsaInputError(f"{prepared.prep_dir}: no training patches of {depth} slices for "
                        f"modality {modality!r}")
  return (np.concatenate(slices).astype(np.float32), np.concatenate(labels),
          np.asarray(starts, np.int64))
