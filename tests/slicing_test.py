"""Tests for csa_tf.data.slicing: orientation, crop boxes, z-scoring and the way back."""
import numpy as np
import pytest

from csa_tf.data import slicing


def test_crop_encloses_every_foreground_voxel():
  rng = np.random.default_rng(0)
  for _ in range(50):
    shape = (int(rng.integers(1, 6)), int(rng.integers(20, 90)), int(rng.integers(20, 90)))
    labels = np.zeros(shape, np.uint8)
    crop = 24
    r0, c0 = rng.integers(0, shape[1] - 10), rng.integers(0, shape[2] - 10)
    h, w = rng.integers(1, min(crop, shape[1] - r0) + 1), rng.integers(
        1, min(crop, shape[2] - c0) + 1)
    labels[rng.integers(0, shape[0]), r0:r0 + h, c0:c0 + w] = 3
    origin, fits = slicing.enclosing_crop_origin(labels, crop)
    assert fits
    cropped = slicing.crop_slices(labels, origin, crop)
    assert cropped.sum() == labels.sum()


def test_crop_stays_inside_large_images_and_pads_small_ones():
  labels = np.zeros((2, 100, 100), np.uint8)
  labels[0, 0:5, 95:100] = 1  # a corner: the box must not leave the image
  origin, fits = slicing.enclosing_crop_origin(labels, 32)
  assert fits and origin == (0, 68)
  small = np.zeros((1, 10, 12), np.uint8)
  small[0, 4, 5] = 1
  origin, _ = slicing.enclosing_crop_origin(small, 16)
  assert origin == (-3, -2)
  image = np.arange(120, dtype=np.float32).reshape(1, 10, 12)
  cropped = slicing.crop_slices(image, origin, 16, pad_value=-1.0)
  assert cropped.shape == (1, 16, 16)
  assert (cropped == -1).sum() == 16 * 16 - 120
  np.testing.assert_array_equal(cropped[0, 3:13, 2:14], image[0])


def test_too_wide_annotation_is_reported():
  labels = np.zeros((1, 50, 50), np.uint8)
  labels[0, 5:45, 10:12] = 1
  _, fits = slicing.enclosing_crop_origin(labels, 16)
  assert not fits


def test_zscore_per_slice_and_constant_slice():
  rng = np.random.default_rng(1)
  slices = np.stack([rng.normal(50, 7, (16, 16)), np.full((16, 16), 3.0),
                     rng.uniform(0, 1000, (16, 16))])
  z = slicing.zscore_slices(slices)
  assert np.all(np.isfinite(z))
  np.testing.assert_allclose(z[[0, 2]].mean(axis=(1, 2)), 0, atol=1e-5)
  np.testing.assert_allclose(z[[0, 2]].std(axis=(1, 2)), 1, atol=1e-4)
  np.testing.assert_array_equal(z[1], 0)


@pytest.mark.parametrize("affine", [
    np.diag([0.5, 0.6, 0.7, 1.0]),
    np.diag([-0.5, 0.6, -0.7, 1.0]),
    np.array([[0, 0, 0.7, 0], [0.5, 0, 0, 0], [0, -0.6, 0, 0], [0, 0, 0, 1.0]]),
])
def test_round_trip_to_slices_and_back(affine):
  rng = np.random.default_rng(2)
  volume = rng.integers(0, 5, (21, 18, 15))
  ornt = slicing.header_ornt(affine)
  geometry = slicing.VolumeGeometry(volume.shape, ornt, (-2, 3), 16)
  back = geometry.from_slices(geometry.to_slices(volume))
  standard = geometry.to_standard(volume)
  inside = np.zeros(standard.shape, bool)
  inside[:, 0:14, 3:19] = True
  np.testing.assert_array_equal(back, geometry.from_slices(geometry.crop(standard)))
  assert back.shape == volume.shape
  # Every voxel inside the box comes back; everything else is 0.
  expected = np.where(inside, standard, 0)
  np.testing.assert_array_equal(geometry.to_standard(back), expected)


