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
