r"""Synthetic cardiac phantoms in the MS-CMRSeg 2019 and MM-WHS 2017 release layouts.

  python -m data_prep.phantom --dataset=mscmr --output_dir=DIR [--num_patients=45] \
      [--seed=0] [--scale=1.0] [--modalities=lge,bssfp,t2]
  python -m data_prep.phantom --dataset=mmwhs --output_dir=DIR [--num_patients=20] \
      [--seed=0] [--scale=1.0] [--modalities=ct,mr]

The real datasets cannot be downloaded here, so the demo and the tests use phantoms that
the project draws itself: NIfTI volumes with the releases' file names, folders, label
values and typical voxel grids (REFERENCE.md section 5).

  mscmr: DIR/images/patientN_{C0,LGE,T2}.nii.gz and
         DIR/labels/{C0,LGE,T2}/patientN_{C0,LGE,T2}_manual.nii.gz (N = 1..num_patients);
         short-axis stacks along array axis 2; labels 500 LV, 200 myo, 600 RV.
  mmwhs: DIR/{ct,mr}_train/{ct,mr}_train_NNNN_{image,label}.nii.gz (NNNN = 1001..);
         3D labels 205, 420, 500, 550, 600, 820, 850 (and a few stray 421 in
         mr_train_1010, as in the release).

How the phantoms are made:
- Each (patient, modality) volume gets its own anatomy, pose, grid and appearance: the
  data are unpaired, so one patient's LGE is not its bSSFP resampled (MS-CMRSeg volumes
  of one patient share a base heart size, jittered per sequence like a change of cardiac
  phase; MM-WHS CT and MR patients are different people, as in the release).
- Random draws are keyed by (seed, dataset, patient, modality), so a volume does not
  depend on how many patients or which modalities are generated, and its anatomy (in mm)
  does not depend on `scale`: only the voxel grid does.
- MS-CMRSeg anatomy is drawn slice by slice in the image's own millimetre frame (its
  affine is the grid spacing with a small oblique tilt).
- MM-WHS anatomy is drawn in world (RAS) millimetres and sampled at each voxel's world
  position through the volume's affine: CT is stored axial (LPS), MR sagittal or coronal
  with a small oblique tilt, so readers must take the orientation from the header.
- Images: tissue intensities blended with one-voxel partial volume, a smooth texture,
  a multiplicative bias field (MR), Rician (MR) or Gaussian (CT) noise; stored as int16.
  Labels are uint16. Every folder written carries a `csa_phantom.json` marker.
"""
import dataclasses
import functools
import json
import math
import os
import shutil
import tempfile
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import nibabel as nib
import numpy as np
from scipy import ndimage

from csa_tf.configs import datasets
from csa_tf.errors import CsaInputError, param


MARKER_NAME = "csa_phantom.json"
MAX_PATIENTS = 999
# The releases' patient counts, the CLI's default --num_patients.
RELEASE_PATIENTS = {"mscmr": 45, "mmwhs": 20}
# MM-WHS' release has a few voxels labelled 421 (read as 420) in this MR label.
STRAY_421_PATIENT = 1010

_DATASET_KEYS = {"mscmr": 1, "mmwhs": 2}
_RENDER_STREAM = 100  # Random-stream offset of a volume's appearance and noise.
_MIN_SIZE = 16  # Smallest in-plane matrix at tiny scales.
_MIN_SLICES = 8  # Smallest MM-WHS slice count at tiny scales.
_SLAB_VOXELS = 2_000_000  # MM-WHS volumes are drawn in slabs of about this many voxels.


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


def render(geometry: PhantomGeometry) -> Tuple[np.ndarray, np.ndarray]:
  """Draws a geometry's image (int16) and label (uint16) arrays."""
  if geometry.dataset == "mscmr":
    return _render_short_axis(geometry)
  return _render_whole_heart(geometry)


# ---------------------------------------------------------------------------------------
# Shapes as approximate signed distances (mm, negative inside).


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


# ---------------------------------------------------------------------------------------
# MS-CMRSeg: short-axis stacks.

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


def _render_short_axis(geometry: PhantomGeometry) -> Tuple[np.ndarray, np.ndarray]:
  """Draws an MS-CMRSeg short-axis stack slice-wise in the image's mm frame."""
  heart: ShortAxisHeart = geometry.heart
  nx, ny, _ = geometry.shape
  sx, sy, _ = geometry.spacing
  x = ((np.arange(nx) - (nx - 1) / 2.0) * sx).astype(np.float32)[:, None]
  y = ((np.arange(ny) - (ny - 1) / 2.0) * sy).astype(np.float32)[None, :]
  w = np.asarray(heart.slice_positions, np.float32)
  shapes = _short_axis_shapes(heart, x, y, w)

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
    scar_angle, half_width, transmurality, start, end = heart.scar
    endo, epi = shapes["endo"], shapes["epi"]
    d_sector = (np.abs(_wrap(theta - scar_angle)) - half_width)[..., None] * r
    d_scar = np.maximum(np.maximum(shapes["myo"], d_sector),
                        r - (endo + transmurality * (epi - endo)))
    d_scar = np.where((w >= start) & (w <= end), d_scar, np.inf)
    values = _blend(values, d_scar, tissue["scar"], voxel)

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


