r"""Prepares MS-CMRSeg 2019 for csa_tf (REFERENCE.md section 5; paper Sec. 3).

  python -m data_prep.mscmr --raw_dir=RAW --output_dir=PREP \
      [--modalities=lge,bssfp] [--crop_size=224] [--test_fraction=0.2] [--seed=0] \
      [--require_labels] [--non_finite=repair|refuse]

Finds `patientN_{C0,LGE,T2}.nii.gz` images and their `patientN_{...}_manual.nii.gz`
labels anywhere under RAW (the release keeps them in different folders), maps labels
500/200/600 to LV=1, myo=2, RV=3, crops every slice of a volume with one crop_size box
that encloses all annotated regions, z-scores each slice and splits by patient.
Images without their label (the challenge copy labels LGE of patients 1-5 only) are
left out and listed in PREP/summary.txt; NaN/Inf voxels are repaired and counted.
"""
from absl import flags

from csa_tf import cli
from csa_tf.configs import datasets
from csa_tf.data.mscmr import prepare_mscmr
from csa_tf.io import non_finite

FLAGS = flags.FLAGS


def define_flags():
  """Defines this command's flags (only when run as a command, never on import)."""
  flags.DEFINE_string("raw_dir", None, "Folder holding the MS-CMRSeg 2019 release.")
  flags.DEFINE_string("output_dir", None, "Where to write the prepared data (PREP).")
  flags.DEFINE_list("modalities", list(datasets.MSCMR.paper_modalities),
                    "Modalities to prepare: lge, bssfp (C0), t2. The paper uses lge,bssfp.")
  flags.DEFINE_integer("crop_size", 224, "In-plane crop box side (paper: 224).")
  flags.DEFINE_float("test_fraction", 0.2, "Fraction of patients in the test split.")
  flags.DEFINE_integer("seed", 0, "Seed of the patient-level split.")
  flags.DEFINE_bool("overwrite", False, "Replace an existing preparation in --output_dir.")
  flags.DEFINE_bool("require_labels", False, "Refuse an image without its manual label "
                    "and a patient without a requested modality (default: leave them out "
                    "and list them in summary.txt).")
  flags.DEFINE_enum("non_finite", non_finite.REPAIR, list(non_finite.NON_FINITE_POLICIES),
                    non_finite.FLAG_HELP)


def main(argv):
  del argv
  summary = prepare_mscmr(FLAGS.raw_dir, FLAGS.output_dir, modalities=FLAGS.modalities,
                          crop_size=FLAGS.crop_size, test_fraction=FLAGS.test_fraction,
                          seed=FLAGS.seed, overwrite=FLAGS.overwrite,
                          require_labels=FLAGS.require_labels,
                          non_finite=FLAGS.non_finite)
  print(summary, end="")
  print(f"prepared data written to {FLAGS.output_dir}")


if __name__ == "__main__":
  cli.run(main, define_flags, required=("raw_dir", "output_dir"))
