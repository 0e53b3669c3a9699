"""User-facing errors and the one-line reporting used by every command-line entry point.

Library code raises `CsaInputError` with a message that names the file or flag and the
problem. Entry points wrap `main` in `run_main`, which prints that message on one line and
exits non-zero without a traceback (set CSA_TF_TRACEBACK=1 to see one).
"""
import os
import sys


class CsaInputError(Exception):
  """Bad input a user can fix: a file, a flag or a folder, named in the message."""


class NonFiniteLossError(RuntimeError):
  """A loss term became NaN or Inf during training; the message names step and term."""


EXIT_INPUT_ERROR = 2


def report_and_exit(error: BaseException) -> None:
  """Prints `error` as one line on stderr and exits with EXIT_INPUT_ERROR."""
  message = " ".join(str(error).split())
  sys.stderr.write(f"error: {message}\n")
  sys.stderr.flush()
  raise SystemExit(EXIT_INPUT_ERROR)


def run_main(main):
  """Returns a wrapper of absl `main(argv)` that turns user errors into one line.

  Also turns absl's flag-validation errors into the same one-line form.
  """
  def wrapped(argv):
    try:
      return main(argv)
    except (CsaInputError, NonFiniteLossError) as error:
      if os.environ.get("CSA_TF_TRACEBACK"):
        raise
      report_and_exit(error)
  return wrapped
