"""Tests of data_prep.mmwhs_pnp on a tiny release written in the PnP-AdaNet/SIFA format."""
import json
import os

from absl.testing import flagsaver
import numpy as np
import pytest

from csa_tf.data import prepared
from csa_tf.cli import run_main
from csa_tf.errors import CsaInputError
from csa_tf.data.slicing import zscore_slices
from csa_tf.data import mmwhs_pnp
from data_prep import mmwhs_pnp as pnp_command
from tests.helpers import pnp_slice_example as slice_example
from tests.helpers import start_command, write_pnp_record_file as write_record_file

SIZE = 256
# Slice numbers whose natural order (1, 2, 9, 10, 11, 100) differs from lexical order.
SLICE_NUMBERS = (10, 2, 100, 1, 11, 9)
NATURAL_ORDER = sorted(SLICE_NUMBERS)


# ---------------------------------------------------------------------------------------
# Writing the release format (test helpers only).
# ---------------------------------------------------------------------------------------
def write_pnp_example_files(pnp_dir: str, *, modalities=("ct", "mr"),
                            slice_numbers=SLICE_NUMBERS, test_slices: int = 4,
                            seed: int = 0) -> dict:
  """Writes a tiny release: per modality one TFRecord per slice and one test npz.

  Layout: `<m>_train_tfs/<m>_train_slice<k>.tfrecords` (256x256x3 float32 image and
  label, labels 0..5, 5 in the middle channel too) and `test_<m>/image_<m>_1003.npz`
  holding arr_0/arr_1 of 256x256x`test_slices`, flipped on axes 0 and 1.

  Returns:
    {modality: dict(train={k: (image, label)} with the 256x256x3 arrays as written,
     test_image, test_label: the UNflipped 256x256xN arrays)}.
  """
  rng = np.random.default_rng(seed)
  truth = {}
  for modality in modalities:
    train = {}
    for number in slice_numbers:
      # Channels on different scales, so reading the wrong channel shows.
      image = (rng.normal(size=(SIZE, SIZE, 3)) * [1.0, 7.0, 50.0]
               + [0.0, 3.0, -20.0]).astype(np.float32)
      label = rng.integers(0, 6, size=(SIZE, SIZE, 3)).astype(np.float32)
      label[..., 0] = 4  # A neighbour channel that differs from the middle one.
      train[number] = (image, label)
      write_record_file(
          os.path.join(pnp_dir, f"{modality}_train_tfs",
                       f"{modality}_train_slice{number}.tfrecords"),
          slice_example(image, label))
    test_image = rng.normal(size=(SIZE, SIZE, test_slices)).astype(np.float32) * 9 + 2
    test_label = rng.integers(0, 6, size=(SIZE, SIZE, test_slices)).astype(np.uint8)
    os.makedirs(os.path.join(pnp_dir, f"test_{modality}"), exist_ok=True)
    np.savez(os.path.join(pnp_dir, f"test_{modality}", f"image_{modality}_1003.npz"),
             np.flip(test_image, axis=(0, 1)), np.flip(test_label, axis=(0, 1)))
    truth[modality] = dict(train=train, test_image=test_image, test_label=test_label)
  return truth


def mapped(label: np.ndarray) -> np.ndarray:
  """Release labels -> class indices: 1..4 kept (MM-WHS classes), 5 -> 0."""
  label = label.astype(np.uint8)
  return np.where(label == 5, 0, label).astype(np.uint8)


def tree_state(folder: str) -> dict:
  state = {}
  for root, _, files in os.walk(folder):
    for name in files:
      path = os.path.join(root, name)
      stat = os.stat(path)
      state[path] = (stat.st_size, stat.st_mtime_ns)
  return state


# ---------------------------------------------------------------------------------------
# Conversion.
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def release(tmp_path_factory):
  pnp_dir = str(tmp_path_factory.mktemp("pnp") / "release")
  truth = write_pnp_example_files(pnp_dir)
  return pnp_dir, truth


