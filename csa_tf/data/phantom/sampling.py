"""Random draws of a phantom volume's voxel grid and anatomy (`sample_geometry`).

Random streams are keyed by (seed, dataset, patient, modality), so a volume does not
depend on how many patients or which modalities are generated; scale changes only the
voxel grid, never the anatomy in mm.
"""
import math
from typing import Sequence, Tuple

import numpy as np

from csa_tf.configs import datasets
from csa_tf.errors import CsaInputError, param
from csa_tf.data.phantom.anatomy import (
    ENDO_RADIUS_RANGE, GRID_RANGES, MYO_THICKNESS_RANGE, Ellipsoid, PhantomGeometry,
    ShortAxisHeart, Tube, WholeHeart, _heart_world_bounds)


# Random-stream keys of each layout's draws (MyoPS: its scars and appearance).
_DATASET_KEYS = {"mscmr": 1, "mmwhs": 2, "myops": 3}
_RENDER_STREAM = 100  # Random-stream offset of a volume's appearance and noise.
_MIN_SIZE = 16  # Smallest in-plane matrix at tiny scales.
_MIN_SLICES = 8  # Smallest MM-WHS slice count at tiny scales.


def _rng(seed: int, *keys: int) -> np.random.Generator:
  """An independent random stream per (seed, dataset, patient, purpose) key."""
  return np.random.default_rng([seed, *keys])


def _scaled_size(size: int, spacing: float, scale: float,
                 minimum: int) -> Tuple[int, float]:
  """Shrinks a grid axis by `scale`, keeping its extent in mm."""
  scaled = max(minimum, int(round(size * scale)))
  if scaled >= size:
    return size, float(spacing)
  return scaled, size * spacing / scaled


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
  """Rotation matrix about `axis` by `angle` radians (Rodrigues)."""
  axis = np.asarray(axis, np.float64) / np.linalg.norm(axis)
  cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]],
                    [-axis[1], axis[0], 0]])
  return np.eye(3) + math.sin(angle) * cross + (1 - math.cos(angle)) * cross @ cross


def _random_tilt(rng: np.random.Generator, max_degrees: float) -> np.ndarray:
  """A rotation by up to max_degrees about a random axis."""
  return _rotation(rng.normal(size=3), math.radians(rng.uniform(0, max_degrees)))


def _grid_affine(directions: np.ndarray, spacing: Sequence[float], shape: Sequence[int],
                 center_world: np.ndarray) -> np.ndarray:
  """Affine whose array axes point along `directions` (columns) and whose centre voxel
  lies at center_world."""
  affine = np.eye(4)
  affine[:3, :3] = directions * np.asarray(spacing, np.float64)[None, :]
  affine[:3, 3] = center_world - affine[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)
  return affine


def _harmonics(rng: np.random.Generator, ks: Sequence[int],
               amplitude: float) -> Tuple[Tuple[int, float, float], ...]:
  """Random (k, amplitude, phase) boundary wobble terms."""
  return tuple((int(k), float(rng.uniform(0.3, 1.0) * amplitude),
                float(rng.uniform(-math.pi, math.pi))) for k in ks)


