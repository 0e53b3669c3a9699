"""Figures of trained runs as PNG files (paper Fig. 6 and Fig. 2, affinities, curves).

`make_figures` is what `python -m csa_tf.visualize` runs; that command's docstring lists the
figures and their file names. Every figure of a run uses its own modality's BN statistics
(inference mode); matplotlib draws with the Agg backend.
"""
import glob
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from csa_tf.configs import train_config as config_lib
from csa_tf.training import summary_images
from csa_tf.errors import CsaInputError, param
from csa_tf.data.prepared import PreparedDataset
from csa_tf.io import atomic
from csa_tf.io.run_dir import RunDir
from csa_tf.io.run_lock import RunLock

# Test slices per modality whose batch-pooled affinities are shown.
AFFINITY_SLICES = 8


class _Run:
  """A trained run as a figure shows it: its RunDir, config and column label."""

  def __init__(self, model_dir: str, method: Optional[str] = None):
    self.model_dir = model_dir
    self.run_dir = RunDir(model_dir)
    self.config = self.run_dir.config
    # A reproduce folder names the method; otherwise the run's config does.
    self.method = method or self.config.method
    self.label = config_lib.METHOD_LABELS.get(self.method, self.method)

  @property
  def bundle(self):
    """The restored networks (TensorFlow loads on first use)."""
    return self.run_dir.networks()

  @property
  def is_3d(self) -> bool:
    return self.config.input_patch_depth is not None

  def inputs(self, neighbourhoods: np.ndarray) -> np.ndarray:
    """This run's network inputs [N, H, W, in_channels] of choose_slices' [N, H, W, 3];
    of a 3D run, each slice between its neighbours as a patch [N, 3, H, W, 1]."""
    if self.is_3d:
      return np.moveaxis(neighbourhoods, -1, 1)[..., None]
    if self.config.in_channels == 1:
      return neighbourhoods[..., 1:2]
    return neighbourhoods

  def labels(self, neighbourhoods: np.ndarray, modality: str) -> np.ndarray:
    """Class indices [N, H, W] of choose_slices' slices [N, H, W, 3] (a 3D run sees each
    slice with its two neighbours only, as `inputs` gives them)."""
    segmenter = self.run_dir.segmenter()
    if self.is_3d:
      return np.stack([segmenter.labels(patch, modality)[1]
                       for patch in self.inputs(neighbourhoods)])
    return segmenter.labels(self.inputs(neighbourhoods), modality)

  def centre_slices(self, tap) -> np.ndarray:
    """A feature tap of `inputs` as [N, h, w, channels]: a 3D run's middle slice."""
    tap = np.asarray(tap, np.float32)
    return tap[:, 1] if self.is_3d else tap


def collect_runs(model_dir: str, compare_runs: Sequence[str] = (),
                 reproduce_dir: Optional[str] = None) -> List[_Run]:
  """The runs to show, in the paper's method order (Single ... CSA), each once.

  Raises:
    CsaInputError: a folder is not a run, or the runs differ in dataset or classes.
  """
  found = [(model_dir, None)] + [(path, None) for path in compare_runs]
  if reproduce_dir:
    if not os.path.isdir(reproduce_dir):
      raise CsaInputError(f"{param('reproduce_dir', reproduce_dir)}: no such folder")
    for method in config_lib.METHOD_ORDER:
      path = os.path.join(reproduce_dir, method)
      if RunDir(path).is_run():
        found.append((path, method))
  runs, seen = [], set()
  for path, method in found:
    key = os.path.realpath(path)
    if key in seen:
      continue
    seen.add(key)
    runs.append(_Run(path, method))
  order = {m: i for i, m in enumerate(config_lib.METHOD_ORDER)}
  runs.sort(key=lambda r: order.get(r.method, len(order)))
  labels = [r.label for r in runs]
  for run in runs:
    if labels.count(run.label) > 1:
      run.label = f"{run.label}\n({os.path.basename(os.path.normpath(run.model_dir))})"
  first = runs[0].config
  for run in runs[1:]:
    if (run.config.dataset, run.config.num_classes) != (first.dataset, first.num_classes):
      raise CsaInputError(f"{run.model_dir}: dataset {run.config.dataset!r} differs from "
                          f"{runs[0].model_dir}'s {first.dataset!r}")
  return runs


