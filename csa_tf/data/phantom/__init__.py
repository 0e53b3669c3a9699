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

The package, one module per concern (imports point one way, down this list):
  release.py      file names, NIfTI writing, the marker, `generate_phantoms`, `render`
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
from csa_tf.data.phantom.release import (
    MARKER_NAME, MAX_PATIENTS, RELEASE_PATIENTS, generate_phantoms, render)
from csa_tf.data.phantom.sampling import sample_geometry
from csa_tf.data.phantom.whole_heart import STRAY_421_PATIENT

__all__ = [
    "ENDO_RADIUS_RANGE", "GRID_RANGES", "MARKER_NAME", "MAX_PATIENTS",
    "MYO_THICKNESS_RANGE", "RELEASE_PATIENTS", "STRAY_421_PATIENT", "Ellipsoid",
    "GridRange", "PhantomGeometry", "ShortAxisHeart", "Tube", "WholeHeart",
    "generate_phantoms", "render", "sample_geometry",
]
