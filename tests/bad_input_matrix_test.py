"""Bad inputs across every command: one `error:` line naming the culprit, exit 2, no output.

Each case breaks one thing (a file, a folder, a flag) and checks that the command
  * exits with status 2,
  * prints exactly one line on stderr (in-process) or ends stderr with it (subprocess,
    where TensorFlow may log first), starting with "error:" and naming the file or flag
    and the problem, with no traceback,
  * leaves nothing behind: no PREP folder, no output NIfTI, no eval/ folder, no model
    dir, and the raw data untouched.
Library calls go through `run_main` in-process for speed; flag parsing and a few
end-to-end cases run the real commands in subprocesses. The messages asserted here are
the ones README.md's "When things go wrong" table lists.
"""
import json
import os
import shutil

import nibabel as nib
import numpy as np
import pytest

from csa_tf.configs import train_config as config_lib
from csa_tf.evaluation import evaluator as evaluate
from csa_tf.serving import predictor as predict
from csa_tf.data import prepared
from csa_tf.io import run_record
from csa_tf.io.run_dir import RunDir
from csa_tf.cli import run_main
from csa_tf.errors import CsaInputError
from csa_tf.data import mmwhs_pnp
from csa_tf.data.mmwhs import prepare_mmwhs
from csa_tf.data.mscmr import prepare_mscmr
from tests.helpers import make_config, make_mmwhs_release, make_mscmr_release, run_command
from tests.helpers import write_nifti

CROP = 32


# ---------------------------------------------------------------------------------------
# Helpers.
# ---------------------------------------------------------------------------------------
def error_line_in_process(capsys, call) -> str:
  """Runs call() as a command's main would run; returns its one stderr line."""
  capsys.readouterr()
  with pytest.raises(SystemExit) as info:
    run_main(lambda argv: call())(["command"])
  assert info.value.code == 2
  lines = capsys.readouterr().err.strip().splitlines()
  assert len(lines) == 1, lines
  assert lines[0].startswith("error: ")
  return lines[0]


def error_line_of_command(module, *args) -> str:
  """Runs `python -m module args`; checks exit 2 and returns the last stderr line."""
  result = run_command(module, *args, expect=2)
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  lines = result.stderr.strip().splitlines()
  assert lines and lines[-1].startswith("error: "), result.stderr[-2000:]
  return lines[-1]


def assert_names(line, *parts):
  for part in parts:
    assert str(part) in line, (part, line)


def snapshot(folder):
  """(relative path, size, mtime_ns) of everything under folder."""
  out = []
  for root, dirs, files in os.walk(folder):
    for name in sorted(dirs + files):
      path = os.path.join(root, name)
      stat = os.lstat(path)
      out.append((os.path.relpath(path, folder), stat.st_size, stat.st_mtime_ns))
  return sorted(out)


def leftovers(folder):
  """Temporary files or folders a failed write could leave behind."""
  if not os.path.isdir(folder):
    return []
  return [name for name in os.listdir(folder) if name.startswith(".tmp")]


