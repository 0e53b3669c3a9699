"""Tests of csa_tf.metrics: hand-computed values, medpy 0.5.2 equality, the policy."""
import math
import threading
import warnings

import numpy as np
import pytest
from medpy.metric import binary as medpy_binary
from scipy import ndimage

from benchmarks import hd_eval
from csa_tf import metrics, threads

ANISOTROPIC = (0.7, 1.3, 2.5)


def _boxes(shape, *boxes):
  """A boolean volume of `shape` with each slice tuple in `boxes` set."""
  mask = np.zeros(shape, bool)
  for box in boxes:
    mask[box] = True
  return mask


def _point(shape, index):
  return _boxes(shape, index)


# --- Dice ---------------------------------------------------------------------------


def test_dice_of_boxes_is_the_exact_fraction():
  gt = _boxes((4, 4, 4), np.s_[0:2, 0:2, 0:2])
  # Shifted by one along axis 0: 4 shared voxels of 8 + 8.
  assert metrics.dice(_boxes((4, 4, 4), np.s_[1:3, 0:2, 0:2]), gt) == 0.5
  # Shifted by one along every axis: 1 shared voxel.
  assert metrics.dice(_boxes((4, 4, 4), np.s_[1:3, 1:3, 1:3]), gt) == 2 / 16
  # 2x2x2 inside 3x3x3: 2 * 8 / (27 + 8).
  assert metrics.dice(_boxes((4, 4, 4), np.s_[0:3, 0:3, 0:3]), gt) == 16 / 35
  assert metrics.dice(gt, gt) == 1.0


def test_dice_accepts_any_shape_and_nonzero_as_object():
  assert metrics.dice(np.array([0, 3, 3, 0]), np.array([0, 1, 0, 0])) == 2 / 3
  assert metrics.dice(np.ones((2, 3)), np.ones((2, 3))) == 1.0


def test_dice_equals_medpy():
  rng = np.random.default_rng(1)
  pred, gt = rng.random((2, 9, 8, 7)) > 0.6
  assert metrics.dice(pred, gt) == medpy_binary.dc(pred, gt)


# --- Distances, hand-computed --------------------------------------------------------


def test_hausdorff_of_two_points_in_voxels_and_mm():
  shape = (5, 5, 5)
  # Offset (1, 2, 0) voxels: sqrt(1 + 4).
  assert metrics.hausdorff(_point(shape, (1, 1, 1)), _point(shape, (2, 3, 1))) == (
      pytest.approx(math.sqrt(5), rel=1e-15))
  # Offset (1, 1, 2) voxels: sqrt(6) in voxels; with spacing (1, 1, 5) mm the third
  # axis counts 2 * 5 = 10 mm: sqrt(1 + 1 + 100) mm.
  pred, gt = _point(shape, (1, 1, 1)), _point(shape, (2, 2, 3))
  assert metrics.hausdorff(pred, gt) == pytest.approx(math.sqrt(6), rel=1e-15)
  assert metrics.hausdorff(pred, gt, spacing=(1, 1, 5)) == (
      pytest.approx(math.sqrt(102), rel=1e-15))
  # A scalar spacing applies to every axis.
  assert metrics.hausdorff(pred, gt, spacing=2.0) == pytest.approx(2 * math.sqrt(6))


def test_hausdorff_is_symmetric_max_of_directed_distances():
  shape = (6, 3, 3)
  line = _boxes(shape, np.s_[1:4, 1, 1])  # voxels 1, 2, 3 along axis 0
  point = _point(shape, (1, 1, 1))
  # point -> line is 0, line -> point reaches 2: HD is the larger one, either order.
  assert metrics.hausdorff(point, line) == 2.0
  assert metrics.hausdorff(line, point) == 2.0


