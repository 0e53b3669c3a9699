r"""The benchmark suite: every figure measured side by side in one run.

  python -m benchmarks.run [--full] [--steps=N] [--output=docs/benchmarks.md]

prints one `name: value` line per figure:

  csa_overhead_ratio  step time of --method=csa / --method=msbn (same net, data, batch)
  loop_vs_fit_ratio   our custom-loop step (one modality) / keras Model.fit's step, same
                      network, loss (Dice + CE + L2) and data, after warm-up
  xla_speedup         step time without / with jit_compile
  input_headroom      batches/s the tf.data pipeline delivers alone / batches/s the
                      training step consumes
  hd_eval_seconds     per-class HD on a CT-sized (512x512x250) volume (evaluation code)
  prep_peak_rss_mb    peak memory of preparing one CT-sized MM-WHS volume (subprocess)

Default sizes fit a 2-core CPU in a few minutes (feature_base 8, 64x64 crops, batch 8
per modality); --full uses the paper's (feature_base 16, 224x224, batch 8).
"""
import datetime
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict

from absl import flags

from csa_tf import cli

FLAGS = flags.FLAGS


def define_flags():
  """Defines this command's flags (only when run as a command, never on import)."""
  flags.DEFINE_bool("full", False, "Paper sizes (feature_base 16, 224 crops).")
  flags.DEFINE_integer("steps", 10, "Timed steps per configuration and round (3 rounds, "
                       "alternating configurations, after warm-up).")
  flags.DEFINE_integer("warmup", 3, "Untimed steps per configuration.")
  flags.DEFINE_string("output", None, "Also write a Markdown report here.")
  flags.DEFINE_list("only", [], "Measure only these figures (names as printed).")


ROUNDS = 3


def _interleaved_seconds(runners: Dict[str, Callable[[int], float]], steps: int,
                         warmup: int) -> Dict[str, float]:
  """Median seconds per step of each runner, measured in alternating rounds.

  Each runner(n) runs n steps and returns the seconds they took. Alternating the
  configurations round by round keeps a change in machine load from favouring one.
  """
  for run in runners.values():
    run(max(warmup, 1))
  per_step = {name: [] for name in runners}
  for _ in range(ROUNDS):
    for name, run in runners.items():
      per_step[name].append(run(steps) / steps)
  return {name: statistics.median(times) for name, times in per_step.items()}


class Workbench:
  """Phantom data and trainers shared by the training-step figures."""

  def __init__(self, root: str, *, full: bool):
    from csa_tf.data.prepared import PreparedDataset  # pylint: disable=g-import-not-at-top
    from csa_tf.data import phantom  # pylint: disable=g-import-not-at-top
    from csa_tf.data.mscmr import prepare_mscmr  # pylint: disable=g-import-not-at-top
    from csa_tf.configs import datasets  # pylint: disable=g-import-not-at-top
    self.root = root
    self.crop = 224 if full else 64
    self.feature_base = 16 if full else 8
    raw = os.path.join(root, "raw")
    phantom.generate_phantoms("mscmr", raw, num_patients=4, seed=0,
                              scale=1.0 if full else 0.25,
                              modalities=datasets.MSCMR.paper_modalities,
                              progress=None)
    prep = os.path.join(root, "prep")
    prepare_mscmr(raw, prep, crop_size=self.crop, test_fraction=0.25)
    self.prepared = PreparedDataset.open(prep)

  def config(self, name: str, **overrides):
    from csa_tf.configs import train_config as config_lib  # pylint: disable=g-import-not-at-top
    values = dict(model_dir=os.path.join(self.root, name), data_dir=self.prepared.prep_dir,
                  dataset="mscmr", num_classes=4, crop_size=self.crop, method="msbn",
                  batch_size=8, feature_base=self.feature_base, train_steps=10**6,
                  bn_recalibration_batches=0)
    values.update(overrides)
    return config_lib.TrainConfig(**values).validate()

  def step_runner(self, config) -> Callable[[int], float]:
    """runner(n): seconds of n training steps on fixed, pre-fetched batches."""
    from csa_tf.training.trainer import Trainer  # pylint: disable=g-import-not-at-top
    trainer = Trainer(config, self.prepared, log=lambda _: None)
    batches = next(iter(trainer.dataset(0)))
    def run(n):
      start = time.perf_counter()
      for _ in range(n):
        terms = trainer._train_step(batches)  # pylint: disable=protected-access
      float(terms["total"])  # wait for the last step
      return time.perf_counter() - start
    return run


