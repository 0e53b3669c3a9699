"""Tests for the one declaration of every training option (csa_tf/configs/train_config.py).

The flags of csa_tf.train are generated from the declarations, so these tests pin what a
user sees: every flag today's command had, with the same type, default, choices and help;
the experiments/*.flags files giving the settings their comments state; config.json as
written before the declarations still loading; each option list spelt in one module.
"""
import json
import os
import re

from absl import flags
import pytest

from csa_tf.configs import datasets
from csa_tf.configs import options
from csa_tf.configs import train_config as config_lib
from csa_tf.configs.options import ConfigError
from csa_tf.io.run_dir import RunDir
from csa_tf.configs import downsampling

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTIONS = (config_lib.DemoDataConfig, config_lib.TrainConfig)

# config.json exactly as csa_tf.train wrote it before the options were declared (commit
# 8163475: TrainConfig(model_dir="runs/csa", data_dir="prep", dataset="mscmr",
# num_classes=4, crop_size=224).to_json()).
TODAYS_CONFIG_JSON = (
    '{"model_dir": "runs/csa", "data_dir": "prep", "dataset": "mscmr", "num_classes": 4, '
    '"crop_size": 224, "modalities": ["lge", "bssfp"], "method": "csa", "train_steps": '
    '1000, "batch_size": 8, "feature_base": 16, "in_channels": 1, "dropout_rate": 0.25, '
    '"learning_rate": 0.0001, "lr_decay_rate": 0.95, "lr_decay_steps": 1000, "alpha": '
    '1.0, "beta": 1.0, "lam": 0.5, "l2_weight": 0.0001, "csa_pairs": [["g3", "g4"], '
    '["g5", "g6"], ["g7", "g8"]], "csa_area_norm": "count", "csa_reduction": '
    '"mean_then_square", "kd_temperature": 2.0, "seed": 0, "deterministic": false, '
    '"jit_compile": false, "mixed_precision": "off", "augment": false, '
    '"labelled_slices_only": true, "checkpoint_every": 500, "bn_recalibration_batches": '
    '20, "keep_checkpoints": 3, "log_every": 50, "image_summary_every": 0, "strategy": '
    '"default"}')

# The flags `csa_tf.train --helpfull` listed before they were generated: (type, default).
TODAYS_FLAGS = {
    "data_dir": (str, None), "model_dir": (str, None), "method": ("enum", "csa"),
    "train_steps": (int, 1000), "batch_size": (int, 8), "feature_base": (int, 16),
    "modalities": (list, []), "seed": (int, 0), "learning_rate": (float, 1e-4),
    "lr_decay_rate": (float, 0.95), "lr_decay_steps": (int, 1000), "alpha": (float, 1.0),
    "beta": (float, 1.0), "lambda": (float, 0.5), "l2_weight": (float, 1e-4),
    "dropout_rate": (float, 0.25), "csa_pairs": (list, ["g3:g4", "g5:g6", "g7:g8"]),
    "csa_area_norm": ("enum", "count"), "csa_reduction": ("enum", "mean_then_square"),
    "kd_temperature": (float, 2.0), "deterministic": (bool, False),
    "jit_compile": (bool, False), "mixed_precision": ("enum", "off"),
    "augment": (bool, False), "all_slices": (bool, False), "checkpoint_every": (int, 500),
    "bn_recalibration_batches": (int, 20), "keep_checkpoints": (int, 3),
    "log_every": (int, 50), "image_summary_every": (int, 0), "strategy": ("enum", "default"),
    "dataset": ("enum", "mscmr"), "phantom_patients": (int, 8),
    "phantom_scale": (float, 0.25), "crop_size": (int, 64), "input_slices": (int, 1),
    "csa_affinity": ("enum", "cosine"), "joint_bn": ("enum", "separate"),
    # Issue 14: loss-balance diagnostics and label scarcity.
    "log_term_gradients": (bool, False), "labelled_train_patients": ("multi", []),
    # Issue 15: several steps per tf.function call.
    "steps_per_loop": (int, 1),
    # Issue 16: the 3D network on patches of consecutive slices.
    "spatial_dims": (int, 2), "patch_depth": (int, 8),
}
# The fields added after TODAYS_CONFIG_JSON, at their defaults as config.json holds them.
NEW_FIELDS = {"csa_affinity": "cosine", "joint_bn": "separate",
              "log_term_gradients": False, "labelled_train_patients": {},
              "steps_per_loop": 1, "spatial_dims": 2, "patch_depth": 8}
