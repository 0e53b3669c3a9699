"""Shapes as approximate signed distances (mm, negative inside) and their blending.

Shared by both renderers; pure numpy functions of coordinates and anatomy parameters.
"""
import math
from typing import Sequence

import numpy as np
from scipy import ndimage

from csa_tf.data.phantom.anatomy import Tube


def _blend(values: np.ndarray, distance: np.ndarray, value: float,
           voxel: float) -> np.ndarray:
  """Paints `value` where distance < 0 with a one-voxel partial-volume edge."""
  weight = np.clip(0.5 - distance / voxel, 0.0, 1.0)
  return values + weight * (np.float32(value) - values)


def _radial_sdf(distance, q, semi):
  """Distance from the centre minus the boundary's, along the ray through a point.

  Args:
    distance: the point's distance from the centre.
    q: its normalised squared radius (1 on the boundary).
    semi: the semi-axes; the boundary's distance lies between their extremes, which
      also settles the centre itself (where the ray is undefined).
  """
  boundary = np.maximum(distance / np.sqrt(np.maximum(q, 1e-12)), min(semi))
  return distance - boundary


def _ellipse_sdf(x, y, center, semi, angle=0.0):
  """Radial distance to a rotated ellipse's boundary (2D)."""
  c, s = math.cos(angle), math.sin(angle)
  dx, dy = x - center[0], y - center[1]
  a = (c * dx + s * dy) / semi[0]
  b = (-s * dx + c * dy) / semi[1]
  return _radial_sdf(np.hypot(dx, dy), a * a + b * b, semi)


def _ellipsoid_sdf(x, y, z, center, semi):
  """Radial distance to an axis-aligned ellipsoid's boundary."""
  dx, dy, dz = x - center[0], y - center[1], z - center[2]
  q = (dx / semi[0]) ** 2 + (dy / semi[1]) ** 2 + (dz / semi[2]) ** 2
  return _radial_sdf(np.sqrt(dx * dx + dy * dy + dz * dz), q, semi)


def _tube_sdf(x, y, z, tube: Tube):
  """Distance to a polyline minus the tube's radius."""
  points = np.asarray(tube.points, np.float32)
  best = None
  for a, b in zip(points[:-1], points[1:]):
    ab = b - a
    t = ((x - a[0]) * ab[0] + (y - a[1]) * ab[1] + (z - a[2]) * ab[2]) / float(ab @ ab)
    t = np.clip(t, 0.0, 1.0)
    d2 = ((x - a[0] - t * ab[0]) ** 2 + (y - a[1] - t * ab[1]) ** 2
          + (z - a[2] - t * ab[2]) ** 2)
    best = d2 if best is None else np.minimum(best, d2)
  return np.sqrt(best) - tube.radius


def _wrap(angle):
  """Angle wrapped to [-pi, pi)."""
  return (angle + np.pi) % (2 * np.pi) - np.pi


def _crescent_profile(theta, half_angles):
  """RV crescent thickness profile in [0, 1] over the angle from its centre."""
  half = np.where(theta >= 0, half_angles[0], half_angles[1])
  return np.clip(1.0 - (theta / half) ** 2, 0.0, None) ** 0.6


def _taper(depth, length):
  """Ellipsoidal taper sqrt(1 - (depth / length)^2), 0 above the base and past the end."""
  inside = np.clip(1.0 - (depth / length) ** 2, 0.0, None)
  return np.where(depth >= 0, np.sqrt(inside), 0.0).astype(np.float32)


def _enclose_lv(label: np.ndarray, lv: int, myo: int, allowed: Sequence[int],
                structure: np.ndarray) -> np.ndarray:
  """Makes every neighbour of an LV voxel LV, myocardium or one of `allowed`.

  Returns:
    The mask of voxels turned into myocardium (the drawn shapes leave at most a thin
    rim, at the base plane or at coarse scales).
  """
  cavity = label == lv
  rim = ndimage.binary_dilation(cavity, structure=structure) & ~cavity
  fix = rim & ~np.isin(label, [myo, *allowed])
  label[fix] = myo
  return fix
