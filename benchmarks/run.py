r"""The benchmark suite: every figure measured side by side in one run.

  python -m benchmarks.run [--full] [--feature_base=N] [--steps=N] [--output=FILE]

prints one `name: value` line per figure:

  csa_overhead_ratio  step time of --method=csa / --method=msbn (same net, data, batch)
  loop_vs_fit_ratio   our custom-loop step (one modality) / keras Model.fit's step, same
                      network, loss (Dice + CE + L2) and data, after warm-up
  xla_speedup         step time without / with jit_compile
  step_3d_ratio       step time of the 3D CSA network on one patch of 8 slices per
                      modality (--spatial_dims=3 --patch_depth=8 --batch_size=1, as
                      experiments/mmwhs3d.flags) / the 2D CSA step on 8 slices
  step_3d_rss_ratio   the same two steps' memory: peak RSS of a fresh process training
                      the 3D step / of one training the 2D step, each less the peak of
                      an idle process that imported TensorFlow and loaded the same data
                      (also prints the three peaks in MB)
  input_headroom      batches/s the tf.data pipeline delivers alone / batches/s the
                      training step consumes
  hd_eval_seconds     per-class HD on a CT-sized (512x512x250) volume (evaluation code)
  prep_peak_rss_mb    peak memory of preparing one CT-sized MM-WHS volume (subprocess)
  model_gflops_per_image  forward GFLOPs of the paper's network on one 224x224 slice
                      (always the paper's: feature_base 16, 4 classes, 1 channel)
  flops_utilization   achieved GFLOP/s of the timed CSA step / peak_gflops (the best
                      round of a large float32 matmul on the same device, timed in the
                      same rounds as the step); also prints
                      step_gflops, achieved_gflops and peak_gflops

Timed figures print their median over --rounds interleaved rounds with the min and max
(a ratio's spread is that of its per-round ratios, each round timing both sides).

Default sizes fit a 2-core CPU in a few minutes (feature_base 8, 64x64 crops, batch 8
per modality); --full uses the paper's (feature_base 16, 224x224, batch 8), and
--feature_base another width (4: the demo's, experiments/demo.flags).
"""
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional, Sequence

from absl import flags

from csa_tf import cli
from csa_tf.errors import CsaInputError

FLAGS = flags.FLAGS
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def define_flags():
  """Defines this command's flags (only when run as a command, never on import)."""
  flags.DEFINE_bool("full", False, "Paper sizes (feature_base 16, 224 crops).")
  flags.DEFINE_integer("feature_base", None, "Network width of the timed steps; "
                       "default 8, or 16 with --full (4 is the demo's).", lower_bound=1)
  flags.DEFINE_integer("steps", 10, "Timed steps per configuration and round (rounds "
                       "alternate the configurations, after warm-up).")
  flags.DEFINE_integer("rounds", 5, "Interleaved timing rounds per figure.")
  flags.DEFINE_integer("warmup", 3, "Untimed steps per configuration.")
  flags.DEFINE_string("output", None, "Also write a Markdown report here.")
  flags.DEFINE_list("only", [], "Measure only these figures (names as printed).")


ROUNDS = 5


def _interleaved_seconds(runners: Dict[str, Callable[[int], float]], steps: int,
                         warmup: int, rounds: int = ROUNDS) -> Dict[str, List[float]]:
  """Seconds per step of each runner in each of `rounds` alternating rounds.

  Each runner(n) runs n steps and returns the seconds they took. Alternating the
  configurations round by round keeps a change in machine load from favouring one, and
  lets a ratio be taken within each round.
  """
  for run in runners.values():
    run(max(warmup, 1))
  per_step = {name: [] for name in runners}
  for _ in range(rounds):
    for name, run in runners.items():
      per_step[name].append(run(steps) / steps)
  return per_step


def spread(name: str, values: Sequence[float]) -> Dict[str, float]:
  """{name: median, name_min, name_max} of one figure's per-round values."""
  return {name: statistics.median(values), f"{name}_min": min(values),
          f"{name}_max": max(values)}


