"""One writer per run folder (issue 12): a lock file taken atomically.

The trainer holds the lock of its `--model_dir` for the whole of training, and
evaluate, export and visualize hold it while they write into a run folder; readers
(predict, export or figures written elsewhere) take none. The lock is the file
RunDir.lock_path names, created with O_CREAT | O_EXCL (atomic on a local disk and on
NFSv3+), holding JSON with the holder's pid, host, command and start time:

  with RunLock(model_dir):
    ...  # the only writer of model_dir

A second writer gets a CsaInputError naming the folder and the holder, before it does
any work. The lock is released on leaving the block, whatever ends it (an exception,
errors.Interrupted on SIGINT/SIGTERM). A lock left by a process that is gone (kill -9,
a power cut) is recognised on the same host (its pid no longer runs) and taken over,
with one log line; one of another host (multi_worker training on shared storage, where
only the chief takes it) is never broken automatically, since its pid means nothing
here: the message says which file to remove once that process is really gone.

Within one process the lock is reentrant: `csa_tf.train` takes it before TensorFlow
loads and the Trainer takes it again for train().
"""
import contextlib
import datetime
import json
import os
import socket
import sys
import threading
import time
import uuid
from typing import Callable, Dict, Optional

from csa_tf.errors import CsaInputError
from csa_tf.io.run_dir import RunDir

# How long a lock file that is still empty or half-written (its creator is between
# open and write) is waited for before it is reported as unreadable.
_UNREADABLE_WAIT_S = 1.0
_POLL_S = 0.05

# Locks this process holds: real path of the lock file -> how many `with` blocks.
_HELD: Dict[str, int] = {}
# Held through a whole acquire, so that two threads cannot both take the file (each
# would see the other's lock naming this pid and take it for a dead process's).
_HELD_GUARD = threading.RLock()


def _command_name() -> str:
  """"csa_tf.train" for `python -m csa_tf.train`, else the program's file name."""
  spec = getattr(sys.modules.get("__main__"), "__spec__", None)
  name = getattr(spec, "name", None)
  if name:
    return name[:-len(".__main__")] if name.endswith(".__main__") else name
  return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"


