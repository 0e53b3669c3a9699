"""Shared test builders: tiny releases, a tiny PREP, TrainConfigs, trained runs, commands.

Plain functions, importable from test modules and from the scripts tests run in a
subprocess (tests/distribution_check.py). The pytest fixtures that share the expensive
ones over a whole session (`tiny_prep`, `tiny_run`) live in tests/conftest.py.
"""
import concurrent.futures
import os
import subprocess
import sys

import nibabel as nib
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The tiny network and schedule every in-process training test starts from: enough to
# run each code path, not to learn anything. Tests override what they are about.
TINY_CONFIG = dict(
    model_dir="unused", data_dir="unused", dataset="mscmr", num_classes=4, crop_size=32,
    method="csa", train_steps=2, batch_size=2, feature_base=2, learning_rate=1e-3,
    log_every=100, checkpoint_every=100, csa_area_norm="fraction",
    bn_recalibration_batches=1)

# The command-line counterpart of TINY_CONFIG for `python -m csa_tf.train`.
TINY_TRAIN_FLAGS = ("--feature_base=2", "--batch_size=2", "--train_steps=2",
                    "--log_every=1", "--checkpoint_every=1", "--bn_recalibration_batches=1")

# The tiny PREP of the `tiny_prep` fixture: 4 MS-CMRSeg-like patients in three sequences
# (3 train, 1 test), crop 32. Three modalities so that one PREP serves the two- and the
# three-modality tests.
TINY_PREP = dict(num_patients=4, raw_modalities=("LGE", "C0", "T2"),
                 modalities=("lge", "bssfp", "t2"), crop_size=32, test_fraction=0.25)


def quiet(_):
  """A log function that drops every line (training and preparation progress)."""


# ---------------------------------------------------------------------------------------
# Hand-made releases in the official layouts.
# ---------------------------------------------------------------------------------------
def write_nifti(path, data, affine=None, dtype=None):
  """Writes data as NIfTI at path (folders created); returns path."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  data = np.asarray(data)
  img = nib.Nifti1Image(data.astype(dtype or data.dtype),
                        np.eye(4) if affine is None else affine)
  nib.save(img, str(path))
  return str(path)


def short_axis_label(shape, center, radius, values=(500, 200, 600)):
  """A short-axis label stack [X, Y, Z]: LV disk, myo ring, RV crescent beside them."""
  xs, ys = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
  dist = np.hypot(xs - center[0], ys - center[1])
  rv_dist = np.hypot(xs - center[0], ys - (center[1] + 1.6 * radius))
  plane = np.zeros(shape[:2], dtype=np.int16)
  plane[rv_dist < radius * 1.1] = values[2]
  plane[dist < radius * 1.4] = values[1]
  plane[dist < radius] = values[0]
  return np.repeat(plane[:, :, None], shape[2], axis=2)


def make_mscmr_release(root, num_patients=5, modalities=("LGE", "C0"), shape=(40, 48, 5),
                       seed=0):
  """Writes images/patientN_TAG.nii.gz and labels/TAG/patientN_TAG_manual.nii.gz."""
  rng = np.random.default_rng(seed)
  for n in range(1, num_patients + 1):
    for tag in modalities:
      center = (shape[0] // 2 + rng.integers(-3, 4), shape[1] // 2 + rng.integers(-6, 0))
      label = short_axis_label(shape, center, radius=4 + rng.integers(0, 3))
      image = (rng.normal(100, 10, shape) + (label == 500) * 200).astype(np.float32)
      write_nifti(os.path.join(root, "images", f"patient{n}_{tag}.nii.gz"), image)
      write_nifti(os.path.join(root, "labels", tag, f"patient{n}_{tag}_manual.nii.gz"),
                  label)
  return str(root)


def make_mmwhs_release(root, num_patients=3, modalities=("ct", "mr"), shape=(32, 24, 40),
                       seed=0):
  """Writes {ct,mr}_train/{m}_train_10NN_{image,label}.nii.gz with 3D blobs."""
  rng = np.random.default_rng(seed)
  grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
  for modality in modalities:
    for n in range(1001, 1001 + num_patients):
      label = np.zeros(shape, dtype=np.int16)
      center = np.array(shape) / 2 + rng.integers(-2, 3, 3)
      for value, offset, radius in ((500, (0, 0, 0), 4), (420, (0, 0, 8), 3),
                                    (820, (0, 4, -8), 2), (600, (6, 0, 0), 3)):
        inside = np.linalg.norm(grid - (center + offset), axis=-1) < radius
        label[inside & (label == 0)] = value
      shell = (np.linalg.norm(grid - center, axis=-1) < 6) & (label == 0)
      label[shell] = 205
      image = (rng.normal(0, 20, shape) + (label > 0) * 300).astype(np.float32)
      folder = os.path.join(root, f"{modality}_train")
      affine = np.diag([0.8, 0.8, 1.0, 1.0])
      write_nifti(os.path.join(folder, f"{modality}_train_{n}_image.nii.gz"), image, affine)
      write_nifti(os.path.join(folder, f"{modality}_train_{n}_label.nii.gz"), label, affine)
  return str(root)


# ---------------------------------------------------------------------------------------
# The PnP-AdaNet/SIFA release (REFERENCE.md section 5).
# ---------------------------------------------------------------------------------------
PNP_SIZE = 256  # The release's slices are 256x256.


def pnp_slice_example(image: np.ndarray, label: np.ndarray, *, dsize=None,
                      lsize=None) -> bytes:
  """A serialized tf.train.Example as in the release; dsize/lsize override the sizes."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (only where used)

  def int64(value):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))

  def raw(array):
    data = np.ascontiguousarray(array, dtype="<f4").tobytes()
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[data]))

  dsize = image.shape if dsize is None else dsize
  lsize = label.shape if lsize is None else lsize
  feature = {f"dsize_dim{i}": int64(dsize[i]) for i in range(3)}
  feature.update({f"lsize_dim{i}": int64(lsize[i]) for i in range(3)})
  feature.update(data_vol=raw(image), label_vol=raw(label))
  return tf.train.Example(
      features=tf.train.Features(feature=feature)).SerializeToString()


