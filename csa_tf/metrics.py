"""Per-volume, per-class 3D segmentation metrics: Dice, Hausdorff distance, HD95 and ASSD.

Distances follow medpy 0.5.2 (`medpy.metric.binary.hd`, `hd95`, `assd`, connectivity 1),
pinned because its ASSD definition changed across versions (REFERENCE.md section 6). HD is
reported in voxel units (unit spacing, like the paper, whose values are square roots of
integers) and in mm from the header spacing. The values are medpy's to the last bit
(tests compare them): this module repeats medpy's operations (surface = mask minus its
6-connected erosion; scipy's Euclidean distance transform with the spacing as sampling)
and only skips work whose result is thrown away:

- Both masks are cropped to the bounding box of their union plus a one-voxel margin
  (clipped to the volume). Every surface voxel and its nearest partner lie inside that
  box; the margin keeps each surface voxel's neighbourhood (what the erosion sees) inside
  the crop, so nothing leans on scipy's zero border; and a Euclidean distance transform
  does not depend on the extent of the grid. This turns ~20 s per class on a
  512x512x250 CT volume into a fraction of a second.
- Distances are evaluated at surface voxels only, and `volume_metrics` extracts each
  surface once and each directed distance set once per spacing, where medpy's hd, hd95
  and assd recompute them per call.
- The two surfaces, and the directed distance sets (one distance transform each), are
  computed in parallel threads over the CPU cores: scipy's erosion and transform release
  the GIL, and each is the same arithmetic in whichever thread runs it, so the values do
  not change.

Missing-structure policy (applied by every function here and by `summarize`):

  For each volume and foreground class, the pair (ground truth, prediction) gets a status:
  - "ok": both are non-empty. Dice and all distances are computed.
  - "absent": both are empty. The class is skipped for that volume: Dice and all
    distances are NaN, and the volume is counted as absent.
  - "missed": the ground truth is non-empty and the prediction is empty. Dice is 0 and
    the distances are NaN (undefined, not a penalty); counted as missed.
  - "spurious": the ground truth is empty and the prediction is non-empty. Dice is 0 and
    the distances are NaN; counted as spurious.
  Summaries average distances over the volumes whose status is "ok" only; the Dice
  average covers the "ok", "missed" and "spurious" volumes (so the 0s of missed and
  spurious structures pull it down) and excludes "absent" ones. Every summary reports
  how many volumes fell into each status.

These cases are settled before any distance is computed: medpy's `hd` raises on an empty
mask, and its `dc` of two empty masks returns NaN with a warning under NumPy 2.
"""
import math
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from scipy import ndimage

from csa_tf import threads

STATUS_OK = "ok"
STATUS_ABSENT = "absent"
STATUS_MISSED = "missed"
STATUS_SPURIOUS = "spurious"
STATUSES = (STATUS_OK, STATUS_ABSENT, STATUS_MISSED, STATUS_SPURIOUS)

# Per-class values returned by `volume_metrics`, besides "status".
DISTANCE_KEYS = ("hd_vox", "hd_mm", "hd95_mm", "assd_mm")
METRIC_KEYS = ("dice",) + DISTANCE_KEYS
# Voxel counts returned by `volume_metrics` beside them (not averaged by `summarize`).
COUNT_KEYS = ("reference_voxels", "excluded_voxels")

# The same text as the module docstring's policy, for reports and the README.
MISSING_STRUCTURE_POLICY = (
    "Per volume and foreground class: if ground truth and prediction are both empty the "
    "class is skipped for that volume (all values NaN, status \"absent\", counted); if "
    "the ground truth is present and the prediction empty (status \"missed\") or the "
    "ground truth empty and the prediction present (status \"spurious\"), Dice is 0 and "
    "the distances (HD, HD95, ASSD) are NaN, counted. Summaries average distances over "
    "volumes with status \"ok\" only; the Dice average includes the 0s of missed and "
    "spurious volumes and excludes absent ones.")

Spacing = Optional[Union[float, Sequence[float]]]



def structure_status(pred_present: bool, gt_present: bool) -> str:
  """Returns the policy status of one class in one volume (see the module docstring)."""
  if gt_present and pred_present:
    return STATUS_OK
  if gt_present:
    return STATUS_MISSED
  if pred_present:
    return STATUS_SPURIOUS
  return STATUS_ABSENT


