"""MM-WHS renderer: whole-heart volumes sampled at each voxel's world position."""
import functools
import math
from typing import Dict, Sequence, Tuple

import numpy as np
from scipy import ndimage

from csa_tf.configs import datasets
from csa_tf.data.phantom.anatomy import PhantomGeometry, WholeHeart, _heart_world_bounds
from csa_tf.data.phantom.appearance import _bias_field, _rician, _sample_bias_waves
from csa_tf.data.phantom.shapes import (
    _blend, _crescent_profile, _ellipse_sdf, _ellipsoid_sdf, _enclose_lv, _tube_sdf)


# MM-WHS' release has a few voxels labelled 421 (read as 420) in this MR label.
STRAY_421_PATIENT = 1010
_SLAB_VOXELS = 2_000_000  # MM-WHS volumes are drawn in slabs of about this many voxels.

_WHOLE_HEART_TISSUES = {
    "ct": dict(air=-1000, lung=-850, fat=-100, muscle=45, liver=65, marrow=250,
               cortex=800, blood=320, myo=110),
    "mr": dict(air=0, lung=30, fat=480, muscle=150, liver=190, marrow=260, cortex=15,
               blood=600, myo=160),
}


def _affine_grid(matrix: np.ndarray, shape: Sequence[int], start: Sequence[int]):
  """(x, y, z) float32 arrays of `matrix` (3x4) applied to voxel indices of a block."""
  i, j, k = (np.arange(s0, s0 + n, dtype=np.float32) for s0, n in zip(start, shape))
  i, j, k = i[:, None, None], j[None, :, None], k[None, None, :]
  m = matrix.astype(np.float32)
  return tuple(m[row, 0] * i + m[row, 1] * j + m[row, 2] * k + m[row, 3]
               for row in range(3))


def _heart_block(geometry: PhantomGeometry) -> Tuple[slice, slice, slice]:
  """The voxel box (clipped to the grid) that can hold heart or epicardial fat."""
  low, high = _heart_world_bounds(geometry.heart)
  low, high = low - 8.0, high + 8.0
  corners = np.array([[a, b, c, 1.0] for a in (low[0], high[0])
                      for b in (low[1], high[1]) for c in (low[2], high[2])])
  voxels = (np.linalg.inv(geometry.affine) @ corners.T)[:3]
  first = np.clip(np.floor(voxels.min(axis=1)).astype(int) - 1, 0, geometry.shape)
  last = np.clip(np.ceil(voxels.max(axis=1)).astype(int) + 2, 0, geometry.shape)
  return tuple(slice(int(a), int(b)) for a, b in zip(first, last))


def _whole_heart_distances(heart: WholeHeart, u, v, w) -> Dict[str, np.ndarray]:
  """Signed distances (mm) of each structure, at heart-frame coordinates."""
  ru, rv = heart.lv_radii
  t = heart.myo_thickness
  cavity = np.maximum(_ellipsoid_sdf(u, v, w, (0, 0, 0), (ru, rv, heart.lv_length)), -w)
  epi_length = heart.lv_length + heart.apex_thickness
  outer = np.maximum(_ellipsoid_sdf(u, v, w, (0, 0, 0), (ru + t, rv + t, epi_length)), -w)
  # RV crescent on the epicardium's cross-section (an ellipse at every depth).
  rho = np.hypot(u, v)
  theta = np.arctan2(v, u)
  shrink = np.sqrt(np.clip(1.0 - (w / epi_length) ** 2, 0.0, None))
  a, b = (ru + t) * shrink, (rv + t) * shrink
  epi_rho = a * b / np.sqrt(np.maximum((b * np.cos(theta)) ** 2 + (a * np.sin(theta)) ** 2,
                                       1e-6))
  rv_reach = np.sqrt(np.clip(1.0 - (w / heart.rv_length) ** 2, 0.0, None))
  rv_outer = epi_rho + heart.rv_depth * rv_reach * _crescent_profile(
      theta, heart.rv_half_angles)
  rv_cavity = np.maximum(np.maximum(rho - rv_outer, epi_rho - rho),
                         np.maximum(-w - heart.rv_top, w - heart.rv_length))
  return {
      "ra": _ellipsoid_sdf(u, v, w, heart.ra.center, heart.ra.semi_axes),
      "la": _ellipsoid_sdf(u, v, w, heart.la.center, heart.la.semi_axes),
      "pa": _tube_sdf(u, v, w, heart.pa),
      "rv": rv_cavity,
      "aa": _tube_sdf(u, v, w, heart.aa),
      "myo": np.maximum(outer, -cavity),
      "lv": cavity,
  }


# Label value of each structure, in drawing order (later ones win where they overlap).
_WHOLE_HEART_VALUES = (("ra", 550), ("la", 420), ("pa", 850), ("rv", 600), ("aa", 820),
                       ("myo", 205), ("lv", 500))


