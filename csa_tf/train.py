r"""Trains one setting of Tables 1-3.

  python -m csa_tf.train --flagfile=experiments/mscmr.flags --data_dir=PREP --model_dir=RUN

Without --data_dir, cardiac phantoms in the MS-CMRSeg (or --dataset=mmwhs) layout are
generated and prepared under RUN/phantom_data first, so the command works with no
download. Re-running the same command resumes from RUN's latest checkpoint.
"""
import os

from absl import flags
from absl import logging

from csa_tf.configs import train_config as config_lib
from csa_tf.configs import datasets
from csa_tf import cli
from csa_tf.errors import CsaInputError
from csa_tf.data.demo import prepare_phantom_data
from csa_tf.data.prepared import PreparedDataset

FLAGS = flags.FLAGS
def define_flags():
  """Defines this command's flags (only when run as a command, never on import)."""
  flags.DEFINE_string("data_dir", None, "Prepared data (PREP). Default: generate phantoms "
                      "under <model_dir>/phantom_data.")
  flags.DEFINE_string("model_dir", None, "Run folder: checkpoints, config, TensorBoard.")
  flags.DEFINE_enum("method", "csa", list(config_lib.METHOD_ORDER),
                    "Setting of Tables 1-3: single, ummkd, joint, msbn, affinity, csa.")
  flags.DEFINE_integer("train_steps", 1000, "Total training steps (resume continues to it).")
  flags.DEFINE_integer("batch_size", 8, "Slices per modality per step (paper: 8).")
  flags.DEFINE_integer("feature_base", 16, "Channels of the first group (REFERENCE: 16).")
  flags.DEFINE_list("modalities", [], "Modalities to train on; default the paper's pair of "
                    "the dataset (lge,bssfp or ct,mr).")
  flags.DEFINE_integer("seed", 0, "Seed of weights, dropout and the input streams.")
  flags.DEFINE_float("learning_rate", 1e-4, "Adam learning rate (paper: 1e-4).")
  flags.DEFINE_float("lr_decay_rate", 0.95, "Learning-rate factor per decay period.")
  flags.DEFINE_integer("lr_decay_steps", 1000, "Steps per learning-rate decay period.")
  flags.DEFINE_float("alpha", 1.0, "Weight of the Dice losses (Eq. 5).")
  flags.DEFINE_float("beta", 1.0, "Weight of the cross-entropy losses (Eq. 5).")
  flags.DEFINE_float("lambda", 0.5, "Weight of the extra loss: CSA, affinity or KD (Eq. 5).")
  flags.DEFINE_float("l2_weight", 1e-4, "Weight decay on conv kernels (0.5*||W||^2).")
  flags.DEFINE_float("dropout_rate", 0.25, "Dropout rate (paper's keep_prob 0.75).")
  flags.DEFINE_list("csa_pairs", ["g3:g4", "g5:g6", "g7:g8"],
                    "CSA layer pairs l:k (taps g1..g10); default: adjacent intermediate "
                    "groups at two scales.")
  flags.DEFINE_enum("csa_area_norm", "count", ["count", "fraction", "none"],
                    "S_c of Eq. 3: class pixel count (paper), fraction, or none.")
  flags.DEFINE_enum("csa_reduction", "mean_then_square",
                    ["mean_then_square", "square_then_mean"],
                    "Eq. 4 literally (mean_then_square) or mean of squares.")
  flags.DEFINE_float("kd_temperature", 2.0, "UMMKD's softmax temperature.")
  flags.DEFINE_bool("deterministic", False, "Enable TF op determinism (slower).")
  flags.DEFINE_bool("jit_compile", False, "Compile the training step with XLA.")
  flags.DEFINE_enum("mixed_precision", "off", ["off", "bf16", "fp16"],
                    "Mixed precision: bfloat16 or float16 compute (fp16 with dynamic "
                    "loss scaling); variables and losses stay float32.")
  flags.DEFINE_bool("augment", False, "Random flips and intensity jitter (not in the paper).")
  flags.DEFINE_bool("all_slices", False, "Train on unlabelled slices too (default: only "
                    "slices with some foreground).")
  flags.DEFINE_integer("checkpoint_every", 500, "Steps between checkpoints.")
  flags.DEFINE_integer("bn_recalibration_batches", 20,
                       "Training batches per modality on which BN statistics are "
                       "re-estimated with dropout off before each checkpoint (0: off; "
                       "see csa_tf/training/bn_recalibration.py).")
  flags.DEFINE_integer("keep_checkpoints", 3, "Checkpoints kept.")
  flags.DEFINE_integer("log_every", 50, "Steps between progress lines and scalars.")
  flags.DEFINE_integer("image_summary_every", 0,
                       "Steps between TensorBoard image summaries: segmentation overlays "
                       "and the first CSA pair's affinity matrices (0: never).")
  flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker"],
                    "tf.distribute strategy: default (one device), mirrored (all local "
                    "GPUs), multi_worker (cluster from TF_CONFIG). --batch_size is the "
                    "global batch per modality, split over the replicas.")
  flags.DEFINE_enum("dataset", "mscmr", ["mscmr", "mmwhs"],
                    "Phantom dataset layout when no --data_dir is given.")
  flags.DEFINE_integer("phantom_patients", 8, "Phantom patients when no --data_dir.")
  flags.DEFINE_float("phantom_scale", 0.25, "Phantom in-plane scale when no --data_dir.")
  flags.DEFINE_integer("crop_size", 64, "Crop size of the phantom preparation when no "
                       "--data_dir (a real PREP's crop size is read from it).")


