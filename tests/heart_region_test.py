"""Tests for csa_tf.data.heart_region: the heart's components and the stray islands."""
import math

import numpy as np
import pytest

from csa_tf.data import heart_region

NAMES = ("background", "LV", "myo", "RV")
# MS-CMRSeg bSSFP-like voxels: 1.25 mm in-plane, 10 mm between slices (array axis 2).
SPACING = (1.25, 1.25, 10.0)


def _heart(shape=(64, 64, 4)):
  """LV block [20, 36) x [20, 36) in slices 0-3, a myo rim around it, RV beside."""
  classes = np.zeros(shape, np.uint8)
  classes[18:38, 18:38, :] = 2
  classes[20:36, 20:36, :] = 1
  classes[18:38, 38:44, :] = 3
  return classes


def test_a_stray_voxel_far_from_the_heart_is_one_island_with_its_position():
  classes = _heart()
  classes[0, 0, 0] = 1
  region = heart_region.find_heart(classes, SPACING, class_names=NAMES)
  assert region.islands == ({"class": "LV", "voxels": 1, "bbox": [[0, 0, 0], [0, 0, 0]]},)
  np.testing.assert_array_equal(region.stray_voxels, [[0, 0, 0]])
  heart = region.heart_only(classes)
  assert heart[0, 0, 0] == 0 and (heart != classes).sum() == 1


def test_a_heart_of_one_component_has_no_islands():
  region = heart_region.find_heart(_heart(), SPACING, class_names=NAMES)
  assert region.islands == () and region.stray_voxels.shape == (0, 3)


def test_an_rv_piece_a_few_voxels_off_stays_in_the_heart():
  classes = _heart()
  classes[18:38, 38:44, :] = 0
  classes[18:38, 41:46, 1:3] = 3  # 3 empty columns (3.75 mm) between it and the myo
  region = heart_region.find_heart(classes, SPACING, class_names=NAMES)
  assert region.islands == ()


@pytest.mark.parametrize("empty_columns, island", [(16, False), (17, True)])
def test_the_margin_is_20_mm_between_bounding_boxes(empty_columns, island):
  # The heart's box ends at column 43; a piece whose box starts after `empty_columns`
  # empty columns lies 16 * 1.25 = 20.0 mm (in: <= 20) or 17 * 1.25 = 21.25 mm away.
  classes = _heart()
  start = 44 + empty_columns
  classes[25:27, start:start + 2, 1] = 3
  region = heart_region.find_heart(classes, SPACING, class_names=NAMES)
  assert heart_region.HEART_MARGIN_MM == 20.0
  expected = ({"class": "RV", "voxels": 4, "bbox": [[25, start, 1], [26, start + 1, 1]]},)
  assert region.islands == (expected if island else ())


def test_pieces_joined_through_another_piece_stay_in():
  classes = _heart((64, 96, 4))
  classes[25, 56:58, 1] = 3  # 12 empty columns (15 mm) after the heart
  classes[25, 70:72, 1] = 3  # 12 empty columns after that piece, 26 (32.5 mm) after it
  region = heart_region.find_heart(classes, SPACING, class_names=NAMES)
  assert region.islands == ()


def test_the_slice_axis_counts_in_mm():
  # Two empty slices (20 mm) between the heart (slices 0-3) and a piece in slice 6 of
  # the same rows and columns: in. Three (30 mm, slice 7): an island.
  classes = _heart((64, 64, 8))
  classes[:, :, 4:] = 0
  classes[25, 25, 6] = 1
  assert heart_region.find_heart(classes, SPACING, class_names=NAMES).islands == ()
  classes[25, 25, 6] = 0
  classes[25, 25, 7] = 1
  region = heart_region.find_heart(classes, SPACING, class_names=NAMES)
  assert [i["bbox"] for i in region.islands] == [[[25, 25, 7], [25, 25, 7]]]


def test_an_island_of_two_classes_is_reported_per_class():
  classes = _heart()
  classes[60:62, 0:3, 2] = 2  # 6 myo voxels
  classes[62, 1, 2] = 3       # 1 RV voxel touching them
  region = heart_region.find_heart(classes, SPACING, class_names=NAMES)
  assert region.islands == (
      {"class": "myo", "voxels": 6, "bbox": [[60, 0, 2], [61, 2, 2]]},
      {"class": "RV", "voxels": 1, "bbox": [[62, 1, 2], [62, 1, 2]]})
  assert len(region.stray_voxels) == 7
  assert heart_region.describe_islands(region.islands) == (
      "myo 6 voxels at [60, 0, 2]-[61, 2, 2]; RV 1 voxel at [62, 1, 2]-[62, 1, 2]")


def test_diagonal_neighbours_are_one_component():
  # 26-connectivity: voxels touching only at a corner join. A negative margin joins
  # nothing by distance (every gap is >= 0), so only connectivity can keep the voxel.
  classes = np.zeros((40, 40, 3), np.uint8)
  classes[10:20, 10:20, 0] = 1
  classes[20, 20, 1] = 2
  assert heart_region.find_heart(classes, (1.0, 1.0, 1.0), class_names=NAMES,
                                 margin_mm=-1.0).islands == ()
  classes[21, 21, 1], classes[20, 20, 1] = 2, 0  # one empty voxel between: apart
  assert len(heart_region.find_heart(classes, (1.0, 1.0, 1.0), class_names=NAMES,
                                     margin_mm=-1.0).islands) == 1


def test_box_gaps_by_hand():
  lows = np.array([[0, 0, 0], [12, 0, 5], [11, 11, 1]])
  highs = np.array([[10, 10, 2], [12, 3, 5], [20, 20, 3]])
  low, high = np.array([0, 0, 0]), np.array([7, 7, 2])
  gaps = heart_region.box_gaps_mm(lows, highs, low, high, (1.25, 1.25, 10.0))
  # Overlap: 0. Box 2: 4 empty voxels on axis 0 (8..11) and 2 slices (3, 4):
  # sqrt(5^2 + 20^2). Box 3: 3 voxels on axes 0 and 1, none on axis 2: 3.75 * sqrt(2).
  np.testing.assert_allclose(gaps, [0.0, math.sqrt(5.0 ** 2 + 20.0 ** 2),
                                    3.75 * math.sqrt(2)])
