"""MS-CMRSeg renderer: short-axis stacks drawn slice by slice in the image's mm frame."""
import math
from typing import Dict, Tuple

import numpy as np
from scipy import ndimage

from csa_tf.configs import datasets
from csa_tf.data.phantom.anatomy import PhantomGeometry, ShortAxisHeart
from csa_tf.data.phantom.appearance import _bias_field, _rician, _sample_bias_waves
from csa_tf.data.phantom.shapes import (
    _blend, _crescent_profile, _ellipse_sdf, _enclose_lv, _taper, _wrap)


# Mean tissue intensities of each sequence (arbitrary MR units, before per-volume jitter).
_SHORT_AXIS_TISSUES = {
    "lge": dict(lung=12, muscle=110, fat=420, liver=160, marrow=280, cortex=20,
                blood=340, myo=55, scar=560),
    "bssfp": dict(lung=25, muscle=170, fat=520, liver=230, marrow=260, cortex=20,
                  blood=820, myo=190),
    "t2": dict(lung=15, muscle=180, fat=450, liver=170, marrow=240, cortex=20,
               blood=80, myo=330),
}


def _short_axis_shapes(heart: ShortAxisHeart, x, y, w) -> Dict[str, np.ndarray]:
  """Signed distances (mm) of the LV, myocardium and RV on every slice, and the polar
  quantities the image needs.

  Args:
    heart: the anatomy.
    x: [X, 1] in-plane positions (mm) along array axis 0.
    y: [1, Y] the same along array axis 1.
    w: [Z] slice depths (mm).
  """
  dx, dy = x - heart.center[0], y - heart.center[1]
  r = np.hypot(dx, dy)[..., None]
  theta = _wrap(np.arctan2(dy, dx) - heart.rv_angle)
  amplitude, angle = heart.ellipticity
  ellipse = 1.0 + amplitude * np.cos(2.0 * (theta - angle))
  g_endo, g_epi = ellipse.copy(), ellipse.copy()
  for k, a, phase in heart.endo_harmonics:
    g_endo += a * np.cos(k * theta + phase)
  for k, a, phase in heart.epi_harmonics:
    g_epi += a * np.cos(k * theta + phase)

  taper_endo = _taper(w, heart.lv_length)
  taper_epi = _taper(w, heart.lv_length + heart.apex_thickness)
  endo = (heart.endo_radius * taper_endo) * g_endo[..., None]
  epi = ((heart.endo_radius + heart.myo_thickness) * taper_epi) * g_epi[..., None]
  # Keep most of the wall's thickness wherever there is a cavity (towards the apex the
  # two ellipsoids would thin it).
  epi = np.maximum(epi, np.where(taper_endo > 0, endo + 0.8 * heart.myo_thickness, 0.0))
  depth = heart.rv_depth * _taper(w, heart.rv_length)
  profile = _crescent_profile(theta, heart.rv_half_angles)[..., None]
  rv_outer = epi + depth * profile
  d_lv = r - endo
  d_epi = r - epi
  return dict(
      r=r, theta=theta, endo=endo, epi=epi, rv_outer=rv_outer, profile=profile,
      depth=depth, lv=d_lv, myo=np.maximum(d_epi, -d_lv),
      rv=np.maximum(r - rv_outer, epi - r),
      heart=np.where(taper_epi > 0, np.minimum(d_epi, r - rv_outer), np.inf))


def _scar_distance(shapes, w, scar) -> np.ndarray:
  """Signed distance (mm, negative inside) of a myocardial sector: a scar
  (angle, half_width, transmurality, w_start, w_end) in `_short_axis_shapes`' frame."""
  scar_angle, half_width, transmurality, start, end = scar
  r, theta, endo, epi = shapes["r"], shapes["theta"], shapes["endo"], shapes["epi"]
  d_sector = (np.abs(_wrap(theta - scar_angle)) - half_width)[..., None] * r
  d_scar = np.maximum(np.maximum(shapes["myo"], d_sector),
                      r - (endo + transmurality * (epi - endo)))
  return np.where((w >= start) & (w <= end), d_scar, np.inf)


