r"""Figures of trained runs as PNG files (matplotlib, Agg backend).

  python -m csa_tf.visualize --model_dir=RUN [--data_dir=PREP] [--output_dir=DIR]
      [--compare_runs=RUN2,RUN3] [--reproduce_dir=RESULTS/runs] [--num_slices=3]
      [--feature_tap=g3]

Writes into DIR (default RUN/figures):
  segmentation_<modality>.png  paper Fig. 6: test slices (rows); the input, the ground
                               truth and each run's prediction (columns, in the paper's
                               order Single, UMMKD, Joint, MSBN, Affinity, CSA).
  feature_maps_<modality>.png  paper Fig. 2: for one test slice and one layer (tap), per
                               class the channel most correlated with the class mask,
                               whole and masked by the class (F^c = F * M_c, Eq. 2).
  affinity_<l>_<k>.png         the class-specific affinity matrices (Eq. 3) of the first
                               CSA layer pair, per modality and class, on test slices.
  training_curves.png          every loss term and the learning rate from the runs'
                               TensorBoard scalars.
Every figure of a run uses its own modality's BN statistics (inference mode).
"""
from absl import flags

from csa_tf import cli

FLAGS = flags.FLAGS


def define_flags():
  """Defines this command's flags (only when run as a command, never on import)."""
  flags.DEFINE_string("model_dir", None, "Run folder written by csa_tf.train.")
  flags.DEFINE_string("data_dir", None, "Prepared data; default: the run's --data_dir.")
  flags.DEFINE_string("output_dir", None, "Where the PNGs go; default RUN/figures.")
  flags.DEFINE_list("compare_runs", [], "More run folders: one column each in the "
                    "segmentation figures, one line each in the training curves.")
  flags.DEFINE_string("reproduce_dir", None, "A folder of runs named by method (e.g. "
                      "experiments.reproduce's OUTPUT/runs): every one is compared.")
  flags.DEFINE_integer("num_slices", 3, "Test slices per modality in the segmentation "
                       "figures.")
  flags.DEFINE_string("feature_tap", None, "Layer of the feature-map figure (g1..g10); "
                      "default: the first layer of the first CSA pair.")


def main(argv):
  del argv
  # Imported here, after cli.run has imported TensorFlow quietly.
  from csa_tf.visualization import figures  # pylint: disable=g-import-not-at-top
  figures.make_figures(
      FLAGS.model_dir, data_dir=FLAGS.data_dir, output_dir=FLAGS.output_dir,
      compare_runs=FLAGS.compare_runs, reproduce_dir=FLAGS.reproduce_dir,
      num_slices=FLAGS.num_slices, feature_tap=FLAGS.feature_tap)


if __name__ == "__main__":
  cli.run(main, define_flags, required=("model_dir",), tensorflow=True)
