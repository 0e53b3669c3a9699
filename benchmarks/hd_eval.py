"""Benchmark: per-class Hausdorff distance on a CT-sized volume with the evaluation code.

Builds a synthetic 512x512x250 label volume with four ellipsoidal structures (a shell and
three solids, roughly MM-WHS CT heart sizes at 0.4 x 0.4 x 0.6 mm) and a prediction that
is a shifted, partly eroded copy, then times `csa_tf.metrics.hausdorff` per class,
including the class-mask extraction and the union crop, with the surfaces and distance
transforms in threads over the cores (as evaluation runs them). Target: < 0.3 s per
class.

  python -m benchmarks.hd_eval [--compare]

prints `hd_eval_seconds: X (min, max)` (over repeats of the mean seconds per class) and the
seconds of one full `volume_metrics` call (all metrics, all classes). With `--compare` it
also times medpy's `hd` on one uncropped class (~20 s).
"""
import statistics
import time
from typing import List, Sequence, Tuple

import numpy as np
from absl import flags
from medpy.metric import binary as medpy_binary
from scipy import ndimage

from csa_tf import cli
from csa_tf import metrics

FLAGS = flags.FLAGS

SPACING_MM = (0.4, 0.4, 0.6)
NUM_CLASSES = 5

# (class index, centre, semi-axes, inner semi-axes or None), all as fractions of a
# 512x512x250 volume so smaller test shapes keep the same layout. Later entries overwrite
# earlier ones, so the cavity drawn last sits inside the shell drawn first.
_STRUCTURES = (
    (1, (0.45, 0.50, 0.50), (0.17, 0.15, 0.26), (0.12, 0.10, 0.18)),  # myocardium shell
    (3, (0.45, 0.50, 0.50), (0.12, 0.10, 0.18), None),                # LV cavity
    (2, (0.62, 0.35, 0.60), (0.09, 0.08, 0.14), None),                # left atrium
    (4, (0.30, 0.30, 0.50), (0.04, 0.04, 0.36), None),                # aorta
)


def _draw_ellipsoid(labels: np.ndarray, value: int, centre: Sequence[float],
                    semi_axes: Sequence[float]) -> None:
  """Sets the voxels inside an ellipsoid (voxel units) to `value`, within its box only."""
  box = tuple(slice(max(int(np.floor(c - r)), 0), min(int(np.ceil(c + r)) + 1, n))
              for c, r, n in zip(centre, semi_axes, labels.shape))
  grids = np.ogrid[box]
  inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, semi_axes)) <= 1.0
  labels[box][inside] = value


def make_volumes(shape: Tuple[int, int, int] = (512, 512, 250),
                 seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
  """Returns (ground truth, prediction) uint8 label volumes of `shape`.

  The prediction is the ground truth shifted by a few voxels, with classes 1 and 2 eroded
  by one voxel and a few random voxels flipped near the surfaces, so HD is non-trivial.
  """
  gt = np.zeros(shape, np.uint8)
  scale = np.asarray(shape, np.float64)
  for value, centre, axes, inner in _STRUCTURES:
    _draw_ellipsoid(gt, value, np.asarray(centre) * scale, np.asarray(axes) * scale)
    if inner is not None:
      _draw_ellipsoid(gt, 0, np.asarray(centre) * scale, np.asarray(inner) * scale)

  pred = np.zeros_like(gt)
  shift = (2, -1, 1)
  source = tuple(slice(max(-s, 0), n - max(s, 0)) for s, n in zip(shift, shape))
  target = tuple(slice(max(s, 0), n - max(-s, 0)) for s, n in zip(shift, shape))
  pred[target] = gt[source]
  rng = np.random.default_rng(seed)
  for value, box in enumerate(ndimage.find_objects(pred), start=1):
    if box is None:
      continue
    mask = pred[box] == value
    if value in (1, 2):
      # Erode inside the structure's own box: eroding the full volume costs seconds.
      pred[box][mask & ~ndimage.binary_erosion(mask)] = 0
    # A few stray voxels just outside the surface, as a real prediction would have.
    outside = ndimage.binary_dilation(mask) & ~mask & (pred[box] == 0)
    candidates = np.flatnonzero(outside)
    chosen = rng.choice(candidates, size=min(20, candidates.size), replace=False)
    pred[box].flat[chosen] = value
  return gt, pred


def hd_eval_rounds(shape: Tuple[int, int, int] = (512, 512, 250),
                   repeats: int = 3) -> List[float]:
  """Seconds of one per-class HD on a `shape` volume with the evaluation code, per repeat.

  Each repeat times `metrics.hausdorff(pred == c, gt == c, SPACING_MM)` over the four
  foreground classes (mask extraction and cropping included) and divides by the number
  of classes.
  """
  gt, pred = make_volumes(shape)
  per_class = []
  for _ in range(repeats):
    start = time.perf_counter()
    for c in range(1, NUM_CLASSES):
      metrics.hausdorff(pred == c, gt == c, SPACING_MM)
    per_class.append((time.perf_counter() - start) / (NUM_CLASSES - 1))
  return per_class


def measure_hd_eval_seconds(shape: Tuple[int, int, int] = (512, 512, 250),
                            repeats: int = 3) -> float:
  """The median over `repeats` of `hd_eval_rounds`."""
  return statistics.median(hd_eval_rounds(shape, repeats))


def measure_volume_metrics_seconds(shape: Tuple[int, int, int] = (512, 512, 250),
                                   repeats: int = 3) -> float:
  """Returns the median seconds of one `metrics.volume_metrics` call (all classes)."""
  gt, pred = make_volumes(shape)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    metrics.volume_metrics(pred, gt, num_classes=NUM_CLASSES, spacing=SPACING_MM)
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def measure_uncropped_medpy_seconds(shape: Tuple[int, int, int] = (512, 512, 250),
                                    class_index: int = 3) -> Tuple[float, float, float]:
  """Returns (seconds, medpy's uncropped HD, cropped HD) for one class, run once."""
  gt, pred = make_volumes(shape)
  pred_c, gt_c = pred == class_index, gt == class_index
  start = time.perf_counter()
  uncropped = float(medpy_binary.hd(pred_c, gt_c, voxelspacing=SPACING_MM))
  seconds = time.perf_counter() - start
  return seconds, uncropped, metrics.hausdorff(pred_c, gt_c, SPACING_MM)


def define_flags():
  """Defines this command's flags (only when run as a command, never on import)."""
  flags.DEFINE_bool("compare", False,
                    "Also time medpy's hd on one uncropped class (~20 s).")
  flags.DEFINE_integer("repeats", 3, "Timed repeats; the median is reported.",
                       lower_bound=1)


def main(argv) -> None:
  del argv
  rounds = hd_eval_rounds(repeats=FLAGS.repeats)
  print(f"hd_eval_seconds: {statistics.median(rounds):.3f} (min {min(rounds):.3f}, "
        f"max {max(rounds):.3f})")
  print("volume_metrics_seconds (all metrics, 4 classes): "
        f"{measure_volume_metrics_seconds(repeats=FLAGS.repeats):.3f}")
  if FLAGS.compare:
    seconds, uncropped, cropped = measure_uncropped_medpy_seconds()
    print(f"uncropped_medpy_hd_seconds (one class): {seconds:.3f} "
          f"(hd {uncropped:.4f} mm uncropped, {cropped:.4f} mm cropped)")


if __name__ == "__main__":
  cli.run(main, define_flags)