def _short_axis_frame(geometry: PhantomGeometry):
  """(x [X, 1], y [1, Y], w [Z]): voxel centres in the image's mm frame (float32)."""
  nx, ny, _ = geometry.shape
  sx, sy, _ = geometry.spacing
  x = ((np.arange(nx) - (nx - 1) / 2.0) * sx).astype(np.float32)[:, None]
  y = ((np.arange(ny) - (ny - 1) / 2.0) * sy).astype(np.float32)[None, :]
  return x, y, np.asarray(geometry.heart.slice_positions, np.float32)


def _render_short_axis(geometry: PhantomGeometry) -> Tuple[np.ndarray, np.ndarray]:
  """Draws an MS-CMRSeg short-axis stack slice-wise in the image's mm frame."""
  sx, sy, _ = geometry.spacing
  x, y, w = _short_axis_frame(geometry)
  shapes = _short_axis_shapes(geometry.heart, x, y, w)

  lv_value, myo_value, rv_value = datasets.MSCMR.label_values
  label = np.zeros(geometry.shape, np.uint16)
  label[shapes["rv"] < 0] = rv_value
  label[shapes["myo"] < 0] = myo_value
  label[shapes["lv"] < 0] = lv_value
  in_plane_cross = np.zeros((3, 3, 3), bool)
  in_plane_cross[:, 1, 1] = in_plane_cross[1, :, 1] = True
  rim = _enclose_lv(label, lv_value, myo_value, (), in_plane_cross)
  voxel = float(min(sx, sy))
  shapes["myo"] = np.where(rim, np.minimum(shapes["myo"], -voxel), shapes["myo"])
  return _short_axis_image(geometry, shapes, x, y, w), label


def _short_axis_image(geometry: PhantomGeometry, shapes, x, y, w) -> np.ndarray:
  """The MR magnitude image (int16) of a short-axis stack."""
  heart: ShortAxisHeart = geometry.heart
  rng = np.random.default_rng(geometry.render_seed)
  sx, sy, _ = geometry.spacing
  voxel = float(min(sx, sy))
  r, theta = shapes["r"], shapes["theta"]
  tissue = {name: value * rng.uniform(0.85, 1.15)
            for name, value in _SHORT_AXIS_TISSUES[geometry.modality].items()}
  values = np.zeros(geometry.shape, np.float32)  # Air.
  _paint_chest_short_axis(values, heart, x, y, w, tissue, voxel, rng)
  # Epicardial fat in the grooves, the thin RV free wall, then the cavities.
  fat_width = 1.0 + 3.0 * (0.5 + 0.5 * np.cos(2.0 * theta + rng.uniform(0, 6)))
  values = _blend(values, shapes["heart"] - fat_width[..., None], tissue["fat"], voxel)
  wall = (2.5 * np.clip(5.0 * shapes["profile"], 0.0, 1.0)
          * np.clip(shapes["depth"] / 3.0, 0.0, 1.0))
  values = _blend(values, np.maximum(r - (shapes["rv_outer"] + wall), shapes["epi"] - r),
                  tissue["myo"], voxel)
  values = _blend(values, shapes["rv"], tissue["blood"] * rng.uniform(0.88, 1.0), voxel)
  values = _blend(values, shapes["myo"], tissue["myo"], voxel)
  values = _blend(values, shapes["lv"], tissue["blood"], voxel)
  # Papillary muscles: myocardium-bright, labelled as blood pool like the release.
  papillary_band = (w > 0.2 * heart.lv_length) & (w < 0.7 * heart.lv_length)
  reach = 0.7 * heart.endo_radius * _taper(w, heart.lv_length)
  for papillary_angle in heart.papillary_angles:
    direction = heart.rv_angle + papillary_angle
    px = heart.center[0] + reach * math.cos(direction)
    py = heart.center[1] + reach * math.sin(direction)
    d_pap = np.hypot(x[..., None] - px, y[..., None] - py) - 0.18 * heart.endo_radius
    values = _blend(values, np.where(papillary_band, d_pap, np.inf), tissue["myo"], voxel)
  if heart.scar is not None:
    values = _blend(values, _scar_distance(shapes, w, heart.scar), tissue["scar"], voxel)

  # Texture (independent per slice), bias field and Rician noise of a magnitude image.
  texture = ndimage.gaussian_filter(rng.standard_normal(geometry.shape, np.float32),
                                    sigma=(3.0 / sx, 3.0 / sy, 0.0))
  texture /= max(float(texture.std()), 1e-6)
  values *= 1.0 + rng.uniform(0.06, 0.12) * texture
  values *= _bias_field(_sample_bias_waves(rng), x[..., None], y[..., None], w)
  gain = rng.uniform(0.5, 2.0)
  sigma = rng.uniform(0.015, 0.05) * max(tissue["blood"], tissue["myo"])
  image = _rician(values, sigma, rng) * gain
  return np.clip(np.rint(image), 0, 32767).astype(np.int16)


