"""The command-line contract every command shares (csa_tf/cli.py, csa_tf/tf_runtime.py).

A refused command line ends with one `error: ...` line on stderr, exit status 2 and no
traceback, whichever command it is; library messages name parameters, which a command
spells as its flags; a CPU run shows none of TensorFlow's start-up notices.
"""
import os
import re
import subprocess
import sys

import pytest
from absl import flags
from absl.testing import flagsaver

from csa_tf import cli
from csa_tf import errors
from csa_tf import tf_runtime
from csa_tf.errors import CsaInputError, param

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Every documented command (README.md), each run as `python -m COMMAND`.
COMMANDS = ["csa_tf.train", "csa_tf.evaluate", "csa_tf.predict", "csa_tf.export",
            "csa_tf.visualize", "csa_tf.gpu_check", "data_prep.mscmr", "data_prep.mmwhs",
            "data_prep.mmwhs_pnp", "data_prep.myops", "data_prep.phantom",
            "experiments.reproduce", "experiments.study", "experiments.gradient_shares",
            "benchmarks.run", "benchmarks.hd_eval", "benchmarks.gpu_report"]
NOTICES = re.compile(r"cuInit|oneDNN|InitializeLog|cudart_stub|rebuild TensorFlow")


def command(*args, env=None, timeout=120):
  """Runs `python -m args` in the repository root with env (default: ours)."""
  return subprocess.run([sys.executable, "-m", *map(str, args)], capture_output=True,
                        text=True, cwd=ROOT, env=os.environ if env is None else env,
                        timeout=timeout)


def assert_one_error_line(result, expected):
  assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
  assert result.stderr.splitlines() == [expected], result.stderr[-3000:]


@pytest.mark.integration
@pytest.mark.parametrize("module", COMMANDS)
def test_unknown_flag_is_one_error_line(module):
  # absl itself would print "FATAL Flags parsing error: ..." and a hint, exit status 1.
  assert_one_error_line(command(module, "--no_such_flag=1"),
                        "error: Unknown command line flag 'no_such_flag'")


@pytest.mark.integration
@pytest.mark.parametrize("args,expected", [
    (["csa_tf.evaluate"], "error: --model_dir is required"),
    (["csa_tf.export", "--model_dir=RUN"], "error: --output_dir is required"),
    (["data_prep.mmwhs", "--raw_dir=RAW", "--output_dir=PREP", "extra", "args"],
     "error: unexpected arguments: extra args"),
    (["csa_tf.gpu_check", "--require_gpu", "extra"], "error: unexpected arguments: extra"),
    (["csa_tf.predict", "--model_dir=RUN", "--modality=lge", "--input=IN"],
     "error: --output is required"),
])
def test_missing_required_flag_and_positional_argument(args, expected):
  assert_one_error_line(command(*args), expected)


@pytest.mark.integration
def test_help_still_works():
  result = command("csa_tf.evaluate", "--help")
  assert result.returncode == 1, result.stderr  # absl's own exit status after --help.
  assert result.stderr == ""
  assert "--model_dir: Run folder written by csa_tf.train." in result.stdout


@pytest.mark.integration
def test_bad_enum_value_is_one_error_line():
  result = command("experiments.reproduce", "--dataset=cityscapes")
  assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
  assert result.stderr.startswith("error: flag --dataset=cityscapes: value should be "
                                  "one of <mscmr|mmwhs>")


@pytest.mark.integration
def test_traceback_on_request():
  result = command("data_prep.mscmr", "--raw_dir=RAW",
                   env=dict(os.environ, CSA_TF_TRACEBACK="1"))
  assert result.returncode == 1
  assert "Traceback" in result.stderr
  assert result.stderr.splitlines()[-1] == (
      "csa_tf.errors.CsaInputError: --output_dir is required")


# ---------------------------------------------------------------------------------------
# Parameters in messages: bare for library callers, flags inside a command.
# ---------------------------------------------------------------------------------------
def test_param_spelling():
  assert param("batch_size", 0) == "batch_size=0"
  assert param("modalities") == "modalities"
  assert param("overwrite", True) == "overwrite=True"
  with errors.parameters_as_flags({"scale": "phantom_scale"}):
    assert param("batch_size", 0) == "--batch_size=0"
    assert param("modalities") == "--modalities"
    assert param("overwrite", True) == "--overwrite"  # An absl boolean flag.
    assert param("overwrite", False) == "--overwrite=False"
    assert param("scale", 2.0) == "--phantom_scale=2.0"
  assert param("scale", 2.0) == "scale=2.0"