def _pid_alive(pid: int) -> bool:
  """Whether a process with this pid runs on this host (signal 0 probes, sends none)."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True  # It runs, under another user.
  except OSError:
    return True  # Unknown: never break a lock on a guess.
  return True


class RunLock:
  """The lock of one run folder, as a context manager (see the module docstring).

  Args:
    model_dir: the run folder (created when missing, and removed again on release
      when the lock was all that was written into it).
    command: what the lock file names as its holder; default: the running command's
      module (e.g. "csa_tf.train").
    log: where the line about taking over a stale lock goes.

  Attributes:
    path: the lock file.
  """

  def __init__(self, model_dir: str, *, command: Optional[str] = None,
               log: Callable[[str], None] = print):
    self.model_dir = model_dir
    self.path = RunDir(model_dir).lock_path
    self.command = command or _command_name()
    self.log = log
    self._token: Optional[str] = None
    self._created_dir = False
    self._key: Optional[str] = None

  @staticmethod
  def around_output(model_dir: str, output_dir: str, *,
                    log: Callable[[str], None] = print):
    """The lock of model_dir when output_dir lies inside it, else a no-op context.

    For commands that read a run and write where they are told (export, visualize):
    they are writers of the run folder only when their output is in it.
    """
    run = os.path.realpath(model_dir)
    out = os.path.realpath(output_dir)
    if os.path.commonpath([run, out]) == run:
      return RunLock(model_dir, log=log)
    return contextlib.nullcontext()

  def __enter__(self) -> "RunLock":
    self.acquire()
    return self

  def __exit__(self, *exc_info) -> None:
    self.release()

  # -- Taking and giving back. -----------------------------------------------------------
  def acquire(self) -> None:
    """Takes the lock (or re-enters the one this process holds).

    Raises:
      CsaInputError: another process holds it ("RUN: in use by pid P on host H
        (COMMAND, started T); ..."), or the lock file is unreadable.
    """
    key = os.path.realpath(self.path)
    with _HELD_GUARD:
      if _HELD.get(key):
        _HELD[key] += 1
        self._key = key
        return
      if not os.path.isdir(self.model_dir):
        os.makedirs(self.model_dir, exist_ok=True)
        self._created_dir = True
      try:
        self._take(key)
      except BaseException:
        self._remove_created_dir()
        raise
      _HELD[key] = 1
      self._key = key

  def release(self) -> None:
    """Gives the lock back (removes the lock file once the outermost block ends)."""
    key, self._key = self._key, None
    if key is None:
      return
    with _HELD_GUARD:
      _HELD[key] -= 1
      if _HELD[key]:
        return
      del _HELD[key]
    holder = self._read()
    # Only our own file: one an operator removed and another writer re-took stays.
    if holder is not None and holder.get("token") == self._token:
      try:
        os.remove(self.path)
      except FileNotFoundError:
        pass
    self._remove_created_dir()

  # -- The lock file. --------------------------------------------------------------------
  def _record(self) -> dict:
    started = datetime.datetime.now(datetime.timezone.utc)
    return dict(pid=os.getpid(), host=socket.gethostname(), command=self.command,
                argv=list(sys.argv), started=started.strftime("%Y-%m-%d %H:%M:%S UTC"),
                token=self._token)

  def _take(self, key: str) -> None:
    self._token = uuid.uuid4().hex
    waited = 0.0
    while True:
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        holder = self._read()
        if holder is None:
          # Its creator is between open and write, or it is damaged: wait briefly.
          if waited >= _UNREADABLE_WAIT_S:
            raise CsaInputError(
                f"{self.model_dir}: its lock file {self.path} is unreadable; if no "
                "csa_tf command is writing this folder, remove that file and run this "
                "again") from None
          time.sleep(_POLL_S)
          waited += _POLL_S
          continue
        if self._stale(holder, key):
          self._take_over(holder)
          continue
        raise CsaInputError(self._in_use_message(holder)) from None
      try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
          json.dump(self._record(), f, indent=1, sort_keys=True)
          f.flush()
          os.fsync(f.fileno())
      except BaseException:
        # Interrupted (or a full disk) between create and write: leave no lock behind.
        os.remove(self.path)
        raise
      return

  def _read(self) -> Optional[dict]:
    """The lock file's record; None when it is missing, empty or not a record."""
    try:
      with open(self.path, encoding="utf-8") as f:
        holder = json.load(f)
    except (OSError, ValueError):
      return None
    if (not isinstance(holder, dict) or not isinstance(holder.get("pid"), int)
        or isinstance(holder.get("pid"), bool) or holder["pid"] <= 0
        or not isinstance(holder.get("host"), str)):
      return None
    return holder

  @staticmethod
  def _stale(holder: dict, key: str) -> bool:
    """Whether the holder is gone: same host and its pid no longer runs."""
    if holder["host"] != socket.gethostname():
      return False
    if holder["pid"] == os.getpid():
      # This process, yet not one of its held locks: a pid reused after the holder died.
      with _HELD_GUARD:
        return not _HELD.get(key)
    return not _pid_alive(holder["pid"])

  def _take_over(self, holder: dict) -> None:
    """Removes a stale lock file, unless another writer took it over first."""
    aside = f"{self.path}.stale-{os.getpid()}-{self._token}"
    try:
      os.rename(self.path, aside)
    except FileNotFoundError:
      return  # Another writer removed it; try to create ours.
    moved = None
    try:
      with open(aside, encoding="utf-8") as f:
        moved = json.load(f)
    except (OSError, ValueError):
      pass
    if moved != holder:
      # Not the stale file: another writer took it over meanwhile. Put theirs back.
      try:
        os.link(aside, self.path)
      except FileExistsError:
        pass
    else:
      self.log(f"{self.model_dir}: taking over the lock of pid {holder['pid']} on host "
               f"{holder['host']} ({holder.get('command', '?')}, started "
               f"{holder.get('started', '?')}), which no longer runs")
    os.remove(aside)

  def _in_use_message(self, holder: dict) -> str:
    who = (f"{self.model_dir}: in use by pid {holder['pid']} on host {holder['host']} "
           f"({holder.get('command', '?')}, started {holder.get('started', '?')})")
    if holder["host"] != socket.gethostname():
      return (f"{who}; a lock of another host is never broken automatically: if that "
              f"process is really gone, remove {self.path} and run this again")
    return (f"{who}; wait until it finishes (or stop it: kill {holder['pid']}), or use "
            "another folder")

  def _remove_created_dir(self) -> None:
    if self._created_dir:
      self._created_dir = False
      try:
        os.rmdir(self.model_dir)  # Only when empty: what was written stays.
      except OSError:
        pass