def _sample_whole_heart_tissues(modality: str, rng) -> Dict[str, float]:
  """Mean intensities (CT in HU) of one volume's tissues."""
  tissue = dict(_WHOLE_HEART_TISSUES[modality])
  if modality == "ct":
    tissue = {name: value + rng.uniform(-10, 10) for name, value in tissue.items()}
    tissue["blood"] = rng.uniform(220, 420)
    tissue["right_blood"] = tissue["blood"] * rng.uniform(0.6, 1.05)
    tissue["myo"] = rng.uniform(90, 140)
  else:
    tissue = {name: value * rng.uniform(0.85, 1.15) for name, value in tissue.items()}
    tissue["right_blood"] = tissue["blood"] * rng.uniform(0.9, 1.0)
  tissue["air"] = _WHOLE_HEART_TISSUES[modality]["air"]
  return tissue


def _chest_world(heart: WholeHeart, rng) -> Dict[str, tuple]:
  """Draws the chest around the heart (world mm): body, lungs, spine, aorta, liver."""
  origin = np.asarray(heart.origin)
  body = origin[:2] + np.array([rng.uniform(20, 40), -rng.uniform(35, 50)])
  body_semi = (rng.uniform(140, 175), rng.uniform(95, 125))
  lung_semi = (rng.uniform(50, 62), rng.uniform(65, 80), rng.uniform(100, 130))
  return dict(
      body=(body, body_semi, rng.uniform(8, 18)),
      lungs=[(np.array([body[0] + side * rng.uniform(65, 80), body[1] + 5,
                        origin[2] + 10]), lung_semi) for side in (1, -1)],
      spine=(np.array([body[0], body[1] - body_semi[1] + 30]), 17.0),
      aorta=(np.array([body[0] - 22, body[1] - body_semi[1] + 58]), 11.0),
      liver=(origin + np.array([rng.uniform(35, 55), -10, -rng.uniform(85, 100)]),
             (95.0, 85.0, 65.0)),
  )


def _paint_chest(chest, x, y, z, tissue, voxel) -> np.ndarray:
  """Background intensities of one slab from its world coordinates."""
  values = np.full(np.broadcast_shapes(x.shape, y.shape, z.shape), tissue["air"],
                   np.float32)
  body, body_semi, fat = chest["body"]
  d_body = _ellipse_sdf(x, y, body, body_semi)
  values = _blend(values, d_body, tissue["fat"], voxel)
  values = _blend(values, d_body + fat, tissue["muscle"], voxel)
  for center, semi in chest["lungs"]:
    values = _blend(values, _ellipsoid_sdf(x, y, z, center, semi), tissue["lung"], voxel)
  liver_center, liver_semi = chest["liver"]
  values = _blend(values, _ellipsoid_sdf(x, y, z, liver_center, liver_semi),
                  tissue["liver"], voxel)
  spine, spine_radius = chest["spine"]
  d_spine = np.hypot(x - spine[0], y - spine[1]) - spine_radius
  values = _blend(values, d_spine, tissue["cortex"], voxel)
  values = _blend(values, d_spine + 3.0, tissue["marrow"], voxel)
  aorta, aorta_radius = chest["aorta"]
  values = _blend(values, np.hypot(x - aorta[0], y - aorta[1]) - aorta_radius,
                  tissue["blood"], voxel)
  return values


def _render_whole_heart(geometry: PhantomGeometry) -> Tuple[np.ndarray, np.ndarray]:
  """Draws an MM-WHS volume by sampling world-space anatomy at every voxel."""
  rng = np.random.default_rng(geometry.render_seed)
  tissue = _sample_whole_heart_tissues(geometry.modality, rng)
  values, label = _paint_whole_heart(geometry, tissue, rng)
  lac = datasets.MMWHS.label_values[1]
  if geometry.modality == "mr" and geometry.patient == STRAY_421_PATIENT:
    atrium = np.flatnonzero(label == lac)
    if atrium.size:
      stray = rng.choice(atrium, size=min(12, atrium.size), replace=False)
      label.flat[stray] = 421
  return _whole_heart_image(geometry, values, tissue, rng), label


