r"""Exports a trained run as one serving model per modality.

  python -m csa_tf.export --model_dir=RUN --output_dir=DIR [--overwrite]

For every modality M of the run, DIR/M/ holds:
  saved_model/  a TensorFlow SavedModel whose "serving_default" signature takes
                `images`: float32 [batch, H, W, in_channels] z-scored slices (H, W
                multiples of 8) and returns `probabilities` float32 [batch, H, W, C]
                (softmax) and `classes` int32 [batch, H, W] (argmax). M's BatchNorm
                statistics are baked in: the model holds only M's BN set and always
                runs in inference mode, in float32.
  model.keras   the same network as a Keras file (needs csa_tf installed to load; call
                it as `model(images, modality=M)`; it returns logits).
  model.json    inputs, preprocessing, classes and their label values, provenance.

Load with `tf.saved_model.load(DIR/M/saved_model).signatures["serving_default"]`.
"""
from absl import flags
from absl import logging

from csa_tf import cli

FLAGS = flags.FLAGS


def define_flags():
  """Defines this command's flags (only when run as a command, never on import)."""
  flags.DEFINE_string("model_dir", None, "Run folder written by csa_tf.train.")
  flags.DEFINE_string("output_dir", None, "Where the exported models go.")
  flags.DEFINE_bool("overwrite", False, "Replace existing exports in output_dir.")


def main(argv):
  del argv
  # Imported here, after cli.run has imported TensorFlow quietly.
  from csa_tf.serving.exporter import export_run  # pylint: disable=g-import-not-at-top
  # SavedModel writing logs every file at INFO.
  logging.set_verbosity(logging.WARNING)
  export_run(FLAGS.model_dir, FLAGS.output_dir, overwrite=FLAGS.overwrite)


if __name__ == "__main__":
  cli.run(main, define_flags, required=("model_dir", "output_dir"), tensorflow=True)
