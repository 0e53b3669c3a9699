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
from absl import flags

from csa_tf import cli
from csa_tf.data.phantom import RELEASE_PATIENTS, generate_phantoms
from csa_tf.configs import datasets

FLAGS = flags.FLAGS


def define_flags():
  """Defines this command's flags (only when run as a command, never on import)."""
  flags.DEFINE_string("dataset", None, "Release layout to imitate: mscmr or mmwhs.")
  flags.DEFINE_string("output_dir", None, "Folder to write (new, empty, or an older "
                      "phantom of the same dataset).")
  flags.DEFINE_integer("num_patients", None, "Patients to draw (default: the release's "
                       "count, 45 for mscmr and 20 for mmwhs).")
  flags.DEFINE_integer("seed", 0, "Seed of the phantom set.")
  flags.DEFINE_float("scale", 1.0, "Grid shrink factor in (0, 1]: fewer, larger voxels "
                     "over the same anatomy (e.g. 0.25 for a CPU demo).")
  flags.DEFINE_list("modalities", None, "Modalities to write (mscmr: lge, bssfp (C0), t2; "
                    "mmwhs: ct, mr); default all.")


def main(argv):
  del argv
  spec = datasets.get_spec(FLAGS.dataset)
  num_patients = FLAGS.num_patients
  if num_patients is None:
    num_patients = RELEASE_PATIENTS[spec.name]
  written = generate_phantoms(spec.name, FLAGS.output_dir, num_patients=num_patients,
                              seed=FLAGS.seed, scale=FLAGS.scale,
                              modalities=FLAGS.modalities)
  print(f"wrote {len(written)} files of a {spec.name} phantom to {FLAGS.output_dir}")


if __name__ == "__main__":
  cli.run(main, define_flags, required=("dataset", "output_dir"))