TODAYS_ENUMS = {
    "method": ["single", "ummkd", "joint", "msbn", "affinity", "csa"],
    "csa_area_norm": ["count", "fraction", "none"],
    "csa_reduction": ["mean_then_square", "square_then_mean"],
    "csa_affinity": ["cosine", "dot"], "joint_bn": ["separate", "concat"],
    "mixed_precision": ["off", "bf16", "fp16"],
    "strategy": ["default", "mirrored", "multi_worker"],
    "dataset": ["mscmr", "mmwhs"],
}
_ABSL_TYPES = {str: "string", int: "int", float: "float", bool: "bool",
               list: "comma separated list of strings", "enum": "string enum",
               "multi": "multi string"}


def _flag_values(argv=()):
  values = flags.FlagValues()
  for section in SECTIONS:
    options.define_flags(section, values)
  values(["train", *argv])
  return values


def _config_from(argv, spec=datasets.MSCMR, crop_size=224, available=None):
  values = _flag_values(argv)
  return config_lib.TrainConfig.for_data(
      options.values_from_flags(config_lib.TrainConfig, values), spec=spec,
      available_modalities=available or spec.modalities, crop_size=crop_size,
      data_dir="PREP"), values


# ---------------------------------------------------------------------------------------
# Generated flags.
# ---------------------------------------------------------------------------------------
def test_generated_flags_are_todays_flags():
  values = _flag_values()
  assert set(values) == set(TODAYS_FLAGS), set(values) ^ set(TODAYS_FLAGS)
  for name, (kind, default) in TODAYS_FLAGS.items():
    flag = values[name]
    assert flag.flag_type() == _ABSL_TYPES[kind], name
    assert flag.default == default, (name, flag.default)
  for name, allowed in TODAYS_ENUMS.items():
    assert values[name].parser.enum_values == allowed, name


def test_every_declared_flag_has_its_declared_default_and_help():
  values = _flag_values()
  for section in SECTIONS:
    for field, (_, decl) in options.declarations(section).items():
      name = options.flag_name(section, field)
      if name is None:
        continue
      # absl puts an enum's values in front: "<count|fraction|none>: S_c of Eq. 3 ...".
      enum = decl.choices and isinstance(decl.choices[0], str)
      choices = f"<{'|'.join(decl.choices)}>: " if enum else ""
      # absl appends how to repeat a repeatable flag.
      repeat = ";\n    repeat this option to specify a list of values" if decl.repeatable else ""
      assert values[name].help == choices + decl.help + repeat, name
      assert values[name].default == options.flag_default(section, field), name
      assert len(decl.help) > 10 and decl.help.endswith("."), name


def test_special_flags():
  # --lambda sets lam; --all_slices is `not labelled_slices_only`; the data's facts
  # (dataset, classes, crop) are no TrainConfig flags; empty --modalities: the paper pair.
  assert options.flag_name(config_lib.TrainConfig, "lam") == "lambda"
  assert options.flag_name(config_lib.TrainConfig, "labelled_slices_only") == "all_slices"
  assert options.flag_name(config_lib.TrainConfig, "in_channels") == "input_slices"
  for fact in ("dataset", "num_classes", "crop_size"):
    assert options.flag_name(config_lib.TrainConfig, fact) is None
  config, _ = _config_from(["--lambda=0.25", "--all_slices", "--csa_pairs=g1:g2,g5:g6"])
  assert config.lam == 0.25 and config.labelled_slices_only is False
  assert config.csa_pairs == (("g1", "g2"), ("g5", "g6"))
  assert config.modalities == ("lge", "bssfp")  # MS-CMRSeg's paper pair, not t2.
  config, _ = _config_from([], spec=datasets.MMWHS, crop_size=256)
  assert config.modalities == ("ct", "mr") and config.labelled_slices_only is True
  config, _ = _config_from(["--method=single"], available=("lge", "t2"))
  assert config.modalities == ("lge",)  # The paper pair's modalities the data hold.
  config, _ = _config_from(["--modalities=bssfp,t2"])
  assert config.modalities == ("bssfp", "t2")


