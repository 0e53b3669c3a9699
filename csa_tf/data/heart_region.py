"""Which annotated voxels of a label volume belong to the heart (REFERENCE.md section 5b).

The paper's crop box encloses "all annotated regions", but real label files hold stray
labelled voxels far from the heart (MS-CMRSeg copies: a few voxels near an image corner).
One such voxel moves the box off the heart. Here the heart is the largest 3D connected
component of the foreground (all classes together) and every component near it; what is
left, the stray islands, is reported, kept out of the crop box and the training labels,
and not scored (csa_tf.data.preparation, csa_tf.evaluation.evaluator).

- Connectivity 26 (face, edge or corner neighbours): hand-drawn contours rasterise into
  in-plane lines that step diagonally, and a myocardium ring may shift by a voxel
  between slices; 6-connectivity would split such pieces for no gain, since the margin
  below decides what is near anyway.
- Near: the gap between a component's bounding box and that of a component already in
  the heart is at most HEART_MARGIN_MM (grown from the largest component, so pieces
  joined through other pieces stay in too). The gap is measured in mm from the header
  spacing, because slices are 5-23 mm apart and pixels 0.3-1.3 mm: per axis, the empty
  voxels strictly between the two boxes times the voxel size, then the Euclidean norm
  over axes (boxes that touch or overlap have gap 0).
"""
import dataclasses
from typing import List, Sequence, Tuple

import numpy as np
from scipy import ndimage

# A component within this many mm of the heart belongs to it. 20 mm keeps an RV piece
# or a myocardium part a few voxels (a few mm) off the rest, and a piece one missing
# bSSFP slice (8-13 mm) away; a stray voxel near an image corner lies some 100 mm from
# the heart in MS-CMRSeg's 300-380 mm fields of view.
HEART_MARGIN_MM = 20.0

_NEIGHBOURS = ndimage.generate_binary_structure(3, 3)  # 26-connectivity


@dataclasses.dataclass(frozen=True)
class HeartRegion:
  """The stray islands of a label volume, on the label file's own voxel grid.

  Attributes:
    stray_voxels: int64 [N, 3], the voxel indices (original array axes) of every voxel
      of every stray island; [0, 3] when there are none.
    islands: one report per island and class, in the order the islands are found
      (C order of their first voxel), classes in index order: {"class": name,
      "voxels": count, "bbox": [[first index per axis], [last index per axis]]}
      (inclusive, original array axes).
  """
  stray_voxels: np.ndarray
  islands: Tuple[dict, ...]

  def heart_only(self, classes: np.ndarray) -> np.ndarray:
    """`classes` with the stray islands set to background (a copy if there are any)."""
    if not len(self.stray_voxels):
      return classes
    out = classes.copy()
    out[tuple(self.stray_voxels.T)] = 0
    return out


NO_ISLANDS = HeartRegion(np.zeros((0, 3), dtype=np.int64), ())


def box_gaps_mm(lows: np.ndarray, highs: np.ndarray, low: np.ndarray, high: np.ndarray,
                spacing: Sequence[float]) -> np.ndarray:
  """Gap in mm between each box [lows[i], highs[i]] and the box [low, high].

  Args:
    lows, highs: int [K, 3], first and last voxel index of each box (inclusive).
    low, high: int [3], those of the other box.
    spacing: voxel size in mm per axis.

  Returns:
    float [K]: per axis the number of voxels strictly between the boxes (0 where they
    touch or overlap) times the spacing, then the Euclidean norm over axes.
  """
  between = np.maximum(0, np.maximum(lows - high - 1, low - highs - 1))
  return np.sqrt(((between * np.asarray(spacing, dtype=np.float64)) ** 2).sum(axis=1))


def find_heart(classes: np.ndarray, spacing: Sequence[float], *,
               class_names: Sequence[str],
               margin_mm: float = HEART_MARGIN_MM) -> HeartRegion:
  """Finds the stray islands of a class-index label volume (see the module docstring).

  Args:
    classes: class indices [D0, D1, D2] (any array layout); > 0 is foreground.
    spacing: voxel size in mm per array axis.
    class_names: names by class index (background first), for the reports.
    margin_mm: how near a component must be to the heart to belong to it.

  Returns:
    The HeartRegion: every foreground voxel not in it belongs to the heart.
  """
  foreground = classes > 0
  if not foreground.any():
    return NO_ISLANDS
  # Label only the foreground's bounding box: a CT-sized volume's int32 component map
  # would be four times the label's size.
  offset = np.array([np.flatnonzero(foreground.any(axis=tuple(a for a in range(3)
                                                              if a != axis)))[[0, -1]]
                     for axis in range(3)])
  box = tuple(slice(lo, hi + 1) for lo, hi in offset)
  components, count = ndimage.label(foreground[box], structure=_NEIGHBOURS)
  if count <= 1:
    return NO_ISLANDS
  sizes = np.bincount(components.ravel(), minlength=count + 1)[1:]
  boxes = ndimage.find_objects(components)
  lows = np.array([[s.start for s in b] for b in boxes])
  highs = np.array([[s.stop - 1 for s in b] for b in boxes])
  in_heart = np.zeros(count, dtype=bool)
  main = int(np.argmax(sizes))  # ties: the first found
  in_heart[main] = True
  frontier = [main]
  while frontier:
    member = frontier.pop()
    near = (box_gaps_mm(lows, highs, lows[member], highs[member], spacing) <= margin_mm)
    new = np.flatnonzero(near & ~in_heart)
    in_heart[new] = True
    frontier.extend(int(i) for i in new)
  if in_heart.all():
    return NO_ISLANDS
  voxels: List[np.ndarray] = []
  islands: List[dict] = []
  sub_classes = classes[box]
  for index in np.flatnonzero(~in_heart):
    inside = components[boxes[index]] == index + 1
    coords = np.argwhere(inside) + lows[index] + offset[:, 0]
    values = sub_classes[boxes[index]][inside]
    voxels.append(coords)
    for value in np.unique(values):
      of_class = coords[values == value]
      islands.append({"class": class_names[int(value)], "voxels": int(len(of_class)),
                      "bbox": [of_class.min(axis=0).tolist(),
                               of_class.max(axis=0).tolist()]})
  return HeartRegion(np.concatenate(voxels).astype(np.int64), tuple(islands))


def describe_islands(islands: Sequence[dict]) -> str:
  """One line's worth of island reports: "LV 1 voxel at [0, 0, 0]-[0, 0, 0]; ..."."""
  return "; ".join(
      f"{island['class']} {island['voxels']} voxel{'s' if island['voxels'] != 1 else ''}"
      f" at {island['bbox'][0]}-{island['bbox'][1]}" for island in islands)
