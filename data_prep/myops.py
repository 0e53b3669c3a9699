r"""Prepares MyoPS 2020 for csa_tf (REFERENCE.md section 5b).

  python -m data_prep.myops --raw_dir=RAW --output_dir=PREP \
      [--modalities=lge,bssfp,t2] [--crop_size=224] [--test_fraction=0.2] [--seed=0] \
      [--non_finite=repair|refuse]

Finds `myops_training_NNN_{C0,DE,T2}.nii.gz` images and their one
`myops_training_NNN_gd.nii.gz` label anywhere under RAW (the release keeps them in
train25/ and train25_myops_gd/), maps labels 500 -> LV, 200/1220/2221 (normal myocardium,
edema, scar) -> myo, 600 -> RV, and prepares them as MS-CMRSeg volumes (DE is LGE, C0
bSSFP). test20/ images have no labels and are left out (listed in summary.txt).
"""
from absl import flags

from csa_tf import cli
from csa_tf.configs import datasets
from csa_tf.data.myops import prepare_myops
from csa_tf.io import non_finite

FLAGS = flags.FLAGS


def define_flags():
  """Defines this command's flags (only when run as a command, never on import)."""
  flags.DEFINE_string("raw_dir", None, "Folder holding the MyoPS 2020 release.")
  flags.DEFINE_string("output_dir", None, "Where to write the prepared data (PREP).")
  flags.DEFINE_list("modalities", list(datasets.MSCMR.modalities),
                    "Modalities to prepare: lge (DE), bssfp (C0), t2.")
  flags.DEFINE_integer("crop_size", 224, "In-plane crop box side (paper: 224).")
  flags.DEFINE_float("test_fraction", 0.2, "Fraction of patients in the test split.")
  flags.DEFINE_integer("seed", 0, "Seed of the patient-level split.")
  flags.DEFINE_bool("overwrite", False, "Replace an existing preparation in --output_dir.")
  flags.DEFINE_enum("non_finite", non_finite.REPAIR, list(non_finite.NON_FINITE_POLICIES),
                    non_finite.FLAG_HELP)


def main(argv):
  del argv
  summary = prepare_myops(FLAGS.raw_dir, FLAGS.output_dir, modalities=FLAGS.modalities,
                          crop_size=FLAGS.crop_size, test_fraction=FLAGS.test_fraction,
                          seed=FLAGS.seed, overwrite=FLAGS.overwrite,
                          non_finite=FLAGS.non_finite)
  print(summary, end="")
  print(f"prepared data written to {FLAGS.output_dir}")


if __name__ == "__main__":
  cli.run(main, define_flags, required=("raw_dir", "output_dir"))
