"""Tests of --labelled_train_patients (csa_tf/data/label_scarcity.py and its data path).

tiny_prep (tests/helpers.py TINY_PREP) trains on patient1, patient2 and patient4 of each
modality (patient3 is the test split), every volume 5 slices, all of them labelled: so
k patients give exactly 5k training slices.
"""
import json

from absl import flags
import numpy as np
import pytest

from csa_tf.configs import options
from csa_tf.configs import train_config as config_lib
from csa_tf.configs.options import ConfigError
from csa_tf.data import label_scarcity
from csa_tf.data import pipeline
from csa_tf.errors import CsaInputError
from csa_tf.io import run_record
from csa_tf.training import resume_checks
from csa_tf.training import trainer as trainer_lib
from tests.helpers import make_config, quiet

TRAIN = ["patient1", "patient2", "patient4"]
SECTIONS = (config_lib.DemoDataConfig, config_lib.TrainConfig)


def test_the_draw_is_fixed_nested_and_per_modality():
  ids = [f"patient{i}" for i in range(1, 36)]  # 35 labelled bSSFP patients, say.
  five = label_scarcity.draw_patients(ids, 5, "lge")
  # Pinned: the same five for every run, seed and method (seed 14 + CRC-32 of "lge").
  assert five == ["patient1", "patient10", "patient13", "patient25", "patient32"]
  # Nested: lge:3 keeps three of lge:5's patients; the input order does not matter.
  assert label_scarcity.draw_patients(ids, 3, "lge") == [
      "patient1", "patient10", "patient25"]
  assert label_scarcity.draw_patients(ids[::-1], 5, "lge") == five
  assert label_scarcity.draw_patients(ids, 35, "lge") == sorted(ids)
  # Each modality has its own draw.
  assert label_scarcity.draw_patients(TRAIN, 1, "lge") == ["patient1"]
  assert label_scarcity.draw_patients(TRAIN, 1, "bssfp") == ["patient4"]


def test_train_patients_restrict_one_modality_and_leave_the_test_split(tiny_prep):
  assert label_scarcity.train_patients(tiny_prep, ("lge", "bssfp"), {}) is None
  chosen = label_scarcity.train_patients(tiny_prep, ("lge", "bssfp"), {"lge": 2})
  assert chosen == {"lge": ["patient1", "patient2"], "bssfp": TRAIN}
  images, labels = tiny_prep.train_slices("lge", patients=chosen["lge"])
  assert images.shape == (10, 32, 32) and labels.shape == (10, 32, 32)
  assert len(tiny_prep.train_slices("lge")[0]) == 15  # Unrestricted: 3 patients.
  assert [e.patient_id for e in tiny_prep.entries_for("test", "lge")] == ["patient3"]


def test_batches_come_from_the_drawn_patients_only(tiny_prep):
  chosen = label_scarcity.train_patients(tiny_prep, ("lge", "bssfp"), {"lge": 1})
  assert chosen["lge"] == ["patient1"]
  allowed = {tiny_prep.load(e).image[k].tobytes()
             for e in tiny_prep.entries_for("train", "lge") if e.patient_id == "patient1"
             for k in range(5)}
  stream = pipeline.unpaired_batches(tiny_prep, ["lge", "bssfp"], batch_size=4, seed=0,
                                     patients=chosen)
  seen = set()
  for batch in stream.take(5):  # 20 draws from 5 slices: every one of them shows.
    for image in batch["lge"][0].numpy()[..., 0]:
      assert image.tobytes() in allowed
      seen.add(image.tobytes())
  assert seen == allowed


def test_too_many_patients_and_unknown_modalities_are_one_line_errors(tiny_prep):
  with pytest.raises(ConfigError) as info:
    label_scarcity.train_patients(tiny_prep, ("lge", "bssfp"), {"lge": 4})
  message = info.value.render(options.flag_spelling(*SECTIONS))
  assert message == (f"--labelled_train_patients: lge:4 asks for 4 patients, but "
                     f"{tiny_prep.prep_dir} has 3 labelled lge training patients")
  with pytest.raises(ConfigError, match="'t2' is not a modality of this run"):
    label_scarcity.train_patients(tiny_prep, ("lge", "bssfp"), {"t2": 1})
  with pytest.raises(ConfigError) as info:
    make_config(labelled_train_patients=(("ct", 2),))
  assert info.value.render(options.flag_spelling(*SECTIONS)) == (
      "--labelled_train_patients: 'ct' is not a modality of this run "
      "(--modalities=lge,bssfp)")


def _parse(*argv):
  values = flags.FlagValues()
  for section in SECTIONS:
    options.define_flags(section, values)
  values(["train", *argv])
  return options.values_from_flags(config_lib.TrainConfig, values)[
      "labelled_train_patients"]


def test_flag_is_repeatable_and_takes_comma_lists():
  assert _parse() == ()
  assert _parse("--labelled_train_patients=lge:5") == (("lge", 5),)
  assert _parse("--labelled_train_patients=lge:5,t2:3") == (("lge", 5), ("t2", 3))
  assert _parse("--labelled_train_patients=lge:5",
                "--labelled_train_patients=t2:3") == (("lge", 5), ("t2", 3))
  for bad, problem in (("lge5", "'lge5' is not of the form modality:count"),
                       ("lge:0", "'lge:0' is not of the form"),
                       ("lge:x", "'lge:x' is not of the form"),
                       ("lge:2,lge:3", "'lge' is given twice")):
    with pytest.raises(ConfigError, match=problem):
      _parse(f"--labelled_train_patients={bad}")


def test_config_round_trip_and_resume_refusal(tmp_path):
  config = make_config(tmp_path / "run", labelled_train_patients=(("lge", 2),))
  assert config.to_json()["labelled_train_patients"] == {"lge": 2}
  assert config_lib.TrainConfig.from_json(
      json.loads(json.dumps(config.to_json()))) == config
  run_record.write_run_record(config.model_dir, config)
  other = make_config(tmp_path / "run", labelled_train_patients=(("lge", 3),))
  with pytest.raises(CsaInputError,
                     match=r"labelled_train_patients \{'lge': 2\} -> \{'lge': 3\}"):
    resume_checks.check_model_dir(config.model_dir, other)
  everyone = make_config(tmp_path / "run")
  with pytest.raises(CsaInputError, match=r"labelled_train_patients \{'lge': 2\} -> \{\}"):
    resume_checks.check_model_dir(config.model_dir, everyone)
  resume_checks.check_model_dir(config.model_dir, config)  # The same: resumes.


@pytest.mark.integration
def test_trainer_records_and_recalibrates_on_the_drawn_patients(tiny_prep, tmp_path):
  config = make_config(tmp_path / "run", data_dir=tiny_prep.prep_dir,
                       labelled_train_patients=(("lge", 1),), bn_recalibration_batches=3)
  record = resume_checks.training_data_record(tiny_prep, config)
  assert record["train_patients"] == {"lge": ["patient1"], "bssfp": TRAIN}
  trainer = trainer_lib.Trainer(config, tiny_prep, log=quiet)
  allowed = {tiny_prep.load(e).image[k].tobytes()
             for e in tiny_prep.entries_for("train", "lge") if e.patient_id == "patient1"
             for k in range(5)}
  batches = trainer.recalibration_batches()
  assert len(batches) == 3
  for batch in batches:
    for image in np.asarray(batch["lge"][0])[..., 0]:
      assert image.tobytes() in allowed