def test_hd95_and_assd_of_a_line_and_a_point():
  # Every voxel of a one-voxel-thick line is surface. Line voxels 1..10 along axis 0,
  # the point is voxel 1: line -> point gives 0, 1, ..., 9; point -> line gives 0.
  # Pooled (medpy 0.5.2): 11 values {0, 0, 1, ..., 9}.
  shape = (13, 3, 3)
  line = _boxes(shape, np.s_[1:11, 1, 1])
  point = _point(shape, (1, 1, 1))
  assert metrics.hausdorff(line, point) == 9.0
  # numpy's linear 95th percentile: position 0.95 * 10 = 9.5 between 8 and 9.
  assert metrics.hd95(line, point) == pytest.approx(8.5, rel=1e-15)
  assert metrics.assd(line, point) == pytest.approx(45 / 11, rel=1e-15)
  # 2 mm along the line's axis scales every distance by 2.
  assert metrics.hausdorff(line, point, spacing=(2, 1, 1)) == 18.0
  assert metrics.hd95(line, point, spacing=(2, 1, 1)) == pytest.approx(17.0, rel=1e-15)
  assert metrics.assd(line, point, spacing=(2, 1, 1)) == pytest.approx(90 / 11, rel=1e-15)


def test_distances_of_a_cube_and_its_centre_with_anisotropic_spacing():
  # 3x3x3 cube around a single voxel. The cube's surface is its 26 outer voxels (the
  # centre survives 6-connected erosion). With spacing (1, 1, 5), their distances to
  # the centre are: 4 in-plane faces 1, 2 out-of-plane faces 5, 4 in-plane edges
  # sqrt(2), 8 out-of-plane edges sqrt(26), 8 corners sqrt(27). The centre's nearest
  # cube surface voxel is 1 away. Pooled: 27 values.
  shape = (5, 5, 5)
  cube = _boxes(shape, np.s_[1:4, 1:4, 1:4])
  centre = _point(shape, (2, 2, 2))
  spacing = (1, 1, 5)
  assert metrics.hausdorff(cube, centre, spacing) == pytest.approx(math.sqrt(27))
  # Sorted, positions 19..26 are sqrt(27); 0.95 * 26 = 24.7 falls among them.
  assert metrics.hd95(cube, centre, spacing) == pytest.approx(math.sqrt(27))
  expected_assd = (1 + 4 * 1 + 2 * 5 + 4 * math.sqrt(2) + 8 * math.sqrt(26)
                   + 8 * math.sqrt(27)) / 27
  assert metrics.assd(cube, centre, spacing) == pytest.approx(expected_assd, rel=1e-14)
  # In voxels: 6 faces 1, 12 edges sqrt(2), 8 corners sqrt(3).
  assert metrics.hausdorff(cube, centre) == pytest.approx(math.sqrt(3))
  assert metrics.assd(cube, centre) == pytest.approx(
      (1 + 6 + 12 * math.sqrt(2) + 8 * math.sqrt(3)) / 27, rel=1e-14)


def test_hand_computed_values_match_medpy():
  shape = (13, 5, 5)
  configurations = [
      (_boxes(shape, np.s_[1:11, 1, 1]), _point(shape, (1, 1, 1))),
      (_boxes(shape, np.s_[1:4, 1:4, 1:4]), _point(shape, (2, 2, 2))),
  ]
  for pred, gt in configurations:
    for spacing in (None, (1, 1, 5), (2, 1, 1)):
      assert metrics.hausdorff(pred, gt, spacing) == medpy_binary.hd(pred, gt, spacing)
      assert metrics.hd95(pred, gt, spacing) == medpy_binary.hd95(pred, gt, spacing)
      assert metrics.assd(pred, gt, spacing) == medpy_binary.assd(pred, gt, spacing)


# --- Cropping: identical to medpy on the full grid -----------------------------------


def _blobs(rng, shape, threshold):
  """Random smooth blobs (several components, some touching the grid's faces)."""
  field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=2.0)
  return field > threshold * field.std()