def _ratio(numerators: Sequence[float], denominators: Sequence[float]) -> List[float]:
  return [n / d for n, d in zip(numerators, denominators)]


def _medians(per_round: Dict[str, List[float]], suffix: str) -> Dict[str, float]:
  return {f"{name}{suffix}": statistics.median(values)
          for name, values in per_round.items()}


class Workbench:
  """Phantom data and trainers shared by the training-step figures."""

  def __init__(self, root: str, *, full: bool, feature_base: Optional[int] = None,
               reuse: bool = False):
    """Writes MS-CMRSeg phantoms and their PREP under root (reuse: opens those an
    earlier Workbench on the same root wrote, as the memory figure's children do)."""
    from csa_tf.data.prepared import PreparedDataset  # pylint: disable=g-import-not-at-top
    from csa_tf.data import phantom  # pylint: disable=g-import-not-at-top
    from csa_tf.data.mscmr import prepare_mscmr  # pylint: disable=g-import-not-at-top
    from csa_tf.configs import datasets  # pylint: disable=g-import-not-at-top
    self.root = root
    self.crop = 224 if full else 64
    self.feature_base = feature_base or default_feature_base(full)
    prep = os.path.join(root, "prep")
    if reuse:
      self.prepared = PreparedDataset.open(prep)
      return
    raw = os.path.join(root, "raw")
    phantom.generate_phantoms("mscmr", raw, num_patients=4, seed=0,
                              scale=1.0 if full else 0.25,
                              modalities=datasets.MSCMR.paper_modalities,
                              progress=None)
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

  def step_runner(self, config, trainer=None) -> Callable[[int], float]:
    """runner(n): seconds of n training steps on fixed, pre-fetched batches."""
    from csa_tf.training.trainer import Trainer  # pylint: disable=g-import-not-at-top
    trainer = trainer or Trainer(config, self.prepared, log=lambda _: None)
    batches = next(iter(trainer.dataset(0)))
    def run(n):
      start = time.perf_counter()
      for _ in range(n):
        terms = trainer._train_step(batches)  # pylint: disable=protected-access
      float(terms["total"])  # wait for the last step
      return time.perf_counter() - start
    return run


def csa_overhead_ratio(bench: Workbench, steps: int, warmup: int,
                       rounds: int) -> Dict[str, float]:
  seconds = _interleaved_seconds(
      {"msbn": bench.step_runner(bench.config("msbn", method="msbn")),
       "csa": bench.step_runner(bench.config("csa", method="csa"))}, steps, warmup,
      rounds)
  return dict(spread("csa_overhead_ratio", _ratio(seconds["csa"], seconds["msbn"])),
              **_medians(seconds, "_step_seconds"))


def xla_speedup(bench: Workbench, steps: int, warmup: int,
                rounds: int) -> Dict[str, float]:
  seconds = _interleaved_seconds(
      {"plain": bench.step_runner(bench.config("plain", method="csa")),
       "xla": bench.step_runner(bench.config("xla", method="csa", jit_compile=True))},
      steps, warmup, rounds)
  return dict(spread("xla_speedup", _ratio(seconds["plain"], seconds["xla"])),
              csa_plain_step_seconds=statistics.median(seconds["plain"]),
              csa_xla_step_seconds=statistics.median(seconds["xla"]))


def loop_vs_fit_ratio(bench: Workbench, steps: int, warmup: int,
                      rounds: int) -> Dict[str, float]:
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
                                 steps, warmup, rounds)
  return dict(spread("loop_vs_fit_ratio", _ratio(seconds["loop"], seconds["fit"])),
              **_medians(seconds, "_step_seconds"))