def choose_slices(prepared: PreparedDataset, modality: str, count: int, *,
                  split: str = "test") -> List[Tuple[str, np.ndarray, np.ndarray]]:
  """(name, slice with its neighbours [H, W, 3], label [H, W]) of `count` annotated
  slices, largest first (the slice itself is channel 1; see `_Run.inputs`).

  Volumes take turns (volume 1's largest slice, volume 2's largest, ...), so the rows
  show different patients when there are enough.

  Raises:
    CsaInputError: the split has no annotated slice of the modality.
  """
  per_volume = []
  for entry in prepared.entries_for(split, modality):
    volume = prepared.load(entry)
    areas = (volume.label > 0).reshape(len(volume.label), -1).sum(axis=1)
    order = [int(i) for i in np.argsort(-areas, kind="stable") if areas[i] > 0]
    neighbourhoods = volume.inputs(3)
    per_volume.append([(f"{entry.patient_id} slice {i}", neighbourhoods[i],
                        volume.label[i]) for i in order])
  chosen = []
  for rank in range(max((len(v) for v in per_volume), default=0)):
    for slices in per_volume:
      if rank < len(slices) and len(chosen) < count:
        chosen.append(slices[rank])
  if not chosen:
    raise CsaInputError(f"{prepared.prep_dir}: no annotated {split} slice of {modality}")
  return chosen


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _save(fig, path: str) -> None:
  # The temporary keeps the .png suffix, from which matplotlib takes the format.
  atomic.write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=110))


def _class_legend(fig, class_names: Sequence[str]) -> None:
  from matplotlib.patches import Patch  # pylint: disable=g-import-not-at-top
  handles = [Patch(facecolor=summary_images.class_colour(c), label=class_names[c])
             for c in range(1, len(class_names))]
  fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False,
             fontsize=10)


def slice_dice(prediction: np.ndarray, truth: np.ndarray, num_classes: int) -> float:
  """Mean foreground Dice (%) of one slice over classes present in either map."""
  scores = []
  for c in range(1, num_classes):
    p, t = prediction == c, truth == c
    if p.any() or t.any():
      scores.append(2 * np.logical_and(p, t).sum() / (p.sum() + t.sum()))
  return 100 * float(np.mean(scores)) if scores else float("nan")


def segmentation_figure(runs: Sequence[_Run], prepared: PreparedDataset, modality: str,
                        path: str, *, num_slices: int) -> str:
  """Fig. 6 layout: rows are test slices; input, ground truth, then one run a column."""
  plt = _pyplot()
  spec = prepared.spec
  slices = choose_slices(prepared, modality, num_slices)
  images = np.stack([s[1] for s in slices])
  predictions = [run.labels(images, modality) for run in runs]
  columns = ["Input", "Ground truth"] + [run.label for run in runs]
  fig, axes = plt.subplots(len(slices), len(columns), squeeze=False,
                           figsize=(2.1 * len(columns), 2.1 * len(slices) + 0.9))
  for row, (name, neighbourhood, label) in enumerate(slices):
    image = neighbourhood[..., 1]
    panels = [summary_images.overlay(image, None, spec.num_classes),
              summary_images.overlay(image, label, spec.num_classes)]
    panels += [summary_images.overlay(image, p[row], spec.num_classes)
               for p in predictions]
    for col, panel in enumerate(panels):
      ax = axes[row, col]
      ax.imshow(panel, interpolation="nearest")
      ax.set_xticks([])
      ax.set_yticks([])
      if row == 0:
        ax.set_title(columns[col], fontsize=10)
      if col == 0:
        ax.set_ylabel(name, fontsize=8)
      if col >= 2:
        dice = slice_dice(predictions[col - 2][row], label, spec.num_classes)
        ax.text(0.02, 0.02, f"Dice {dice:.0f}%", transform=ax.transAxes, fontsize=8,
                color="white", bbox=dict(facecolor="black", alpha=0.5, pad=1))
  fig.suptitle(f"{modality.upper()}: test slices, ground truth and predictions",
               fontsize=11)
  _class_legend(fig, spec.class_names)
  fig.tight_layout(rect=(0, 0.05, 1, 0.97))
  _save(fig, path)
  plt.close(fig)
  return path