def write_pnp_record_file(path: str, *records: bytes) -> None:
  """Writes a TFRecord file holding the records (the release has one per file)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with tf.io.TFRecordWriter(path) as writer:
    for record in records:
      writer.write(record)


def _pnp_slice_record(path, images, labels, k):
  """Writes slice k of [S, H, W] images/labels as a release record (channels k-1, k,
  k+1, edges repeated)."""
  channels = [max(k - 1, 0), k, min(k + 1, len(images) - 1)]
  write_pnp_record_file(path, pnp_slice_example(
      np.stack([images[c] for c in channels], -1).astype(np.float32),
      np.stack([labels[c] for c in channels], -1).astype(np.float32)))


# The planted copies of make_pnp_leak_release, per modality: (folder kind, test volume,
# slice, how the copy is turned: ORIENTATIONS key of csa_tf.data.pnp_leak).
PNP_LEAK_PLANTS = (
    ("train", 0, 0, "as_tfrecords"), ("train", 0, 2, "as_tfrecords"),
    ("train", 0, 3, "as_npz"), ("train", 1, 1, "transposed"),
    ("train", 1, 2, "as_tfrecords_rounded"),
    ("val", 0, 1, "as_tfrecords"), ("val", 1, 0, "as_npz"),
)


def make_pnp_leak_release(root, *, modalities=("ct", "mr"), own_train=4, own_val=2,
                          test_slices=4, seed=0) -> dict:
  """Writes a tiny PnP-AdaNet/SIFA release whose training folders hold test slices.

  Per modality m: two test volumes of `test_slices` 256x256 slices, stored as the release
  stores them (flipped on axes 0 and 1 relative to the TFRecords): an npz
  `test_m/image_m_1003.npz` and a NIfTI pair `test_m_image&labels/image_m_1008.nii.gz` +
  `gth_m_1008.nii.gz`. `m_train_tfs/` holds `own_train` slices of no test volume, a near
  miss (a test slice with one pixel moved by 5% of its spread: a different slice) and the
  train plants of PNP_LEAK_PLANTS; `m_val_tfs/` holds `own_val` slices and the val
  plants. A plant is the test slice, in the TFRecords' orientation turned as its key
  says ("as_tfrecords_rounded": plus a relative change of 1e-6, float rounding).
  Records are numbered so that plants sit between own slices in natural order.

  Returns:
    {modality: dict(test={id: (image [S, H, W], label [S, H, W]) in the TFRecords'
     orientation}, train_kept=[(image, label) middle channels, natural order], val_kept
     likewise, planted={"train": n, "val": n}, folders={"train": ..., "val": ...})}.
  """
  from csa_tf.data.pnp_leak import ORIENTATIONS  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  size = PNP_SIZE
  truth = {}

  def random_slices(count):
    images = (rng.normal(size=(count, size, size)) * 9 + 2).astype(np.float32)
    labels = rng.integers(0, 5, size=(count, size, size)).astype(np.uint8)
    return images, labels

  for modality in modalities:
    test = {}
    for number in (1003, 1008):
      images, labels = random_slices(test_slices)
      test[f"{modality}_{number}"] = (images, labels)
      # [S, H, W] in the TFRecords' orientation -> the release's [H, W, S], flipped.
      stored_image = np.flip(np.moveaxis(images, 0, 2), axis=(0, 1))
      stored_label = np.flip(np.moveaxis(labels, 0, 2), axis=(0, 1))
      if number == 1003:
        folder = os.path.join(root, f"test_{modality}")
        os.makedirs(folder, exist_ok=True)
        np.savez(os.path.join(folder, f"image_{modality}_{number}.npz"), stored_image,
                 stored_label)
      else:
        folder = os.path.join(root, f"test_{modality}_image&labels")
        write_nifti(os.path.join(folder, f"image_{modality}_{number}.nii.gz"),
                    stored_image)
        write_nifti(os.path.join(folder, f"gth_{modality}_{number}.nii.gz"),
                    stored_label.astype(np.int16))
    ids = sorted(test)
    folders = {kind: os.path.join(root, f"{modality}_{kind}_tfs")
               for kind in ("train", "val")}
    entries = {"train": [], "val": []}  # (image [S,H,W] stack, labels, k, kept)
    own = {"train": own_train, "val": own_val}
    for kind in ("train", "val"):
      images, labels = random_slices(own[kind])
      entries[kind] += [(images, labels, k, True) for k in range(own[kind])]
    near_image, near_label = test[ids[0]][0].copy(), test[ids[0]][1]
    near_image[0, 100, 100] += 0.05 * near_image[0].std()
    entries["train"].append((near_image, near_label, 0, True))
    planted = {"train": 0, "val": 0}
    for kind, volume, k, how in PNP_LEAK_PLANTS:
      images, labels = test[ids[volume]]
      turn = ORIENTATIONS[how.replace("_rounded", "")]
      turned = np.stack([turn(s) for s in images])
      if how.endswith("_rounded"):
        turned = (turned.astype(np.float64) * (1 + 1e-6)).astype(np.float32)
      entries[kind].insert(1 + 2 * planted[kind], (
          turned, np.stack([turn(s) for s in labels]), k, False))
      planted[kind] += 1
    kept = {}
    for kind in ("train", "val"):
      kept[kind] = []
      for number, (images, labels, k, keep) in enumerate(entries[kind]):
        _pnp_slice_record(os.path.join(folders[kind],
                                       f"{modality}_{kind}_slice{number}.tfrecords"),
                          images, labels, k)
        if keep:
          kept[kind].append((images[k], labels[k]))
    truth[modality] = dict(test=test, train_kept=kept["train"], val_kept=kept["val"],
                           planted=planted, folders={k: os.path.relpath(v, root)
                                                     for k, v in folders.items()})
  return truth


# ---------------------------------------------------------------------------------------
# PREP folders, configs and runs.
# ---------------------------------------------------------------------------------------
def make_tiny_prep(root) -> str:
  """Writes the TINY_PREP release under root/raw and prepares it in root/prep.

  Returns:
    The PREP folder.
  """
  from csa_tf.data.mscmr import prepare_mscmr  # pylint: disable=g-import-not-at-top
  spec = TINY_PREP
  raw = make_mscmr_release(os.path.join(root, "raw"), num_patients=spec["num_patients"],
                           modalities=spec["raw_modalities"])
  prep_dir = os.path.join(root, "prep")
  prepare_mscmr(raw, prep_dir, modalities=list(spec["modalities"]),
                crop_size=spec["crop_size"], test_fraction=spec["test_fraction"])
  return prep_dir


def make_config(model_dir="unused", **overrides):
  """A validated TrainConfig: TINY_CONFIG with model_dir and overrides.

  Raises:
    CsaInputError: from TrainConfig.validate (tests of bad values rely on it).
  """
  from csa_tf.configs import train_config  # pylint: disable=g-import-not-at-top
  values = dict(TINY_CONFIG, model_dir=str(model_dir))
  values.update(overrides)
  return train_config.TrainConfig(**values).validate()


def train_tiny_run(model_dir, prep_dir, **overrides):
  """Trains make_config(model_dir, data_dir=prep_dir, **overrides); returns the config.

  Logs every step (figure tests read the loss curve of each step).
  """
  from csa_tf.data.prepared import PreparedDataset  # pylint: disable=g-import-not-at-top
  from csa_tf.training.trainer import Trainer  # pylint: disable=g-import-not-at-top
  config = make_config(model_dir, **dict(dict(data_dir=str(prep_dir), log_every=1),
                                         **overrides))
  Trainer(config, PreparedDataset.open(str(prep_dir)), log=quiet).train()
  return config


# ---------------------------------------------------------------------------------------
# Commands, run as a user runs them.
# ---------------------------------------------------------------------------------------
def command_environment(**extra):
  """os.environ with TensorFlow's C++ logging off and extra variables set.

  A variable given as None is removed (e.g. TF_CPP_MIN_LOG_LEVEL=None runs the command
  as a new user would).
  """
  environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  environment.update(extra)
  return {k: v for k, v in environment.items() if v is not None}


def command_line(module, *args):
  return [sys.executable, "-m", module, *map(str, args)]


def run_command(module, *args, expect=0, env=None, timeout=600):
  """Runs `python -m module args` from the repository root and waits for it.

  Args:
    module: e.g. "csa_tf.train".
    *args: its arguments (str() of each).
    expect: the exit status the command must end with (the assertion shows the ends of
      its output otherwise); None to check nothing.
    env: extra environment variables.
    timeout: seconds before subprocess.TimeoutExpired.

  Returns:
    The subprocess.CompletedProcess, with text stdout and stderr.
  """
  result = subprocess.run(command_line(module, *args), capture_output=True, text=True,
                          cwd=ROOT, env=command_environment(**(env or {})),
                          timeout=timeout, check=False)
  if expect is not None:
    assert_exit_status(result, expect)
  return result


def assert_exit_status(result, expect=0):
  """Asserts a finished command's exit status, showing the ends of its output if not."""
  assert result.returncode == expect, (result.returncode, result.stdout[-3000:] +
                                       result.stderr[-3000:])