def _as_mask_pair(pred_mask, gt_mask) -> Tuple[np.ndarray, np.ndarray]:
  """Returns both masks as boolean arrays (nonzero = object), like medpy does.

  Raises:
    ValueError: the shapes differ.
  """
  pred = np.atleast_1d(np.asarray(pred_mask).astype(bool, copy=False))
  gt = np.atleast_1d(np.asarray(gt_mask).astype(bool, copy=False))
  if pred.shape != gt.shape:
    raise ValueError(f"prediction shape {pred.shape} differs from ground-truth shape "
                     f"{gt.shape}")
  return pred, gt


def union_crop(pred: np.ndarray, gt: np.ndarray) -> Optional[Tuple[slice, ...]]:
  """Returns the union's bounding box plus one voxel, clipped; None if both are empty.

  The crop every distance here is computed on (see the module docstring for why it
  gives medpy's values exactly).

  Args:
    pred: boolean mask.
    gt: boolean mask of the same shape.

  Returns:
    One slice per axis, or None when neither mask has a voxel.
  """
  if pred.ndim == 1:
    indices = [np.flatnonzero(pred | gt)]
  else:
    # One pass over each mask (reducing its contiguous last axis, both in parallel, no
    # volume-sized union); the other bounds come from that small projection, the last
    # axis's from the cropped slab.
    projection = np.logical_or(*threads.run_all(_any_last_axis, ((pred,), (gt,))))
    lead_axes = tuple(range(projection.ndim))
    indices = [np.flatnonzero(projection.any(axis=lead_axes[:a] + lead_axes[a + 1:]))
               for a in lead_axes]
    if indices[0].size:
      box = tuple(slice(i[0], i[-1] + 1) for i in indices)
      indices.append(np.flatnonzero((pred[box] | gt[box]).any(axis=lead_axes)))
  if not indices[0].size:
    return None
  return tuple(slice(max(i[0] - 1, 0), min(i[-1] + 2, size))
               for i, size in zip(indices, pred.shape))


def _any_last_axis(mask: np.ndarray) -> np.ndarray:
  return mask.any(axis=-1)


def _normalized_spacing(spacing: Spacing, ndim: int) -> Optional[Tuple[float, ...]]:
  """Returns `spacing` as one positive float per axis, or None for unit spacing.

  Raises:
    ValueError: wrong length, or a value that is not finite and positive.
  """
  if spacing is None:
    return None
  values = np.asarray(spacing, dtype=np.float64)
  if values.ndim == 0:
    values = np.full(ndim, values)
  if values.shape != (ndim,):
    raise ValueError(f"spacing {tuple(np.ravel(spacing))} needs {ndim} values, one per "
                     "axis")
  if not np.all(np.isfinite(values) & (values > 0)):
    raise ValueError(f"spacing {tuple(values.tolist())} must be finite and positive")
  return tuple(float(v) for v in values)


def dice(pred_mask, gt_mask) -> float:
  """Dice coefficient 2|P & G| / (|P| + |G|) of two binary masks (medpy's `dc`).

  Args:
    pred_mask: predicted mask, any shape; nonzero is object.
    gt_mask: ground-truth mask, same shape.

  Returns:
    Dice in [0, 1]; 0.0 when exactly one mask is empty and NaN when both are
    (status "absent": the class is skipped, see the module docstring).

  Raises:
    ValueError: the shapes differ.
  """
  pred, gt = _as_mask_pair(pred_mask, gt_mask)
  return _dice_from_counts(np.count_nonzero(pred & gt), np.count_nonzero(pred),
                           np.count_nonzero(gt))


def _dice_from_counts(intersection: int, pred_size: int, gt_size: int) -> float:
  if pred_size + gt_size == 0:
    return math.nan
  # medpy 0.5.2's dc formula, operation for operation.
  return float(2.0 * int(intersection) / float(int(pred_size) + int(gt_size)))


