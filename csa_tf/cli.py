"""What every command shares: flag parsing, argument checks, one-line errors.

A command defines its flags in `define_flags()` and hands over in one line:

  if __name__ == "__main__":
    cli.run(main, define_flags, required=("model_dir",), tensorflow=True)

Then every problem a user can fix ends the same way: one `error: ...` line on stderr,
exit status 2, no traceback (CSA_TF_TRACEBACK=1 shows one). That holds for a flag absl
refuses (an unknown flag, a value outside an enum), a required flag left out, a
positional argument, a `CsaInputError` raised anywhere below `main` and a non-finite
loss. While `main` runs, error messages name the library's parameters as this
command's flags (`errors.param`). `--help` and `--helpfull` work as usual.
"""
import errno
import os
import sys
from typing import Callable, Mapping, Optional, Sequence

from absl import app
from absl import flags

from csa_tf import errors
from csa_tf import interrupts
from csa_tf.io import atomic

EXIT_INPUT_ERROR = 2
# Values of CSA_TF_TRACEBACK that ask for tracebacks; anything else (0, empty) does not.
_TRUE_VALUES = ("1", "true", "yes", "on")


# What a user fixes outside csa_tf: a full disk, a read-only or forbidden folder.
_ENVIRONMENT_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def environment_error_line(error: OSError) -> str:
  """"PATH: No space left on device": an OSError of the disk or permissions, in words."""
  # Named as the user knows it, not by the hidden name it was being written under.
  where = atomic.destination_of(str(error.filename)) if error.filename else "a file"
  return f"{where}: {error.strerror or os.strerror(error.errno)}"


def traceback_wanted() -> bool:
  """Whether CSA_TF_TRACEBACK asks for a traceback instead of one error line."""
  return os.environ.get("CSA_TF_TRACEBACK", "").strip().lower() in _TRUE_VALUES


def report_and_exit(error: BaseException) -> None:
  """Prints `error` as one line on stderr and exits with EXIT_INPUT_ERROR."""
  message = " ".join(str(error).split())
  sys.stderr.write(f"error: {message}\n")
  sys.stderr.flush()
  raise SystemExit(EXIT_INPUT_ERROR)


def parse_flags(argv):
  """absl `flags_parser` for app.run: parses argv, a bad flag becomes one error line.

  absl's default parser prints two lines ("FATAL Flags parsing error: ..." and a hint)
  and exits 1; scripts that check for `error:` and exit status 2 would miss those. Help
  flags (--help, --helpfull) behave as usual.

  Returns:
    The arguments that are not flags (argv[0] first), as absl's parser does.
  """
  try:
    return flags.FLAGS(argv)
  except flags.Error as error:
    if traceback_wanted():
      raise
    report_and_exit(error)


def check_arguments(argv: Sequence[str], required: Sequence[str] = ()) -> None:
  """Refuses positional arguments and required flags left unset (None, "" or []).

  Raises:
    errors.CsaInputError: "unexpected arguments: ..." or "--NAME is required".
  """
  if len(argv) > 1:
    raise errors.CsaInputError(f"unexpected arguments: {' '.join(argv[1:])}")
  for name in required:
    if not flags.FLAGS[name].value:
      raise errors.CsaInputError(f"--{name} is required")


def report_interrupted(interrupted: errors.Interrupted) -> None:
  """Prints the interruption's one line on stderr and exits with 128 + its signal."""
  sys.stderr.write(" ".join(str(interrupted).split()) + "\n")
  sys.stderr.flush()
  raise SystemExit(128 + interrupted.signum)


def run_main(main: Callable, *, required: Sequence[str] = (), tensorflow: bool = False,
             flag_names: Optional[Mapping[str, str]] = None) -> Callable:
  """Returns a wrapper of absl `main(argv)` that turns user errors into one line.

  Args:
    main: the command's main(argv); argv holds only the program name when it runs.
    required: flags that must be given.
    tensorflow: import TensorFlow quietly (csa_tf.tf_runtime) after the argument
      checks, before main; for commands whose main uses TensorFlow.
    flag_names: library parameter name -> this command's flag name, where they differ.

  Returns:
    main(argv) wrapped: the arguments checked, errors.param spelling flags, a
    CsaInputError, NonFiniteLossError or an OSError of a full disk or a forbidden or
    read-only path reported as one line with exit status 2, and errors.Interrupted as
    its line with exit status 128 + signal.
  """
  def wrapped(argv):
    try:
      with errors.parameters_as_flags(flag_names), interrupts.raise_on_signals():
        check_arguments(argv, required)
        if tensorflow:
          from csa_tf import tf_runtime  # pylint: disable=g-import-not-at-top
          tf_runtime.import_tensorflow()
        return main(argv)
    except (errors.CsaInputError, errors.NonFiniteLossError) as error:
      if traceback_wanted():
        raise
      report_and_exit(error)
    except errors.Interrupted as interrupted:
      report_interrupted(interrupted)
    except OSError as error:
      if traceback_wanted() or error.errno not in _ENVIRONMENT_ERRNOS:
        raise
      report_and_exit(errors.CsaInputError(environment_error_line(error)))
  return wrapped


def run(main: Callable, define_flags: Optional[Callable[[], None]] = None, *,
        required: Sequence[str] = (), tensorflow: bool = False,
        flag_names: Optional[Mapping[str, str]] = None) -> None:
  """Runs a command: defines its flags, parses argv, runs main (see `run_main`).

  The exit status is main's return value (0 for None), or EXIT_INPUT_ERROR.
  """
  if define_flags is not None:
    define_flags()
  app.run(run_main(main, required=required, tensorflow=tensorflow,
                   flag_names=flag_names), flags_parser=parse_flags)