def run_commands(commands, *, workers=None, timeout=600):
  """Runs several independent commands side by side; returns their results in order.

  Each training command spends most of its time on one core (importing TensorFlow,
  tracing the step), so two or more at once finish sooner than one after the other.
  Exit statuses are not checked here: each test checks its own command's with
  assert_exit_status, so that a failure is reported where it belongs.

  Args:
    commands: (module, *args) tuples; a dict as the last item is the command's extra
      environment (see command_environment).
    workers: how many run at once; default the number of CPU cores, at most 4 (each
      TensorFlow process holds about 1 GB).
    timeout: seconds per command.
  """
  workers = workers or max(1, min(4, os.cpu_count() or 1))
  def run_one(command):
    env = command[-1] if isinstance(command[-1], dict) else None
    args = command[:-1] if env is not None else command
    return run_command(*args, expect=None, env=env, timeout=timeout)
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    return list(pool.map(run_one, commands))


def start_command(module, *args, env=None, merge_stderr=False):
  """Starts `python -m module args` from the repository root; returns the Popen.

  stdout (and stderr, into stdout if merge_stderr) are text pipes: read them with
  communicate().
  """
  stderr = subprocess.STDOUT if merge_stderr else subprocess.PIPE
  return subprocess.Popen(
      command_line(module, *args), cwd=ROOT, env=command_environment(**(env or {})),
      stdout=subprocess.PIPE, stderr=stderr, text=True)


