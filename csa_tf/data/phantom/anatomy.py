"""What a phantom volume is: its voxel grid and its anatomy (no randomness, no drawing).

The dataclasses here are the interface between sampling (`sampling.py`, which draws them)
and rendering (`short_axis.py`, `whole_heart.py`, which paint them).
"""
import dataclasses
import math
from typing import NamedTuple, Optional, Tuple, Union

import numpy as np


@dataclasses.dataclass(frozen=True)
class GridRange:
  """Typical voxel grid of one modality at scale 1 (REFERENCE.md section 5).

  Attributes:
    size: (min, max) in-plane matrix size, pixels.
    spacing: (min, max) in-plane pixel spacing, mm.
    slices: (min, max) number of slices.
    slice_spacing: (min, max) slice spacing, mm.
  """
  size: Tuple[int, int]
  spacing: Tuple[float, float]
  slices: Tuple[int, int]
  slice_spacing: Tuple[float, float]


GRID_RANGES = {
    "mscmr": {
        "lge": GridRange((400, 512), (0.70, 0.80), (12, 17), (4.6, 5.4)),
        "bssfp": GridRange((240, 320), (1.15, 1.35), (8, 13), (8.0, 13.0)),
        "t2": GridRange((250, 290), (1.25, 1.45), (3, 6), (12.0, 20.0)),
    },
    "mmwhs": {
        "ct": GridRange((512, 512), (0.28, 0.59), (177, 363), (0.45, 0.62)),
        "mr": GridRange((256, 512), (0.80, 1.20), (100, 160), (1.0, 2.0)),
    },
}

# MS-CMRSeg heart sizes (mm): LV blood-pool radius and myocardial thickness.
ENDO_RADIUS_RANGE = (20.0, 28.0)
MYO_THICKNESS_RANGE = (6.0, 11.0)


@dataclasses.dataclass(frozen=True)
class ShortAxisHeart:
  """MS-CMRSeg anatomy in the image's own millimetre frame.

  In-plane positions are mm from the centre of the voxel grid along array axes 0 and 1;
  depth w runs along the long axis, mm from the LV base plane (w = 0) towards the apex.
  Angles are in-plane and relative to `rv_angle` unless said otherwise.

  Attributes:
    center: (x, y) of the LV long axis.
    rv_angle: direction from the LV axis towards the RV, radians from array axis 0.
    endo_radius: LV blood-pool radius at the base, mm.
    myo_thickness: LV wall thickness, mm.
    lv_length: base plane to the endocardial apex, mm.
    apex_thickness: myocardium beyond the endocardial apex, mm.
    rv_depth: RV cavity thickness next to the septum at the base, mm.
    rv_length: depth at which the RV ends, mm.
    rv_half_angles: the RV crescent's angular extent on either side, radians.
    ellipticity: (amplitude, angle) of the LV cross-section's ellipticity.
    endo_harmonics: ((k, amplitude, phase), ...) wobble of the endocardium.
    epi_harmonics: the same for the epicardium.
    papillary_angles: directions of the two papillary muscles (image only; labelled LV).
    scar: None, or (angle, half_width, transmurality, w_start, w_end) of an LGE scar.
    slice_positions: w of each slice, mm.
  """
  center: Tuple[float, float]
  rv_angle: float
  endo_radius: float
  myo_thickness: float
  lv_length: float
  apex_thickness: float
  rv_depth: float
  rv_length: float
  rv_half_angles: Tuple[float, float]
  ellipticity: Tuple[float, float]
  endo_harmonics: Tuple[Tuple[int, float, float], ...]
  epi_harmonics: Tuple[Tuple[int, float, float], ...]
  papillary_angles: Tuple[float, float]
  scar: Optional[Tuple[float, float, float, float, float]]
  slice_positions: Tuple[float, ...]


class Ellipsoid(NamedTuple):
  """An ellipsoid in the heart frame: centre (u, v, w) and semi-axes along u, v, w, mm."""
  center: Tuple[float, float, float]
  semi_axes: Tuple[float, float, float]