def _random_pairs():
  rng = np.random.default_rng(2020)
  shape = (34, 30, 18)
  pairs = []
  for threshold in (0.8, 1.2, 1.6):
    gt = _blobs(rng, shape, threshold)
    pairs.append((_blobs(rng, shape, threshold), gt))  # unrelated shapes
    pairs.append((np.roll(gt, (2, -1, 1), axis=(0, 1, 2)), gt))  # shifted copy
  # A small structure far from the others, so the crop is much smaller than the grid.
  pairs.append((_boxes(shape, np.s_[3:7, 20:26, 2:5]),
                _boxes(shape, np.s_[4:9, 21:24, 3:6], np.s_[5, 25, 4])))
  # Structures filling the grid up to its faces, where the margin is clipped.
  pairs.append((_boxes(shape, np.s_[0:34, 0:10, 0:18]),
                _boxes(shape, np.s_[0:30, 0:12, 5:18])))
  return pairs


@pytest.mark.parametrize("spacing", [None, ANISOTROPIC])
def test_cropped_distances_equal_uncropped_medpy_exactly(spacing):
  for pred, gt in _random_pairs():
    assert pred.any() and gt.any()
    assert metrics.hausdorff(pred, gt, spacing) == medpy_binary.hd(pred, gt, spacing)
    assert metrics.hd95(pred, gt, spacing) == medpy_binary.hd95(pred, gt, spacing)
    assert metrics.assd(pred, gt, spacing) == medpy_binary.assd(pred, gt, spacing)


def test_union_crop_is_the_bounding_box_plus_one_clipped():
  shape = (10, 10, 10)
  pred = _boxes(shape, np.s_[3:5, 0:2, 6:7])
  gt = _boxes(shape, np.s_[4:6, 1:3, 9:10])
  assert metrics.union_crop(pred, gt) == (slice(2, 7), slice(0, 4), slice(5, 10))
  assert metrics.union_crop(np.zeros(shape, bool), np.zeros(shape, bool)) is None


def test_volume_metrics_equal_uncropped_medpy_exactly():
  rng = np.random.default_rng(7)
  shape = (34, 30, 18)
  gt = np.zeros(shape, np.int16)
  pred = np.zeros(shape, np.int16)
  for c, threshold in ((1, 0.9), (2, 1.3), (3, 1.7)):
    gt[_blobs(rng, shape, threshold)] = c
    pred[_blobs(rng, shape, threshold)] = c
  result = metrics.volume_metrics(pred, gt, num_classes=4, spacing=ANISOTROPIC)
  assert sorted(result) == [1, 2, 3]
  for c, values in result.items():
    p, g = pred == c, gt == c
    assert values["status"] == "ok"
    assert values["dice"] == medpy_binary.dc(p, g)
    assert values["hd_vox"] == medpy_binary.hd(p, g)
    assert values["hd_mm"] == medpy_binary.hd(p, g, ANISOTROPIC)
    assert values["hd95_mm"] == medpy_binary.hd95(p, g, ANISOTROPIC)
    assert values["assd_mm"] == medpy_binary.assd(p, g, ANISOTROPIC)


def test_threaded_distances_equal_one_thread_and_use_the_pool(monkeypatch):
  rng = np.random.default_rng(3)
  shape = (34, 30, 18)
  gt = np.zeros(shape, np.int16)
  pred = np.zeros(shape, np.int16)
  for c, threshold in ((1, 0.9), (2, 1.3)):
    gt[_blobs(rng, shape, threshold)] = c
    pred[_blobs(rng, shape, threshold)] = c
  monkeypatch.setattr(threads, "usable_cores", lambda: 4)
  names = set()
  directed = metrics._directed_distances  # pylint: disable=protected-access

  def recording(*args):
    names.add(threading.current_thread().name)
    return directed(*args)

  monkeypatch.setattr(metrics, "_directed_distances", recording)
  threaded = metrics.volume_metrics(pred, gt, num_classes=3, spacing=ANISOTROPIC)
  threaded_hd = metrics.hausdorff(pred == 1, gt == 1, ANISOTROPIC)
  assert names and all(name.startswith("csa_tf-array") for name in names)
  monkeypatch.setattr(threads, "usable_cores", lambda: 1)
  names.clear()
  assert metrics.volume_metrics(pred, gt, num_classes=3, spacing=ANISOTROPIC) == threaded
  assert metrics.hausdorff(pred == 1, gt == 1, ANISOTROPIC) == threaded_hd
  assert names == {threading.current_thread().name}