def _raise(message_of):
  def main(argv):
    del argv
    raise CsaInputError(message_of())
  return main


def test_run_main_spells_parameters_as_the_commands_flags(capsys):
  main = _raise(lambda: f"{param('output_path', 'a.png')}: must end in .nii.gz or .nii; "
                        f"pass {param('overwrite', True)}")
  with pytest.raises(SystemExit) as info:
    cli.run_main(main, flag_names={"output_path": "output"})(["predict"])
  assert info.value.code == cli.EXIT_INPUT_ERROR == 2
  assert capsys.readouterr().err == (
      "error: --output=a.png: must end in .nii.gz or .nii; pass --overwrite\n")
  # Outside the command the same message names the parameters.
  with pytest.raises(CsaInputError, match=r"^output_path=a\.png: .*; pass overwrite=True$"):
    main(["predict"])


def test_run_main_checks_arguments_before_main(capsys):
  called = []
  flag_values = flags.FlagValues()
  flags.DEFINE_string("model_dir", None, "", flag_values=flag_values)
  flag_values(["prog"])
  with flagsaver.flagsaver(), pytest.MonkeyPatch.context() as patch:
    patch.setattr(flags, "FLAGS", flag_values)
    for argv, expected in ((["prog"], "error: --model_dir is required\n"),
                           (["prog", "a", "b"], "error: unexpected arguments: a b\n")):
      with pytest.raises(SystemExit) as info:
        cli.run_main(called.append, required=("model_dir",))(argv)
      assert info.value.code == 2
      assert capsys.readouterr().err == expected
  assert not called


# ---------------------------------------------------------------------------------------
# Quiet start-up.
# ---------------------------------------------------------------------------------------
# Captured from `import tensorflow` and the first device query, TF 2.21 on this CPU-only
# machine (TF_CPP_MIN_LOG_LEVEL unset), with one Python warning and one other native line.
CAPTURED = """\
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1796118453.417453    7722 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
I0000 00:00:1796118453.469220    7722 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use available CPU instructions in performance-critical operations.
To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the appropriate compiler flags.
/x/keras.py:3: DeprecationWarning: something our code should see
I0000 00:00:1796118453.5 7722 port.cc:153] oneDNN custom operations are on. You may see slightly different numerical results due to floating-point round-off errors from different computation orders. To turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.
E0000 00:00:1796118456.209224    7722 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)
E0000 00:00:1796118456.3    7722 some_op.cc:12] a real error
"""


def test_only_the_start_up_notices_are_dropped():
  assert tf_runtime.without_notices(CAPTURED) == (
      "/x/keras.py:3: DeprecationWarning: something our code should see\n"
      "E0000 00:00:1796118456.3    7722 some_op.cc:12] a real error\n")
  # With a CUDA driver present (no cudart_stub notice), a failing cuInit is news.
  gpu_host = "".join(line for line in CAPTURED.splitlines(keepends=True)
                     if "cudart_stub" not in line)
  assert "failed call to cuInit" in tf_runtime.without_notices(gpu_host)


def _quiet_env(**extra):
  env = {k: v for k, v in os.environ.items()
         if k not in ("TF_CPP_MIN_LOG_LEVEL", "CSA_TF_VERBOSE_TF")}
  return dict(env, **extra)


# A 2-step demo training without these notices: tests/cli_test.py (its demo test).
@pytest.mark.integration
def test_error_after_the_quiet_import_still_shows(tmp_path):
  # csa_tf.export imports TensorFlow (quietly) first; the existing export is found after.
  (tmp_path / "lge").mkdir()
  legacy_run = os.path.join(ROOT, "tests", "fixtures", "legacy_v1", "run")
  bad = command("csa_tf.export", f"--model_dir={legacy_run}",
                f"--output_dir={tmp_path}", env=_quiet_env())
  assert_one_error_line(bad, f"error: {tmp_path / 'lge'}: exists; pass --overwrite to "
                             "replace it")


@pytest.mark.integration
def test_notices_on_request():
  script = "from csa_tf import tf_runtime; tf_runtime.import_tensorflow()"
  quiet = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=ROOT, env=_quiet_env(), timeout=120)
  assert quiet.returncode == 0 and not NOTICES.search(quiet.stderr), quiet.stderr
  verbose = subprocess.run([sys.executable, "-c", script], capture_output=True,
                           text=True, cwd=ROOT, env=_quiet_env(CSA_TF_VERBOSE_TF="1"),
                           timeout=120)
  assert verbose.returncode == 0
  assert "InitializeLog" in verbose.stderr, verbose.stderr