def _sample_short_axis(modality: str, patient: int, seed: int,
                       scale: float) -> PhantomGeometry:
  """Draws one MS-CMRSeg volume's grid and anatomy."""
  dataset_key = _DATASET_KEYS["mscmr"]
  modality_index = datasets.MSCMR.modalities.index(modality)
  # One base heart per patient; each sequence jitters it (cardiac phase, breath-hold).
  base = _rng(seed, dataset_key, patient, 0)
  base_radius = base.uniform(21.0, 27.0)
  base_thickness = base.uniform(6.5, 10.5)
  base_length = base.uniform(70.0, 95.0)
  base_rv = base.uniform(0.85, 1.15)
  rng = _rng(seed, dataset_key, patient, 1 + modality_index)
  grid = GRID_RANGES["mscmr"][modality]

  endo_radius = float(np.clip(base_radius * rng.uniform(0.92, 1.08), *ENDO_RADIUS_RANGE))
  thickness = float(np.clip(base_thickness * rng.uniform(0.9, 1.1), *MYO_THICKNESS_RANGE))
  lv_length = float(base_length * rng.uniform(0.95, 1.05))
  apex_thickness = thickness * rng.uniform(0.7, 0.9)
  epi_length = lv_length + apex_thickness

  num_slices = int(rng.integers(grid.slices[0], grid.slices[1] + 1))
  low, high = grid.slice_spacing
  if modality == "lge":
    # ~5 mm slices from about the base down; short stacks may miss the apex.
    slice_spacing = rng.uniform(low, high)
    first = rng.uniform(-1.2, 0.3) * slice_spacing
  elif modality == "bssfp":
    # Base to apex, with a slice or two beyond the ends.
    span = epi_length + rng.uniform(0.0, 8.0)
    slice_spacing = float(np.clip(span / (num_slices - 1), low, high))
    extra = (num_slices - 1) * slice_spacing - epi_length
    if extra > slice_spacing:  # Share a long stack's overhang between both ends.
      first = -rng.uniform(0.3, 0.7) * extra
    else:
      first = rng.uniform(-1.0, 0.2) * slice_spacing
  else:
    # A few thick slices around the mid-ventricle.
    slice_spacing = rng.uniform(low, high)
    if num_slices > 1 and (num_slices - 1) * slice_spacing > 0.9 * epi_length:
      slice_spacing = max(low, 0.9 * epi_length / (num_slices - 1))
    middle = rng.uniform(0.35, 0.55) * lv_length
    first = middle - (num_slices - 1) / 2.0 * slice_spacing
  positions = tuple(float(first + k * slice_spacing) for k in range(num_slices))

  scar = None
  if modality == "lge" and rng.uniform() < 0.7:
    start = rng.uniform(0.0, 0.5) * lv_length
    scar = (float(rng.uniform(-math.pi, math.pi)), float(rng.uniform(0.3, 0.9)),
            float(rng.uniform(0.3, 1.0)), float(start),
            float(start + rng.uniform(0.3, 0.6) * lv_length))
  center = np.clip(rng.normal(0.0, 8.0, 2), -20.0, 20.0)
  heart = ShortAxisHeart(
      center=(float(center[0]), float(center[1])),
      rv_angle=float(math.pi + rng.uniform(-0.4, 0.4)),
      endo_radius=endo_radius,
      myo_thickness=thickness,
      lv_length=lv_length,
      apex_thickness=float(apex_thickness),
      rv_depth=float(base_rv * rng.uniform(18.0, 26.0)),
      rv_length=float(lv_length * rng.uniform(0.7, 0.88)),
      rv_half_angles=(float(rng.uniform(1.2, 1.7)), float(rng.uniform(1.0, 1.5))),
      ellipticity=(float(rng.uniform(0.0, 0.08)), float(rng.uniform(-math.pi, math.pi))),
      endo_harmonics=_harmonics(rng, (3, 5, 7, 9), 0.03),
      epi_harmonics=_harmonics(rng, (3, 4), 0.02),
      papillary_angles=(float(math.pi + rng.uniform(0.5, 0.9)),
                        float(math.pi - rng.uniform(0.5, 0.9))),
      scar=scar,
      slice_positions=positions,
  )

  size_x = int(rng.integers(grid.size[0], grid.size[1] + 1))
  size_y = size_x if rng.uniform() < 0.7 else int(rng.integers(grid.size[0],
                                                               grid.size[1] + 1))
  pixel = rng.uniform(*grid.spacing)
  nx, sx = _scaled_size(size_x, pixel, scale, _MIN_SIZE)
  ny, sy = _scaled_size(size_y, pixel, scale, _MIN_SIZE)
  spacing = (sx, sy, float(slice_spacing))
  shape = (nx, ny, num_slices)
  # The grid centre is the image frame's origin; depth w increases with the slice index.
  directions = _random_tilt(rng, 8.0)
  affine = _grid_affine(directions, spacing, shape, rng.normal(0.0, 20.0, 3))
  render_seed = int(_rng(seed, dataset_key, patient,
                         _RENDER_STREAM + modality_index).integers(2**62))
  return PhantomGeometry("mscmr", modality, patient, shape,
                         tuple(float(s) for s in spacing), affine, heart, render_seed)


# World (RAS+) directions: x grows towards the patient's right, y anterior, z superior.
_RIGHT = np.array([1.0, 0.0, 0.0])
_ANTERIOR = np.array([0.0, 1.0, 0.0])
_SUPERIOR = np.array([0.0, 0.0, 1.0])