def _sample_bias_waves(rng) -> List[Tuple[np.ndarray, float, float]]:
  """A smooth MR bias field: three long plane waves (wave vector /mm, amplitude, phase)."""
  waves = []
  for _ in range(3):
    direction = rng.normal(size=3)
    wave_vector = direction * 2 * math.pi / (np.linalg.norm(direction)
                                             * rng.uniform(250, 500))
    waves.append((wave_vector.astype(np.float32), rng.uniform(0.05, 0.12),
                  rng.uniform(0, 2 * math.pi)))
  return waves


def _bias_field(waves, x, y, z) -> np.ndarray:
  """The multiplicative bias field of `waves` at positions x, y, z (mm)."""
  field = np.zeros(np.broadcast_shapes(np.shape(x), np.shape(y), np.shape(z)), np.float32)
  for k, amplitude, phase in waves:
    field += np.float32(amplitude) * np.cos(k[0] * x + k[1] * y + k[2] * z + phase)
  return np.exp(field)


def _rician(values: np.ndarray, sigma: float, rng) -> np.ndarray:
  """Magnitude of the signal plus complex Gaussian noise."""
  real = values + sigma * rng.standard_normal(values.shape, np.float32)
  imag = sigma * rng.standard_normal(values.shape, np.float32)
  return np.sqrt(real * real + imag * imag)


# ---------------------------------------------------------------------------------------
# MM-WHS: whole-heart volumes sampled through their affines.

_WHOLE_HEART_TISSUES = {
    "ct": dict(air=-1000, lung=-850, fat=-100, muscle=45, liver=65, marrow=250,
               cortex=800, blood=320, myo=110),
    "mr": dict(air=0, lung=30, fat=480, muscle=150, liver=190, marrow=260, cortex=15,
               blood=600, myo=160),
}


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


# ---------------------------------------------------------------------------------------
# Writing a phantom set.


def _check_scale(scale) -> None:
  """Raises CsaInputError unless 0 < scale <= 1."""
  if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (
      math.isfinite(scale) and 0 < scale <= 1):
    raise CsaInputError(f"{param('scale', scale)}: must be in (0, 1]")


def _parse_modalities(spec: datasets.DatasetSpec, modalities) -> List[str]:
  """Validates modality keys (a list or a comma-separated string; C0 means bssfp)."""
  if modalities is None:
    return list(spec.modalities)
  if isinstance(modalities, str):
    modalities = modalities.split(",")
  aliases = {tag.lower(): key for key, tag in datasets.MSCMR_SEQUENCE_TAGS.items()
             } if spec is datasets.MSCMR else {}
  parsed = []
  for item in modalities:
    key = aliases.get(str(item).strip().lower(), str(item).strip().lower())
    if key not in spec.modalities:
      raise CsaInputError(f"{param('modalities')}: unknown {spec.name} modality {item!r}; "
                          "expected "
                          f"some of {list(spec.modalities)}")
    parsed.append(key)
  if not parsed or len(set(parsed)) != len(parsed):
    raise CsaInputError(f"{param('modalities', ','.join(map(str, modalities)))}: list each "
                        "modality once")
  return [m for m in spec.modalities if m in parsed]


def _relative_paths(dataset: str, patient: int, modality: str) -> Tuple[str, str]:
  """(image, label) paths of one volume inside the output folder, as in the release."""
  if dataset == "mscmr":
    tag = datasets.MSCMR_SEQUENCE_TAGS[modality]
    return (os.path.join("images", f"patient{patient}_{tag}.nii.gz"),
            os.path.join("labels", tag, f"patient{patient}_{tag}_manual.nii.gz"))
  stem = os.path.join(f"{modality}_train", f"{modality}_train_{patient}")
  return stem + "_image.nii.gz", stem + "_label.nii.gz"


def _write_nifti(path: str, data: np.ndarray, geometry: PhantomGeometry) -> None:
  """Writes one volume with the geometry's affine and spacing (folders created)."""
  img = nib.Nifti1Image(data, geometry.affine)
  img.set_data_dtype(data.dtype)
  img.header.set_zooms(geometry.spacing)
  img.header.set_xyzt_units("mm")
  img.header["descrip"] = b"csa_tf synthetic phantom (data_prep.phantom)"
  os.makedirs(os.path.dirname(path), exist_ok=True)
  nib.save(img, path)


def _read_marker(folder: str) -> Optional[dict]:
  """The folder's phantom marker, or None when it has no readable one."""
  try:
    with open(os.path.join(folder, MARKER_NAME), encoding="utf-8") as f:
      marker = json.load(f)
  except (OSError, ValueError):
    return None
  return marker if isinstance(marker, dict) else None


