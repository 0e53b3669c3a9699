"""User-facing errors and the one-line reporting used by every command-line entry point.

Library code raises `CsaInputError` with a message that names the file or flag and the
problem. Entry points run

  app.run(run_main(main), flags_parser=parse_flags)

so that a bad flag value (absl's own parsing), a bad input and a non-finite loss all end
the same way: one `error: ...` line on stderr, exit status 2, no traceback (set
CSA_TF_TRACEBACK=1 to see one).
"""
import os
import sys

from absl import flags


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
    if os.environ.get("CSA_TF_TRACEBACK"):
      raise
    report_and_exit(error)


def run_main(main):
  """Returns a wrapper of absl `main(argv)` that turns user errors into one line.

  Pass `flags_parser=parse_flags` to app.run as well, so that flag-parsing errors (an
  unknown flag, a value outside an enum) are reported the same way.
  """
  def wrapped(argv):
    try:
      return main(argv)
    except (CsaInputError, NonFiniteLossError) as error:
      if os.environ.get("CSA_TF_TRACEBACK"):
        raise
      report_and_exit(error)
  return wrapped