# How MR volumes are stored: sagittal or coronal stacks (axis 2 across slices).
_MR_AXCODES = (("P", "S", "R"), ("A", "I", "L"), ("R", "S", "A"), ("L", "I", "P"))
_CT_AXCODES = ("L", "P", "S")


def _axcodes_directions(axcodes: Sequence[str]) -> np.ndarray:
  """3x3 matrix whose column i is the world direction array axis i increases towards."""
  unit = {"R": _RIGHT, "L": -_RIGHT, "A": _ANTERIOR, "P": -_ANTERIOR,
          "S": _SUPERIOR, "I": -_SUPERIOR}
  return np.stack([unit[code] for code in axcodes], axis=1)


def _bezier(p0, p1, p2, num_points: int = 7) -> np.ndarray:
  """Points along a quadratic Bezier curve (a vessel's centre line)."""
  t = np.linspace(0.0, 1.0, num_points)[:, None]
  return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2


def _sample_whole_heart(modality: str, patient: int, seed: int,
                        scale: float) -> PhantomGeometry:
  """Draws one MM-WHS volume's anatomy (world mm) and voxel grid."""
  dataset_key = _DATASET_KEYS["mmwhs"]
  modality_index = datasets.MMWHS.modalities.index(modality)
  rng = _rng(seed, dataset_key, patient, 1 + modality_index)

  # Heart frame: the apex points left, anterior and inferior; the RV lies anterior-right.
  w_axis = np.array([-0.6, 0.6, -0.53])
  w_axis /= np.linalg.norm(w_axis)
  u_axis = np.array([0.707, 0.707, 0.0])
  u_axis -= u_axis.dot(w_axis) * w_axis
  u_axis /= np.linalg.norm(u_axis)
  axes = _random_tilt(rng, 12.0) @ np.stack(
      [u_axis, np.cross(w_axis, u_axis), w_axis], axis=1)
  origin = rng.uniform(-40.0, 40.0, 3)

  def to_local(world_point):
    return axes.T @ (np.asarray(world_point) - origin)

  def to_world(local_point):
    return origin + axes @ np.asarray(local_point)

  radius = rng.uniform(20.0, 28.0)
  ellipticity = rng.uniform(0.0, 0.08)
  lv_radii = (radius * (1 + ellipticity), radius * (1 - ellipticity))
  lv_length = rng.uniform(65.0, 90.0)
  thickness = rng.uniform(8.0, 12.0)
  rv_depth = rng.uniform(20.0, 30.0)
  rv_top = rng.uniform(4.0, 10.0)

  # Atria above the base plane (w < 0): the LA over the mitral valve, behind the aortic
  # root (+v is posterior here); the RA to its right, over the RV inflow.
  la_semi = rng.uniform([24, 18, 18], [32, 24, 24])
  la_center = (-0.3 * radius + rng.uniform(-4, 4), 0.3 * radius + rng.uniform(-3, 3),
               -0.7 * la_semi[2])
  ra_semi = rng.uniform([20, 20, 24], [27, 26, 32])
  ra_center = (radius + thickness + 0.4 * rv_depth + rng.uniform(-3, 5),
               0.15 * radius + rng.uniform(-3, 3), -0.65 * ra_semi[2])
  # Aortic root: anterior-right on the LV base, rising, then arching back.
  aa_start = to_world((0.3 * radius, -0.25 * radius, 2.0))
  aa_mid = aa_start + _SUPERIOR * rng.uniform(30, 40) + _RIGHT * rng.uniform(4, 10)
  aa_end = aa_mid + _SUPERIOR * rng.uniform(18, 26) - _ANTERIOR * rng.uniform(10, 20)
  # Pulmonary trunk: out of the RV outflow, up, back and to the left.
  pa_start = to_world((radius + thickness + 0.5 * rv_depth, -0.5 * radius, -rv_top + 3))
  pa_mid = pa_start + _SUPERIOR * rng.uniform(20, 28) - _RIGHT * rng.uniform(2, 8)
  pa_end = pa_mid - _ANTERIOR * rng.uniform(20, 30) - _RIGHT * rng.uniform(10, 18)

  def tube(p0, p1, p2, tube_radius):
    points = [tuple(float(c) for c in to_local(p)) for p in _bezier(p0, p1, p2)]
    return Tube(tuple(points), float(tube_radius))

  heart = WholeHeart(
      origin=tuple(float(c) for c in origin),
      axes=tuple(tuple(float(c) for c in row) for row in axes),
      lv_radii=(float(lv_radii[0]), float(lv_radii[1])),
      lv_length=float(lv_length),
      myo_thickness=float(thickness),
      apex_thickness=float(thickness * rng.uniform(0.6, 0.9)),
      rv_depth=float(rv_depth),
      rv_length=float(lv_length * rng.uniform(0.7, 0.85)),
      rv_half_angles=(float(rng.uniform(1.2, 1.7)), float(rng.uniform(1.0, 1.5))),
      rv_top=float(rv_top),
      la=Ellipsoid(tuple(float(c) for c in la_center), tuple(float(s) for s in la_semi)),
      ra=Ellipsoid(tuple(float(c) for c in ra_center), tuple(float(s) for s in ra_semi)),
      aa=tube(aa_start, aa_mid, aa_end, rng.uniform(12.0, 16.0)),
      pa=tube(pa_start, pa_mid, pa_end, rng.uniform(11.0, 14.0)),
  )

  grid = GRID_RANGES["mmwhs"][modality]
  size = int(rng.integers(grid.size[0], grid.size[1] + 1))
  num_slices = int(rng.integers(grid.slices[0], grid.slices[1] + 1))
  if modality == "ct":
    # Fewer slices come with thicker ones, so every scan spans most of the heart.
    pixel = rng.uniform(*grid.spacing)
    slice_spacing = float(np.clip(rng.uniform(130, 175) / num_slices, *grid.slice_spacing))
    directions = _axcodes_directions(_CT_AXCODES)
  else:
    pixel = float(np.clip(rng.uniform(280, 420) / size, *grid.spacing))
    slice_spacing = float(np.clip(rng.uniform(170, 220) / num_slices,
                                  *grid.slice_spacing))
    axcodes = _MR_AXCODES[int(rng.integers(len(_MR_AXCODES)))]
    directions = _random_tilt(rng, 8.0) @ _axcodes_directions(axcodes)
  nx, sx = _scaled_size(size, pixel, scale, _MIN_SIZE)
  ny, sy = _scaled_size(size, pixel, scale, _MIN_SIZE)
  nz, sz = _scaled_size(num_slices, slice_spacing, scale, _MIN_SLICES)
  low, high = _heart_world_bounds(heart)
  center_world = (low + high) / 2.0 + np.clip(rng.normal(0.0, 4.0, 3), -8.0, 8.0)
  affine = _grid_affine(directions, (sx, sy, sz), (nx, ny, nz), center_world)
  render_seed = int(_rng(seed, dataset_key, patient,
                         _RENDER_STREAM + modality_index).integers(2**62))
  return PhantomGeometry("mmwhs", modality, patient, (nx, ny, nz),
                         (float(sx), float(sy), float(sz)), affine, heart, render_seed)