# ---------------------------------------------------------------------------------------
# Shared, read-only data: PREP folders and model dirs (built once, no training).
# ---------------------------------------------------------------------------------------
def make_model_dir(model_dir, data_dir, *, checkpoint_classes=4, write_checkpoint=True):
  """A run folder as csa_tf.train leaves it (config.json, checkpoints/), untrained.

  checkpoint_classes other than 4 stores the networks of another number of classes
  under an MS-CMRSeg config.json, as when checkpoints are copied between runs.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from csa_tf.model import bundle as model_bundle  # pylint: disable=g-import-not-at-top
  config = make_config(model_dir, data_dir=str(data_dir), crop_size=CROP,
                       modalities=("lge", "bssfp"), method="csa")
  run_record.write_run_record(str(model_dir), config)
  if write_checkpoint:
    stored = config_lib.TrainConfig(**dict(config.to_json(), num_classes=checkpoint_classes,
                                           modalities=config.modalities,
                                           csa_pairs=config.csa_pairs))
    bundle = model_bundle.ModelBundle(stored).build()
    manager = tf.train.CheckpointManager(
        tf.train.Checkpoint(**bundle.checkpoint_items()),
        RunDir(str(model_dir)).checkpoint_dir, max_to_keep=1)
    manager.save(checkpoint_number=1)
  return str(model_dir)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
  root = tmp_path_factory.mktemp("matrix")
  w = {"root": root}
  w["raw_mscmr"] = make_mscmr_release(root / "raw_mscmr", num_patients=3)
  w["prep"] = str(root / "prep_mscmr")
  prepare_mscmr(w["raw_mscmr"], w["prep"], crop_size=CROP, test_fraction=0.34)
  w["prep_lge"] = str(root / "prep_lge")
  prepare_mscmr(w["raw_mscmr"], w["prep_lge"], modalities=["lge"], crop_size=CROP,
                test_fraction=0.34)
  w["raw_mmwhs"] = make_mmwhs_release(root / "raw_mmwhs", num_patients=2)
  w["prep_mmwhs"] = str(root / "prep_mmwhs")
  prepare_mmwhs(w["raw_mmwhs"], w["prep_mmwhs"], crop_size=CROP, test_fraction=0.5)
  # Another format version: a future csa_tf's PREP.
  w["prep_v99"] = str(root / "prep_v99")
  shutil.copytree(w["prep"], w["prep_v99"])
  meta_path = os.path.join(w["prep_v99"], prepared.META_FILE)
  meta = json.load(open(meta_path))
  meta["format_version"] = 99
  json.dump(meta, open(meta_path, "w"))
  # A PREP one of whose volumes holds a pickled object array.
  w["prep_pickle"] = str(root / "prep_pickle")
  shutil.copytree(w["prep"], w["prep_pickle"])
  test_entry = prepared.PreparedDataset.open(w["prep_pickle"]).entries_for("test")[0]
  w["pickled_volume"] = os.path.join(w["prep_pickle"], test_entry.file)
  np.savez(w["pickled_volume"], image=np.array([{"payload": 1}], dtype=object))
  w["run"] = make_model_dir(root / "run", w["prep"])
  w["run_5_classes"] = make_model_dir(root / "run_5_classes", w["prep"],
                                      checkpoint_classes=5)
  w["run_no_checkpoint"] = make_model_dir(root / "run_no_ckpt", w["prep"],
                                          write_checkpoint=False)
  w["scan"] = write_nifti(root / "scans" / "scan.nii.gz",
                          np.random.default_rng(0).normal(100, 10, (40, 48, 5)),
                          dtype=np.float32)
  return w


# ---------------------------------------------------------------------------------------
# data_prep.mscmr / data_prep.mmwhs / data_prep.mmwhs_pnp.
# ---------------------------------------------------------------------------------------
def _image(raw, n=2, tag="LGE"):
  return os.path.join(raw, "images", f"patient{n}_{tag}.nii.gz")


def _label(raw, n=2, tag="LGE"):
  return os.path.join(raw, "labels", tag, f"patient{n}_{tag}_manual.nii.gz")


def _truncate(path):
  payload = open(path, "rb").read()
  open(path, "wb").write(payload[: len(payload) // 3])


def _edit_voxel(path, value):
  """Sets one voxel of a NIfTI file to value, keeping its data type and affine."""
  img = nib.load(path)
  data = np.asanyarray(img.dataobj).copy()
  data[1, 2, 3] = value
  write_nifti(path, data, img.affine)


def _with_value(shape, value, dtype=np.float32):
  data = np.random.default_rng(1).normal(100, 10, shape).astype(dtype)
  data[1, 2, 3] = value
  return data


def _with_non_finite(shape, count):
  """Random image data whose first `count` voxels (in C order) are NaN."""
  data = np.random.default_rng(1).normal(100, 10, shape).astype(np.float32)
  data.reshape(-1)[:count] = np.nan
  return data


SHAPE = (40, 48, 5)

# name -> (break the release under raw; return (path or word the line names, problem)).
MSCMR_CASES = {
    "truncated_nii_gz": lambda raw: (
        _truncate(_image(raw)), (_image(raw), "truncated or corrupt gzip data"))[1],
    "not_nifti_named_nii_gz": lambda raw: (
        open(_image(raw), "w").write("patient,lv\n2,41\n" * 40),
        (_image(raw), "not a NIfTI file"))[1],
    "image_4d": lambda raw: (
        write_nifti(_image(raw), np.ones(SHAPE + (2,), np.float32)),
        (_image(raw), "expected a 3D volume"))[1],
    "shape_mismatch": lambda raw: (
        write_nifti(_label(raw), np.zeros((40, 48, 4), np.int16)),
        (_label(raw), "does not match image"))[1],
    "label_values_outside_set": lambda raw: (
        _edit_voxel(_label(raw), 1220),
        (_label(raw), "label values 1220 are not mscmr labels"))[1],
    "label_on_another_grid": lambda raw: (
        write_nifti(_label(raw), np.asanyarray(nib.load(_label(raw)).dataobj),
                    np.diag([-1.0, 1.0, 1.0, 1.0])),  # x-flipped header
        (_label(raw), "label affine differs from its image's"))[1],
    "label_fractional": lambda raw: (
        write_nifti(_label(raw), np.full(SHAPE, 0.5, np.float32)),
        (_label(raw), "non-integer"))[1],
    "nan_voxel": lambda raw: (
        write_nifti(_image(raw), _with_value(SHAPE, np.nan)),
        (_image(raw), "1 non-finite (NaN/Inf) voxels"))[1],
    "inf_voxel": lambda raw: (
        write_nifti(_image(raw), _with_value(SHAPE, np.inf)),
        (_image(raw), "non-finite"))[1],
    # 1% of 40 * 48 * 5 = 9600 voxels is 96: a repair may not touch 97.
    "nan_voxels_over_one_percent": lambda raw: (
        write_nifti(_image(raw), _with_non_finite(SHAPE, 97)),
        (_image(raw), "97 of 9600 voxels (1.01%) are non-finite (NaN/Inf), more than "
                      "1%: refused as corrupt"))[1],
    "modality_without_any_label": lambda raw: (
        shutil.rmtree(os.path.join(raw, "labels", "LGE")),
        (raw, "none of the 2 lge (LGE) images has its label"))[1],
    "all_zero_image": lambda raw: (
        write_nifti(_image(raw), np.zeros(SHAPE, np.float32)),
        (_image(raw), "image is constant (every voxel is 0)"))[1],
    "label_without_foreground": lambda raw: (
        write_nifti(_label(raw), np.zeros(SHAPE, np.int16)),
        (_label(raw), "label volume has no foreground"))[1],
    "missing_modality_of_a_patient": lambda raw: (
        os.remove(_image(raw, tag="C0")), os.remove(_label(raw, tag="C0")),
        (raw, "patient2 has no bssfp (C0) image"))[2],
    "image_without_label": lambda raw: (
        os.remove(_label(raw)), (_image(raw), "no manual label found"))[1],
    "same_file_twice": lambda raw: (
        os.makedirs(os.path.join(raw, "copy")),
        shutil.copy(_image(raw), os.path.join(raw, "copy")),
        (os.path.join(raw, "images"), "duplicate of"))[2],
}


# Errors under the strict settings only (--require_labels --non_finite=refuse): by
# default such an image is left out, a patient keeps its other modalities, a few
# non-finite voxels are repaired.
MSCMR_STRICT_CASES = ("image_without_label", "missing_modality_of_a_patient",
                      "nan_voxel", "inf_voxel")


@pytest.mark.parametrize("case", sorted(MSCMR_CASES))
def test_mscmr_prep(tmp_path, capsys, case):
  raw = make_mscmr_release(tmp_path / "raw", num_patients=2, shape=SHAPE)
  named, problem = MSCMR_CASES[case](raw)
  before = snapshot(raw)
  out = tmp_path / "out" / "prep"
  strict = (dict(require_labels=True, non_finite="refuse")
            if case in MSCMR_STRICT_CASES else {})
  line = error_line_in_process(
      capsys, lambda: prepare_mscmr(raw, str(out), crop_size=CROP, **strict))
  assert_names(line, named, problem)
  assert not (tmp_path / "out").exists()
  assert snapshot(raw) == before


def _mmwhs(raw, modality="ct", n=1001, kind="image"):
  return os.path.join(raw, f"{modality}_train", f"{modality}_train_{n}_{kind}.nii.gz")


def _mmwhs_label_of_values(raw, values):
  data = np.asanyarray(nib.load(_mmwhs(raw, kind="label")).dataobj).copy()
  data[data > 0] = values
  write_nifti(_mmwhs(raw, kind="label"), data, np.diag([0.8, 0.8, 1.0, 1.0]))


MMWHS_CASES = {
    "label_only_non_paper_structures": lambda raw: (
        _mmwhs_label_of_values(raw, 600),  # right ventricle: known, not a paper class
        (_mmwhs(raw, kind="label"), "label volume has no foreground"))[1],
    "label_values_outside_set": lambda raw: (
        _mmwhs_label_of_values(raw, 999),
        (_mmwhs(raw, kind="label"), "label values 999 are not mmwhs labels"))[1],
    "label_on_another_grid": lambda raw: (
        write_nifti(_mmwhs(raw, kind="label"),
                    np.asanyarray(nib.load(_mmwhs(raw, kind="label")).dataobj),
                    np.diag([1.6, 0.8, 1.0, 1.0])),
        (_mmwhs(raw, kind="label"), "label affine differs"))[1],
    "all_zero_image": lambda raw: (
        write_nifti(_mmwhs(raw), np.zeros((32, 24, 40), np.float32),
                    np.diag([0.8, 0.8, 1.0, 1.0])),
        (_mmwhs(raw), "image is constant"))[1],
    "no_volumes_of_a_modality": lambda raw: (
        shutil.rmtree(os.path.join(raw, "mr_train")),
        (raw, "no mr training volumes found"))[1],
}


@pytest.mark.parametrize("case", sorted(MMWHS_CASES))
def test_mmwhs_prep(tmp_path, capsys, case):
  raw = make_mmwhs_release(tmp_path / "raw", num_patients=1)
  named, problem = MMWHS_CASES[case](raw)
  before = snapshot(raw)
  out = tmp_path / "out" / "prep"
  line = error_line_in_process(
      capsys, lambda: prepare_mmwhs(raw, str(out), crop_size=CROP))
  assert_names(line, named, problem)
  assert not (tmp_path / "out").exists()
  assert snapshot(raw) == before


PNP = 256


def _pnp_npz(folder, image=None, label=None, name="image_ct_1003.npz", **arrays):
  os.makedirs(folder, exist_ok=True)
  path = os.path.join(folder, name)
  rng = np.random.default_rng(0)
  if not arrays:
    arrays = dict(arr_0=rng.normal(size=(PNP, PNP, 2)).astype(np.float32)
                  if image is None else image,
                  arr_1=np.ones((PNP, PNP, 2), np.float32) if label is None else label)
  np.savez(path, **arrays)
  return path


def _pnp_truncated(folder):
  path = _pnp_npz(folder)
  _truncate(path)
  return path


def _pnp_text(folder):
  os.makedirs(folder, exist_ok=True)
  path = os.path.join(folder, "image_ct_1003.npz")
  open(path, "w").write("hello")
  return path


PNP_CASES = {
    "pickled_object_array": lambda d: (
        _pnp_npz(d, arr_0=np.array([{"x": 1}], dtype=object), arr_1=np.zeros(1)),
        "holds a pickled Python object array"),
    "truncated_npz": lambda d: (_pnp_truncated(d), "not a readable npz file"),
    "not_npz_named_npz": lambda d: (_pnp_text(d), "not a readable npz file"),
    "label_values_outside_set": lambda d: (
        _pnp_npz(d, label=np.full((PNP, PNP, 2), 7, np.float32)),
        "label values 7 are not release labels"),
    "nan_voxel": lambda d: (
        _pnp_npz(d, image=np.full((PNP, PNP, 2), np.nan, np.float32)),
        "non-finite"),
    "image_label_shape_mismatch": lambda d: (
        _pnp_npz(d, label=np.ones((PNP, PNP, 3), np.float32)),
        "differs from arr_0"),
}


@pytest.mark.parametrize("case", sorted(PNP_CASES))
def test_mmwhs_pnp_prep(tmp_path, capsys, case):
  pnp_dir = str(tmp_path / "pnp")
  named, problem = PNP_CASES[case](os.path.join(pnp_dir, "test_ct"))
  before = snapshot(pnp_dir)
  out = tmp_path / "out" / "prep"
  line = error_line_in_process(capsys, lambda: mmwhs_pnp.prepare_pnp(pnp_dir, str(out)))
  assert_names(line, named, problem)
  assert not (tmp_path / "out").exists()
  assert snapshot(pnp_dir) == before


@pytest.mark.integration
@pytest.mark.parametrize("module,args,named", [
    ("data_prep.mscmr", ["--crop_size=100"], "--crop_size=100: must be a positive multiple"),
    ("data_prep.mscmr", ["--test_fraction=abc"], "flag --test_fraction=abc"),
    ("data_prep.mscmr", ["--modalities=lge,flair"], "unknown MS-CMRSeg modality 'flair'"),
    ("data_prep.mscmr", ["--bogus=1"], "Unknown command line flag 'bogus'"),
    ("data_prep.mmwhs", ["--modalities=ct,pet"], "unknown MM-WHS modality 'pet'"),
    ("data_prep.mmwhs", ["--crop_size=0"], "--crop_size=0"),
])
def test_prep_flags(world, tmp_path, module, args, named):
  raw = world["raw_mscmr"] if module.endswith("mscmr") else world["raw_mmwhs"]
  before = snapshot(raw)
  out = tmp_path / "prep"
  line = error_line_of_command(module, f"--raw_dir={raw}", f"--output_dir={out}", *args)
  assert_names(line, named)
  assert not out.exists() and not leftovers(tmp_path)
  assert snapshot(raw) == before


@pytest.mark.integration
@pytest.mark.parametrize("module", ["data_prep.mscmr", "data_prep.mmwhs",
                                    "data_prep.mmwhs_pnp"])
def test_prep_output_inside_raw_is_refused(world, tmp_path, module):
  if module == "data_prep.mmwhs_pnp":
    raw = str(tmp_path / "pnp")
    _pnp_npz(os.path.join(raw, "test_ct"))
    flag = "--pnp_dir"
  else:
    raw = world["raw_mscmr"] if module.endswith("mscmr") else world["raw_mmwhs"]
    flag = "--raw_dir"
  before = snapshot(raw)
  out = os.path.join(raw, "prep")
  line = error_line_of_command(module, f"{flag}={raw}", f"--output_dir={out}")
  assert_names(line, f"--output_dir={out}", f"lies inside {flag}={raw}")
  assert snapshot(raw) == before


# ---------------------------------------------------------------------------------------
# csa_tf.train: a bad flag or data never creates the model dir.
# ---------------------------------------------------------------------------------------
@pytest.mark.integration
@pytest.mark.parametrize("args,named", [
    (["--train_steps=-5"], "--train_steps=-5: must be a positive integer"),
    (["--batch_size=0"], "--batch_size=0: must be a positive integer"),
    (["--modalities=lge"], "--method=csa needs at least two --modalities"),
    (["--modalities=lge,t2"], "--modalities: 't2' is not in"),
    (["--learning_rate=-1"], "--learning_rate=-1.0: must be positive"),
    (["--csa_pairs=g3"], "--csa_pairs: 'g3' is not of the form layer:layer"),
    (["--lambda=-1"], "--lambda=-1.0: must be >= 0"),
    (["--jit_compile", "--strategy=mirrored"],
     "--jit_compile is not supported with --strategy=mirrored"),
    (["--data_dir={prep_v99}"], "prepared with format version 99"),
    (["--data_dir={root}/nowhere"], "prepared data folder not found"),
    (["--data_dir={raw_mscmr}"], "not a prepared data folder (no prep_meta.json)"),
])
def test_train_flags(world, tmp_path, args, named):
  model_dir = tmp_path / "run"
  args = [a.format(**world) for a in args]
  named = named.format(**world)
  line = error_line_of_command("csa_tf.train", f"--data_dir={world['prep']}",
                               f"--model_dir={model_dir}", "--feature_base=2", *args)
  assert_names(line, named)
  assert not model_dir.exists()


@pytest.mark.integration
@pytest.mark.parametrize("args,named", [
    (["--method=fancy"], "flag --method=fancy: value should be one of"),
    (["--train_steps=many"], "flag --train_steps=many"),
])
def test_train_flag_parsing(world, tmp_path, args, named):
  model_dir = tmp_path / "run"
  line = error_line_of_command("csa_tf.train", f"--data_dir={world['prep']}",
                               f"--model_dir={model_dir}", *args)
  assert_names(line, named)
  assert not model_dir.exists()


def test_train_unknown_method_in_config(tmp_path):
  # What --method=fancy reaches when it gets past flag parsing (e.g. from a config): the
  # library names the field, csa_tf.train spells it as its flag.
  with pytest.raises(CsaInputError,
                     match="^method=fancy: unknown method") as info:
    config_lib.TrainConfig(model_dir=str(tmp_path), data_dir="", dataset="mscmr",
                           num_classes=4, crop_size=CROP, method="fancy").validate()
  assert info.value.field == "method"
  assert info.value.render(lambda field: f"--{field}").startswith(
      "--method=fancy: unknown method")


@pytest.mark.integration
def test_train_without_data_dir_bad_flag_creates_nothing(tmp_path):
  model_dir = tmp_path / "run"
  line = error_line_of_command("csa_tf.train", f"--model_dir={model_dir}",
                               "--crop_size=60", "--phantom_patients=2")
  assert_names(line, "60", "multiple of 8")
  assert not model_dir.exists()
  line = error_line_of_command("csa_tf.train", f"--model_dir={model_dir}",
                               "--phantom_scale=0", "--phantom_patients=2")
  assert_names(line, "--phantom_scale=0.0: must be in (0, 1]")
  assert not model_dir.exists()


@pytest.mark.integration
def test_train_resume_with_other_dataset_is_refused(world, tmp_path):
  # A 4-class MS-CMRSeg run continued on 5-class MM-WHS data with other modalities.
  model_dir = tmp_path / "run"
  shutil.copytree(world["run"], model_dir)
  before = snapshot(model_dir)
  line = error_line_of_command("csa_tf.train", f"--data_dir={world['prep_mmwhs']}",
                               f"--model_dir={model_dir}", "--feature_base=2",
                               "--train_steps=1")
  assert_names(line, os.path.join(str(model_dir), "config.json"),
               "trained with other settings", "num_classes 4 -> 5",
               "use a new --model_dir")
  assert snapshot(model_dir) == before


# ---------------------------------------------------------------------------------------
# csa_tf.evaluate: nothing is written under RUN/eval on a refusal.
# ---------------------------------------------------------------------------------------
EVAL_CASES = {
    "not_a_model_dir": ("{root}/raw_mscmr", None,
                        "{root}/raw_mscmr: not a csa_tf model dir (no config.json)"),
    "prep_of_another_dataset": ("{run}", "{prep_mmwhs}",
                                "dataset 'mmwhs', but the run was trained on 'mscmr'"),
    "prep_of_another_format_version": ("{run}", "{prep_v99}",
                                       "prepared with format version 99"),
    "prep_lacking_a_modality": ("{run}", "{prep_lge}", "lacks modalities bssfp of the run"),
    "checkpoint_of_another_class_count": ("{run_5_classes}", None,
                                          "checkpoint does not match this run's networks"),
    "no_checkpoint": ("{run_no_checkpoint}", None, "no checkpoint found under checkpoints/"),
    "pickled_prepared_volume": ("{run}", "{prep_pickle}",
                                "{pickled_volume}: holds a pickled Python object array"),
}


@pytest.mark.parametrize("case", sorted(EVAL_CASES))
def test_evaluate(world, capsys, case):
  model_dir, data_dir, named = (None if v is None else v.format(**world)
                                for v in EVAL_CASES[case])
  line = error_line_in_process(capsys, lambda: evaluate.evaluate_run(
      model_dir, data_dir, log=lambda _: None))
  assert_names(line, named)
  assert not os.path.exists(RunDir(model_dir).eval_dir)


@pytest.mark.integration
@pytest.mark.parametrize("args,named", [
    (["--batch_size=0"], "--batch_size=0: must be a positive integer"),
    (["--workers=-1"], "--workers=-1: must be 0 (all cores) or a positive integer"),
    (["--split=validation"], "flag --split=validation: value should be one of"),
    (["--data_dir={prep_mmwhs}"], "dataset 'mmwhs', but the run was trained on 'mscmr'"),
])
def test_evaluate_command(world, args, named):
  line = error_line_of_command("csa_tf.evaluate", f"--model_dir={world['run']}",
                               *[a.format(**world) for a in args])
  assert_names(line, named)
  assert not os.path.exists(RunDir(world["run"]).eval_dir)


# ---------------------------------------------------------------------------------------
# csa_tf.predict: no output file (or folder) on a refusal.
# ---------------------------------------------------------------------------------------
def _scan(folder, data, name="scan.nii.gz"):
  return write_nifti(os.path.join(folder, name), data, dtype=np.float32)


def _good(folder, name="scan.nii.gz"):
  return _scan(folder, np.random.default_rng(2).normal(100, 10, SHAPE), name)


def _truncated_scan(folder):
  path = _good(folder)
  _truncate(path)
  return path


def _text_scan(folder):
  os.makedirs(folder, exist_ok=True)
  path = os.path.join(folder, "scan.nii.gz")
  open(path, "w").write("x,y\n" * 99)
  return path


# name -> (make the input under a folder; return (input path, named, problem)).
PREDICT_CASES = {
    "truncated_nii_gz": lambda d: (_truncated_scan(d), "truncated or corrupt gzip"),
    "not_nifti_named_nii_gz": lambda d: (_text_scan(d), "not a NIfTI file"),
    "image_4d": lambda d: (_scan(d, np.ones(SHAPE + (3,))), "expected a 3D volume"),
    "nan_voxels_over_one_percent": lambda d: (_scan(d, _with_non_finite(SHAPE, 97)),
                                              "97 of 9600 voxels (1.01%) are non-finite"),
    "all_zero_image": lambda d: (_scan(d, np.zeros(SHAPE)), "image is constant"),
}


@pytest.mark.parametrize("case", sorted(PREDICT_CASES))
def test_predict_bad_input_file(world, tmp_path, capsys, case):
  source, problem = PREDICT_CASES[case](str(tmp_path / "in"))
  out = tmp_path / "out" / "seg.nii.gz"
  line = error_line_in_process(capsys, lambda: predict.predict_files(
      world["run"], "lge", source, str(out), log=lambda _: None))
  assert_names(line, source, problem)
  assert not (tmp_path / "out").exists()


def test_predict_repairs_a_few_non_finite_voxels(world, tmp_path):
  # One NaN of 9600 voxels: repaired as in preparation and reported, not refused.
  source = _scan(str(tmp_path / "in"), _with_value(SHAPE, np.nan))
  out = tmp_path / "out" / "seg.nii.gz"
  lines = []
  predict.predict_files(world["run"], "lge", source, str(out), log=lines.append)
  assert len(lines) == 1 and lines[0].endswith(
      "; 1 non-finite (NaN/Inf) input voxels repaired)")
  assert nib.load(str(out)).shape == SHAPE


def test_predict_folder_with_one_bad_file_writes_nothing(world, tmp_path, capsys):
  folder = tmp_path / "in"
  _good(str(folder), "a.nii.gz")
  bad = _scan(str(folder), np.zeros(SHAPE), "b.nii.gz")
  out = tmp_path / "out"
  line = error_line_in_process(capsys, lambda: predict.predict_files(
      world["run"], "lge", str(folder), str(out), log=lambda _: None))
  assert_names(line, bad, "image is constant")
  assert not out.exists()


@pytest.mark.parametrize("case,named", [
    ("modality_not_trained", "--modality=t2: the run in {run} was trained on lge, bssfp"),
    ("checkpoint_of_another_class_count", "checkpoint does not match this run's networks"),
    ("output_exists", "exists; pass --overwrite to replace it"),
    ("output_not_nifti", "must end in .nii.gz or .nii"),
    ("output_is_input", "output would replace its own input"),
])
def test_predict_bad_model_or_output(world, tmp_path, capsys, case, named):
  source = _good(str(tmp_path / "in"))
  model_dir, modality = world["run"], "lge"
  out = str(tmp_path / "out" / "seg.nii.gz")
  if case == "modality_not_trained":
    modality = "t2"
  elif case == "checkpoint_of_another_class_count":
    model_dir = world["run_5_classes"]
  elif case == "output_exists":
    os.makedirs(os.path.dirname(out))
    open(out, "w").write("keep me")
  elif case == "output_not_nifti":
    out = str(tmp_path / "out" / "seg.png")
  elif case == "output_is_input":
    out = source
  before = snapshot(tmp_path)
  line = error_line_in_process(capsys, lambda: predict.predict_files(
      model_dir, modality, source, out, log=lambda _: None))
  assert_names(line, named.format(**world))
  assert snapshot(tmp_path) == before


@pytest.mark.integration
@pytest.mark.parametrize("args,named", [
    (["--modality=lge", "--field_of_view=side"],
     "flag --field_of_view=side: value should be one of"),
    (["--modality=lge", "--batch_size=0"], "--batch_size=0: must be a positive integer"),
    ([], "--modality is required"),
    (["--modality=bssfp", "--input={root}/absent.nii.gz"], "absent.nii.gz: input not found"),
])
def test_predict_command(world, tmp_path, args, named):
  out = tmp_path / "seg.nii.gz"
  args = [a.format(**world) for a in args]
  if not any(a.startswith("--input") for a in args):
    args.append(f"--input={world['scan']}")
  line = error_line_of_command("csa_tf.predict", f"--model_dir={world['run']}",
                               f"--output={out}", *args)
  assert_names(line, named.format(**world))
  assert not out.exists()


# ---------------------------------------------------------------------------------------
# experiments.reproduce: no --output_dir on a refusal.
# ---------------------------------------------------------------------------------------
@pytest.mark.integration
@pytest.mark.parametrize("args,named", [
    (["--methods=csa,fancy"], "--methods: unknown method 'fancy'"),
    (["--train_steps=-1"], "--train_steps=-1: must be a positive integer"),
    (["--dataset=mmwhs"], "holds dataset 'mscmr', expected 'mmwhs'"),
    (["--data_dir={prep_v99}"], "prepared with format version 99"),
    (["--dataset=cityscapes"], "flag --dataset=cityscapes: value should be one of"),
    (["--methods=msbn", "--train_steps=1", "--train_flag=--batch_size=0"],
     "csa_tf.train refused to start --method=msbn: --batch_size=0: must be a positive "
     "integer"),
])
def test_reproduce_command(world, tmp_path, args, named):
  out = tmp_path / "results"
  line = error_line_of_command("experiments.reproduce", f"--data_dir={world['prep']}",
                               f"--output_dir={out}", *[a.format(**world) for a in args])
  assert_names(line, named)
  assert not out.exists()