def test_volume_metrics_hd_vox_is_sqrt_of_integer():
  gt = np.zeros((6, 6, 6), np.uint8)
  pred = np.zeros_like(gt)
  gt[1, 1, 1] = 1
  pred[2, 3, 1] = 1
  values = metrics.volume_metrics(pred, gt, num_classes=2, spacing=(0.5, 0.5, 3.0))[1]
  assert values["hd_vox"] == pytest.approx(math.sqrt(5), rel=1e-15)
  assert values["hd_mm"] == pytest.approx(math.sqrt(0.25 + 1.0), rel=1e-15)
  assert values["dice"] == 0.0 and values["status"] == "ok"


# --- Scoring against the whole label file ---------------------------------------------


def test_a_box_that_cuts_the_label_lowers_dice_by_the_cut_voxels():
  # The file's LV: a 2 x 5 x 1 block (10 voxels); the crop box holds 6 of them (columns
  # 0-2) and the prediction is exactly those 6. Against the label inside the box Dice is
  # 2 * 6 / (6 + 6) = 1; against the file 2 * 6 / (6 + 10) = 0.75.
  full = np.zeros((4, 8, 1), np.uint8)
  full[1:3, 0:5, 0] = 1
  cropped = full.copy()
  cropped[:, 3:, :] = 0
  pred = cropped.copy()
  inside = metrics.volume_metrics(pred, cropped, num_classes=2, spacing=1.0)[1]
  whole = metrics.volume_metrics(pred, full, num_classes=2, spacing=1.0)[1]
  assert inside["dice"] == 1.0 and whole["dice"] == 0.75
  assert (inside["reference_voxels"], whole["reference_voxels"]) == (6, 10)
  assert inside["excluded_voxels"] == whole["excluded_voxels"] == 0
  # HD: the file's column 4 lies 2 voxels past the prediction's last column.
  assert inside["hd_vox"] == 0.0 and whole["hd_vox"] == 2.0


def test_ignored_voxels_are_left_out_of_reference_and_prediction():
  gt = np.zeros((6, 6, 6), np.uint8)
  gt[1:3, 1:3, 1:3] = 1  # 8 voxels
  gt[5, 5, 5] = 1        # a stray island of 1
  gt[0, 5, 0] = 2        # class 2: only a stray island, 1 voxel
  pred = np.zeros_like(gt)
  pred[1:3, 1:3, 1:2] = 1  # 4 of the 8
  pred[5, 5, 0] = 2        # a prediction on an ignored voxel
  ignore = np.zeros(gt.shape, bool)
  ignore[5, 5, 5] = ignore[0, 5, 0] = ignore[5, 5, 0] = True
  result = metrics.volume_metrics(pred, gt, num_classes=3, spacing=1.0, ignore=ignore)
  # Class 1: 2 * 4 / (4 + 8), the island neither a miss nor counted in the reference.
  assert result[1]["dice"] == 2 * 4 / (4 + 8)
  assert (result[1]["reference_voxels"], result[1]["excluded_voxels"]) == (9, 1)
  assert result[1]["hd_vox"] == 1.0  # sqrt(3^2 + 3^2 + 4^2) with the island at (5, 5, 5)
  # Class 2: the file's only voxel is ignored and so is the prediction: absent.
  assert result[2]["status"] == "absent" and math.isnan(result[2]["dice"])
  assert (result[2]["reference_voxels"], result[2]["excluded_voxels"]) == (1, 1)
  # An all-False mask changes nothing.
  assert (metrics.volume_metrics(pred, gt, num_classes=3, spacing=1.0,
                                 ignore=np.zeros(gt.shape, bool))[1]["dice"]
          == 2 * 4 / (4 + 9))
  with pytest.raises(ValueError, match="ignore must be a bool mask of shape"):
    metrics.volume_metrics(pred, gt, num_classes=3, spacing=1.0, ignore=ignore[:3])


