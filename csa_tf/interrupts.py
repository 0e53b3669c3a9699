"""SIGINT (Ctrl-C) and SIGTERM as clean stops, not tracebacks.

Two behaviours, both effective only in the main thread (elsewhere Python cannot install
signal handlers, and these are no-ops):

* `raise_on_signals()`: the signal raises `errors.Interrupted` where the program is, so
  the `with` blocks and `finally` clauses it unwinds remove staged output (every command
  writes through csa_tf/io/atomic.py). Every command runs under it (csa_tf/cli.py).
* `StopRequest()`: the first signal is only recorded; a loop checks `requested` between
  steps and stops cleanly (training writes a checkpoint of the step it finished). A
  second signal stops at once, as the signal would have without csa_tf.
"""
import contextlib
import signal
import threading
from typing import Iterator, Optional

from csa_tf import errors

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_NAMES = {signal.SIGINT: "SIGINT (Ctrl-C)", signal.SIGTERM: "SIGTERM"}


def signal_name(signum: int) -> str:
  """"SIGINT (Ctrl-C)", "SIGTERM" or the signal's own name."""
  return _NAMES.get(signum) or signal.Signals(signum).name


def _in_main_thread() -> bool:
  return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def _handlers(handler) -> Iterator[None]:
  if not _in_main_thread():
    yield
    return
  previous = {signum: signal.signal(signum, handler) for signum in SIGNALS}
  try:
    yield
  finally:
    for signum, old in previous.items():
      signal.signal(signum, old)


@contextlib.contextmanager
def raise_on_signals() -> Iterator[None]:
  """Within the block, SIGINT and SIGTERM raise errors.Interrupted."""
  def handler(signum, frame):
    del frame
    raise errors.Interrupted(f"interrupted by {signal_name(signum)}; stopped without "
                             "leaving partial output", signum)
  with _handlers(handler):
    yield


class StopRequest:
  """Records the first SIGINT/SIGTERM within `with StopRequest() as stop:`.

  Attributes:
    signum: the first signal received, or None.
  """

  def __init__(self):
    self.signum: Optional[int] = None
    self._stack = contextlib.ExitStack()

  @property
  def requested(self) -> bool:
    return self.signum is not None

  def _handle(self, signum, frame):
    del frame
    if self.signum is None:
      self.signum = signum
      return
    # A second signal: give up on the clean stop.
    raise errors.Interrupted(f"interrupted twice ({signal_name(signum)}); stopped "
                             "at once", signum)

  def __enter__(self) -> "StopRequest":
    self._stack.enter_context(_handlers(self._handle))
    return self

  def __exit__(self, *exc_info) -> None:
    self._stack.close()