def _paint_chest_short_axis(values, heart: ShortAxisHeart, x, y, w, tissue, voxel, rng):
  """Paints chest wall, lungs, spine, aorta, liver and atria into `values` (in place)."""
  right = np.array([math.cos(heart.rv_angle), math.sin(heart.rv_angle)])
  anterior = np.array([math.cos(heart.rv_angle + math.pi / 2),
                       math.sin(heart.rv_angle + math.pi / 2)])
  lv = np.asarray(heart.center)
  body_center = lv - anterior * rng.uniform(30, 50) + right * rng.uniform(15, 35)
  body_semi = (rng.uniform(140, 170), rng.uniform(95, 120))
  body_angle = math.atan2(right[1], right[0])
  d_body = _ellipse_sdf(x, y, body_center, body_semi, body_angle)[..., None]
  values[:] = _blend(values, d_body, tissue["fat"], voxel)
  values[:] = _blend(values, d_body + rng.uniform(8, 18), tissue["muscle"], voxel)
  for side in (1.0, -1.0):
    lung_center = body_center + side * right * rng.uniform(65, 80)
    d_lung = _ellipse_sdf(x, y, lung_center, (rng.uniform(48, 60), rng.uniform(65, 80)),
                          body_angle)[..., None]
    values[:] = _blend(values, d_lung, tissue["lung"], voxel)
  spine = body_center - anterior * (body_semi[1] - 30)
  d_spine = (np.hypot(x - spine[0], y - spine[1]) - 16.0)[..., None]
  values[:] = _blend(values, d_spine, tissue["cortex"], voxel)
  values[:] = _blend(values, d_spine + 3.0, tissue["marrow"], voxel)
  aorta = body_center - anterior * (body_semi[1] - 58) - right * 22
  d_aorta = (np.hypot(x - aorta[0], y - aorta[1]) - 11.0)[..., None]
  values[:] = _blend(values, d_aorta, tissue["blood"], voxel)
  # Liver towards the apex (below the diaphragm); atria and aortic root above the base.
  liver_center = lv + right * 60 - anterior * 10
  liver_growth = np.clip((w - 0.45 * heart.lv_length) / 40.0, 0.0, 1.0)
  d_liver = _ellipse_sdf(x, y, liver_center, (75.0, 60.0), body_angle)[..., None]
  values[:] = _blend(values, np.where(liver_growth > 0, d_liver + 40 * (1 - liver_growth),
                                      np.inf), tissue["liver"], voxel)
  for offset, radius in ((-anterior * 18, 20.0), (right * 12 + anterior * 8, 13.0)):
    c = lv + offset
    d_pool = (np.hypot(x - c[0], y - c[1]) - radius)[..., None]
    values[:] = _blend(values, np.where(w < 0, d_pool, np.inf), tissue["blood"], voxel)
