"""Synthetic cardiac phantoms in the MS-CMRSeg 2019 and MM-WHS 2017 release layouts.

`generate_phantoms` is what `python -m data_prep.phantom` runs; that command's docstring
lists the files it writes. The real datasets cannot be downloaded here, so the demo and
the tests use these: NIfTI volumes with the releases' file names, folders, label values
and typical voxel grids (REFERENCE.md section 5; `release._relative_paths`).

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

The package, one module per concern (imports point one way, down this list):
  release.py      file names, NIfTI writing, the marker, `generate_phantoms`, `render`
  challenge.py    the MS-CMRSeg challenge copy's folders, missing labels, NaN, strays
  short_axis.py   the MS-CMRSeg renderer      whole_heart.py  the MM-WHS renderer
  shapes.py       signed distances, blending  appearance.py   bias field, Rician noise
  sampling.py     random grids and anatomy (`sample_geometry`)
  anatomy.py      the dataclasses both sides share (PhantomGeometry and the hearts)
Names with a leading underscore are private to the package: its modules share them, other
code uses only what this module exports.
"""
from csa_tf.data.phantom.anatomy import (
    ENDO_RADIUS_RANGE, GRID_RANGES, MYO_THICKNESS_RANGE, Ellipsoid, GridRange,
    PhantomGeometry, ShortAxisHeart, Tube, WholeHeart)
from csa_tf.data.phantom.challenge import labelled_count
from csa_tf.data.phantom.release import (
    MARKER_NAME, MAX_PATIENTS, RELEASE_PATIENTS, RELEASES, generate_phantoms, render)
from csa_tf.data.phantom.sampling import sample_geometry
from csa_tf.data.phantom.whole_heart import STRAY_421_PATIENT

__all__ = [
    "ENDO_RADIUS_RANGE", "GRID_RANGES", "MARKER_NAME", "MAX_PATIENTS",
    "MYO_THICKNESS_RANGE", "RELEASES", "RELEASE_PATIENTS", "STRAY_421_PATIENT",
    "Ellipsoid", "GridRange", "PhantomGeometry", "ShortAxisHeart", "Tube", "WholeHeart",
    "generate_phantoms", "labelled_count", "render", "sample_geometry",
]
