r"""Synthetic cardiac phantoms in the MS-CMRSeg 2019 and MM-WHS 2017 release layouts.

  python -m data_prep.phantom --dataset=mscmr --output_dir=DIR [--num_patients=45] \
      [--seed=0] [--scale=1.0] [--modalities=lge,bssfp,t2] [--release=full|challenge]
  python -m data_prep.phantom --dataset=mscmr --release=myops --output_dir=DIR \
      [--num_patients=25] [--seed=0] [--scale=1.0] [--modalities=lge,bssfp,t2]
  python -m data_prep.phantom --dataset=mmwhs --output_dir=DIR [--num_patients=20] \
      [--seed=0] [--scale=1.0] [--modalities=ct,mr]

The real datasets cannot be downloaded here, so the demo and the tests use phantoms that
the project draws itself: NIfTI volumes with the releases' file names, folders, label
values and typical voxel grids (REFERENCE.md section 5).

  mscmr: DIR/images/patientN_{C0,LGE,T2}.nii.gz and
         DIR/labels/{C0,LGE,T2}/patientN_{C0,LGE,T2}_manual.nii.gz (N = 1..num_patients);
         short-axis stacks along array axis 2; labels 500 LV, 200 myo, 600 RV.
  mscmr --release=challenge: the challenge copy,
         DIR/C0LET2_nii45_for_challenge19/c0t2lge/patientN_{C0,LGE,T2}.nii.gz and
         DIR/C0LET2_nii45_for_challenge19/{c0gt,lgegt,t2gt}/patientN_{TAG}_manual.nii.gz
         for the first 35 (C0, T2) and 5 (LGE) of 45 patients (scaled to
         --num_patients, at least 2), NaN voxels in T2 images and in some T2 labels,
         stray labelled voxels at an image corner in some C0 and T2 labels
         (csa_tf/data/phantom/challenge.py says which).
  mscmr --release=myops: MyoPS 2020's layout, DIR/train25/myops_training_1NN_{C0,DE,T2}
         .nii.gz on one grid per patient, DIR/train25_myops_gd/myops_training_1NN_gd.nii.gz
         (500 LV, 600 RV, 200 myo, 1220 edema, 2221 scar) and unlabelled
         DIR/test20/myops_test_2NN_{C0,DE,T2}.nii.gz (csa_tf/data/phantom/myops_layout.py).
  mmwhs: DIR/{ct,mr}_train/{ct,mr}_train_NNNN_{image,label}.nii.gz (NNNN = 1001..);
         3D labels 205, 420, 500, 550, 600, 820, 850 (and a few stray 421 in
         mr_train_1010, as in the release).

How they are drawn (unpaired anatomy, orientation, appearance): csa_tf/data/phantom.
"""
from absl import flags

from csa_tf import cli
from csa_tf.data.phantom import RELEASE_PATIENTS, RELEASES, generate_phantoms
from csa_tf.data.phantom.release import MYOPS_TRAIN_PATIENTS
from csa_tf.configs import datasets

FLAGS = flags.FLAGS


def define_flags():
  """Defines this command's flags (only when run as a command, never on import)."""
  flags.DEFINE_string("dataset", None, "Release layout to imitate: mscmr or mmwhs.")
  flags.DEFINE_string("output_dir", None, "Folder to write (new, empty, or an older "
                      "phantom of the same dataset).")
  flags.DEFINE_integer("num_patients", None, "Patients to draw (default: the release's "
                       "count, 45 for mscmr, 25 training patients for myops and 20 for "
                       "mmwhs).")
  flags.DEFINE_integer("seed", 0, "Seed of the phantom set.")
  flags.DEFINE_float("scale", 1.0, "Grid shrink factor in (0, 1]: fewer, larger voxels "
                     "over the same anatomy (e.g. 0.25 for a CPU demo).")
  flags.DEFINE_list("modalities", None, "Modalities to write (mscmr: lge, bssfp (C0), t2; "
                    "mmwhs: ct, mr); default all.")
  flags.DEFINE_enum("release", "full", list(RELEASES), "Copy of the release to imitate: "
                    "full (every volume labelled) or, for mscmr, challenge (the "
                    "challenge copy: its folders, labels for some patients only, NaN and "
                    "stray voxels) or myops (MyoPS 2020's co-registered sequences and "
                    "label values).")


def main(argv):
  del argv
  spec = datasets.get_spec(FLAGS.dataset)
  num_patients = FLAGS.num_patients
  if num_patients is None:
    num_patients = (MYOPS_TRAIN_PATIENTS if FLAGS.release == "myops"
                    else RELEASE_PATIENTS[spec.name])
  written = generate_phantoms(spec.name, FLAGS.output_dir, num_patients=num_patients,
                              seed=FLAGS.seed, scale=FLAGS.scale,
                              modalities=FLAGS.modalities, release=FLAGS.release)
  layout = "" if FLAGS.release == "full" else f" ({FLAGS.release} layout)"
  print(f"wrote {len(written)} files of a {spec.name} phantom{layout} to "
        f"{FLAGS.output_dir}")


if __name__ == "__main__":
  cli.run(main, define_flags, required=("dataset", "output_dir"))