# --- Missing-structure policy ---------------------------------------------------------


def test_volume_metrics_policy_covers_all_four_cases():
  gt = np.zeros((8, 8, 8), np.uint8)
  pred = np.zeros_like(gt)
  gt[1:4, 1:4, 1:4] = 1   # class 1: in both -> ok
  pred[1:4, 1:3, 1:4] = 1
  # class 2: in neither -> absent
  gt[5:7, 5:7, 5:7] = 3   # class 3: ground truth only -> missed
  pred[5:7, 1:3, 5:7] = 4  # class 4: prediction only -> spurious
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # no NaN-division warnings reach the user
    result = metrics.volume_metrics(pred, gt, num_classes=5, spacing=(1.0, 1.0, 2.0))
  assert {c: v["status"] for c, v in result.items()} == {
      1: "ok", 2: "absent", 3: "missed", 4: "spurious"}
  assert result[1]["dice"] == 2 * 18 / (18 + 27)
  assert all(math.isfinite(result[1][key]) for key in metrics.DISTANCE_KEYS)
  assert math.isnan(result[2]["dice"])
  assert result[3]["dice"] == 0.0 and result[4]["dice"] == 0.0
  for c in (2, 3, 4):
    assert all(math.isnan(result[c][key]) for key in metrics.DISTANCE_KEYS)


def test_mask_functions_follow_the_policy():
  empty = np.zeros((4, 4, 4), bool)
  full = _boxes((4, 4, 4), np.s_[1:3, 1:3, 1:3])
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    assert math.isnan(metrics.dice(empty, empty))          # absent
    assert metrics.dice(empty, full) == 0.0                # missed
    assert metrics.dice(full, empty) == 0.0                # spurious
    for distance in (metrics.hausdorff, metrics.hd95, metrics.assd):
      for pred, gt in ((empty, empty), (empty, full), (full, empty)):
        assert math.isnan(distance(pred, gt, (1.0, 1.0, 2.0)))
  assert [metrics.structure_status(p, g) for p, g in
          ((True, True), (False, False), (False, True), (True, False))] == [
              "ok", "absent", "missed", "spurious"]