def _resize(array: np.ndarray, size: Tuple[int, int], method: str) -> np.ndarray:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.image.resize(array[None, ..., None].astype(np.float32), size,
                         method=method)[0, ..., 0].numpy()


def feature_map_figure(run: _Run, prepared: PreparedDataset, modality: str, path: str,
                       *, tap: str) -> str:
  """Fig. 2: per class, the tap's channel most correlated with the class mask."""
  plt = _pyplot()
  spec = prepared.spec
  name, neighbourhood, label = choose_slices(prepared, modality, 1)[0]
  image = neighbourhood[..., 1]
  net = run.bundle.networks[modality]
  if tap not in net.FEATURE_NAMES:
    raise CsaInputError(f"{param('feature_tap', tap)}: expected one of "
                        f"{', '.join(net.FEATURE_NAMES)}")
  _, taps = net.call_with_features(run.inputs(neighbourhood[None]).astype(np.float32),
                                   modality=modality, training=False)
  features = run.centre_slices(taps[tap])[0]  # [h, w, channels]
  height, width = features.shape[:2]
  small = _resize(label, (height, width), "nearest").astype(np.int64)
  flat = features.reshape(-1, features.shape[-1])
  fig, axes = plt.subplots(2, spec.num_classes + 1, squeeze=False,
                           figsize=(2.4 * (spec.num_classes + 1), 5.4))
  axes[0, 0].imshow(summary_images.overlay(image, label, spec.num_classes))
  axes[0, 0].set_title("Input and ground truth", fontsize=9)
  axes[1, 0].imshow(summary_images.overlay(image, None, spec.num_classes))
  axes[1, 0].set_title(name, fontsize=8)
  for c in range(spec.num_classes):
    mask = (small == c).reshape(-1).astype(np.float32)
    spread = flat.std(axis=0) * mask.std()
    corr = np.where(spread > 0, ((flat - flat.mean(0)) * (mask - mask.mean())[:, None])
                    .mean(axis=0) / np.where(spread > 0, spread, 1), -np.inf)
    channel = int(np.argmax(corr))
    whole = _resize(features[..., channel], image.shape, "bilinear")
    # Outside the class: not a value (drawn grey), so that 0 inside stays readable.
    masked = np.where(label == c, whole, np.nan)
    vmin, vmax = float(whole.min()), float(whole.max())
    colours = plt.get_cmap("magma").with_extremes(bad="0.85")
    for row, (data, what) in enumerate(((whole, "channel"), (masked, "F^c = F * M_c"))):
      ax = axes[row, c + 1]
      shown = ax.imshow(data, cmap=colours, vmin=vmin, vmax=vmax)
      ax.contour(label == c, levels=[0.5], colors="cyan", linewidths=0.8)
      title = (f"{spec.class_names[c]}: {what} {channel}" if row == 0 else
               f"{spec.class_names[c]}: {what}")
      if row == 0 and np.isfinite(corr[channel]):
        title += f"\n(r = {corr[channel]:.2f})"
      ax.set_title(title, fontsize=9)
      fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.03)
  for ax in axes.ravel():
    ax.set_xticks([])
    ax.set_yticks([])
  fig.suptitle(f"{run.label.splitlines()[0]}, {modality.upper()}: layer {tap} channel "
               "most correlated with each class (cyan: class outline)", fontsize=10)
  fig.tight_layout(rect=(0, 0, 1, 0.95))
  _save(fig, path)
  plt.close(fig)
  return path