def _check_output_dir(output_dir: str, dataset: str) -> None:
  """Refuses to replace anything but an empty folder or a phantom of the same dataset."""
  if not os.path.exists(output_dir):
    return
  if not os.path.isdir(output_dir):
    raise CsaInputError(f"{param('output_dir', output_dir)}: exists and is not a folder")
  if not os.listdir(output_dir):
    return
  marker = _read_marker(output_dir)
  if marker is None:
    raise CsaInputError(
        f"{param('output_dir', output_dir)}: not empty and not a phantom folder (no "
        f"{MARKER_NAME});"
        " refusing to overwrite it, choose a new or empty folder")
  if marker.get("dataset") != dataset:
    raise CsaInputError(
        f"{param('output_dir', output_dir)}: holds a {marker.get('dataset')} phantom; "
        "refusing to "
        f"replace it with {dataset}, choose another folder")


def _move_into_place(staging: str, output_dir: str) -> None:
  """Renames the finished staging folder to output_dir, replacing an old phantom."""
  if os.path.isdir(output_dir) and os.listdir(output_dir):
    old = tempfile.mkdtemp(prefix=f".{os.path.basename(output_dir)}.old-",
                           dir=os.path.dirname(output_dir))
    os.replace(output_dir, old)
    os.replace(staging, output_dir)
    shutil.rmtree(old, ignore_errors=True)
  else:
    if os.path.isdir(output_dir):
      os.rmdir(output_dir)
    os.replace(staging, output_dir)


def generate_phantoms(dataset: str, output_dir: str, *, num_patients: int, seed: int = 0,
                      scale: float = 1.0, modalities=None, progress=print) -> List[str]:
  """Writes a phantom release of `dataset` into output_dir.

  The files are written into a temporary sibling folder that is renamed to output_dir
  once complete, so an error leaves no half-written output; an existing phantom folder
  of the same dataset is replaced.

  Args:
    dataset: "mscmr" or "mmwhs".
    output_dir: the folder to create (or an empty one, or an older phantom of dataset).
    num_patients: patients to draw (MS-CMRSeg 1..N, MM-WHS 1001..1000+N).
    seed: seed of the whole set (a non-negative integer).
    scale: shrinks the in-plane matrix (and MM-WHS' slice count) by this factor in
      (0, 1], keeping the anatomy's size in mm.
    modalities: modality keys (list or comma-separated; MS-CMRSeg also takes C0 for
      bssfp); None for all of the dataset's.
    progress: called with one line per patient; None for silence.

  Returns:
    The written NIfTI paths under output_dir (image then label, patient by patient).

  Raises:
    CsaInputError: bad arguments, or output_dir is a file, a non-empty folder that is
      not a phantom folder, or a phantom of the other dataset.
  """
  spec = datasets.get_spec(dataset)
  if isinstance(num_patients, bool) or not isinstance(num_patients, int) or not (
      1 <= num_patients <= MAX_PATIENTS):
    raise CsaInputError(f"{param('num_patients', num_patients)}: must be an integer in "
                        f"[1, {MAX_PATIENTS}]")
  if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
    raise CsaInputError(f"{param('seed', seed)}: must be a non-negative integer")
  _check_scale(scale)
  keys = _parse_modalities(spec, modalities)
  if not output_dir:
    raise CsaInputError(f"{param('output_dir')} is required")
  output_dir = os.path.abspath(output_dir)
  _check_output_dir(output_dir, spec.name)

  parent = os.path.dirname(output_dir)
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(prefix=f".{os.path.basename(output_dir)}.tmp-", dir=parent)
  written = []
  try:
    first = 1 if spec is datasets.MSCMR else 1001
    for index, patient in enumerate(range(first, first + num_patients), 1):
      grids = []
      for modality in keys:
        geometry = sample_geometry(spec.name, patient, modality, seed=seed, scale=scale)
        image, label = render(geometry)
        for relative, data in zip(_relative_paths(spec.name, patient, modality),
                                  (image, label)):
          _write_nifti(os.path.join(staging, relative), data, geometry)
          written.append(os.path.join(output_dir, relative))
        grids.append(f"{modality} {'x'.join(map(str, geometry.shape))}")
      if progress is not None:
        progress(f"phantom {spec.name} patient {patient} ({index}/{num_patients}): "
                 + ", ".join(grids))
    marker = dict(generator="data_prep.phantom", dataset=spec.name, seed=seed,
                  scale=scale, num_patients=num_patients, modalities=keys)
    with open(os.path.join(staging, MARKER_NAME), "w", encoding="utf-8") as f:
      json.dump(marker, f, indent=2)
    _check_output_dir(output_dir, spec.name)  # It may have changed while we drew.
    _move_into_place(staging, output_dir)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  return written
