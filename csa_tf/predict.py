r"""Segments new NIfTI volumes with a trained run; no label needed.

  python -m csa_tf.predict --model_dir=RUN --modality=lge --input=IN.nii.gz \
      --output=OUT.nii.gz [--field_of_view=full|center] [--overwrite]
  python -m csa_tf.predict --model_dir=RUN --modality=ct --input=IN_DIR --output=OUT_DIR

Slices are taken as in preparation (MS-CMRSeg: the stored short-axis stack; MM-WHS:
coronal slices from the header's orientation). There is no label to centre a crop on,
so by default each whole slice is used, padded to the smallest square the network takes
(`full`, see csa_tf.configs.downsampling); `center` instead takes the training crop size
around the slice centre, which matches the training field of view when the heart is near
the image centre. The output holds the dataset's original label values (500/200/600 or
205/420/500/820), the input's affine and header, and is never written over an existing
file without --overwrite.
"""
from absl import flags

from csa_tf import cli
from csa_tf.errors import CsaInputError
from csa_tf.configs.downsampling import DOWNSAMPLE
from csa_tf.serving.predictor import predict_files

FLAGS = flags.FLAGS


def define_flags():
  """Defines this command's flags (only when run as a command, never on import)."""
  flags.DEFINE_string("model_dir", None, "Run folder written by csa_tf.train.")
  flags.DEFINE_string("modality", None, "Modality of the input volumes, e.g. lge or ct.")
  flags.DEFINE_string("input", None, "A .nii/.nii.gz volume or a folder of them.")
  flags.DEFINE_string("output", None, "Output file (or folder, for a folder input).")
  flags.DEFINE_enum("field_of_view", "full", ["full", "center"],
                    f"full: whole slices padded to a multiple of {DOWNSAMPLE}; center: the "
                    "training crop size around the slice centre.")
  flags.DEFINE_bool("overwrite", False, "Replace existing output files.")
  flags.DEFINE_integer("batch_size", 16, "Slices per inference batch.")


def main(argv):
  del argv
  if FLAGS.batch_size < 1:
    raise CsaInputError(f"--batch_size={FLAGS.batch_size}: must be a positive integer")
  predict_files(FLAGS.model_dir, FLAGS.modality, FLAGS.input, FLAGS.output,
                field_of_view=FLAGS.field_of_view, overwrite=FLAGS.overwrite,
                batch_size=FLAGS.batch_size)


if __name__ == "__main__":
  cli.run(main, define_flags, required=("model_dir", "modality", "input", "output"),
          flag_names={"output_path": "output"})
