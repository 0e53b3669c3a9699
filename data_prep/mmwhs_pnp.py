r"""Converts the community's preprocessed MM-WHS release (PnP-AdaNet/SIFA) to PREP.

  python -m data_prep.mmwhs_pnp --pnp_dir=DIR --output_dir=PREP [--use_val_slices]
      [--overwrite]

The release's layout, what is read from it and what the PREP holds: see
csa_tf/data/mmwhs_pnp.py and csa_tf/data/pnp_records.py. DIR is only read.
"""
from absl import flags

from csa_tf import cli
from csa_tf.data.mmwhs_pnp import prepare_pnp

FLAGS = flags.FLAGS


def define_flags():
  """Defines this command's flags (only when run as a command, never on import)."""
  flags.DEFINE_string("pnp_dir", None,
                      "Folder holding the preprocessed MM-WHS release of PnP-AdaNet/SIFA "
                      "(TFRecord training slices; npz or image_/gth_ NIfTI test "
                      "volumes).")
  flags.DEFINE_string("output_dir", None, "Where to write the prepared data (PREP).")
  flags.DEFINE_bool("use_val_slices", False,
                    "Also train on the release's validation folders (ct_val_tfs, "
                    "mr_val_tfs), which its maintainer says are its test data; left out "
                    "by default. Slices equal to a test volume's are left out either "
                    "way.")
  flags.DEFINE_bool("overwrite", False, "Replace an existing preparation in --output_dir.")


def main(argv):
  del argv
  summary = prepare_pnp(FLAGS.pnp_dir, FLAGS.output_dir, overwrite=FLAGS.overwrite,
                        use_val_slices=FLAGS.use_val_slices)
  print(summary, end="")
  print(f"prepared data written to {FLAGS.output_dir}")


if __name__ == "__main__":
  cli.run(main, define_flags, required=("pnp_dir", "output_dir"), tensorflow=True)