@pytest.fixture(scope="module")
def converted(release, tmp_path_factory):
  pnp_dir, truth = release
  before = tree_state(pnp_dir)
  prep_dir = str(tmp_path_factory.mktemp("out") / "prep")
  summary = mmwhs_pnp.prepare_pnp(pnp_dir, prep_dir)
  assert tree_state(pnp_dir) == before, "the release folder was written to"
  return prep_dir, truth, summary


def test_train_pseudo_volume_holds_middle_channels_in_natural_order(converted):
  prep_dir, truth, _ = converted
  data = prepared.PreparedDataset.open(prep_dir, dataset="mmwhs")
  for modality in ("ct", "mr"):
    volume = prepared.load_volume(os.path.join(
        prep_dir, prepared.volume_filename(modality, f"{modality}_pnp_train")))
    slices = [truth[modality]["train"][k] for k in NATURAL_ORDER]
    expected_image = zscore_slices(np.stack([image[..., 1] for image, _ in slices]))
    expected_label = np.stack([mapped(label[..., 1]) for _, label in slices])
    assert volume.image.dtype == np.float32 and volume.label.dtype == np.uint8
    np.testing.assert_allclose(volume.image, expected_image, atol=1e-5)
    # The records' side channels are each slice's neighbours (--input_slices=3).
    for side, channel in enumerate((0, 2)):
      np.testing.assert_allclose(
          volume.neighbours[..., side],
          zscore_slices(np.stack([image[..., channel] for image, _ in slices])), atol=1e-5)
    np.testing.assert_allclose(volume.inputs(3)[..., 1], expected_image, atol=1e-5)
    np.testing.assert_array_equal(volume.label, expected_label)
    assert volume.label.max() == 4 and not (volume.label == 5).any()
    assert volume.geometry.original_shape == (SIZE, SIZE, len(SLICE_NUMBERS))
    assert volume.geometry.crop_origin == (0, 0) and volume.geometry.crop_size == SIZE
    assert volume.spacing == (1.0, 1.0, 1.0)
    np.testing.assert_array_equal(volume.affine, np.eye(4))
    # Identity geometry: the pseudo-volume's original grid is the slices along axis 2.
    np.testing.assert_array_equal(volume.original_label,
                                  np.moveaxis(expected_label, 0, 2))
    images, labels = data.train_slices(modality)
    assert images.shape[1:] == (SIZE, SIZE) and len(images) == len(labels)