def csa_overhead_ratio(bench: Workbench, steps: int, warmup: int) -> Dict[str, float]:
  seconds = _interleaved_seconds(
      {"msbn": bench.step_runner(bench.config("msbn", method="msbn")),
       "csa": bench.step_runner(bench.config("csa", method="csa"))}, steps, warmup)
  return {"csa_overhead_ratio": seconds["csa"] / seconds["msbn"],
          "msbn_step_seconds": seconds["msbn"], "csa_step_seconds": seconds["csa"]}


def xla_speedup(bench: Workbench, steps: int, warmup: int) -> Dict[str, float]:
  seconds = _interleaved_seconds(
      {"plain": bench.step_runner(bench.config("plain", method="csa")),
       "xla": bench.step_runner(bench.config("xla", method="csa", jit_compile=True))},
      steps, warmup)
  return {"xla_speedup": seconds["plain"] / seconds["xla"],
          "csa_plain_step_seconds": seconds["plain"],
          "csa_xla_step_seconds": seconds["xla"]}


def loop_vs_fit_ratio(bench: Workbench, steps: int, warmup: int) -> Dict[str, float]:
  """One modality: our tf.function step vs keras Model.fit on the same net/loss/data."""
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from csa_tf import losses  # pylint: disable=g-import-not-at-top
  from csa_tf.model.csa_net import CsaNet  # pylint: disable=g-import-not-at-top
  config = bench.config("loop", method="single", modalities=("lge",))

  keras.utils.set_random_seed(0)
  net = CsaNet(4, ["lge"], feature_base=config.feature_base)

  class OneModality(keras.Model):
    def __init__(self, inner):
      super().__init__()
      self.inner = inner

    def call(self, images, training=False):
      return self.inner(images, modality="lge", training=training)

  model = OneModality(net)
  model(tf.zeros([1, bench.crop, bench.crop, 1]))

  def loss_fn(labels, logits):
    probs = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
    labels = tf.cast(labels, tf.int32)
    return (losses.dice_loss(probs, labels, num_classes=4)
            + losses.weighted_ce_loss(probs, labels, num_classes=4)
            + losses.l2_loss(net.conv_kernels, weight=config.l2_weight))

  model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=loss_fn)
  from csa_tf.data import pipeline as data  # pylint: disable=g-import-not-at-top
  images, labels = bench.prepared.train_slices("lge")
  batch = next(iter(data.modality_batches(images, labels, batch_size=8, seed=0)))
  dataset = tf.data.Dataset.from_tensors(batch).repeat()

  # Whole fit() calls are timed: Keras 3 calls batch callbacks without waiting for the
  # step to finish, so per-batch callback timings would measure dispatch only. The
  # returned history holds Python floats, so fit() has finished all steps when it returns.
  def fit_run(n):
    start = time.perf_counter()
    model.fit(dataset, epochs=1, steps_per_epoch=n, verbose=0)
    return time.perf_counter() - start
  seconds = _interleaved_seconds({"loop": bench.step_runner(config), "fit": fit_run},
                                 steps, warmup)
  return {"loop_vs_fit_ratio": seconds["loop"] / seconds["fit"],
          "loop_step_seconds": seconds["loop"], "fit_step_seconds": seconds["fit"]}


def input_headroom(bench: Workbench, steps: int, warmup: int) -> Dict[str, float]:
  from csa_tf.data import pipeline as data  # pylint: disable=g-import-not-at-top
  config = bench.config("input", method="csa")
  dataset = data.unpaired_batches(bench.prepared, config.modalities, batch_size=8, seed=0)
  iterator = iter(dataset)
  for _ in range(warmup):
    next(iterator)
  count = max(steps * 10, 100)
  start = time.perf_counter()
  for _ in range(count):
    next(iterator)
  pipeline_rate = count / (time.perf_counter() - start)
  step_rate = 1.0 / _interleaved_seconds({"step": bench.step_runner(config)}, steps,
                                         warmup)["step"]
  return {"input_headroom": pipeline_rate / step_rate,
          "pipeline_batches_per_second": pipeline_rate,
          "train_steps_per_second": step_rate}


def hd_eval_seconds(bench, steps, warmup) -> Dict[str, float]:
  del bench, steps, warmup
  from benchmarks import hd_eval  # pylint: disable=g-import-not-at-top
  return {"hd_eval_seconds": hd_eval.measure_hd_eval_seconds()}