def step_3d_ratio(bench: Workbench, steps: int, warmup: int,
                  rounds: int) -> Dict[str, float]:
  """The 3D CSA step against the 2D one on as many slices (8 per modality)."""
  seconds = _interleaved_seconds(
      {"csa_2d": bench.step_runner(bench.config("csa2d", method="csa")),
       "csa_3d": bench.step_runner(bench.config("csa3d", method="csa", spatial_dims=3,
                                                patch_depth=8, batch_size=1))},
      steps, warmup, rounds)
  return dict(spread("step_3d_ratio", _ratio(seconds["csa_3d"], seconds["csa_2d"])),
              **_medians(seconds, "_step_seconds"))


# The 3D step against the 2D one (as step_3d_ratio); None: load the data, train nothing.
_STEP_CONFIGS = {"idle": None,
                 "csa_2d": dict(method="csa"),
                 "csa_3d": dict(method="csa", spatial_dims=3, patch_depth=8, batch_size=1)}
# Each configuration trains in a fresh process, whose VmHWM (peak RSS, see _PREP_CHILD)
# is then its own: one process would report the larger configuration's peak for both.
_STEP_CHILD = r"""
import json, sys
import tensorflow  # the idle baseline holds the runtime too
from benchmarks.run import _STEP_CONFIGS, Workbench
root, full, feature_base, name = json.loads(sys.argv[1])
bench = Workbench(root, full=full, feature_base=feature_base, reuse=True)
if _STEP_CONFIGS[name] is not None:
  run = bench.step_runner(bench.config(name + "_rss", **_STEP_CONFIGS[name]))
  run(2)  # the traced step and one more
with open("/proc/self/status") as f:
  peak_kb = [line.split()[1] for line in f if line.startswith("VmHWM:")][0]
print(int(peak_kb) / 1024.0)
"""


def step_3d_rss_ratio(bench: Workbench, steps: int, warmup: int,
                      rounds: int) -> Dict[str, float]:
  """Peak memory of the 3D CSA step against the 2D one, each above an idle process."""
  del steps, warmup, rounds
  peaks = {}
  for name in _STEP_CONFIGS:
    args = json.dumps([bench.root, bench.crop == 224, bench.feature_base, name])
    result = subprocess.run([sys.executable, "-c", _STEP_CHILD, args], capture_output=True,
                            text=True, check=True, cwd=_REPO)
    peaks[f"{name}_peak_rss_mb"] = float(result.stdout.strip().splitlines()[-1])
  idle = peaks["idle_peak_rss_mb"]
  ratio = (peaks["csa_3d_peak_rss_mb"] - idle) / (peaks["csa_2d_peak_rss_mb"] - idle)
  return dict(peaks, step_3d_rss_ratio=ratio)


def input_headroom(bench: Workbench, steps: int, warmup: int,
                   rounds: int) -> Dict[str, float]:
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
  step_rate = 1.0 / statistics.median(_interleaved_seconds(
      {"step": bench.step_runner(config)}, steps, warmup, rounds)["step"])
  return {"input_headroom": pipeline_rate / step_rate,
          "pipeline_batches_per_second": pipeline_rate,
          "train_steps_per_second": step_rate}


def model_gflops_per_image(bench, steps, warmup, rounds) -> Dict[str, float]:
  del bench, steps, warmup, rounds
  from csa_tf.model import flops  # pylint: disable=g-import-not-at-top
  return {"model_gflops_per_image": flops.paper_network_gflops_per_image()}


