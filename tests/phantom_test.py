"""Tests for csa_tf.data.phantom: release layouts, labels, geometry, anatomy, seeds."""
import dataclasses
import gzip
import hashlib
import json
import os

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from csa_tf.configs import datasets
from csa_tf.errors import CsaInputError
from csa_tf.data import phantom
# generate_phantoms looks its NIfTI writer up here, so a failing one is patched here.
from csa_tf.data.phantom import release as phantom_release
from tests.helpers import run_command

TAGS = datasets.MSCMR_SEQUENCE_TAGS
LV, MYO, RV = datasets.MSCMR.label_values
LVM, LAC, LVC, AA = datasets.MMWHS.label_values
# Every structure of the MM-WHS release (the paper's four plus RA 550, RV 600, PA 850).
MMWHS_VALUES = {0, 205, 420, 500, 550, 600, 820, 850}
# In-plane 4-neighbours (MS-CMRSeg) and 6-neighbours (MM-WHS).
IN_PLANE_CROSS = np.zeros((3, 3, 3), bool)
IN_PLANE_CROSS[:, 1, 1] = IN_PLANE_CROSS[1, :, 1] = True
CROSS_3D = ndimage.generate_binary_structure(3, 1)


def _load(path):
  img = nib.load(str(path))
  return np.asanyarray(img.dataobj), img


def _neighbours(mask, structure):
  return ndimage.binary_dilation(mask, structure=structure) & ~mask


def _generate(dataset, out, **kwargs):
  kwargs.setdefault("progress", None)
  return phantom.generate_phantoms(dataset, str(out), **kwargs)


@pytest.fixture(scope="module")
def mscmr_set(tmp_path_factory):
  out = tmp_path_factory.mktemp("phantoms") / "mscmr"
  return out, _generate("mscmr", out, num_patients=3, seed=5, scale=0.25)


@pytest.fixture(scope="module")
def mmwhs_set(tmp_path_factory):
  out = tmp_path_factory.mktemp("phantoms") / "mmwhs"
  return out, _generate("mmwhs", out, num_patients=2, seed=5, scale=0.2)


def test_mscmr_release_layout(mscmr_set):
  out, paths = mscmr_set
  expected = []
  for n in (1, 2, 3):
    for modality in ("lge", "bssfp", "t2"):
      tag = TAGS[modality]
      expected += [os.path.join(out, "images", f"patient{n}_{tag}.nii.gz"),
                   os.path.join(out, "labels", tag, f"patient{n}_{tag}_manual.nii.gz")]
  assert paths == expected
  on_disk = {os.path.join(root, name) for root, _, names in os.walk(out) for name in names}
  assert on_disk == set(expected) | {os.path.join(out, phantom.MARKER_NAME)}
  marker = json.load(open(out / phantom.MARKER_NAME))
  assert marker["dataset"] == "mscmr" and marker["modalities"] == ["lge", "bssfp", "t2"]
  assert not [name for name in os.listdir(out.parent) if name.startswith(".")]


def test_mscmr_volumes_match_their_geometry(mscmr_set):
  out, paths = mscmr_set
  for image_path, label_path in zip(paths[::2], paths[1::2]):
    image, image_nii = _load(image_path)
    label, label_nii = _load(label_path)
    n = int(os.path.basename(image_path).split("_")[0][len("patient"):])
    tag = os.path.basename(image_path).split("_")[1].split(".")[0]
    modality = {t: m for m, t in TAGS.items()}[tag]
    geometry = phantom.sample_geometry("mscmr", n, modality, seed=5, scale=0.25)
    assert image.dtype == np.int16 and label.dtype == np.uint16
    assert image.shape == label.shape == geometry.shape
    assert image.min() >= 0 and image.max() > 0
    assert set(np.unique(label).tolist()) == {0, LV, MYO, RV}
    np.testing.assert_allclose(image_nii.affine, geometry.affine, atol=1e-4)
    np.testing.assert_allclose(label_nii.affine, image_nii.affine)
    np.testing.assert_allclose(image_nii.header.get_zooms(), geometry.spacing, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(geometry.affine[:3, :3], axis=0),
                               geometry.spacing, rtol=1e-6)
    if modality == "lge":
      assert 100 <= min(image.shape[:2]) and max(image.shape[:2]) <= 128