# ---------------------------------------------------------------------------------------
# A stand-in for a trained run: evaluation without training.
# ---------------------------------------------------------------------------------------
class OracleSegmenter:
  """A segmenter whose labels are the PREP's crop labels of the same image."""

  def __init__(self, prep):
    self._labels = {}
    for entry in prep.entries:
      volume = prep.load(entry)
      self._labels[volume.image.tobytes()] = volume.label

  def labels(self, slices, modality):
    del modality
    # [S, H, W] slices, or one-channel inputs [S, H, W, 1] (the same bytes).
    return self._labels[np.ascontiguousarray(slices[..., 0] if slices.ndim == 4
                                             else slices).tobytes()]


def oracle_run(path, prep, config):
  """A RunDir at path with the given config whose segmenter is OracleSegmenter(prep)."""
  from csa_tf.io.run_dir import RunDir  # pylint: disable=g-import-not-at-top

  class OracleRun(RunDir):

    @property
    def config(self):
      return config

    def segmenter(self, *, batch_size=16):
      del batch_size
      self.checkpoint_path = os.path.join(self.checkpoint_dir, "ckpt-2")
      return OracleSegmenter(prep)

  return OracleRun(str(path))



def assert_xla_matches_eager(loss_and_grads):
  """A () -> (loss, grads) function gives the same numbers compiled by XLA as eagerly."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (helpers load no TF)
  eager_loss, eager_grads = loss_and_grads()
  xla_loss, xla_grads = tf.function(loss_and_grads, jit_compile=True)()
  np.testing.assert_allclose(xla_loss.numpy(), eager_loss.numpy(), rtol=1e-4)
  for xla, eager in zip(xla_grads, eager_grads):
    np.testing.assert_allclose(xla.numpy(), eager.numpy(), rtol=1e-3, atol=1e-9)


def assert_float64_gradients_match(fn, inputs):
  """fn's gradients at the float64 `inputs` equal central differences, and none is 0."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (helpers load no TF)
  assert fn(*inputs).dtype == tf.float64
  theoretical, numerical = tf.test.compute_gradient(
      fn, [tf.constant(v) for v in inputs], delta=1e-5)
  for t, n in zip(theoretical, numerical):
    assert np.abs(t).max() > 0
    np.testing.assert_allclose(t, n, atol=1e-7, rtol=1e-5)