def config_from_flags(spec: datasets.DatasetSpec, available_modalities, crop_size: int,
                      data_dir: str) -> config_lib.TrainConfig:
  """Builds the validated typed config from the parsed flags and the data's metadata.

  Args:
    spec: the dataset.
    available_modalities: the modalities the prepared data hold (or will hold).
    crop_size: the prepared data's crop size.
    data_dir: the prepared data folder (named in messages).

  Raises:
    CsaInputError: a flag value is out of range or conflicts with the data.
  """
  modalities = tuple(FLAGS.modalities) or tuple(
      m for m in (("lge", "bssfp") if spec.name == "mscmr" else spec.modalities)
      if m in available_modalities)
  for modality in modalities:
    if modality not in available_modalities:
      raise CsaInputError(f"--modalities: {modality!r} is not in {data_dir} (prepared: "
                          f"{', '.join(available_modalities)})")
  return config_lib.TrainConfig(
      model_dir=FLAGS.model_dir, data_dir=data_dir, dataset=spec.name,
      num_classes=spec.num_classes, crop_size=crop_size, modalities=modalities,
      method=FLAGS.method, train_steps=FLAGS.train_steps, batch_size=FLAGS.batch_size,
      feature_base=FLAGS.feature_base, dropout_rate=FLAGS.dropout_rate,
      learning_rate=FLAGS.learning_rate, lr_decay_rate=FLAGS.lr_decay_rate,
      lr_decay_steps=FLAGS.lr_decay_steps, alpha=FLAGS.alpha, beta=FLAGS.beta,
      lam=FLAGS["lambda"].value, l2_weight=FLAGS.l2_weight,
      csa_pairs=config_lib.parse_csa_pairs(FLAGS.csa_pairs),
      csa_area_norm=FLAGS.csa_area_norm, csa_reduction=FLAGS.csa_reduction,
      kd_temperature=FLAGS.kd_temperature, seed=FLAGS.seed,
      deterministic=FLAGS.deterministic, jit_compile=FLAGS.jit_compile,
      mixed_precision=FLAGS.mixed_precision, augment=FLAGS.augment,
      labelled_slices_only=not FLAGS.all_slices, checkpoint_every=FLAGS.checkpoint_every,
      bn_recalibration_batches=FLAGS.bn_recalibration_batches,
      keep_checkpoints=FLAGS.keep_checkpoints, log_every=FLAGS.log_every,
      image_summary_every=FLAGS.image_summary_every, strategy=FLAGS.strategy,
  ).validate()


def main(argv):
  del argv  # cli.run has refused positional arguments and checked --model_dir.
  # TensorFlow's checkpoint saver and tf.distribute log at INFO through absl; keep the
  # progress lines readable.
  logging.set_verbosity(logging.WARNING)
  # First: MultiWorkerMirroredStrategy must exist before any other TensorFlow operation.
  strategy = None
  if FLAGS.strategy != "default":
    from csa_tf.training import distribution  # pylint: disable=g-import-not-at-top
    strategy = distribution.make_strategy(FLAGS.strategy)
  for name in ("train_steps", "batch_size", "feature_base", "phantom_patients"):
    if FLAGS[name].value < 1:
      raise CsaInputError(f"--{name}={FLAGS[name].value}: must be a positive integer")
  if FLAGS.data_dir:
    data_dir = FLAGS.data_dir
    prepared = PreparedDataset.open(data_dir)
    config = config_from_flags(prepared.spec, prepared.modalities, prepared.crop_size,
                               data_dir)
  else:
    # Every flag is checked before phantoms are written under --model_dir, so a bad
    # flag leaves nothing behind.
    if not 0 < FLAGS.phantom_scale <= 1:
      raise CsaInputError(f"--phantom_scale={FLAGS.phantom_scale}: must be in (0, 1]")
    if FLAGS.crop_size <= 0 or FLAGS.crop_size % 8:
      raise CsaInputError(f"--crop_size={FLAGS.crop_size}: must be a positive multiple "
                          "of 8 (the network downsamples by 8)")
    spec = datasets.get_spec(FLAGS.dataset)
    phantom_modalities = ("lge", "bssfp") if spec.name == "mscmr" else spec.modalities
    data_dir = os.path.join(FLAGS.model_dir, "phantom_data", "prep")
    config_from_flags(spec, phantom_modalities, FLAGS.crop_size, data_dir)
    prepare_phantom_data(
        FLAGS.model_dir, dataset=FLAGS.dataset, num_patients=FLAGS.phantom_patients,
        scale=FLAGS.phantom_scale, crop_size=FLAGS.crop_size, seed=FLAGS.seed)
    prepared = PreparedDataset.open(data_dir)
    config = config_from_flags(prepared.spec, prepared.modalities, prepared.crop_size,
                               data_dir)
  from csa_tf.training import trainer  # pylint: disable=g-import-not-at-top
  trainer.Trainer(config, prepared, strategy=strategy).train()


if __name__ == "__main__":
  # The demo's phantom generator names its parameters scale and num_patients.
  cli.run(main, define_flags, required=("model_dir",), tensorflow=True,
          flag_names={"scale": "phantom_scale", "num_patients": "phantom_patients"})