def test_mscmr_anatomy_slice_by_slice(mscmr_set):
  out, paths = mscmr_set
  for label_path in paths[1::2]:
    label, _ = _load(label_path)
    name = os.path.basename(label_path)
    n, tag = int(name.split("_")[0][len("patient"):]), name.split("_")[1]
    modality = {t: m for m, t in TAGS.items()}[tag]
    heart = phantom.sample_geometry("mscmr", n, modality, seed=5, scale=0.25).heart
    # The myocardium encloses the blood pool: its in-plane 4-neighbours are LV or myo.
    assert set(np.unique(label[_neighbours(label == LV, IN_PLANE_CROSS)])) == {MYO}
    for k, depth in enumerate(heart.slice_positions):
      present = {value: bool((label[:, :, k] == value).any()) for value in (LV, MYO, RV)}
      if present[LV] or present[RV]:
        assert present[MYO], (name, k)
      if depth < 0:  # Above the base plane: not annotated, as in the release.
        assert not any(present.values()), (name, k)
      if 0.05 * heart.lv_length <= depth <= 0.6 * heart.lv_length:
        assert all(present.values()), (name, k, present)
    # The RV lies on its side of the LV: towards rv_angle from the LV centre.
    rv = np.argwhere(label == RV)[:, :2].mean(axis=0)
    lv = np.argwhere(label == LV)[:, :2].mean(axis=0)
    direction = (np.cos(heart.rv_angle), np.sin(heart.rv_angle))
    assert np.dot(rv - lv, direction) > 0


def test_mscmr_geometry_ranges_at_full_scale():
  for n in range(1, 61):
    for modality, grid in phantom.GRID_RANGES["mscmr"].items():
      geometry = phantom.sample_geometry("mscmr", n, modality)
      heart = geometry.heart
      nx, ny, nz = geometry.shape
      assert grid.size[0] <= min(nx, ny) and max(nx, ny) <= grid.size[1]
      assert grid.slices[0] <= nz <= grid.slices[1]
      assert grid.spacing[0] <= geometry.spacing[0] <= grid.spacing[1]
      assert geometry.spacing[0] == pytest.approx(geometry.spacing[1])
      assert grid.slice_spacing[0] <= geometry.spacing[2] <= grid.slice_spacing[1]
      assert len(heart.slice_positions) == nz
      np.testing.assert_allclose(np.diff(heart.slice_positions), geometry.spacing[2])
      assert 20 <= heart.endo_radius <= 28 and 6 <= heart.myo_thickness <= 11
      # At most two unlabelled slices beyond either end of the heart.
      depth = np.asarray(heart.slice_positions)
      assert (depth < 0).sum() <= 2
      assert (depth >= heart.lv_length + heart.apex_thickness).sum() <= 2


def test_mmwhs_geometry_ranges_at_full_scale():
  mr_codes = set()
  for n in range(1001, 1041):
    for modality, grid in phantom.GRID_RANGES["mmwhs"].items():
      geometry = phantom.sample_geometry("mmwhs", n, modality)
      nx, ny, nz = geometry.shape
      assert grid.size[0] <= nx == ny <= grid.size[1]
      assert grid.slices[0] <= nz <= grid.slices[1]
      assert grid.spacing[0] <= geometry.spacing[0] <= grid.spacing[1]
      assert grid.slice_spacing[0] <= geometry.spacing[2] <= grid.slice_spacing[1]
      np.testing.assert_allclose(np.linalg.norm(geometry.affine[:3, :3], axis=0),
                                 geometry.spacing, rtol=1e-6)
      if modality == "mr":
        mr_codes.add(nib.aff2axcodes(geometry.affine))
  assert len(mr_codes) > 1 and ("L", "P", "S") not in mr_codes


