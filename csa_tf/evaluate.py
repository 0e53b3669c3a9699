r"""Evaluates a trained run on its prepared test split (paper Tables 1-3; REFERENCE.md §6).

  python -m csa_tf.evaluate --model_dir=RUN [--data_dir=PREP] [--split=test]

Segments every test volume slice by slice through its own modality's BN statistics,
pastes the prediction back into the original voxel grid (undoing the crop), computes per
class 3D Dice, Hausdorff distance in voxels (like the paper) and in mm, HD95 and ASSD, and
writes RUN/eval/per_volume.csv and RUN/eval/summary.json, then prints the table. Volumes
are scored in threads over the CPU cores (--workers) while the next are segmented.
"""
from absl import flags

from csa_tf import cli
from csa_tf.errors import CsaInputError
from csa_tf.evaluation.evaluator import evaluate_run

FLAGS = flags.FLAGS


def define_flags():
  """Defines this command's flags (only when run as a command, never on import)."""
  flags.DEFINE_string("model_dir", None, "Run folder written by csa_tf.train.")
  flags.DEFINE_string("data_dir", None, "Prepared data; default: the run's --data_dir.")
  flags.DEFINE_enum("split", "test", ["test", "train"], "Split to evaluate.")
  flags.DEFINE_integer("batch_size", 16, "Slices per inference batch.")
  flags.DEFINE_integer("workers", 0, "Volumes scored at a time, in threads, while the "
                       "next are segmented; 0: the cores this process may use. The "
                       "results do not depend on it.")


def main(argv):
  del argv
  if FLAGS.batch_size < 1:
    raise CsaInputError(f"--batch_size={FLAGS.batch_size}: must be a positive integer")
  if FLAGS.workers < 0:
    raise CsaInputError(f"--workers={FLAGS.workers}: must be 0 (all cores) or a "
                        "positive integer")
  evaluate_run(FLAGS.model_dir, FLAGS.data_dir, split=FLAGS.split,
               batch_size=FLAGS.batch_size, workers=FLAGS.workers or None)


if __name__ == "__main__":
  cli.run(main, define_flags, required=("model_dir",))
