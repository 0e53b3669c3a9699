r"""Prepares MM-WHS 2017 for csa_tf (REFERENCE.md section 5; paper Sec. 3).

  python -m data_prep.mmwhs --raw_dir=RAW --output_dir=PREP \
      [--modalities=ct,mr] [--crop_size=256] [--test_fraction=0.2] [--seed=0] \
      [--non_finite=repair|refuse] [--in_plane_spacing=auto|native|MM]

Finds `{ct,mr}_train_10xx_{image,label}.nii.gz` anywhere under RAW, reads each volume's
orientation from its header (never from the array axes), takes coronal slices, resamples
them in-plane to one pixel size per modality (auto: the finest at which every training
heart fits the box; recorded in prep_meta.json), crops them with one crop_size box
enclosing the four paper structures (205 LVM, 420 LAC, 500 LVC, 820 AA; the rest is
background; the release's stray 421 is read as 420), z-scores each slice, and splits
each modality's patients (different people in CT and MR) 80/20.
"""
from absl import flags

from csa_tf import cli
from csa_tf.configs import datasets
from csa_tf.data import in_plane_spacing
from csa_tf.data.mmwhs import prepare_mmwhs
from csa_tf.io import non_finite

FLAGS = flags.FLAGS


def define_flags():
  """Defines this command's flags (only when run as a command, never on import)."""
  flags.DEFINE_string("raw_dir", None, "Folder holding the MM-WHS 2017 training release.")
  flags.DEFINE_string("output_dir", None, "Where to write the prepared data (PREP).")
  flags.DEFINE_list("modalities", list(datasets.MMWHS.paper_modalities),
                    "Modalities to prepare: ct, mr.")
  flags.DEFINE_integer("crop_size", 256, "Coronal crop box side (paper: 256).")
  flags.DEFINE_float("test_fraction", 0.2, "Fraction of each modality's patients in test.")
  flags.DEFINE_integer("seed", 0, "Seed of the patient-level split.")
  flags.DEFINE_bool("overwrite", False, "Replace an existing preparation in --output_dir.")
  flags.DEFINE_enum("non_finite", non_finite.REPAIR, list(non_finite.NON_FINITE_POLICIES),
                    non_finite.FLAG_HELP)
  flags.DEFINE_string("in_plane_spacing", in_plane_spacing.AUTO, in_plane_spacing.FLAG_HELP)


def main(argv):
  del argv
  summary = prepare_mmwhs(FLAGS.raw_dir, FLAGS.output_dir, modalities=FLAGS.modalities,
                          crop_size=FLAGS.crop_size, test_fraction=FLAGS.test_fraction,
                          seed=FLAGS.seed, overwrite=FLAGS.overwrite,
                          non_finite=FLAGS.non_finite,
                          in_plane_spacing=FLAGS.in_plane_spacing)
  print(summary, end="")
  print(f"prepared data written to {FLAGS.output_dir}")


if __name__ == "__main__":
  cli.run(main, define_flags, required=("raw_dir", "output_dir"))