def test_scale_shrinks_the_grid_but_not_the_anatomy():
  for dataset, modality, patient in (("mscmr", "lge", 4), ("mscmr", "t2", 4),
                                     ("mmwhs", "ct", 1003), ("mmwhs", "mr", 1003)):
    full = phantom.sample_geometry(dataset, patient, modality, seed=2)
    small = phantom.sample_geometry(dataset, patient, modality, seed=2, scale=0.25)
    assert small.heart == full.heart
    extent = lambda g: np.asarray(g.shape) * np.asarray(g.spacing)
    scaled_axes = 3 if dataset == "mmwhs" else 2
    np.testing.assert_allclose(extent(small), extent(full), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(small.shape[:scaled_axes]),
                               np.asarray(full.shape[:scaled_axes]) * 0.25, atol=1)
    assert small.shape[scaled_axes:] == full.shape[scaled_axes:]


def test_modalities_of_one_patient_are_unpaired():
  for n in range(1, 11):
    lge = phantom.sample_geometry("mscmr", n, "lge")
    bssfp = phantom.sample_geometry("mscmr", n, "bssfp")
    assert lge.shape != bssfp.shape
    assert lge.heart.center != bssfp.heart.center
    assert lge.heart.rv_angle != bssfp.heart.rv_angle
    assert lge.heart.endo_radius != bssfp.heart.endo_radius
    assert lge.render_seed != bssfp.render_seed
  ct = phantom.sample_geometry("mmwhs", 1001, "ct")
  mr = phantom.sample_geometry("mmwhs", 1001, "mr")
  assert ct.heart.lv_length != mr.heart.lv_length and ct.heart.origin != mr.heart.origin


def test_mmwhs_release_layout_and_values(mmwhs_set):
  out, paths = mmwhs_set
  expected = []
  for n in (1001, 1002):
    for modality in ("ct", "mr"):
      stem = os.path.join(out, f"{modality}_train", f"{modality}_train_{n}")
      expected += [stem + "_image.nii.gz", stem + "_label.nii.gz"]
  assert paths == expected
  for image_path, label_path in zip(paths[::2], paths[1::2]):
    image, image_nii = _load(image_path)
    label, label_nii = _load(label_path)
    assert image.dtype == np.int16 and label.dtype == np.uint16
    assert image.shape == label.shape
    np.testing.assert_allclose(label_nii.affine, image_nii.affine)
    assert set(np.unique(label).tolist()) == MMWHS_VALUES
    codes = nib.aff2axcodes(image_nii.affine)
    if "ct_train" in image_path:
      assert codes == ("L", "P", "S")
      assert image.min() >= -1024 and (image < -900).any()  # Air and lungs.
      assert np.median(image[label == LVC]) > 150  # Contrast-enhanced blood.
      assert np.median(image[label == LVM]) < np.median(image[label == LVC]) - 50
    else:
      assert codes != ("L", "P", "S")  # Orientation must come from the header.
      assert image.min() >= 0
      assert np.median(image[label == LVC]) > 2 * np.median(image[label == LVM])


def test_mmwhs_anatomy_is_where_the_affine_says(mmwhs_set):
  out, paths = mmwhs_set
  for label_path in paths[1::2]:
    label, nii = _load(label_path)
    modality, _, number = os.path.basename(label_path).split("_")[:3]
    geometry = phantom.sample_geometry("mmwhs", int(number), modality, seed=5, scale=0.2)
    for value in MMWHS_VALUES - {0}:
      assert (label == value).sum() > 20, (label_path, value)
    # Nested: the LV cavity touches only myocardium, the LA (mitral) and the aorta.
    touching = set(np.unique(label[_neighbours(label == LVC, CROSS_3D)]).tolist())
    assert touching <= {LVM, LAC, AA}
    centroid = nib.affines.apply_affine(nii.affine, np.argwhere(label == LVC).mean(axis=0))
    np.testing.assert_allclose(centroid, geometry.heart.lv_cavity_centroid,
                               atol=max(geometry.spacing))


def test_mmwhs_anatomy_follows_a_reoriented_grid():
  geometry = phantom.sample_geometry("mmwhs", 1002, "mr", seed=1, scale=0.12)
  _, label = phantom.render(geometry)
  # The same voxels stored with axis 0 flipped and axes 1 and 2 swapped.
  affine = geometry.affine.copy()
  affine[:3, 3] += affine[:3, 0] * (geometry.shape[0] - 1)
  affine[:3, 0] *= -1
  affine = affine[:, [0, 2, 1, 3]]
  other = dataclasses.replace(
      geometry, affine=affine,
      shape=tuple(geometry.shape[i] for i in (0, 2, 1)),
      spacing=tuple(geometry.spacing[i] for i in (0, 2, 1)))
  _, other_label = phantom.render(other)
  expected = np.transpose(label[::-1], (0, 2, 1))
  assert np.mean(other_label != expected) < 1e-3