def test_flipped_affine_gives_same_coronal_slices():
  rng = np.random.default_rng(3)
  volume = rng.normal(size=(12, 10, 8))
  affine = np.diag([0.8, 0.9, 1.1, 1.0])
  affine[:3, 3] = [-5, 7, 2]
  # The same physical volume stored with its first two axes flipped: voxel i of the
  # flipped array sits where voxel (n-1-i) of the original does.
  flipped = volume[::-1, ::-1, :]
  flip_affine = affine.copy()
  for axis in (0, 1):
    flip_affine[:3, axis] = -affine[:3, axis]
    flip_affine[:3, 3] += affine[:3, axis] * (volume.shape[axis] - 1)
  a = slicing.VolumeGeometry(volume.shape, slicing.header_ornt(affine), (0, 0), 8)
  b = slicing.VolumeGeometry(flipped.shape, slicing.header_ornt(flip_affine), (0, 0), 8)
  np.testing.assert_array_equal(a.to_standard(volume), b.to_standard(flipped))
  # Coronal: the slice axis is the A-P axis (array axis 1 of an RAS volume).
  assert a.standard_shape == (10, 8, 12)


def test_mscmr_slice_axis_ornt_keeps_slices():
  volume = np.arange(4 * 5 * 3).reshape(4, 5, 3)
  geometry = slicing.VolumeGeometry(volume.shape, slicing.slice_axis_ornt(2), (0, 0), 8)
  standard = geometry.to_standard(volume)
  for k in range(3):
    np.testing.assert_array_equal(standard[k], volume[:, :, k])


# ------------------------------------------------------------------- crop box, by hand
# Labels [2, 20, 24] (slices, rows, cols); each axis of the box starts at
# (low + high + 1) // 2 - crop // 2 for the foreground's bounding box rows/cols
# [low, high] over all slices, then is kept inside the image (REFERENCE.md section 5).