def test_policy_holds_from_volume_metrics_through_summarize():
  # The policy of the module docstring, end to end: three volumes whose class 1 is "ok",
  # "missed" and "spurious" and whose class 2 is "absent", "absent" and "ok".
  spacing = (0.5, 1.0, 2.0)
  box, slab = np.s_[1:4, 1:4, 1:4], np.s_[1:4, 1:4, 1:3]
  volumes = {}
  gt, pred = np.zeros((8, 8, 8), np.uint8), np.zeros((8, 8, 8), np.uint8)
  gt[box], pred[slab] = 1, 1            # ok: the prediction lacks the box's top slab
  volumes["a"] = (pred, gt)
  gt, pred = np.zeros_like(gt), np.zeros_like(gt)
  gt[box] = 1                           # missed
  volumes["b"] = (pred, gt)
  gt, pred = np.zeros_like(gt), np.zeros_like(gt)
  pred[box] = 1                         # spurious
  gt[5:7, 5:7, 5:7] = pred[5:7, 5:7, 5:7] = 2  # class 2 only here, predicted exactly
  volumes["c"] = (pred, gt)
  rows = []
  for name, (pred, gt) in volumes.items():
    for c, values in metrics.volume_metrics(pred, gt, num_classes=3,
                                            spacing=spacing).items():
      rows.append({"volume": name, "modality": "ct", "class_name": f"c{c}", **values})
  by_key = {(r["volume"], r["class_name"]): r for r in rows}
  assert [by_key[v, "c1"]["status"] for v in "abc"] == ["ok", "missed", "spurious"]
  assert [by_key[v, "c2"]["status"] for v in "abc"] == ["absent", "absent", "ok"]
  ok = by_key["a", "c1"]
  # Dice 2 * 18 / (27 + 18). HD: the box's top slab (z = 3) is 1 voxel = 2 mm from the
  # prediction's top (axis 2 at 2 mm); the prediction's centre voxel (2, 2, 2) is not on
  # the box's surface and lies 1 voxel from it, 0.5 mm along axis 0. So HD = 1 voxel in
  # voxel units (unit spacing, whatever the header) and 2 mm with the spacing.
  assert ok["dice"] == 0.8 and ok["hd_vox"] == 1.0 and ok["hd_mm"] == 2.0
  # HD95: 9 of the box's 26 surface voxels are 2 mm away, so its 95th percentile is 2.
  # ASSD (medpy 0.5.2: the mean of both directions' distances pooled): the one 0.5 mm
  # and the nine 2 mm over 18 + 26 surface voxels.
  assert ok["hd95_mm"] == 2.0
  assert ok["assd_mm"] == pytest.approx((0.5 + 9 * 2.0) / (18 + 26), rel=1e-15)
  for volume in "bc":
    row = by_key[volume, "c1"]
    assert row["dice"] == 0.0
    assert all(math.isnan(row[key]) for key in metrics.DISTANCE_KEYS)

  summary = metrics.summarize(rows)["ct"]
  c1, c2 = summary["c1"], summary["c2"]
  assert {k: c1[k] for k in ("num_volumes",) + metrics.STATUSES} == {
      "num_volumes": 3, "ok": 1, "absent": 0, "missed": 1, "spurious": 1}
  # Dice averages the ok volume with the 0s of the missed and the spurious one.
  assert c1["dice"]["count"] == 3
  assert c1["dice"]["mean"] == pytest.approx(0.8 / 3, rel=1e-15)
  assert c1["dice"]["std"] == pytest.approx(math.sqrt(2 / 9) * 0.8, rel=1e-12)
  # Distances average the "ok" volume only: its own values, std 0.
  for key in metrics.DISTANCE_KEYS:
    assert c1[key] == {"mean": ok[key], "std": 0.0, "count": 1}, key
  # Absent volumes are counted but in no average: class 2's Dice is volume c's alone.
  assert (c2["num_volumes"], c2["absent"], c2["ok"]) == (3, 2, 1)
  assert c2["dice"] == {"mean": 1.0, "std": 0.0, "count": 1}
  assert c2["hd_mm"] == {"mean": 0.0, "std": 0.0, "count": 1}


# --- Input checks ----------------------------------------------------------------------


def test_bad_inputs_raise_value_error():
  labels = np.zeros((4, 4, 4), np.uint8)
  with pytest.raises(ValueError, match="shape"):
    metrics.dice(np.zeros((2, 2)), np.zeros((2, 3)))
  with pytest.raises(ValueError, match="shape"):
    metrics.volume_metrics(labels, labels[:3], num_classes=2, spacing=1.0)
  with pytest.raises(ValueError, match="integer"):
    metrics.volume_metrics(labels.astype(float), labels, num_classes=2, spacing=1.0)
  with pytest.raises(ValueError, match=r"outside class indices \[0, 1\]"):
    metrics.volume_metrics(labels + 2, labels, num_classes=2, spacing=1.0)
  with pytest.raises(ValueError, match="num_classes"):
    metrics.volume_metrics(labels, labels, num_classes=1, spacing=1.0)
  with pytest.raises(ValueError, match="3 values"):
    metrics.volume_metrics(labels, labels, num_classes=2, spacing=(1.0, 1.0))
  with pytest.raises(ValueError, match="positive"):
    metrics.hausdorff(labels, labels, spacing=(1.0, 0.0, 1.0))
  with pytest.raises(ValueError, match="required"):
    metrics.volume_metrics(labels, labels, num_classes=2, spacing=None)