class Tube(NamedTuple):
  """A vessel: a polyline centre line in the heart frame and its radius, mm."""
  points: Tuple[Tuple[float, float, float], ...]
  radius: float


@dataclasses.dataclass(frozen=True)
class WholeHeart:
  """MM-WHS anatomy in world (RAS) millimetres.

  Structures are given in the heart frame: u points towards the RV, w along the LV long
  axis from the base (mitral) plane towards the apex, v = w x u; its origin is the
  centre of the LV base.

  Attributes:
    origin: world position of the heart frame's origin.
    axes: world directions of u, v and w (the columns of a 3x3 rotation).
    lv_radii: LV cavity semi-axes along u and v at the base, mm.
    lv_length: base plane to the endocardial apex, mm.
    myo_thickness: LV wall thickness, mm.
    apex_thickness: myocardium beyond the endocardial apex, mm.
    rv_depth: RV cavity thickness next to the septum at the base, mm.
    rv_length: depth at which the RV ends, mm.
    rv_half_angles: the RV crescent's angular extent on either side of +u, radians.
    rv_top: how far the RV reaches above the base plane, mm.
    la: left atrium.
    ra: right atrium.
    aa: ascending aorta.
    pa: pulmonary artery.
  """
  origin: Tuple[float, float, float]
  axes: Tuple[Tuple[float, float, float], ...]
  lv_radii: Tuple[float, float]
  lv_length: float
  myo_thickness: float
  apex_thickness: float
  rv_depth: float
  rv_length: float
  rv_half_angles: Tuple[float, float]
  rv_top: float
  la: Ellipsoid
  ra: Ellipsoid
  aa: Tube
  pa: Tube

  @property
  def lv_cavity_centroid(self) -> np.ndarray:
    """World position of the LV cavity's centroid (a half ellipsoid: 3/8 of its depth)."""
    return (np.asarray(self.origin)
            + np.asarray(self.axes)[:, 2] * (3.0 / 8.0) * self.lv_length)


@dataclasses.dataclass(frozen=True)
class PhantomGeometry:
  """Where one phantom volume's voxels lie and which anatomy they show.

  Attributes:
    dataset: "mscmr" or "mmwhs".
    modality: a modality key of the dataset (e.g. "lge", "ct").
    patient: the number in the file name (MS-CMRSeg N, MM-WHS 1001...).
    shape: array shape (x, y, z).
    spacing: voxel size along each array axis, mm.
    affine: 4x4 voxel-to-world (RAS mm) matrix.
    heart: the anatomy (ShortAxisHeart for mscmr, WholeHeart for mmwhs).
    render_seed: seed of the volume's appearance and noise.
  """
  dataset: str
  modality: str
  patient: int
  shape: Tuple[int, int, int]
  spacing: Tuple[float, float, float]
  affine: np.ndarray
  heart: Union[ShortAxisHeart, WholeHeart]
  render_seed: int


def _heart_world_bounds(heart: WholeHeart) -> Tuple[np.ndarray, np.ndarray]:
  """A world box (mm) holding every heart structure."""
  origin = np.asarray(heart.origin)
  axes = np.asarray(heart.axes)
  spheres = []
  lv_extent = heart.lv_length + heart.apex_thickness
  side = max(heart.lv_radii) + heart.myo_thickness + heart.rv_depth
  spheres.append((origin + axes[:, 2] * lv_extent / 2,
                  math.hypot(side, lv_extent / 2) + heart.rv_top))
  for ellipsoid in (heart.la, heart.ra):
    spheres.append((origin + axes @ np.asarray(ellipsoid.center), max(ellipsoid.semi_axes)))
  for tube in (heart.aa, heart.pa):
    for point in tube.points:
      spheres.append((origin + axes @ np.asarray(point), tube.radius))
  low = np.min([c - r for c, r in spheres], axis=0)
  high = np.max([c + r for c, r in spheres], axis=0)
  return low, high