def _labels(rows, cols, shape=(2, 20, 24)):
  """Foreground rows[0]..rows[1] x cols[0]..cols[1] (inclusive), split over two slices.

  Slice 0 holds the top-left part of the box, slice 1 the bottom-right part, so the
  box is only the union over slices.
  """
  labels = np.zeros(shape, np.uint8)
  (r0, r1), (c0, c1) = rows, cols
  labels[0, r0:(r0 + r1) // 2 + 1, c0:(c0 + c1) // 2 + 1] = 1
  labels[-1, (r0 + r1) // 2:r1 + 1, (c0 + c1) // 2:c1 + 1] = 2
  return labels


@pytest.mark.parametrize("rows, cols, crop, origin", [
    # Even crop, even foreground: rows 5..8 -> (14)//2 - 4 = 3, box 3..10 (2 rows free on
    # each side); cols 10..15 -> (26)//2 - 4 = 9, box 9..16 (1 col each side).
    ((5, 8), (10, 15), 8, (3, 9)),
    # Odd crop, odd foreground: rows 5..9 -> (15)//2 - 4 = 3, box 3..11 (2 and 2);
    # cols 11..17 -> (29)//2 - 4 = 10, box 10..18 (1 and 1).
    ((5, 9), (11, 17), 9, (3, 10)),
    # Odd crop, even foreground: rows 5..8 -> 7 - 4 = 3, box 3..11 (2 above, 3 below);
    # cols 12..15 -> (28)//2 - 4 = 10, box 10..18 (2 left, 3 right).
    ((5, 8), (12, 15), 9, (3, 10)),
    # Even crop, odd foreground: rows 4..6 -> (11)//2 - 4 = 1, box 1..8 (3 above, 2
    # below); cols 14..18 -> (33)//2 - 4 = 12, box 12..19 (2 left, 1 right).
    ((4, 6), (14, 18), 8, (1, 12)),
])
def test_crop_box_is_centred_on_the_foreground(rows, cols, crop, origin):
  labels = _labels(rows, cols)
  got, fits = slicing.enclosing_crop_origin(labels, crop)
  assert got == origin and fits
  # The free margins above/below (left/right) differ by at most one pixel.
  for (low, high), start in zip((rows, cols), origin):
    before, after = low - start, start + crop - 1 - high
    assert before >= 0 and after >= 0 and abs(before - after) <= 1
  assert slicing.crop_slices(labels, got, crop).sum() == labels.sum()


@pytest.mark.parametrize("rows, cols, crop, origin", [
    # rows 2..15 (14 > 8): (18)//2 - 4 = 5, box 5..12 cuts rows 2..4 and 13..15 (3, 3);
    # cols 3..20 (18): (24)//2 - 4 = 8, box 8..15 cuts cols 3..7 and 16..20 (5, 5).
    ((2, 15), (3, 20), 8, (5, 8)),
    # rows 2..14 (13): (17)//2 - 4 = 4, box 4..11 cuts 2 above, 3 below;
    # cols 3..19 (17): (23)//2 - 4 = 7, box 7..14 cuts 4 left, 5 right.
    ((2, 14), (3, 19), 8, (4, 7)),
    # Odd crop: rows 2..15: 9 - 3 = 6, box 6..12 cuts 4 above, 3 below;
    # cols 3..20: 12 - 3 = 9, box 9..15 cuts 6 left, 5 right.
    ((2, 15), (3, 20), 7, (6, 9)),
    # Wider in the columns only: rows 5..8 fit (14//2 - 4 = 3); cols 0..23 (the whole
    # width, 24 > 8): (24)//2 - 4 = 8, box 8..15 cuts 8 left and 8 right.
    ((5, 8), (0, 23), 8, (3, 8)),
])
def test_too_wide_foreground_is_cut_symmetrically(rows, cols, crop, origin):
  labels = _labels(rows, cols)
  got, fits = slicing.enclosing_crop_origin(labels, crop)
  assert got == origin and not fits
  for (low, high), start in zip((rows, cols), origin):
    if high - low + 1 > crop:
      cut_before, cut_after = start - low, high - (start + crop - 1)
      assert cut_before > 0 and cut_after > 0 and abs(cut_before - cut_after) <= 1


@pytest.mark.parametrize("rows, cols, origin", [
    # Top: rows 0..1 -> (2)//2 - 4 = -3, clamped to 0; cols 10..12 -> 11 - 4 = 7.
    ((0, 1), (10, 12), (0, 7)),
    # Bottom: rows 18..19 -> (38)//2 - 4 = 15, clamped to 20 - 8 = 12.
    ((18, 19), (10, 12), (12, 7)),
    # Left: rows 9..10 -> 10 - 4 = 6; cols 0..2 -> (3)//2 - 4 = -3, clamped to 0.
    ((9, 10), (0, 2), (6, 0)),
    # Right: cols 21..23 -> (45)//2 - 4 = 18, clamped to 24 - 8 = 16.
    ((9, 10), (21, 23), (6, 16)),
])
def test_crop_box_is_clamped_at_each_border(rows, cols, origin):
  labels = _labels(rows, cols)
  got, fits = slicing.enclosing_crop_origin(labels, 8)
  assert got == origin and fits
  cropped = slicing.crop_slices(labels, got, 8)
  # Inside the image: no padding needed, and every foreground voxel kept.
  assert cropped.sum() == labels.sum()
  np.testing.assert_array_equal(cropped, labels[:, got[0]:got[0] + 8, got[1]:got[1] + 8])


def test_image_smaller_than_crop_is_padded_around_its_centre():
  # [1, 10, 13] in a 16 box: rows -(6 // 2) = -3 (3 padded above, 3 below),
  # cols -(3 // 2) = -1 (1 left, 2 right); where the image is, the foreground is ignored.
  labels = np.zeros((1, 10, 13), np.uint8)
  labels[0, 0, 0] = 1
  origin, fits = slicing.enclosing_crop_origin(labels, 16)
  assert origin == (-3, -1) and fits
  image = np.arange(130, dtype=np.float32).reshape(1, 10, 13) + 1
  cropped = slicing.crop_slices(image, origin, 16, pad_value=-7.0)
  expected = np.full((1, 16, 16), -7.0, np.float32)
  expected[0, 3:13, 1:14] = image[0]
  np.testing.assert_array_equal(cropped, expected)
  geometry = slicing.VolumeGeometry((1, 10, 13), slicing.slice_axis_ornt(0), origin, 16)
  np.testing.assert_array_equal(geometry.crop(image, pad_value=-7.0), expected)
  # Small in one axis only: [1, 20, 6], crop 8, foreground rows 10..11:
  # rows (22)//2 - 4 = 7 (inside), cols -(2 // 2) = -1 (padded 1 left, 1 right).
  labels = _labels((10, 11), (2, 3), shape=(1, 20, 6))
  assert slicing.enclosing_crop_origin(labels, 8) == ((7, -1), True)


# ---------------------------------------------------------------------- the way back


@pytest.mark.parametrize("ornt_of, shape, origin, crop, inside, voxel, pixel", [
    # slice_axis_ornt(2): standard[k, r, c] = volume[r, c, k] (MS-CMRSeg), shape (5, 7, 9).
    # Box rows 1..6, cols 2..7 -> original rows 1..6, cols 2..7, every slice.
    (lambda: slicing.slice_axis_ornt(2), (7, 9, 5), (1, 2), 6,
     np.s_[1:7, 2:8, :], (4, 6, 3), (3, 3, 4)),
    # slice_axis_ornt(0): standard[k, r, c] = volume[k, r, c]; box rows -1..4 (padded
    # above), cols 3..8 -> original rows 0..4, cols 3..8.
    (lambda: slicing.slice_axis_ornt(0), (4, 6, 10), (-1, 3), 6,
     np.s_[:, 0:5, 3:9], (2, 0, 8), (2, 1, 5)),
    # LAS affine diag(-1, 1, 1) to (A, I, L): slice = axis 1, row = flipped axis 2 (S ->
    # I), col = axis 0 (already L): standard[s, r, c] = volume[c, s, 7 - r], shape
    # (7, 8, 6). Box rows 2..5 -> z = 7 - r in 2..5; cols 1..4 -> x 1..4.
    # Voxel (2, 3, 4): s = 3, r = 7 - 4 = 3, c = 2 -> pixel (3, 3 - 2, 2 - 1) = (3, 1, 1).
    (lambda: slicing.header_ornt(np.diag([-1.0, 1.0, 1.0, 1.0])), (6, 7, 8), (2, 1), 4,
     np.s_[1:5, :, 2:6], (2, 3, 4), (3, 1, 1)),
    # RAS identity affine: col = flipped axis 0 (R -> L) too:
    # standard[s, r, c] = volume[5 - c, s, 7 - r]. Box rows 0..5 -> z 2..7; cols 2..7
    # (past the width 6: padded) -> c 2..5 -> x 0..3. Voxel (1, 6, 5): s = 6, r = 2,
    # c = 4 -> pixel (6, 2 - 0, 4 - 2) = (6, 2, 2).
    (lambda: slicing.header_ornt(np.eye(4)), (6, 7, 8), (0, 2), 6,
     np.s_[0:4, :, 2:8], (1, 6, 5), (6, 2, 2)),
])
def test_paste_back_inverts_the_crop_and_places_voxels_exactly(
    ornt_of, shape, origin, crop, inside, voxel, pixel):
  geometry = slicing.VolumeGeometry(shape, ornt_of(), origin, crop)
  volume = np.arange(1, np.prod(shape) + 1).reshape(shape)
  back = geometry.from_slices(geometry.to_slices(volume), fill_value=-1)
  expected = np.full(shape, -1)
  expected[inside] = volume[inside]
  np.testing.assert_array_equal(back, expected)
  # One marked voxel lands at the hand-derived slice pixel, and back again.
  marked = np.zeros(shape, np.int32)
  marked[voxel] = 9
  slices = geometry.to_slices(marked)
  assert slices[pixel] == 9 and slices.sum() == 9
  pasted = geometry.from_slices(slices)
  assert pasted[voxel] == 9 and pasted.sum() == 9


def test_zscore_is_per_slice_with_hand_derived_values():
  slices = np.array([
      [[1, 3], [1, 3]],      # mean 2, std 1       -> [[-1, 1], [-1, 1]]
      [[10, 10], [30, 30]],  # mean 20, std 10     -> [[-1, -1], [1, 1]]
      [[0, 0], [0, 4]],      # mean 1, std sqrt(3) -> -1/sqrt(3) x3, 3/sqrt(3) = sqrt(3)
      [[5, 5], [5, 5]],      # constant            -> zeros
  ], np.float32)
  z = slicing.zscore_slices(slices)
  third = 1 / np.sqrt(3)
  expected = np.array([[[-1, 1], [-1, 1]], [[-1, -1], [1, 1]],
                       [[-third, -third], [-third, np.sqrt(3)]], [[0, 0], [0, 0]]])
  np.testing.assert_allclose(z, expected, rtol=1e-6, atol=1e-7)
  # A volume-wide z-score (one mean 112 / 16 = 7 and one std) gives none of these.


def test_network_slices_z_score_the_image_pixels_not_the_padding():
  # A 2-slice 10 x 12 image in a 16-pixel box: 96 of the box's 256 pixels are padding.
  rng = np.random.default_rng(4)
  image = rng.normal(300.0, 40.0, (10, 12, 2)).astype(np.float32)
  image[3:6, 4:8, :] += 500.0  # a bright "ventricle"
  geometry = slicing.VolumeGeometry(image.shape, slicing.slice_axis_ornt(2), (-3, -2), 16)
  mask = geometry.image_mask()
  assert mask.sum() == 120 and mask[3:13, 2:14].all()
  slices = geometry.network_slices(image)
  # On the image pixels: exactly the z-score of the unpadded slice.
  unpadded = slicing.zscore_slices(geometry.to_standard(image))
  np.testing.assert_allclose(slices[:, 3:13, 2:14], unpadded, rtol=1e-5, atol=1e-5)
  for k in range(2):
    inside = slices[k][mask]
    assert abs(inside.mean()) < 1e-5 and abs(inside.std() - 1) < 1e-5
    # The padding is the volume's minimum, z-scored with the slice's image statistics.
    plane = geometry.to_standard(image)[k]
    expected = (image.min() - plane.mean()) / plane.std()
    np.testing.assert_allclose(slices[k][~mask], expected, rtol=1e-5)
  # The same image at the box's size has no padding: the two readings coincide.
  full = slicing.VolumeGeometry(image.shape, slicing.slice_axis_ornt(2), (0, 0), 10)
  np.testing.assert_allclose(full.network_slices(image[:, :10]),
                             slicing.zscore_slices(full.to_slices(image[:, :10])))


def _lps_copy(data, affine):
  """The same scan stored with its first two array axes reversed (RAS -> LPS-like)."""
  flip = np.diag([-1.0, -1.0, 1.0, 1.0])
  flip[0, 3], flip[1, 3] = data.shape[0] - 1, data.shape[1] - 1
  return data[::-1, ::-1], affine @ flip


@pytest.mark.parametrize("affine,expected", [
    (np.diag([1.25, 1.25, 10.0, 1.0]), [[1, 1], [2, 1], [0, 1]]),
    (np.diag([-1.25, -1.25, 10.0, 1.0]), [[1, -1], [2, -1], [0, 1]]),
    # Array axis 0 runs along world y, axis 1 along world -x: rows are axis 1 (x first).
    (np.array([[0.0, -1.0, 0, 0], [1.0, 0, 0, 0], [0, 0, 8.0, 0], [0, 0, 0, 1]]),
     [[2, 1], [1, -1], [0, 1]]),
])
def test_short_axis_ornt_reads_the_in_plane_axes_from_the_header(affine, expected):
  np.testing.assert_array_equal(slicing.short_axis_ornt(affine), expected)


def test_short_axis_slices_of_an_lps_copy_equal_the_ras_scan():
  rng = np.random.default_rng(5)
  data = rng.normal(size=(12, 9, 4)).astype(np.float32)
  affine = np.diag([1.4, 1.4, 8.0, 1.0])
  flipped, flipped_affine = _lps_copy(data, affine)
  ras = slicing.VolumeGeometry(data.shape, slicing.short_axis_ornt(affine), (0, 0), 16)
  lps = slicing.VolumeGeometry(flipped.shape, slicing.short_axis_ornt(flipped_affine),
                               (0, 0), 16)
  np.testing.assert_array_equal(ras.to_standard(data), lps.to_standard(flipped))
  # As stored, the two differ (the old MS-CMRSeg reading, kept for older PREPs).
  stored = slicing.dataset_ornt("mscmr", flipped_affine, slicing.ORIENTATION_STORED)
  assert not np.array_equal(slicing.VolumeGeometry(flipped.shape, stored, (0, 0), 16)
                            .to_standard(flipped), ras.to_standard(data))
  # Pasting back lands in the input's own orientation.
  np.testing.assert_array_equal(lps.from_slices(lps.to_slices(flipped))[:12, :9],
                                flipped)


# In-plane resampling (VolumeGeometry.zoom; MM-WHS --in_plane_spacing).

def _coronal_geometry(shape, zoom, crop_size, origin=(0, 0)):
  """A geometry whose standard array is the volume itself (identity orientation)."""
  ornt = np.array([[0, 1], [1, 1], [2, 1]], dtype=np.float64)
  return slicing.VolumeGeometry(tuple(shape), ornt, origin, crop_size, zoom)


def test_resample_by_half_averages_pixel_pairs():
  # zoom 0.5: network pixel j samples (j + 0.5) / 0.5 - 0.5 = 2j + 0.5, the mean of
  # pixels 2j and 2j + 1.
  standard = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
  geometry = _coronal_geometry(standard.shape, (0.5, 0.5), 8)
  assert geometry.network_grid_shape == (1, 2, 2)
  out = geometry.resample(standard, order=1)
  # rows (0, 1) and columns (0, 1): (0 + 1 + 4 + 5) / 4 = 2.5; then + 2, + 8, + 10.
  np.testing.assert_allclose(out[0], [[2.5, 4.5], [10.5, 12.5]])


def test_resample_linear_equals_map_coordinates_nearest_edges():
  from scipy import ndimage  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  standard = rng.normal(size=(2, 13, 9)).astype(np.float32)
  geometry = _coronal_geometry(standard.shape, (1.37, 0.61), 16)
  out = geometry.resample(standard, order=1)
  _, height, width = geometry.network_grid_shape
  assert (height, width) == (round(13 * 1.37), round(9 * 0.61)) == (18, 5)
  rows = (np.arange(height) + 0.5) / 1.37 - 0.5
  cols = (np.arange(width) + 0.5) / 0.61 - 0.5
  grid = np.meshgrid(rows, cols, indexing="ij")
  for k in range(2):
    expected = ndimage.map_coordinates(standard[k].astype(np.float64), grid, order=1,
                                       mode="nearest")
    np.testing.assert_allclose(out[k], expected, atol=1e-5)


def test_nearest_label_round_trip_up_by_two_is_exact():
  # zoom 2: each pixel becomes two network pixels; back, pixel i takes network pixel
  # floor((i + 0.5) * 2) = 2i + 1, which samples pixel floor(2i + 1.5 / 2 - 0.5 + 0.5) = i.
  label = np.random.default_rng(1).integers(0, 5, (3, 7, 6)).astype(np.uint8)
  geometry = _coronal_geometry(label.shape, (2.0, 2.0), 16, origin=(-1, 2))
  slices = geometry.to_slices(label, order=0)
  assert slices.shape == (3, 16, 16)
  back = geometry.from_slices(slices)
  # The box (rows -1..14 of 14, columns 2..17 of 12) drops network columns 0-1 only,
  # i.e. original column 0.
  np.testing.assert_array_equal(back[:, :, 1:], label[:, :, 1:])
  assert not back[:, :, 0].any()


def test_nearest_label_round_trip_down_differs_only_at_boundaries():
  # A CT-like slice: a disc of radius 60 pixels at 0.35 mm (42 mm) on 0.6 mm pixels
  # (zoom 0.35 / 0.6) and back.
  yy, xx = np.mgrid[:200, :200]
  disc = ((yy - 97.3) ** 2 + (xx - 101.6) ** 2 < 60 ** 2).astype(np.uint8)
  label = np.stack([disc, 2 * disc])
  zoom = (0.35 / 0.6, 0.35 / 0.6)
  geometry = _coronal_geometry(label.shape, zoom, 128)
  back = geometry.from_slices(geometry.to_slices(label, order=0))
  wrong = back != label
  # Measured: 189 of the disc's 11,316 pixels per slice (1.7%) disagree, all of them
  # within one network pixel (1.7 original pixels) of the disc's edge.
  assert int(wrong[0].sum()) == 189 and int(disc.sum()) == 11316
  radius = np.hypot(yy - 97.3, xx - 101.6)
  assert np.all(np.abs(radius[wrong[0]] - 60) < 1 / zoom[0])
  np.testing.assert_array_equal(wrong[1], wrong[0])


def test_old_geometry_without_zoom_is_not_resampled():
  geometry = _coronal_geometry((2, 5, 7), (1.0, 1.0), 8)
  standard = np.ones((2, 5, 7), np.int16)
  assert not geometry.resampled and geometry.network_grid_shape == (2, 5, 7)
  assert geometry.resample(standard, order=1) is standard


def test_in_plane_zoom_follows_the_standard_axes():
  # Array axis 0 becomes the columns, axis 1 the slices, axis 2 the rows.
  ornt = np.array([[2, 1], [0, -1], [1, -1]], dtype=np.float64)
  assert slicing.standard_spacing((0.4, 0.7, 0.5), ornt) == (0.7, 0.5, 0.4)
  assert slicing.in_plane_zoom((0.4, 0.7, 0.5), ornt, 0.8) == (0.5 / 0.8, 0.4 / 0.8)
  assert slicing.in_plane_zoom((0.4, 0.7, 0.5), ornt, None) == (1.0, 1.0)