def _surface(mask: np.ndarray) -> np.ndarray:
  """The one-voxel border of `mask`, as medpy 0.5.2 extracts it (connectivity 1)."""
  footprint = ndimage.generate_binary_structure(mask.ndim, 1)
  return mask ^ ndimage.binary_erosion(mask, structure=footprint, iterations=1)


def _directed_distances(from_surface: np.ndarray, to_surface: np.ndarray,
                        sampling: Optional[Tuple[float, ...]]) -> np.ndarray:
  """Distance of each `from_surface` voxel (C order) to the nearest `to_surface` voxel.

  medpy 0.5.2 takes `distance_transform_edt(~to_surface, sampling)[from_surface]`. This
  asks scipy for the same feature transform and repeats scipy's distance arithmetic
  (int32 offsets, float64, times sampling, squared, summed over axes, sqrt) at the
  surface voxels only, which gives bit-identical values at half the cost.
  """
  nearest = ndimage.distance_transform_edt(~to_surface, sampling=sampling,
                                           return_distances=False, return_indices=True)
  coords = np.nonzero(from_surface)
  offsets = (nearest[(slice(None),) + coords]
             - np.stack(coords).astype(np.int32)).astype(np.float64)
  if sampling is not None:
    for axis, step in enumerate(sampling):
      offsets[axis] *= step
  np.multiply(offsets, offsets, offsets)
  return np.sqrt(np.add.reduce(offsets, axis=0))


def _surfaces(pred: np.ndarray, gt: np.ndarray) -> List[np.ndarray]:
  """The surfaces of both masks, extracted in parallel (the erosion releases the GIL)."""
  return threads.run_all(_surface, ((pred,), (gt,)))


# medpy 0.5.2's reductions of the two directed distance sets (prediction to ground
# truth first, as medpy's `result` to `reference`), operation for operation.
def _hd_of(pred_to_gt: np.ndarray, gt_to_pred: np.ndarray) -> float:
  return float(max(pred_to_gt.max(), gt_to_pred.max()))


def _hd95_of(pred_to_gt: np.ndarray, gt_to_pred: np.ndarray) -> float:
  return float(np.percentile(np.hstack((pred_to_gt, gt_to_pred)), 95))


def _assd_of(pred_to_gt: np.ndarray, gt_to_pred: np.ndarray) -> float:
  return float(np.concatenate([pred_to_gt, gt_to_pred]).mean())


def _mask_distance(reduce, pred_mask, gt_mask, spacing: Spacing) -> float:
  """`reduce` of both directed surface-distance sets on the union crop.

  NaN if either mask is empty (the policy).
  """
  pred, gt = _as_mask_pair(pred_mask, gt_mask)
  sampling = _normalized_spacing(spacing, pred.ndim)
  crop = union_crop(pred, gt)
  if crop is None:
    return math.nan
  pred, gt = pred[crop], gt[crop]
  if not (pred.any() and gt.any()):
    return math.nan
  pred_surface, gt_surface = _surfaces(pred, gt)
  return reduce(*threads.run_all(_directed_distances,
                                 ((pred_surface, gt_surface, sampling),
                                  (gt_surface, pred_surface, sampling))))


def hausdorff(pred_mask, gt_mask, spacing: Spacing = None) -> float:
  """Symmetric Hausdorff distance between the surfaces of two masks (medpy 0.5.2's `hd`).

  Equals `medpy.metric.binary.hd(pred_mask, gt_mask, voxelspacing=spacing)` exactly
  (tests check it), computed on the union crop.

  Args:
    pred_mask: predicted mask, shape (D0, ..., Dn-1); nonzero is object.
    gt_mask: ground-truth mask, same shape.
    spacing: voxel size per axis (n floats) or one float for all axes; None means 1,
      i.e. the distance in voxel units.

  Returns:
    The distance in the units of `spacing`; NaN if either mask is empty (status
    "absent", "missed" or "spurious", see the module docstring).

  Raises:
    ValueError: the shapes differ, or `spacing` has the wrong length or a value that is
      not finite and positive.
  """
  return _mask_distance(_hd_of, pred_mask, gt_mask, spacing)