def test_stray_421_only_in_mr_1010():
  _, label = phantom.render(phantom.sample_geometry("mmwhs", 1010, "mr", scale=0.1))
  assert 1 <= (label == 421).sum() <= 12
  assert set(np.unique(label).tolist()) == MMWHS_VALUES | {421}
  for number, modality in ((1010, "ct"), (1009, "mr")):
    _, label = phantom.render(phantom.sample_geometry("mmwhs", number, modality, scale=0.1))
    assert 421 not in label


def test_same_seed_same_arrays_other_seed_differs(tmp_path):
  runs = {}
  for name, seed, num_patients in (("a", 7, 2), ("b", 7, 2), ("c", 8, 2), ("d", 7, 1)):
    paths = _generate("mscmr", tmp_path / name, num_patients=num_patients, seed=seed,
                      scale=0.15, modalities=["lge", "t2"])
    runs[name] = {os.path.relpath(p, tmp_path / name): _load(p) for p in paths}
  assert runs["a"].keys() == runs["b"].keys() == runs["c"].keys()
  for key, (data, nii) in runs["a"].items():
    other, other_nii = runs["b"][key]
    assert data.dtype == other.dtype and np.array_equal(data, other)
    np.testing.assert_array_equal(nii.affine, other_nii.affine)
    assert not np.array_equal(data, runs["c"][key][0])
  # A volume does not depend on how many patients were drawn.
  for key, (data, _) in runs["d"].items():
    assert np.array_equal(data, runs["a"][key][0])
  geometry = phantom.sample_geometry("mmwhs", 1001, "ct", seed=3, scale=0.1)
  first, second = phantom.render(geometry), phantom.render(geometry)
  assert all(np.array_equal(a, b) for a, b in zip(first, second))


# The digest of a 2-patient full-release set (seed 4, scale 0.1, all modalities) as
# data_prep.phantom wrote it before --release existed: sha256 over each file's relative
# path, a NUL byte and its uncompressed bytes, in sorted order (the marker included).
FULL_RELEASE_DIGEST = "db6739c9cda38338192e80e6d74ee61a062611e34583e689cc5a4be3d7da31a4"


def test_full_release_is_byte_identical_to_before(tmp_path):
  out = tmp_path / "full"
  _generate("mscmr", out, num_patients=2, seed=4, scale=0.1, release="full")
  digest = hashlib.sha256()
  for root, dirs, files in sorted(os.walk(out)):
    dirs.sort()
    for name in sorted(files):
      path = os.path.join(root, name)
      payload = open(path, "rb").read()
      digest.update(os.path.relpath(path, out).encode() + b"\0" + (
          gzip.decompress(payload) if name.endswith(".gz") else payload))
  assert digest.hexdigest() == FULL_RELEASE_DIGEST


def test_refuses_to_overwrite_what_it_did_not_write(tmp_path):
  foreign = tmp_path / "foreign"
  foreign.mkdir()
  (foreign / "notes.txt").write_text("keep me")
  with pytest.raises(CsaInputError, match="not a phantom folder"):
    _generate("mscmr", foreign, num_patients=1, scale=0.1)
  assert os.listdir(foreign) == ["notes.txt"]

  not_a_dir = tmp_path / "file"
  not_a_dir.write_text("x")
  with pytest.raises(CsaInputError, match="not a folder"):
    _generate("mscmr", not_a_dir, num_patients=1, scale=0.1)

  other = tmp_path / "other"
  _generate("mmwhs", other, num_patients=1, scale=0.08, modalities="mr")
  with pytest.raises(CsaInputError, match="holds a mmwhs phantom"):
    _generate("mscmr", other, num_patients=1, scale=0.1)

  # An empty folder, or an older phantom of the same dataset, is replaced whole.
  same = tmp_path / "same"
  same.mkdir()
  _generate("mscmr", same, num_patients=2, scale=0.1, modalities="lge")
  _generate("mscmr", same, num_patients=1, scale=0.1, modalities="C0")
  assert sorted(os.listdir(same / "images")) == ["patient1_C0.nii.gz"]
  assert sorted(os.listdir(same / "labels")) == ["C0"]
  assert sorted(os.listdir(tmp_path)) == ["file", "foreign", "other", "same"]


