r"""Trains one setting of Tables 1-3.

  python -m csa_tf.train --flagfile=experiments/mscmr.flags --data_dir=PREP --model_dir=RUN

Without --data_dir, cardiac phantoms in the MS-CMRSeg (or --dataset=mmwhs) layout are
generated and prepared under RUN/phantom_data first, so the command works with no
download. Re-running the same command resumes from RUN's latest checkpoint.
"""
import contextlib

from absl import flags
from absl import logging

from csa_tf.configs import options
from csa_tf.configs import train_config as config_lib
from csa_tf import cli
from csa_tf import tf_runtime
from csa_tf.errors import CsaInputError
from csa_tf.data import demo
from csa_tf.data.prepared import PreparedDataset
from csa_tf.io.run_lock import RunLock

FLAGS = flags.FLAGS
# The option sections whose fields are this command's flags. A message about a field of
# either is spelt with its flag; the demo's --crop_size names the crop size of the data.
SECTIONS = (config_lib.DemoDataConfig, config_lib.TrainConfig)


def define_flags():
  """Defines this command's flags (only when run as a command, never on import).

  One flag per declared option of `TrainConfig` and `DemoDataConfig`, with the type,
  default, choices and help text of its declaration (csa_tf/configs/train_config.py).
  """
  for section in SECTIONS:
    options.define_flags(section, FLAGS)


def config_from_flags(model_dir: str):
  """The validated config and, when they exist, the prepared data it trains on.

  Every flag is checked here, before anything is written under model_dir. Without
  --data_dir the data are the demo's phantoms: their PREP if an earlier run prepared it,
  else what the demo section says it will generate.

  Returns:
    (TrainConfig, PreparedDataset or None when the phantoms are still to be made,
    DemoDataConfig).

  Raises:
    ConfigError: an option out of range or in conflict with the data.
    CsaInputError: --data_dir is not a readable PREP.
  """
  values = options.values_from_flags(config_lib.TrainConfig, FLAGS)
  demo_data = config_lib.DemoDataConfig(
      **options.values_from_flags(config_lib.DemoDataConfig, FLAGS)).validate()
  data_dir = FLAGS.data_dir or demo.existing_phantom_prep(model_dir)
  if data_dir:
    prepared = PreparedDataset.open(data_dir)
    spec, modalities, crop_size = prepared.spec, prepared.modalities, prepared.crop_size
  else:
    prepared, data_dir = None, demo.phantom_prep_dir(model_dir)
    spec = demo_data.spec
    modalities, crop_size = spec.paper_modalities, demo_data.crop_size
  config = config_lib.TrainConfig.for_data(
      values, spec=spec, available_modalities=modalities, crop_size=crop_size,
      data_dir=data_dir)
  return config, prepared, demo_data


def main(argv):
  del argv  # cli.run has refused positional arguments and checked --model_dir.
  # TensorFlow's checkpoint saver and tf.distribute log at INFO through absl; keep the
  # progress lines readable.
  logging.set_verbosity(logging.WARNING)
  try:
    config, prepared, demo_data = config_from_flags(FLAGS.model_dir)
    # One writer per run folder, refused at once, before TensorFlow loads. Under
    # multi_worker only the chief holds it, which only its strategy knows: the Trainer
    # takes it there (and re-enters this one otherwise).
    lock = (contextlib.nullcontext() if config.strategy == "multi_worker"
            else RunLock(config.model_dir))
    with lock:
      _train(config, prepared, demo_data)
  except options.ConfigError as error:
    # The library names options by field; the user typed flags.
    raise CsaInputError(error.render(options.flag_spelling(*SECTIONS))) from None


def _train(config, prepared, demo_data):
  """Trains the checked config; the phantoms are made first when prepared is None."""
  # Every flag is checked: only now load TensorFlow (quietly, csa_tf/tf_runtime.py).
  tf_runtime.import_tensorflow()
  strategy = None
  if config.strategy != "default":
    # MultiWorkerMirroredStrategy must exist before any other TensorFlow operation;
    # reading the flags and the PREP's metadata above runs none.
    from csa_tf.training import distribution  # pylint: disable=g-import-not-at-top
    strategy = distribution.make_strategy(config.strategy)
  if prepared is None:
    demo.prepare_phantom_data(
        config.model_dir, dataset=demo_data.dataset,
        num_patients=demo_data.phantom_patients, scale=demo_data.phantom_scale,
        crop_size=demo_data.crop_size, seed=config.seed)
    prepared = PreparedDataset.open(config.data_dir)
  from csa_tf.training import trainer  # pylint: disable=g-import-not-at-top
  trainer.Trainer(config, prepared, strategy=strategy).train()


if __name__ == "__main__":
  # The demo's phantom generator names its parameters scale and num_patients.
  cli.run(main, define_flags, required=("model_dir",),
          flag_names={"scale": "phantom_scale", "num_patients": "phantom_patients"})