def hd95(pred_mask, gt_mask, spacing: Spacing = None) -> float:
  """95th percentile of both directed surface-distance sets pooled (medpy's `hd95`).

  Equals `medpy.metric.binary.hd95` exactly. Args, Returns and Raises as `hausdorff`.
  """
  return _mask_distance(_hd95_of, pred_mask, gt_mask, spacing)


def assd(pred_mask, gt_mask, spacing: Spacing = None) -> float:
  """Average symmetric surface distance (medpy 0.5.2's `assd`).

  medpy 0.5.2 pools the surface distances of both directions and takes their mean
  (earlier versions averaged the two directed means, which weighs the two surfaces
  differently). Equals `medpy.metric.binary.assd` 0.5.2 exactly. Args, Returns and
  Raises as `hausdorff`.
  """
  return _mask_distance(_assd_of, pred_mask, gt_mask, spacing)


def _distances_ok(pred: np.ndarray, gt: np.ndarray,
                  sampling: Tuple[float, ...]) -> Dict[str, float]:
  """HD (voxels and mm), HD95 and ASSD (mm) of two non-empty, cropped masks.

  Extracts the surfaces once and each directed distance set once per spacing.
  """
  pred_surface, gt_surface = _surfaces(pred, gt)
  sets = threads.run_all(_directed_distances, ((pred_surface, gt_surface, None),
                                               (gt_surface, pred_surface, None),
                                               (pred_surface, gt_surface, sampling),
                                               (gt_surface, pred_surface, sampling)))
  vox, mm = sets[:2], sets[2:]
  return {"hd_vox": _hd_of(*vox), "hd_mm": _hd_of(*mm), "hd95_mm": _hd95_of(*mm),
          "assd_mm": _assd_of(*mm)}