def test_an_error_leaves_no_partial_output(tmp_path, monkeypatch):
  calls = []
  original = phantom_release._write_nifti

  def failing_write(*args):
    calls.append(args[0])
    if len(calls) == 3:
      raise OSError("disk full")
    original(*args)

  monkeypatch.setattr(phantom_release, "_write_nifti", failing_write)
  with pytest.raises(OSError, match="disk full"):
    _generate("mscmr", tmp_path / "new", num_patients=2, scale=0.1)
  assert os.listdir(tmp_path) == []

  monkeypatch.setattr(phantom_release, "_write_nifti", original)
  _generate("mscmr", tmp_path / "old", num_patients=1, scale=0.1, modalities="t2")
  before = sorted(os.listdir(tmp_path / "old" / "images"))
  calls.clear()
  monkeypatch.setattr(phantom_release, "_write_nifti", failing_write)
  with pytest.raises(OSError):
    _generate("mscmr", tmp_path / "old", num_patients=2, scale=0.1)
  assert sorted(os.listdir(tmp_path / "old" / "images")) == before
  assert os.listdir(tmp_path) == ["old"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_patients=0), r"^num_patients=0: must be an integer in \[1, "),
    (dict(num_patients=1000), "^num_patients=1000: "),
    (dict(num_patients=2.0), "^num_patients=2.0: "),
    (dict(scale=0.0), r"^scale=0.0: must be in \(0, 1\]"),
    (dict(scale=1.5), "^scale=1.5: "),
    (dict(scale=float("nan")), "^scale=nan: "),
    (dict(seed=-1), "^seed=-1: must be a non-negative integer"),
    (dict(modalities=["flair"]), "unknown mscmr modality 'flair'"),
    (dict(modalities=["ct"]), "unknown mscmr modality 'ct'"),
    (dict(modalities=["lge", "LGE"]), "list each modality once"),
    (dict(modalities=[]), "list each modality once"),
    (dict(dataset="acdc"), "unknown dataset 'acdc'"),
    (dict(release="beta"), "^release=beta: expected full, challenge or myops for mscmr"),
    (dict(dataset="mmwhs", release="challenge"), "^release=challenge: expected full for "
                                                 "mmwhs"),
])
def test_bad_arguments(tmp_path, kwargs, message):
  kwargs = dict(dict(dataset="mscmr", num_patients=1, scale=0.1), **kwargs)
  with pytest.raises(CsaInputError, match=message):
    phantom.generate_phantoms(output_dir=str(tmp_path / "out"), progress=None, **kwargs)
  assert not os.path.exists(tmp_path / "out")


@pytest.mark.integration
def test_command_line(tmp_path):
  result = run_command("data_prep.phantom", "--dataset=mscmr",
                       f"--output_dir={tmp_path / 'out'}", "--num_patients=2", "--scale=0.1",
                       "--modalities=lge,C0", "--seed=3")
  lines = result.stdout.splitlines()
  assert [line.split(":")[0] for line in lines[:2]] == [
      "phantom mscmr patient 1 (1/2)", "phantom mscmr patient 2 (2/2)"]
  assert sorted(os.listdir(tmp_path / "out" / "labels")) == ["C0", "LGE"]
  expected = phantom.render(phantom.sample_geometry("mscmr", 2, "bssfp", seed=3, scale=0.1))
  written, _ = _load(tmp_path / "out" / "images" / "patient2_C0.nii.gz")
  assert np.array_equal(written, expected[0])

  for flags, error in ((["--dataset=mscmr", "--scale=2"],
                        "error: --scale=2.0: must be in (0, 1]"),
                       (["--scale=0.1"], "error: --dataset is required")):
    bad = run_command("data_prep.phantom", f"--output_dir={tmp_path / 'bad'}", *flags,
                      expect=2)
    assert bad.stderr.strip().splitlines() == [error]
    assert not os.path.exists(tmp_path / "bad")