def flops_utilization(bench: Workbench, steps: int, warmup: int,
                      rounds: int) -> Dict[str, float]:
  """The CSA step's achieved GFLOP/s against a float32 matmul's, round by round."""
  from benchmarks import utilization  # pylint: disable=g-import-not-at-top
  from csa_tf.model import flops  # pylint: disable=g-import-not-at-top
  from csa_tf.training.trainer import Trainer  # pylint: disable=g-import-not-at-top
  config = bench.config("flops", method="csa")
  trainer = Trainer(config, bench.prepared, log=lambda _: None)
  (net,) = trainer.bundle.unique_networks
  step_flops = flops.training_step_flops(
      net, bench.crop, bench.crop,
      images_per_step=config.batch_size * len(config.modalities))
  seconds = _interleaved_seconds(
      {"step": bench.step_runner(config, trainer), "matmul": utilization.matmul_runner()},
      steps, warmup, rounds)
  achieved = utilization.gflops_per_round(step_flops, seconds["step"])
  peak = utilization.gflops_per_round(utilization.matmul_flops_per_call(),
                                      seconds["matmul"])
  # Against the best matmul round: the device's limit is what it can reach, and a round
  # slowed by other load would otherwise inflate that round's utilization.
  best = max(peak)
  return dict(spread("flops_utilization", [value / best for value in achieved]),
              step_gflops=step_flops / 1e9, **spread("achieved_gflops", achieved),
              **spread("peak_gflops", peak))


# HD is timed in a fresh process, as csa_tf.evaluate runs it: in this one, the heap and
# threads the training figures left behind slowed it by 10-30% (measured 2026-12-01).
_HD_CHILD = r"""
import json, sys
from benchmarks import hd_eval
shape = tuple(int(n) for n in sys.argv[2].split("x"))
print(json.dumps(hd_eval.hd_eval_rounds(shape, repeats=int(sys.argv[1]))))
"""


def hd_eval_seconds(bench, steps, warmup, rounds,
                    shape: Sequence[int] = (512, 512, 250)) -> Dict[str, float]:
  """Per-class HD seconds on a CT-sized volume, in a fresh process, over `rounds`."""
  del bench, steps, warmup
  result = subprocess.run([sys.executable, "-c", _HD_CHILD, str(rounds),
                           "x".join(str(n) for n in shape)],
                          capture_output=True, text=True, check=True, cwd=_REPO)
  return spread("hd_eval_seconds", json.loads(result.stdout.strip().splitlines()[-1]))


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


def prep_peak_rss_mb(bench, steps, warmup, rounds) -> Dict[str, float]:
  """Peak RSS of a fresh process preparing one CT-sized MM-WHS phantom volume."""
  del bench, steps, warmup, rounds
  from csa_tf.data import phantom  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as root:
    raw = os.path.join(root, "raw")
    phantom.generate_phantoms("mmwhs", raw, num_patients=1, seed=0, scale=1.0,
                              modalities=("ct",), progress=None)
    result = subprocess.run([sys.executable, "-c", _PREP_CHILD, raw,
                             os.path.join(root, "prep")],
                            capture_output=True, text=True, check=True, cwd=_REPO)
    return {"prep_peak_rss_mb": float(result.stdout.strip().splitlines()[-1])}


FIGURES = (("model_gflops_per_image", model_gflops_per_image),
           ("flops_utilization", flops_utilization),
           ("csa_overhead_ratio", csa_overhead_ratio),
           ("loop_vs_fit_ratio", loop_vs_fit_ratio),
           ("xla_speedup", xla_speedup),
           ("step_3d_ratio", step_3d_ratio),
           ("step_3d_rss_ratio", step_3d_rss_ratio),
           ("input_headroom", input_headroom),
           ("hd_eval_seconds", hd_eval_seconds),
           ("prep_peak_rss_mb", prep_peak_rss_mb))
# Figures that need no training workbench.
_STANDALONE = ("model_gflops_per_image", "hd_eval_seconds", "prep_peak_rss_mb")
TARGETS = {"model_gflops_per_image": "59.6 (REFERENCE.md section 1)",
           "flops_utilization": ">= 0.30 at paper size", "csa_overhead_ratio": "<= 1.10", "loop_vs_fit_ratio": "<= 1.0",
           "xla_speedup": "(report)", "step_3d_ratio": "(report)", "step_3d_rss_ratio": "(report)",
           "input_headroom": ">= 5",
           "hd_eval_seconds": "< 0.3", "prep_peak_rss_mb": "< 2048"}