# The child reports VmHWM, the peak RSS of its own address space: getrusage's ru_maxrss
# would carry over the high-water mark of the (large) benchmark process it was forked
# from, since Linux keeps it across exec.
_PREP_CHILD = r"""
import sys
from csa_tf.data.mmwhs import prepare_mmwhs
prepare_mmwhs(sys.argv[1], sys.argv[2], modalities=["ct"], crop_size=256, test_fraction=0)
with open("/proc/self/status") as f:
  peak_kb = [line.split()[1] for line in f if line.startswith("VmHWM:")][0]
print(int(peak_kb) / 1024.0)
"""


def prep_peak_rss_mb(bench, steps, warmup) -> Dict[str, float]:
  """Peak RSS of a fresh process preparing one CT-sized MM-WHS phantom volume."""
  del bench, steps, warmup
  from csa_tf.data import phantom  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as root:
    raw = os.path.join(root, "raw")
    phantom.generate_phantoms("mmwhs", raw, num_patients=1, seed=0, scale=1.0,
                              modalities=("ct",), progress=None)
    result = subprocess.run([sys.executable, "-c", _PREP_CHILD, raw,
                             os.path.join(root, "prep")],
                            capture_output=True, text=True, check=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return {"prep_peak_rss_mb": float(result.stdout.strip().splitlines()[-1])}


FIGURES = (("csa_overhead_ratio", csa_overhead_ratio),
           ("loop_vs_fit_ratio", loop_vs_fit_ratio),
           ("xla_speedup", xla_speedup),
           ("input_headroom", input_headroom),
           ("hd_eval_seconds", hd_eval_seconds),
           ("prep_peak_rss_mb", prep_peak_rss_mb))
TARGETS = {"csa_overhead_ratio": "<= 1.10", "loop_vs_fit_ratio": "<= 1.0",
           "xla_speedup": "(report)", "input_headroom": ">= 5",
           "hd_eval_seconds": "< 0.5", "prep_peak_rss_mb": "< 2048"}


def run_benchmarks(*, full: bool, steps: int, warmup: int, only=()) -> Dict[str, float]:
  results: Dict[str, float] = {}
  with tempfile.TemporaryDirectory() as root:
    bench = None
    for name, measure in FIGURES:
      if only and name not in only:
        continue
      if bench is None and name not in ("hd_eval_seconds", "prep_peak_rss_mb"):
        bench = Workbench(root, full=full)
      values = measure(bench, steps, warmup)
      print(f"{name}: {values[name]:.3f}", flush=True)
      results.update(values)
  return results


def markdown_report(results: Dict[str, float], command: str, full: bool) -> str:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  lines = ["# Benchmarks", "",
           f"Measured {datetime.date.today().isoformat()} with `{command}` on "
           f"{platform.machine()} / {os.cpu_count()} CPU cores / "
           f"{'GPU ' + str(tf.config.list_physical_devices('GPU')) if tf.config.list_physical_devices('GPU') else 'no GPU'}, "
           f"Python {platform.python_version()}, TensorFlow {tf.__version__}; "
           f"{'paper sizes' if full else 'CPU sizes (feature_base 8, 64x64, batch 8 per modality)'}.",
           "", "| figure | value | target |", "|---|---|---|"]
  for name, _ in FIGURES:
    if name in results:
      lines.append(f"| {name} | {results[name]:.3f} | {TARGETS[name]} |")
  lines += ["", "Details:", ""]
  lines += [f"- {k}: {v:.4g}" for k, v in results.items() if k not in TARGETS]
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  results = run_benchmarks(full=FLAGS.full, steps=FLAGS.steps, warmup=FLAGS.warmup,
                           only=FLAGS.only)
  for name, value in results.items():
    if name not in TARGETS:
      print(f"  {name}: {value:.4g}")
  if FLAGS.output:
    command = "python -m benchmarks.run " + " ".join(sys.argv[1:])
    report = markdown_report(results, command, FLAGS.full)
    from csa_tf.io import atomic  # pylint: disable=g-import-not-at-top
    atomic.write_text(FLAGS.output, report)
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
  print(f"  benchmark_process_peak_rss_mb: {peak:.0f}")


if __name__ == "__main__":
  cli.run(main, define_flags, tensorflow=True)