def affinity_figure(run: _Run, prepared: PreparedDataset, path: str, *,
                    pair: Tuple[str, str]) -> str:
  """Class-specific affinity matrices of one layer pair, per modality and class."""
  from csa_tf import losses  # pylint: disable=g-import-not-at-top
  plt = _pyplot()
  from matplotlib.ticker import MaxNLocator  # pylint: disable=g-import-not-at-top
  spec = prepared.spec
  config = run.config
  matrices = {}
  for modality in config.modalities:
    chosen = choose_slices(prepared, modality, AFFINITY_SLICES)
    images = run.inputs(np.stack([s[1] for s in chosen])).astype(np.float32)
    labels = np.stack([s[2] for s in chosen]).astype(np.int32)
    _, taps = run.bundle.networks[modality].call_with_features(
        images, modality=modality, training=False)
    affinity, _ = losses.class_affinity_matrices(
        run.centre_slices(taps[pair[0]]), run.centre_slices(taps[pair[1]]), labels,
        num_classes=spec.num_classes,
        area_norm=config.csa_area_norm, affinity=config.csa_affinity)
    matrices[modality] = (np.asarray(affinity), len(chosen))
  rows, cols = len(config.modalities), spec.num_classes
  fig, axes = plt.subplots(rows, cols, squeeze=False, figsize=(2.9 * cols, 2.7 * rows + 0.7))
  for c in range(cols):
    scale = max(float(np.abs(m[0][c]).max()) for m in matrices.values()) or 1.0
    for r, modality in enumerate(config.modalities):
      ax = axes[r, c]
      shown = ax.imshow(matrices[modality][0][c], cmap="RdBu_r", vmin=-scale, vmax=scale,
                        interpolation="nearest", aspect="auto")
      if r == 0:
        ax.set_title(spec.class_names[c], fontsize=10)
      if c == 0:
        ax.set_ylabel(f"{modality.upper()}\n{pair[0]} channel", fontsize=9)
      if r == rows - 1:
        ax.set_xlabel(f"{pair[1]} channel", fontsize=9)
      ax.xaxis.set_major_locator(MaxNLocator(integer=True))
      ax.yaxis.set_major_locator(MaxNLocator(integer=True))
      fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.03)
  count = min(n for _, n in matrices.values())
  fig.suptitle(f"{run.label.splitlines()[0]}: class-specific affinity {pair[0]} x {pair[1]} "
               f"(Eq. 3, {config.csa_affinity}, S_c = {config.csa_area_norm}), {count} test "
               "slices per modality",
               fontsize=10)
  fig.tight_layout(rect=(0, 0, 1, 0.95))
  _save(fig, path)
  plt.close(fig)
  return path