# ---------------------------------------------------------------------------------------
# experiments/*.flags, unchanged, give the settings their comments state.
# ---------------------------------------------------------------------------------------
PAPER_SETTING = dict(
    method="csa", batch_size=8, feature_base=16, learning_rate=1e-4, lr_decay_rate=0.95,
    lr_decay_steps=1000, alpha=1.0, beta=1.0, lam=0.5, l2_weight=1e-4, dropout_rate=0.25,
    csa_pairs=[["g3", "g4"], ["g5", "g6"], ["g7", "g8"]], csa_area_norm="count",
    csa_reduction="mean_then_square", kd_temperature=2.0, checkpoint_every=1000,
    log_every=100, seed=0)


@pytest.mark.parametrize("flagfile,spec,crop_size,expected", [
    ("mscmr.flags", datasets.MSCMR, 224,
     dict(PAPER_SETTING, modalities=["lge", "bssfp"], train_steps=50000)),
    ("mmwhs.flags", datasets.MMWHS, 256,
     dict(PAPER_SETTING, modalities=["ct", "mr"], train_steps=80000)),
    ("mmwhs3d.flags", datasets.MMWHS, 256,
     dict(PAPER_SETTING, modalities=["ct", "mr"], train_steps=80000, spatial_dims=3,
          patch_depth=8, batch_size=1)),
    ("demo.flags", datasets.MSCMR, 64,
     dict(PAPER_SETTING, modalities=["lge", "bssfp"], feature_base=4, learning_rate=1e-3,
          csa_area_norm="fraction", train_steps=300, checkpoint_every=100, log_every=25)),
])
def test_flagfiles(flagfile, spec, crop_size, expected):
  config, values = _config_from(
      [f"--flagfile={os.path.join(ROOT, 'experiments', flagfile)}", "--model_dir=RUN"],
      spec=spec, crop_size=crop_size)
  # Every other field keeps its default.
  untouched = dict(json.loads(TODAYS_CONFIG_JSON), **NEW_FIELDS)
  assert config.to_json() == dict(
      untouched, model_dir="RUN", data_dir="PREP", dataset=spec.name,
      num_classes=spec.num_classes, crop_size=crop_size, **expected)
  if flagfile == "demo.flags":
    demo = config_lib.DemoDataConfig(
        **options.values_from_flags(config_lib.DemoDataConfig, values)).validate()
    assert demo == config_lib.DemoDataConfig(dataset="mscmr", phantom_patients=8,
                                             phantom_scale=0.25, crop_size=64)


# docs/csa_study.md d: 0.05 / the share of cosine/fraction/mean_then_square at 256x256.
MMWHS_ALTERNATIVE_LAMBDA = 5.03e-4


@pytest.mark.parametrize("flagfile,spec,crop_size,lam", [
    ("mscmr.flags", datasets.MSCMR, 224, 2.19e-3),
    ("mmwhs.flags", datasets.MMWHS, 256, MMWHS_ALTERNATIVE_LAMBDA),
])
def test_paper_flagfiles_offer_the_studys_reading_commented_out(flagfile, spec, crop_size,
                                                                lam, tmp_path):
  # docs/csa_study.md d: uncommenting the two lines below "Alternative" changes only the
  # area norm and lambda of the literal setting.
  text = open(os.path.join(ROOT, "experiments", flagfile)).read()
  alternative = text[text.index("# Alternative"):].splitlines()
  lines = [line[2:] for line in alternative if line.startswith("# --")]
  assert lines[0] == "--csa_area_norm=fraction" and len(lines) == 2
  assert lines[1].startswith("--lambda=") and float(lines[1][len("--lambda="):]) == lam
  uncommented = tmp_path / flagfile
  uncommented.write_text(text + "\n".join(lines) + "\n")
  config, _ = _config_from([f"--flagfile={uncommented}", "--model_dir=RUN"], spec=spec,
                           crop_size=crop_size)
  literal, _ = _config_from([f"--flagfile={os.path.join(ROOT, 'experiments', flagfile)}",
                             "--model_dir=RUN"], spec=spec, crop_size=crop_size)
  assert config.to_json() == dict(literal.to_json(), csa_area_norm="fraction", lam=lam)