def volume_metrics(pred, gt, *, num_classes: int,
                   spacing: Union[float, Sequence[float]],
                   ignore=None) -> Dict[int, Dict[str, Any]]:
  """Dice, HD (voxels and mm), HD95 and ASSD (mm) of each foreground class of a volume.

  Args:
    pred: predicted class indices, integer array of shape (D0, D1, D2) (any rank works),
      values in [0, num_classes); 0 is background.
    gt: ground-truth class indices, same shape and range.
    num_classes: number of classes including background (C).
    spacing: voxel size in mm per axis, from the image header (one float per axis, or
      one float for all).
    ignore: None, or a bool mask of the same shape: voxels that are not scored (the
      stray islands of csa_tf.data.heart_region). Every metric is then that of
      `pred` and `gt` with both set to background there.

  Returns:
    `{c: {"dice", "hd_vox", "hd_mm", "hd95_mm", "assd_mm": float, "status": str,
    "reference_voxels", "excluded_voxels": int}}` for each c in 1..C-1. "hd_vox" uses
    unit spacing. Values follow the missing-structure policy of the module docstring
    (applied after `ignore`): NaN distances unless the status is "ok", Dice 0 for
    "missed"/"spurious" and NaN for "absent". "reference_voxels" counts class c in
    `gt`, "excluded_voxels" those of them under `ignore` (not scored).

  Raises:
    ValueError: shapes differ, an array is not of integer type, a value lies outside
      [0, num_classes), num_classes < 2, or `spacing` is malformed.
  """
  pred = np.atleast_1d(np.asarray(pred))
  gt = np.atleast_1d(np.asarray(gt))
  if pred.shape != gt.shape:
    raise ValueError(f"prediction shape {pred.shape} differs from ground-truth shape "
                     f"{gt.shape}")
  if int(num_classes) != num_classes or num_classes < 2:
    raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
  for name, labels in (("prediction", pred), ("ground truth", gt)):
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
      raise ValueError(f"{name} must hold integer class indices, got dtype "
                       f"{labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
      raise ValueError(f"{name} values span [{labels.min()}, {labels.max()}], outside "
                       f"class indices [0, {num_classes - 1}]")
  sampling = _normalized_spacing(spacing, pred.ndim)
  if sampling is None:
    raise ValueError("spacing is required (mm per axis, from the image header)")
  keep = None
  if ignore is not None:
    ignore = np.atleast_1d(np.asarray(ignore))
    if ignore.dtype != bool or ignore.shape != gt.shape:
      raise ValueError(f"ignore must be a bool mask of shape {gt.shape}, got "
                       f"{ignore.dtype} {ignore.shape}")
    keep = ~ignore if ignore.any() else None

  results = {}
  for c in range(1, int(num_classes)):
    pred_c, gt_c = pred == c, gt == c
    counts = {"reference_voxels": int(np.count_nonzero(gt_c)), "excluded_voxels": 0}
    if keep is not None:
      counts["excluded_voxels"] = int(np.count_nonzero(gt_c & ignore))
      pred_c &= keep
      gt_c &= keep
    crop = union_crop(pred_c, gt_c)
    values = {key: math.nan for key in METRIC_KEYS}
    values.update(counts)
    if crop is None:
      values["status"] = STATUS_ABSENT
      results[c] = values
      continue
    pred_c, gt_c = pred_c[crop], gt_c[crop]
    pred_size, gt_size = np.count_nonzero(pred_c), np.count_nonzero(gt_c)
    values["status"] = structure_status(pred_size > 0, gt_size > 0)
    values["dice"] = _dice_from_counts(np.count_nonzero(pred_c & gt_c), pred_size,
                                       gt_size)
    if values["status"] == STATUS_OK:
      values.update(_distances_ok(pred_c, gt_c, sampling))
    results[c] = values
  return results


def summarize(rows: Iterable[Mapping[str, Any]]) -> Dict[str, Dict[str, Dict[str, Any]]]:
  """Aggregates per-volume, per-class rows into tables following the policy.

  Args:
    rows: one mapping per (volume, class) with keys "modality", "class_name", "status"
      and any of METRIC_KEYS and COUNT_KEYS (a row of `volume_metrics` plus its
      labels). Other keys (e.g. "volume") are ignored.

  Returns:
    `summary[modality][class_name]` = {
        "num_volumes": rows seen, "ok"/"absent"/"missed"/"spurious": counts per status,
        metric: {"mean": float, "std": float, "count": int} for each metric present,
        count key: the sum over rows, for each of COUNT_KEYS every row holds,
    }. Distances are averaged over "ok" rows; Dice over "ok", "missed" and "spurious"
    rows. "std" is the population standard deviation (ddof=0); mean and std are NaN
    when count is 0. Modalities and classes keep their first-seen order.

  Raises:
    ValueError: a row lacks "modality", "class_name" or "status", has an unknown
      status, or holds a non-finite value where the policy requires one.
  """
  groups: Dict[str, Dict[str, List[Mapping[str, Any]]]] = {}
  for row in rows:
    for key in ("modality", "class_name", "status"):
      if key not in row:
        raise ValueError(f"summary row {dict(row)!r} lacks key {key!r}")
    if row["status"] not in STATUSES:
      raise ValueError(f"summary row {dict(row)!r} has unknown status {row['status']!r}; "
                       f"expected one of {STATUSES}")
    groups.setdefault(row["modality"], {}).setdefault(row["class_name"], []).append(row)

  summary: Dict[str, Dict[str, Dict[str, Any]]] = {}
  for modality, classes in groups.items():
    for class_name, class_rows in classes.items():
      entry: Dict[str, Any] = {"num_volumes": len(class_rows)}
      for status in STATUSES:
        entry[status] = sum(row["status"] == status for row in class_rows)
      for key in COUNT_KEYS:
        if all(key in row for row in class_rows):
          entry[key] = sum(int(row[key]) for row in class_rows)
      for key in METRIC_KEYS:
        if not any(key in row for row in class_rows):
          continue
        included = ((STATUS_OK, STATUS_MISSED, STATUS_SPURIOUS) if key == "dice"
                    else (STATUS_OK,))
        values = []
        for row in class_rows:
          if row["status"] not in included:
            continue
          value = float(row[key]) if key in row else math.nan
          if not math.isfinite(value):
            raise ValueError(f"summary row {dict(row)!r}: {key} must be finite for "
                             f"status {row['status']!r}")
          values.append(value)
        entry[key] = {
            "mean": float(np.mean(values)) if values else math.nan,
            "std": float(np.std(values)) if values else math.nan,
            "count": len(values),
        }
      summary.setdefault(modality, {})[class_name] = entry
  return summary