def figure_line(name: str, results: Dict[str, float]) -> str:
  """`name: median` and, for a timed figure, its spread over rounds."""
  line = f"{name}: {results[name]:.3f}"
  if f"{name}_min" in results:
    line += f" (min {results[name + '_min']:.3f}, max {results[name + '_max']:.3f})"
  return line


def default_feature_base(full: bool) -> int:
  """The timed network's width unless --feature_base says otherwise."""
  return 16 if full else 8


def sizes_text(full: bool, feature_base: Optional[int] = None) -> str:
  """The timed configuration in words, for the report."""
  width = feature_base or default_feature_base(full)
  return (f"{'paper sizes' if full else 'CPU sizes'} (feature_base {width}, "
          f"{'224x224' if full else '64x64'}, batch 8 per modality)")


def run_benchmarks(*, full: bool, steps: int, warmup: int, rounds: int = ROUNDS,
                   only=(), feature_base: Optional[int] = None) -> Dict[str, float]:
  """Measures every figure (or those in `only`); returns every value by name.

  Raises:
    CsaInputError: `only` names no figure, or rounds < 1.
  """
  unknown = [name for name in only if name not in dict(FIGURES)]
  if unknown:
    raise CsaInputError(f"--only: unknown figure {', '.join(unknown)}; expected some of "
                        f"{', '.join(name for name, _ in FIGURES)}")
  if rounds < 1:
    raise CsaInputError(f"--rounds={rounds}: must be at least 1")
  results: Dict[str, float] = {}
  with tempfile.TemporaryDirectory() as root:
    bench = None
    for name, measure in FIGURES:
      if only and name not in only:
        continue
      if bench is None and name not in _STANDALONE:
        bench = Workbench(root, full=full, feature_base=feature_base)
      values = measure(bench, steps, warmup, rounds)
      results.update(values)
      print(figure_line(name, results), flush=True)
  return results


def markdown_report(results: Dict[str, float], command: str, full: bool,
                    feature_base: Optional[int] = None) -> str:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  lines = ["# Benchmarks", "",
           f"Measured {datetime.date.today().isoformat()} with `{command}` on "
           f"{platform.machine()} / {os.cpu_count()} CPU cores / "
           f"{'GPU ' + str(tf.config.list_physical_devices('GPU')) if tf.config.list_physical_devices('GPU') else 'no GPU'}, "
           f"Python {platform.python_version()}, TensorFlow {tf.__version__}; "
           f"{sizes_text(full, feature_base)}.",
           "", "| figure | median | min | max | target |", "|---|---|---|---|---|"]
  for name, _ in FIGURES:
    if name in results:
      low, high = (f"{results[k]:.3f}" if k in results else "" for k in
                   (f"{name}_min", f"{name}_max"))
      lines.append(f"| {name} | {results[name]:.3f} | {low} | {high} | {TARGETS[name]} |")
  lines += ["", "Details (medians over rounds):", ""]
  lines += [f"- {k}: {v:.4g}" for k, v in results.items()
            if k not in TARGETS and not k.endswith(("_min", "_max"))]
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  results = run_benchmarks(full=FLAGS.full, steps=FLAGS.steps, warmup=FLAGS.warmup,
                           rounds=FLAGS.rounds, only=FLAGS.only,
                           feature_base=FLAGS.feature_base)
  for name, value in results.items():
    if name not in TARGETS and not name.endswith(("_min", "_max")):
      print(f"  {name}: {value:.4g}")
  if FLAGS.output:
    command = "python -m benchmarks.run " + " ".join(sys.argv[1:])
    report = markdown_report(results, command, FLAGS.full, FLAGS.feature_base)
    from csa_tf.io import atomic  # pylint: disable=g-import-not-at-top
    atomic.write_text(FLAGS.output, report)
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
  print(f"  benchmark_process_peak_rss_mb: {peak:.0f}")


if __name__ == "__main__":
  cli.run(main, define_flags, tensorflow=True)