# ---------------------------------------------------------------------------------------
# config.json written before the declarations.
# ---------------------------------------------------------------------------------------
def test_todays_config_json_loads_and_round_trips(tmp_path):
  run = RunDir(str(tmp_path))
  with open(run.config_path, "w", encoding="utf-8") as f:
    f.write(TODAYS_CONFIG_JSON)
  config = run.load_config()
  assert config.lam == 0.5 and config.csa_pairs[0] == ("g3", "g4")
  assert config.modalities == ("lge", "bssfp") and config.labelled_slices_only is True
  assert config.validate().to_json() == dict(json.loads(TODAYS_CONFIG_JSON),
                                              **NEW_FIELDS)
  assert config_lib.TrainConfig.from_json(config.to_json()) == config
  # A Joint run of then passed both batches through one forward; it resumes that way.
  joint = config_lib.TrainConfig.from_json(dict(json.loads(TODAYS_CONFIG_JSON),
                                                method="joint"))
  assert joint.joint_bn == "concat"


# ---------------------------------------------------------------------------------------
# Validation: once, in the config; messages name fields, commands spell flags.
# ---------------------------------------------------------------------------------------
def _base(**overrides):
  values = json.loads(TODAYS_CONFIG_JSON)
  values.update(overrides)
  return config_lib.TrainConfig.from_json(values)


@pytest.mark.parametrize("overrides,message,as_flags", [
    (dict(lam=-1.0), "lam=-1.0: must be >= 0", "--lambda=-1.0: must be >= 0"),
    (dict(train_steps=0), "train_steps=0: must be a positive integer",
     "--train_steps=0: must be a positive integer"),
    (dict(lr_decay_rate=0.0), "lr_decay_rate=0.0: must be in (0, 1]",
     "--lr_decay_rate=0.0: must be in (0, 1]"),
    (dict(dropout_rate=1.0), "dropout_rate=1.0: must be in [0, 1)",
     "--dropout_rate=1.0: must be in [0, 1)"),
    (dict(learning_rate=float("nan")), "learning_rate=nan: must be positive",
     "--learning_rate=nan: must be positive"),
    (dict(bn_recalibration_batches=-1), "bn_recalibration_batches=-1: must be >= 0",
     "--bn_recalibration_batches=-1: must be >= 0"),
    (dict(method="fancy"),
     "method=fancy: unknown method; expected one of single, ummkd, joint, msbn, "
     "affinity, csa",
     "--method=fancy: unknown method; expected one of single, ummkd, joint, msbn, "
     "affinity, csa"),
    (dict(csa_reduction="max"),
     "csa_reduction=max: unknown csa reduction; expected one of mean_then_square, "
     "square_then_mean", "--csa_reduction=max: unknown csa reduction"),
    (dict(modalities=["lge"]), "method=csa needs at least two modalities",
     "--method=csa needs at least two --modalities"),
    (dict(modalities=["lge", "lge"]), "modalities=lge,lge: list each modality once",
     "--modalities=lge,lge: list each modality once"),
    (dict(jit_compile=True, strategy="mirrored"),
     "jit_compile is not supported with strategy=mirrored",
     "--jit_compile is not supported with --strategy=mirrored"),
    (dict(csa_pairs=[]), "csa_pairs: at least one layer pair is needed",
     "--csa_pairs: at least one layer pair is needed"),
    (dict(crop_size=60),
     "crop_size=60: must be a positive multiple of 8 (the network downsamples by 8)",
     "--crop_size=60: must be a positive multiple of 8"),
])
def test_validate_names_the_field(overrides, message, as_flags):
  with pytest.raises(ConfigError) as info:
    _base(**overrides).validate()
  assert str(info.value) == message
  assert "--" not in str(info.value)  # Library messages name fields, never flags.
  assert info.value.field == message.split("=")[0].split(" ")[0].split(":")[0]
  assert info.value.render(options.flag_spelling(*SECTIONS)).startswith(as_flags)


def test_for_data_refuses_a_modality_the_data_lack():
  with pytest.raises(ConfigError) as info:
    _config_from(["--modalities=lge,{t2}"], available=("lge", "bssfp"))
  # Braces in a value are kept as typed, not read as a placeholder.
  assert str(info.value) == "modalities: '{t2}' is not in PREP (prepared: lge, bssfp)"
  assert info.value.render(options.flag_spelling(*SECTIONS)).startswith("--modalities: ")