def sample_geometry(dataset: str, patient: int, modality: str, *, seed: int = 0,
                    scale: float = 1.0) -> PhantomGeometry:
  """Draws one volume's voxel grid and anatomy without rendering it (cheap).

  Args:
    dataset: "mscmr" or "mmwhs".
    patient: the number in the file name (MS-CMRSeg 1.., MM-WHS 1001..).
    modality: one of the dataset's modality keys.
    seed: the phantom set's seed.
    scale: in-plane (and, for MM-WHS, slice) grid shrink factor in (0, 1].

  Returns:
    The geometry that `render` draws and `generate_phantoms` writes.

  Raises:
    CsaInputError: unknown dataset or modality, or scale outside (0, 1].
  """
  spec = datasets.get_spec(dataset)
  _check_scale(scale)
  if modality not in spec.modalities:
    raise CsaInputError(f"unknown {dataset} modality {modality!r}; expected one of "
                        f"{list(spec.modalities)}")
  if spec is datasets.MSCMR:
    return _sample_short_axis(modality, patient, seed, scale)
  return _sample_whole_heart(modality, patient, seed, scale)


def _check_scale(scale) -> None:
  """Raises CsaInputError unless 0 < scale <= 1."""
  if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (
      math.isfinite(scale) and 0 < scale <= 1):
    raise CsaInputError(f"{param('scale', scale)}: must be in (0, 1]")