# --- summarize -------------------------------------------------------------------------


def _row(modality, class_name, status, dice, hd):
  return {"volume": "v", "modality": modality, "class_name": class_name,
          "status": status, "dice": dice, "hd_vox": hd}


def test_summarize_averages_and_counts_by_policy():
  nan = math.nan
  rows = [
      _row("ct", "LVM", "ok", 0.8, 2.0),
      _row("ct", "LVM", "ok", 0.6, 4.0),
      _row("ct", "LVM", "missed", 0.0, nan),
      _row("ct", "LVM", "spurious", 0.0, nan),
      _row("ct", "LVM", "absent", nan, nan),
      _row("mr", "LVM", "absent", nan, nan),
      _row("ct", "AA", "ok", 0.9, 3.0),
  ]
  summary = metrics.summarize(rows)
  assert list(summary) == ["ct", "mr"]
  assert list(summary["ct"]) == ["LVM", "AA"]
  lvm = summary["ct"]["LVM"]
  assert (lvm["num_volumes"], lvm["ok"], lvm["absent"], lvm["missed"],
          lvm["spurious"]) == (5, 2, 1, 1, 1)
  # Dice includes the 0s of missed and spurious; absent is skipped.
  assert lvm["dice"]["count"] == 4
  assert lvm["dice"]["mean"] == pytest.approx(0.35)
  assert lvm["dice"]["std"] == pytest.approx(
      math.sqrt((0.45**2 + 0.25**2 + 2 * 0.35**2) / 4))
  # Distances average over "ok" only.
  assert lvm["hd_vox"] == {"mean": 3.0, "std": 1.0, "count": 2}
  # Metrics missing from every row are not reported.
  assert "hd_mm" not in lvm
  empty = summary["mr"]["LVM"]
  assert empty["absent"] == 1 and empty["dice"]["count"] == 0
  assert math.isnan(empty["dice"]["mean"]) and math.isnan(empty["hd_vox"]["mean"])
  assert summary["ct"]["AA"]["hd_vox"] == {"mean": 3.0, "std": 0.0, "count": 1}


def test_summarize_accepts_volume_metrics_rows():
  gt = np.zeros((6, 6, 6), np.uint8)
  gt[1:3, 1:3, 1:3] = 1
  rows = [{"modality": "lge", "class_name": "LV",
           **metrics.volume_metrics(pred, gt, num_classes=2, spacing=1.0)[1]}
          for pred in (gt, gt * 0)]
  entry = metrics.summarize(rows)["lge"]["LV"]
  assert entry["dice"] == {"mean": 0.5, "std": 0.5, "count": 2}
  # The voxel counts are summed: 8 reference voxels in each of the two volumes.
  assert (entry["reference_voxels"], entry["excluded_voxels"]) == (16, 0)
  assert entry["hd_mm"] == {"mean": 0.0, "std": 0.0, "count": 1}
  assert (entry["ok"], entry["missed"]) == (1, 1)


def test_summarize_rejects_bad_rows():
  with pytest.raises(ValueError, match="unknown status"):
    metrics.summarize([_row("ct", "AA", "lost", 0.0, 1.0)])
  with pytest.raises(ValueError, match="lacks key 'status'"):
    metrics.summarize([{"modality": "ct", "class_name": "AA", "dice": 1.0}])
  with pytest.raises(ValueError, match="hd_vox must be finite"):
    metrics.summarize([_row("ct", "AA", "ok", 0.5, math.nan)])


# --- Benchmark ----------------------------------------------------------------------


def test_benchmark_runs_on_a_small_volume():
  gt, pred = hd_eval.make_volumes((64, 64, 32))
  assert set(np.unique(gt)) == set(np.unique(pred)) == {0, 1, 2, 3, 4}
  assert hd_eval.measure_hd_eval_seconds(shape=(64, 64, 32), repeats=1) > 0