def read_scalars(model_dir: str) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
  """{tag: (steps, values)} of a run's TensorBoard scalars (last value of each step)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  series: Dict[str, Dict[int, float]] = {}
  events = os.path.join(RunDir(model_dir).tensorboard_dir, "events.out.tfevents.*")
  for path in sorted(glob.glob(events)):
    for record in tf.data.TFRecordDataset(path):
      event = tf.compat.v1.Event.FromString(record.numpy())
      for value in event.summary.value:
        if value.metadata.plugin_data.plugin_name != "scalars" and not value.HasField(
            "simple_value"):
          continue
        number = (value.simple_value if value.HasField("simple_value")
                  else float(tf.make_ndarray(value.tensor)))
        series.setdefault(value.tag, {})[int(event.step)] = number
  return {tag: (np.array(sorted(v)), np.array([v[s] for s in sorted(v)]))
          for tag, v in series.items()}


def training_curves_figure(runs: Sequence[_Run], path: str) -> Optional[str]:
  """Every loss term and the learning rate over steps, one line per run."""
  plt = _pyplot()
  scalars = {run.label: read_scalars(run.model_dir) for run in runs}
  tags = sorted({t for s in scalars.values() for t in s if t != "steps_per_second"},
                key=lambda t: (t != "loss/total", not t.startswith("loss/"), t))
  if not tags:
    return None
  cols = min(4, len(tags))
  rows = -(-len(tags) // cols)
  fig, axes = plt.subplots(rows, cols, squeeze=False, figsize=(3.6 * cols, 2.8 * rows + 0.4))
  for ax, tag in zip(axes.ravel(), tags):
    for index, (label, series) in enumerate(scalars.items()):
      if tag in series:
        steps, values = series[tag]
        # One colour per run in every panel, also where a run lacks the term.
        ax.plot(steps, values, marker="." if len(steps) < 20 else None,
                color=f"C{index % 10}", label=label.replace("\n", " "))
    ax.set_title(tag.replace("loss/", ""), fontsize=10)
    ax.set_xlabel("step", fontsize=8)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)
  for ax in axes.ravel()[len(tags):]:
    ax.axis("off")
  axes[0, 0].legend(fontsize=8)
  fig.suptitle("Training curves (TensorBoard scalars)", fontsize=11)
  fig.tight_layout(rect=(0, 0, 1, 0.96))
  _save(fig, path)
  plt.close(fig)
  return path


def make_figures(model_dir: str, *, data_dir: Optional[str] = None,
                 output_dir: Optional[str] = None, compare_runs: Sequence[str] = (),
                 reproduce_dir: Optional[str] = None, num_slices: int = 3,
                 feature_tap: Optional[str] = None,
                 log: Callable[[str], None] = print) -> List[str]:
  """Writes every figure; returns the PNG paths.

  Raises:
    CsaInputError: a run or PREP is missing or does not fit.
  """
  if num_slices < 1:
    raise CsaInputError(f"{param('num_slices', num_slices)}: must be a positive integer")
  runs = collect_runs(model_dir, compare_runs, reproduce_dir)
  main = next(r for r in runs if os.path.realpath(r.model_dir)
              == os.path.realpath(model_dir))
  prepared = PreparedDataset.open(data_dir or main.config.data_dir)
  for run in runs:
    prepared.check_fits(run.config)
  output_dir = output_dir or RunDir(model_dir).figures_dir
  # Figures inside the run folder (RUN/figures by default) write into it: then its one
  # writer. The compared runs are only read.
  with RunLock.around_output(model_dir, output_dir, log=log):
    return _write_figures(main, runs, prepared, output_dir, num_slices=num_slices,
                          feature_tap=feature_tap, log=log)


def _write_figures(main: "_Run", runs: Sequence["_Run"], prepared: PreparedDataset,
                   output_dir: str, *, num_slices: int, feature_tap: Optional[str],
                   log: Callable[[str], None]) -> List[str]:
  """`make_figures` after its checks."""
  os.makedirs(output_dir, exist_ok=True)
  pair = (main.config.csa_pairs or config_lib.DEFAULT_CSA_PAIRS)[0]
  tap = feature_tap or pair[0]
  written = []
  for modality in main.config.modalities:
    written.append(segmentation_figure(
        runs, prepared, modality, os.path.join(output_dir, f"segmentation_{modality}.png"),
        num_slices=num_slices))
    written.append(feature_map_figure(
        main, prepared, modality, os.path.join(output_dir, f"feature_maps_{modality}.png"),
        tap=tap))
  written.append(affinity_figure(
      main, prepared, os.path.join(output_dir, f"affinity_{pair[0]}_{pair[1]}.png"),
      pair=pair))
  curves = training_curves_figure(runs, os.path.join(output_dir, "training_curves.png"))
  if curves:
    written.append(curves)
  else:
    log(f"no TensorBoard scalars under {main.run_dir.tensorboard_dir}: no training "
        "curves")
  for path in written:
    log(f"wrote {path}")
  return written
