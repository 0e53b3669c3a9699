"""User-facing errors, and how their messages name a parameter.

Library code raises `CsaInputError` with a message that names the file or parameter at
fault and the problem; the commands (csa_tf/cli.py) turn it into one `error: ...` line
and exit status 2.

A message names a parameter through `param`, never with flag syntax:

  raise CsaInputError(f"{param('batch_size', batch_size)}: must be at least 1")

reads "batch_size=0: must be at least 1" to a library caller, and
"--batch_size=0: must be at least 1" when a command runs the library (`cli.run_main`
spells parameters as its flags for as long as its main runs), so the library never
needs to know which command called it.
"""
import contextlib
import contextvars
from typing import Any, Iterator, Mapping, Optional


class CsaInputError(Exception):
  """Bad input a user can fix: a file, a flag or a folder, named in the message."""


class NonFiniteLossError(RuntimeError):
  """A loss term became NaN or Inf during training; the message names step and term."""


class Interrupted(Exception):
  """A run stopped on SIGINT or SIGTERM after leaving its work in a resumable state.

  Attributes:
    signum: the signal that stopped it; a command exits with 128 + signum (130 for
      Ctrl-C, 143 for SIGTERM), as a shell reports a process the signal killed.
  """

  def __init__(self, message: str, signum: int):
    super().__init__(message)
    self.signum = signum


_NO_VALUE = object()
# None: parameters read as library arguments; a mapping: as the running command's flags
# (parameter name -> flag name where they differ).
_FLAG_NAMES: contextvars.ContextVar = contextvars.ContextVar("csa_tf_flag_names",
                                                             default=None)


def param(name: str, value: Any = _NO_VALUE) -> str:
  """Names parameter `name`, and its value if given, in an error message.

  Args:
    name: the library's parameter name, e.g. "output_dir".
    value: the value at fault; omitted, only the name is written.

  Returns:
    "name" or "name=value" for a library caller. Inside `parameters_as_flags` (a
    command's main): "--flag" or "--flag=value", where flag is the command's name for
    the parameter; a value of True reads "--flag" (an absl boolean flag).
  """
  flag_names = _FLAG_NAMES.get()
  if flag_names is None:
    return name if value is _NO_VALUE else f"{name}={value}"
  flag = "--" + flag_names.get(name, name)
  return flag if value is _NO_VALUE or value is True else f"{flag}={value}"


@contextlib.contextmanager
def parameters_as_flags(flag_names: Optional[Mapping[str, str]] = None) -> Iterator[None]:
  """Within the block, `param` spells parameters as command-line flags.

  Args:
    flag_names: parameter name -> flag name, for the parameters whose flag is named
      otherwise (e.g. {"scale": "phantom_scale"}); every other parameter's flag has its
      name.
  """
  token = _FLAG_NAMES.set(dict(flag_names or {}))
  try:
    yield
  finally:
    _FLAG_NAMES.reset(token)
