r"""How hard the CSA term pulls next to Dice + CE, for every reading of Eq. 3-4, at fresh
weights or at a trained run's (issue 14, study item a; `csa_tf.train
--log_term_gradients` measures it during training).

  python -m experiments.gradient_shares --data_dir=PREP [--feature_base=4] \
      [--batch_size=8] [--lambda=0.5] [--seed=0] [--from_run=RUN] [--output=OUT.md]

For each of --csa_affinity (cosine, dot) x --csa_area_norm (count, fraction, none) x
--csa_reduction (mean_then_square, square_then_mean), the CSA network is built with
--seed's weights (or, with --from_run, the latest checkpoint of RUN, a run of a setting
with shared convolutions and modality BN: msbn, affinity or csa, at its feature_base)
and one training batch per modality is drawn as training draws it. The
share is |d(lambda L_csa)/dW| / |d(alpha sum Dice + beta sum CE)/dW| over the shared
convolution kernels W (csa_tf/training/term_gradients.py). Prints (and writes to
--output) one Markdown table row per reading.
"""
import itertools
from typing import Dict, List, Optional, Sequence, Tuple

from absl import flags

from csa_tf import cli
from csa_tf.configs import train_config as config_lib

FLAGS = flags.FLAGS


def define_flags():
  """Defines this command's flags (only when run as a command, never on import)."""
  flags.DEFINE_string("data_dir", None, "Prepared data (PREP).")
  flags.DEFINE_integer("feature_base", 4, "Channels of the first group.")
  flags.DEFINE_integer("batch_size", 8, "Slices per modality.")
  flags.DEFINE_float("lambda", 0.5, "Weight of the CSA term.")
  flags.DEFINE_integer("seed", 0, "Seed of the weights and the batch.")
  flags.DEFINE_string("output", None, "Also write the table to this Markdown file.")
  flags.DEFINE_string("from_run", None, "Measure at this run's latest checkpoint "
                      "(msbn, affinity or csa; its feature_base) instead of fresh "
                      "weights.")


READINGS = tuple(itertools.product(config_lib.AFFINITIES, config_lib.AREA_NORMS,
                                   config_lib.REDUCTIONS))


def gradient_shares(data_dir: str, *, feature_base: int, batch_size: int, lam: float,
                    seed: int, readings: Sequence[Tuple[str, str, str]] = READINGS,
                    checkpoint: Optional[str] = None) -> List[Dict]:
  """One row per (affinity, area_norm, reduction) reading: {affinity, area_norm,
  reduction, csa_loss, csa, segmentation, share} (csa and segmentation: the gradient
  norms), at fresh seeded weights or those of `checkpoint`.

  Raises:
    CsaInputError: a bad PREP or option value, or a checkpoint that does not fit a CSA
      network of this feature_base.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from csa_tf.data import pipeline  # pylint: disable=g-import-not-at-top
  from csa_tf.data.prepared import PreparedDataset  # pylint: disable=g-import-not-at-top
  from csa_tf.model.bundle import ModelBundle  # pylint: disable=g-import-not-at-top
  from csa_tf.training import objective  # pylint: disable=g-import-not-at-top
  from csa_tf.training.term_gradients import shared_kernels  # pylint: disable=g-import-not-at-top
  prepared = PreparedDataset.open(data_dir)
  rows = []
  batches = None
  for affinity, area_norm, reduction in readings:
    config = config_lib.TrainConfig.for_data(
        dict(method="csa", feature_base=feature_base, batch_size=batch_size, lam=lam,
             seed=seed, csa_affinity=affinity, csa_area_norm=area_norm,
             csa_reduction=reduction, model_dir="unused"),
        spec=prepared.spec, available_modalities=prepared.modalities,
        crop_size=prepared.crop_size, data_dir=data_dir)
    if batches is None:  # The same batch for every reading.
      stream = pipeline.unpaired_batches(prepared, config.modalities,
                                         batch_size=batch_size, seed=seed)
      batches = next(iter(stream))
    tf.keras.utils.set_random_seed(seed)  # The same weights for every reading.
    bundle = ModelBundle(config).build()
    if checkpoint is not None:
      bundle.restore(checkpoint)
    kernels = shared_kernels(bundle)
    with tf.GradientTape(persistent=True) as tape:
      _, terms = objective.compute_losses(bundle, batches, config, training=True)
      segmentation = tf.add_n(
          [config.alpha * terms[f"dice_{m}"] + config.beta * terms[f"ce_{m}"]
           for m in config.modalities])
      csa = config.lam * terms["csa"]
    norms = {name: float(tf.linalg.global_norm(
        [g for g in tape.gradient(value, kernels) if g is not None]))
             for name, value in (("csa", csa), ("segmentation", segmentation))}
    rows.append(dict(affinity=affinity, area_norm=area_norm, reduction=reduction,
                     csa_loss=float(terms["csa"]), **norms,
                     share=norms["csa"] / norms["segmentation"]))
  return rows


def markdown(rows: List[Dict]) -> str:
  lines = ["| affinity | area norm | reduction | CSA loss | CSA grad | Dice+CE grad | "
           "CSA / Dice+CE |", "|---|---|---|---|---|---|---|"]
  lines += [f"| {r['affinity']} | {r['area_norm']} | {r['reduction']} | "
            f"{r['csa_loss']:.3g} | {r['csa']:.3g} | {r['segmentation']:.3g} | "
            f"{r['share']:.3g} |" for r in rows]
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  from csa_tf.io import atomic  # pylint: disable=g-import-not-at-top
  feature_base, checkpoint = FLAGS.feature_base, None
  if FLAGS.from_run:
    from csa_tf.io.run_dir import RunDir  # pylint: disable=g-import-not-at-top
    run = RunDir(FLAGS.from_run)
    feature_base = run.load_config().feature_base
    checkpoint = run.latest_checkpoint()
    print(f"at {checkpoint} (feature_base {feature_base})")
  rows = gradient_shares(FLAGS.data_dir, feature_base=feature_base,
                         batch_size=FLAGS.batch_size, lam=FLAGS["lambda"].value,
                         seed=FLAGS.seed, checkpoint=checkpoint)
  text = markdown(rows)
  print(text, end="")
  if FLAGS.output:
    atomic.write_text(FLAGS.output, text)


if __name__ == "__main__":
  cli.run(main, define_flags, required=("data_dir",), tensorflow=True)