def test_test_volumes_are_unflipped(converted):
  prep_dir, truth, _ = converted
  for modality in ("ct", "mr"):
    volume = prepared.load_volume(os.path.join(
        prep_dir, prepared.volume_filename(modality, f"{modality}_1003")))
    image = truth[modality]["test_image"]
    label = truth[modality]["test_label"]
    np.testing.assert_allclose(volume.image, zscore_slices(np.moveaxis(image, 2, 0)),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(volume.label, mapped(np.moveaxis(label, 2, 0)))
    assert volume.source == f"image_{modality}_1003.npz"
    # Pasting back lands on the npz's own (flipped) grid.
    np.testing.assert_array_equal(volume.original_label,
                                  mapped(np.flip(label, axis=(0, 1))))


def test_splits_meta_and_summary(converted):
  prep_dir, _, summary = converted
  with open(os.path.join(prep_dir, prepared.SPLITS_FILE)) as f:
    assert json.load(f) == {"train": ["ct_pnp_train", "mr_pnp_train"],
                            "test": ["ct_1003", "mr_1003"]}
  data = prepared.PreparedDataset.open(prep_dir, dataset="mmwhs")
  assert data.modalities == ("ct", "mr") and data.crop_size == SIZE
  assert data.meta["class_names"] == ["background", "LVM", "LAC", "LVC", "AA"]
  assert data.meta["settings"]["seed"] == 0
  assert data.meta["settings"]["test_fraction"] == 0.0
  assert {e.patient_id: e.num_slices for e in data.entries} == {
      "ct_pnp_train": 6, "mr_pnp_train": 6, "ct_1003": 4, "mr_1003": 4}
  assert "label 5 (ignore) voxels mapped to background" in summary
  # No validation folder, no training slice equal to a test slice.
  assert data.meta["left_out_of_training"] == []
  assert "left out of training: none" in summary


def test_modality_tokens():
  assert mmwhs_pnp.modality_of("ct_train_tfs/ct_train_slice100.tfrecords") == "ct"
  assert mmwhs_pnp.modality_of("test/gt_mr_1003.npz") == "mr"
  assert mmwhs_pnp.modality_of("data/MR/image.npz") == "mr"
  assert mmwhs_pnp.modality_of("x.ct.npz") == "ct"
  for bad in ("mr_to_ct/slice1.tfrecords", "struct/mri_1.npz", "slice1.tfrecords"):
    with pytest.raises(CsaInputError, match="cannot tell the modality"):
      mmwhs_pnp.modality_of(bad)


def test_natural_order_and_patient_ids():
  names = ["s10", "s2", "s100", "s1"]
  assert sorted(names, key=mmwhs_pnp.natural_key) == ["s1", "s2", "s10", "s100"]
  assert mmwhs_pnp.npz_patient_id("/a/gt_ct_1003.npz", "ct") == "ct_1003"
  assert mmwhs_pnp.npz_patient_id("/a/mr_test.npz", "mr") == "mr_mr_test"


# ---------------------------------------------------------------------------------------
# Bad input, in process.
# ---------------------------------------------------------------------------------------
def _one_slice_release(folder, image=None, label=None, **sizes) -> str:
  rng = np.random.default_rng(1)
  image = rng.normal(size=(SIZE, SIZE, 3)).astype(np.float32) if image is None else image
  label = np.ones((SIZE, SIZE, 3), np.float32) if label is None else label
  path = os.path.join(str(folder), "ct_train_tfs", "ct_train_slice0.tfrecords")
  write_record_file(path, slice_example(image, label, **sizes))
  return path


def test_non_finite_image_is_refused(tmp_path):
  image = np.zeros((SIZE, SIZE, 3), np.float32)
  image[3, 4, 1] = np.nan
  path = _one_slice_release(tmp_path / "pnp", image=image)
  with pytest.raises(CsaInputError, match="non-finite") as info:
    mmwhs_pnp.prepare_pnp(str(tmp_path / "pnp"), str(tmp_path / "prep"))
  assert path in str(info.value)
  assert sorted(os.listdir(tmp_path)) == ["pnp"]


def test_wrong_slice_shape_and_record_count_are_refused(tmp_path):
  path = _one_slice_release(tmp_path / "pnp", image=np.zeros((SIZE, SIZE, 2), np.float32),
                            label=np.zeros((SIZE, SIZE, 2), np.float32))
  with pytest.raises(CsaInputError, match="odd channel count"):
    mmwhs_pnp.read_slice_record(path)
  record = slice_example(np.zeros((SIZE, SIZE, 3), np.float32),
                         np.zeros((SIZE, SIZE, 3), np.float32))
  write_record_file(path, record, record)
  with pytest.raises(CsaInputError, match="holds 2 records"):
    mmwhs_pnp.read_slice_record(path)
  write_record_file(path, b"not an example")
  with pytest.raises(CsaInputError, match="not a PnP-AdaNet/SIFA slice record"):
    mmwhs_pnp.read_slice_record(path)


def test_bad_npz_is_refused(tmp_path):
  pnp_dir = tmp_path / "pnp"
  pnp_dir.mkdir()
  path = str(pnp_dir / "image_ct_1003.npz")
  np.savez(path, np.zeros((SIZE, SIZE, 2), np.float32))
  with pytest.raises(CsaInputError, match="missing arr_1") as info:
    mmwhs_pnp.prepare_pnp(str(pnp_dir), str(tmp_path / "prep"))
  assert path in str(info.value)
  np.savez(path, np.zeros((SIZE, SIZE, 2)), np.zeros((SIZE, SIZE, 3)))
  with pytest.raises(CsaInputError, match="differs from arr_0"):
    mmwhs_pnp.read_test_npz(path)
  with open(path, "wb") as f:
    f.write(b"garbage")
  with pytest.raises(CsaInputError, match="not a readable npz"):
    mmwhs_pnp.read_test_npz(path)
  assert sorted(os.listdir(tmp_path)) == ["pnp"]


def test_repeated_test_volume_id_is_refused(tmp_path):
  (tmp_path / "pnp").mkdir()
  for name in ("gt_ct_1003.npz", "image_ct_1003.npz"):
    np.savez(str(tmp_path / "pnp" / name), np.zeros((SIZE, SIZE, 1)),
             np.zeros((SIZE, SIZE, 1)))
  with pytest.raises(CsaInputError, match="'ct_1003' repeats"):
    mmwhs_pnp.prepare_pnp(str(tmp_path / "pnp"), str(tmp_path / "prep"))


def test_folders_are_checked(tmp_path):
  with pytest.raises(CsaInputError, match="folder not found"):
    mmwhs_pnp.prepare_pnp(str(tmp_path / "missing"), str(tmp_path / "prep"))
  (tmp_path / "pnp").mkdir()
  (tmp_path / "pnp" / "notes_ct.txt").write_text("ignored")
  (tmp_path / "pnp" / "scan_ct_1003.nii.gz").write_bytes(b"")  # Not a test volume name.
  with pytest.raises(CsaInputError, match="no PnP-AdaNet/SIFA files"):
    mmwhs_pnp.prepare_pnp(str(tmp_path / "pnp"), str(tmp_path / "prep"))
  with pytest.raises(CsaInputError, match="lies inside pnp_dir="):
    mmwhs_pnp.prepare_pnp(str(tmp_path / "pnp"), str(tmp_path / "pnp" / "prep"))
  with pytest.raises(CsaInputError, match="contains pnp_dir="):
    mmwhs_pnp.prepare_pnp(str(tmp_path / "pnp"), str(tmp_path), overwrite=True)
  assert (tmp_path / "pnp" / "notes_ct.txt").read_text() == "ignored"


def test_existing_preparation_needs_overwrite(converted, tmp_path):
  prep_dir, _, _ = converted
  pnp_dir = str(tmp_path / "pnp")
  write_pnp_example_files(pnp_dir, modalities=("mr",), slice_numbers=(1, 2),
                          test_slices=2)
  with pytest.raises(CsaInputError, match="pass overwrite=True to replace it"):
    mmwhs_pnp.prepare_pnp(pnp_dir, prep_dir)
  copy = str(tmp_path / "prep")
  assert "NIfTI" not in mmwhs_pnp.prepare_pnp(pnp_dir, copy)
  open(os.path.join(pnp_dir, "test_mr", "scan_mr_1003.nii.gz"), "wb").close()
  summary = mmwhs_pnp.prepare_pnp(pnp_dir, copy, overwrite=True)
  assert "1 NIfTI files under pnp_dir" in summary
  data = prepared.PreparedDataset.open(copy)
  assert data.modalities == ("mr",)
  assert data.splits == {"train": ["mr_pnp_train"], "test": ["mr_1003"]}


# ---------------------------------------------------------------------------------------
# The command line. Each CLI start imports TensorFlow (seconds on a shared CPU), so two
# processes run concurrently (a good release and a truncated TFRecord) and every bad
# release also goes through the same entry point in process (run_main(main)).
# ---------------------------------------------------------------------------------------
def _truncated(folder):
  path = _one_slice_release(folder)
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[:len(data) // 2])
  return path


def _wrong_sizes(folder):
  return _one_slice_release(folder, dsize=(SIZE, SIZE, 4))


def _label_7(folder):
  label = np.ones((SIZE, SIZE, 3), np.float32)
  label[10, 20, 1] = 7
  return _one_slice_release(folder, label=label)


BAD_RELEASES = {"truncated": (_truncated, "not a readable TFRecord"),
                "wrong_sizes": (_wrong_sizes, "need"),
                "label_7": (_label_7, "label values 7")}


def _cli(pnp_dir, prep_dir):
  return start_command("data_prep.mmwhs_pnp", f"--pnp_dir={pnp_dir}",
                       f"--output_dir={prep_dir}")


@pytest.fixture(scope="module")
def cli_runs(release, tmp_path_factory):
  pnp_dir, _ = release
  good = tmp_path_factory.mktemp("cli_good")
  bad = tmp_path_factory.mktemp("cli_truncated")
  bad_file = _truncated(bad / "pnp")
  runs = {"good": (_cli(pnp_dir, good / "prep"), str(good), None),
          "truncated": (_cli(bad / "pnp", bad / "out" / "prep"), str(bad), bad_file)}
  results = {}
  for name, (process, folder, path) in runs.items():
    stdout, stderr = process.communicate(timeout=120)
    results[name] = (process.returncode, stdout, stderr, folder, path)
  return results


def _check_one_error_line(stderr, bad_file, expected, folder):
  # TensorFlow's C++ start-up log may precede it; ours is the one and last error line.
  lines = [line for line in stderr.splitlines() if line.strip()]
  errors = [line for line in lines if line.startswith("error:")]
  assert len(errors) == 1 and lines[-1] == errors[0], stderr
  assert bad_file in errors[0] and expected in errors[0], errors[0]
  assert "Traceback" not in stderr
  # No PREP and no temporary folder left behind.
  out = os.path.join(folder, "out")
  assert not os.path.exists(os.path.join(out, "prep"))
  assert not os.path.exists(out) or os.listdir(out) == []


@pytest.mark.integration
def test_cli_converts(cli_runs):
  returncode, stdout, stderr, folder, _ = cli_runs["good"]
  assert returncode == 0, stderr
  assert "prepared data written to" in stdout
  data = prepared.PreparedDataset.open(os.path.join(folder, "prep"), dataset="mmwhs")
  assert data.splits == {"train": ["ct_pnp_train", "mr_pnp_train"],
                         "test": ["ct_1003", "mr_1003"]}


@pytest.mark.integration
def test_cli_process_truncated_record_is_one_error_line(cli_runs):
  returncode, _, stderr, folder, bad_file = cli_runs["truncated"]
  assert returncode == 2, stderr
  _check_one_error_line(stderr, bad_file, BAD_RELEASES["truncated"][1], folder)


@pytest.mark.parametrize("name", sorted(BAD_RELEASES))
def test_cli_main_bad_input_exits_2_with_one_error_line(name, tmp_path, capsys):
  bad_file = BAD_RELEASES[name][0](tmp_path / "pnp")
  if "pnp_dir" not in pnp_command.FLAGS:
    pnp_command.define_flags()
  with flagsaver.flagsaver():
    pnp_command.FLAGS(["mmwhs_pnp", f"--pnp_dir={tmp_path / 'pnp'}",
                       f"--output_dir={tmp_path / 'out' / 'prep'}"])
    with pytest.raises(SystemExit) as info:
      run_main(pnp_command.main)(["mmwhs_pnp"])
  assert info.value.code == 2
  _check_one_error_line(capsys.readouterr().err, bad_file, BAD_RELEASES[name][1],
                        str(tmp_path))


def test_batched_reading_names_the_bad_file(tmp_path):
  rng = np.random.default_rng(2)
  records = [slice_example(rng.normal(size=(SIZE, SIZE, 3)).astype(np.float32),
                           np.full((SIZE, SIZE, 3), k, np.float32)) for k in range(4)]
  paths = [str(tmp_path / f"ct_s{k}.tfrecords") for k in range(4)]
  for path, record in zip(paths, records):
    write_record_file(path, record)
  assert [int(label[0, 0]) for _, _, label in mmwhs_pnp.iter_slice_records(paths)] == [
      0, 1, 2, 3]
  cases = {"holds 2 records": (records[1], records[1]),
           "holds 0 records": (),
           "not a readable TFRecord": None}
  for expected, content in cases.items():
    if content is None:
      with open(paths[1], "wb") as f:
        f.write(b"\x00" * 40)
    else:
      write_record_file(paths[1], *content)
    with pytest.raises(CsaInputError, match=expected) as info:
      list(mmwhs_pnp.iter_slice_records(paths))
    assert str(info.value).startswith(paths[1] + ":"), info.value
  write_record_file(paths[1], records[1])
  write_record_file(paths[3])
  with pytest.raises(CsaInputError, match="holds 0 records") as info:
    list(mmwhs_pnp.iter_slice_records(paths))
  assert str(info.value).startswith(paths[3] + ":"), info.value