def test_bad_csa_pairs_and_demo_options():
  with pytest.raises(ConfigError, match=r"^csa_pairs: 'g3' is not of the form layer:layer"):
    _config_from(["--csa_pairs=g3"])
  for overrides, message in [
      (dict(phantom_scale=0.0), "phantom_scale=0.0: must be in (0, 1]"),
      (dict(phantom_patients=0), "phantom_patients=0: must be a positive integer"),
      (dict(crop_size=100), "crop_size=100: must be a positive multiple of 8"),
      (dict(dataset="cityscapes"), "dataset=cityscapes: unknown dataset; expected one "
       "of mscmr, mmwhs")]:
    with pytest.raises(ConfigError) as info:
      config_lib.DemoDataConfig(**overrides).validate()
    assert str(info.value).startswith(message), str(info.value)
  assert config_lib.DemoDataConfig().validate().spec is datasets.MSCMR


# ---------------------------------------------------------------------------------------
# One home for each option list and for the multiple-of-8 rule.
# ---------------------------------------------------------------------------------------
def test_option_lists_are_shared_objects():
  # Every user of an option list imports the one declaration (the same object).
  from csa_tf import losses  # pylint: disable=g-import-not-at-top
  from csa_tf.model import bundle  # pylint: disable=g-import-not-at-top
  from csa_tf.training import distribution  # pylint: disable=g-import-not-at-top
  assert losses.AREA_NORMS is config_lib.AREA_NORMS == ("count", "fraction", "none")
  assert losses.REDUCTIONS is config_lib.REDUCTIONS
  assert losses.DEFAULT_CSA_PAIRS is config_lib.DEFAULT_CSA_PAIRS
  assert distribution.STRATEGIES is config_lib.STRATEGIES
  assert bundle.DTYPE_POLICIES is config_lib.MIXED_PRECISION_POLICIES
  assert config_lib.METHOD_ORDER == tuple(config_lib.METHODS)
  assert config_lib.METHOD_LABELS["csa"] == "CSA (ours)"
  assert datasets.MSCMR.paper_modalities == ("lge", "bssfp")
  assert datasets.MMWHS.paper_modalities == ("ct", "mr")


def _python_sources():
  for top in ("csa_tf", "data_prep", "experiments"):
    for folder, _, names in os.walk(os.path.join(ROOT, top)):
      for name in names:
        if name.endswith(".py"):
          path = os.path.join(folder, name)
          with open(path, encoding="utf-8") as f:
            yield os.path.relpath(path, ROOT), f.read()


@pytest.mark.parametrize("pattern,home", [
    (r'"count", "fraction", "none"', "csa_tf/configs/train_config.py"),
    (r'"mean_then_square", "square_then_mean"', "csa_tf/configs/train_config.py"),
    (r'\("g3", "g4"\), \("g5", "g6"\)', "csa_tf/configs/train_config.py"),
    (r'"default", "mirrored", "multi_worker"', "csa_tf/configs/train_config.py"),
    (r'"off", "bf16"|"bf16": "mixed_bfloat16"', "csa_tf/configs/train_config.py"),
    (r'"single", "ummkd"|"single": "Single"', None),
    (r'"mscmr", "mmwhs"', None),
    (r'\("lge", "bssfp"\) if', None),
    (r'% 8\b|multiple of 8', "csa_tf/configs/downsampling.py"),
])
def test_each_fact_is_spelt_in_one_module(pattern, home):
  modules = sorted(path for path, text in _python_sources() if re.search(pattern, text))
  assert modules == ([home] if home else []), modules


def test_size_rule():
  assert downsampling.DOWNSAMPLE == 8
  assert downsampling.size_problem(64) is None and downsampling.size_problem(224) is None
  for bad in (60, 0, -8, 8.0, True):
    assert downsampling.size_problem(bad) == (
        "must be a positive multiple of 8 (the network downsamples by 8)"), bad
  # ceil(57 / 8) * 8 = 64; 64 stays; 1 -> 8.
  assert [downsampling.padded_size(n) for n in (57, 64, 65, 1)] == [64, 64, 72, 8]