def _paint_whole_heart(geometry: PhantomGeometry, tissue, rng):
  """Noise-free intensities (float32) and labels (uint16), slab by slab."""
  heart: WholeHeart = geometry.heart
  chest = _chest_world(heart, rng)
  voxel = float(np.mean(geometry.spacing))
  nx, ny, nz = geometry.shape
  world = geometry.affine[:3]
  axes = np.asarray(heart.axes)
  # Voxel -> heart frame: axes^T (affine(ijk) - origin).
  to_heart = np.concatenate(
      [axes.T @ world[:, :3], (axes.T @ (world[:, 3] - np.asarray(heart.origin)))[:, None]],
      axis=1)
  values = np.empty(geometry.shape, np.float32)
  label = np.zeros(geometry.shape, np.uint16)
  block = _heart_block(geometry)
  block_is_empty = any(s.start >= s.stop for s in block)
  fat_phase = rng.uniform(0, 2 * math.pi)
  intensity = {"myo": tissue["myo"], "ra": tissue["right_blood"],
               "rv": tissue["right_blood"], "pa": tissue["right_blood"]}
  for k0, k1 in _slabs(geometry.shape):
    x, y, z = _affine_grid(world, (nx, ny, k1 - k0), (0, 0, k0))
    values[:, :, k0:k1] = _paint_chest(chest, x, y, z, tissue, voxel)
    b0, b1 = max(k0, block[2].start), min(k1, block[2].stop)
    if block_is_empty or b0 >= b1:
      continue
    sub = (block[0], block[1], slice(b0, b1))
    shape = tuple(s.stop - s.start for s in sub)
    u, v, w = _affine_grid(to_heart, shape, (block[0].start, block[1].start, b0))
    distances = _whole_heart_distances(heart, u, v, w)
    # Epicardial fat hugging the whole heart, thicker in the grooves.
    fat_width = 1.5 + 2.5 * (0.5 + 0.5 * np.cos(2.0 * np.arctan2(v, u) + fat_phase))
    nearest = functools.reduce(np.minimum, distances.values())
    sub_values = _blend(values[sub], nearest - fat_width, tissue["fat"], voxel)
    sub_label = np.zeros(shape, np.uint16)
    for name, value in _WHOLE_HEART_VALUES:
      sub_label[distances[name] < 0] = value
      sub_values = _blend(sub_values, distances[name],
                          intensity.get(name, tissue["blood"]), voxel)
    values[sub] = sub_values
    label[sub] = sub_label

  lvm, lac, lvc, aa = datasets.MMWHS.label_values
  block_label = label[block]
  rim = _enclose_lv(block_label, lvc, lvm, (lac, aa),
                    ndimage.generate_binary_structure(3, 1))
  label[block] = block_label
  values[block] = np.where(rim, np.float32(tissue["myo"]), values[block])
  return values, label


def _slabs(shape: Sequence[int]):
  """(start, stop) ranges along axis 2 of about _SLAB_VOXELS voxels each."""
  step = max(1, _SLAB_VOXELS // (shape[0] * shape[1]))
  return [(k0, min(shape[2], k0 + step)) for k0 in range(0, shape[2], step)]


def _whole_heart_image(geometry: PhantomGeometry, values, tissue, rng) -> np.ndarray:
  """Adds texture, (MR) bias field and noise to noise-free intensities; int16 image."""
  modality = geometry.modality
  nx, ny, nz = geometry.shape
  world = geometry.affine[:3]
  # Texture from a coarse world-aligned noise lattice, interpolated at every voxel.
  corners = np.array([[a, b, c, 1.0] for a in (0, nx - 1) for b in (0, ny - 1)
                      for c in (0, nz - 1)])
  world_corners = (geometry.affine @ corners.T)[:3]
  lattice_origin = world_corners.min(axis=1) - 10.0
  lattice_step = 5.0
  lattice_shape = tuple(int(n) for n in np.ceil(
      (world_corners.max(axis=1) + 10.0 - lattice_origin) / lattice_step) + 1)
  lattice = ndimage.gaussian_filter(rng.standard_normal(lattice_shape, np.float32), 1.0)
  lattice /= max(float(lattice.std()), 1e-6)
  if modality == "ct":
    texture_amplitude, noise_sigma = rng.uniform(8, 18), rng.uniform(12, 35)
  else:
    texture_amplitude = rng.uniform(0.05, 0.1)
    noise_sigma = rng.uniform(0.02, 0.05) * tissue["blood"]
    gain = rng.uniform(0.5, 2.0)
    bias_waves = _sample_bias_waves(rng)
  image = np.empty(geometry.shape, np.int16)
  for k0, k1 in _slabs(geometry.shape):
    x, y, z = _affine_grid(world, (nx, ny, k1 - k0), (0, 0, k0))
    coords = [((c - o) / lattice_step).ravel() for c, o in zip((x, y, z), lattice_origin)]
    texture = ndimage.map_coordinates(lattice, coords, order=1, mode="nearest").reshape(
        x.shape)
    chunk = values[:, :, k0:k1]
    if modality == "ct":
      chunk = chunk + texture_amplitude * texture
      chunk = chunk + noise_sigma * rng.standard_normal(chunk.shape, np.float32)
      image[:, :, k0:k1] = np.clip(np.rint(chunk), -1024, 3071)
    else:
      chunk = chunk * _bias_field(bias_waves, x, y, z) * (1.0 + texture_amplitude * texture)
      image[:, :, k0:k1] = np.clip(np.rint(_rician(chunk, noise_sigma, rng) * gain),
                                   0, 32767)
  return image
