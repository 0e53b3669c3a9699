"""Atomic output: every file and folder csa_tf writes appears whole or not at all.

A reader (a person, `csa_tf.evaluate`, a second process, a rerun after a crash) never
sees half of a summary, a prediction or a prepared-data folder:

* a file is written to a hidden temporary name in its own folder and renamed onto its
  final name (`write_atomically` and the text, JSON, CSV and bytes helpers built on it);
* a folder (a PREP, a phantom release, an exported model) is built as a hidden sibling
  and renamed onto its destination in one step (`StagedFolder`).

A rename within one file system is atomic on POSIX, which is why both temporaries live
beside their destination rather than in /tmp. On any error, KeyboardInterrupt included,
the temporary is removed and whatever was at the destination before is left as it was.
"""
import ctypes
import csv
import errno
import glob
import io
import json
import os
import re
import shutil
import sys
import tempfile
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence


def write_atomically(path: str, write_fn: Callable[[str], Any]) -> None:
  """Calls write_fn(tmp_path) and renames tmp_path to path; removes tmp on failure.

  The temporary name keeps `path`'s extension so that writers that look at it
  (nibabel's .nii.gz, numpy's .npz) behave as for the final name. It starts with a dot,
  so folder scans that skip hidden files (csa_tf.predict's) never pick it up.

  Args:
    path: the final file name; its folder must exist.
    write_fn: writes the whole content to the path it is given.
  """
  directory = os.path.dirname(os.path.abspath(path)) or "."
  base = os.path.basename(path)
  fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix="-" + base, dir=directory)
  os.close(fd)
  try:
    write_fn(tmp)
    # mkstemp makes the file owner-only (0600); give the result the permissions a plain
    # open() would (or those of the file it replaces).
    os.chmod(tmp, _mode_for(path))
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_bytes(path: str, data: bytes) -> None:
  """Writes `data` to path atomically."""
  def write(tmp):
    with open(tmp, "wb") as f:
      f.write(data)
  write_atomically(path, write)


def write_text(path: str, text: str) -> None:
  """Writes `text` (UTF-8, newlines as given) to path atomically."""
  def write(tmp):
    with open(tmp, "w", encoding="utf-8", newline="") as f:
      f.write(text)
  write_atomically(path, write)


def write_json(path: str, value: Any, *, indent: int = 1, sort_keys: bool = False,
               final_newline: bool = True) -> None:
  """Writes `value` as JSON to path atomically.

  Args:
    path: the file.
    value: anything json.dumps takes (NaN is written as NaN, as json.dump does: callers
      that promise standard JSON replace it first, see csa_tf.evaluation.evaluator).
    indent, sort_keys: as for json.dumps.
    final_newline: end the file with a newline (off only to keep the bytes of files
      that never had one, such as the phantom marker).
  """
  text = json.dumps(value, indent=indent, sort_keys=sort_keys)
  write_text(path, text + "\n" if final_newline else text)


def write_csv(path: str, columns: Sequence[str], rows: Iterable[Mapping]) -> None:
  """Writes rows (dicts) under a header of `columns` to path atomically.

  Keys of a row that are not columns are left out; missing ones are written empty.
  """
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore")
  writer.writeheader()
  for row in rows:
    writer.writerow(row)
  write_text(path, buffer.getvalue())


class StagedFolder:
  """A folder built beside its destination and put in place with one rename.

  Usage:

    with StagedFolder(output_dir) as staging:
      write files under staging.path
    # committed here; on an exception the staging folder is removed instead

  or, when the work is spread over several calls, `commit()` and `abort()` by hand.

  The staging folder is a hidden sibling (`.<name>.tmp-XXXX`) of the destination. On
  commit an existing destination folder (empty or not) is swapped with the staging folder
  in one atomic exchange (Linux renameat2 RENAME_EXCHANGE) and the old one, now at the
  staging name, removed: kill -9 at any moment leaves the old folder or the new one in
  place. Where the file system has no exchange, the old folder is first renamed aside
  (`.<name>.old-XXXX`), then the staging folder onto the destination; a kill between the
  two leaves no destination, and the next StagedFolder of that destination (or
  `restore_interrupted_replace`) puts the old folder back. On abort the staging folder is
  removed, and so are the destination's parent folders this object made, when they are
  still empty: a failed write leaves no trace.

  Args:
    destination: the folder to create or replace. What may be replaced (only an older
      output of the same kind) is for the caller to check before committing.

  Attributes:
    destination: the absolute destination path.
    path: the staging folder to write into.

  Raises:
    NotADirectoryError: (on commit) the destination exists and is not a folder.
  """

  def __init__(self, destination: str):
    self.destination = os.path.abspath(destination)
    restore_interrupted_replace(self.destination)
    parent = os.path.dirname(self.destination)
    # The folders made here, innermost first: abort removes them again (when empty).
    self._made_dirs = []
    missing = parent
    while not os.path.isdir(missing):
      self._made_dirs.append(missing)
      missing = os.path.dirname(missing)
    os.makedirs(parent, exist_ok=True)
    self._name = os.path.basename(self.destination)
    self.path = tempfile.mkdtemp(prefix=f".{self._name}.tmp-", dir=parent)
    self._done = False

  def commit(self) -> str:
    """Renames the staging folder onto the destination; returns the destination."""
    if self._done:
      raise RuntimeError(f"{self.destination}: staged folder already committed or aborted")
    parent = os.path.dirname(self.destination)
    # mkdtemp made the folder owner-only (0700); give it what os.makedirs would.
    os.chmod(self.path, _mode_for(self.destination, default=0o777))
    if os.path.lexists(self.destination):
      if not os.path.isdir(self.destination) or os.path.islink(self.destination):
        raise NotADirectoryError(f"{self.destination}: exists and is not a folder")
      if _exchange(self.path, self.destination):
        shutil.rmtree(self.path, ignore_errors=True)  # Now the old folder.
        self._done = True
        return self.destination
      # A rename onto an existing empty folder replaces it (POSIX), so mkdtemp's fresh
      # folder is the unique name the old output moves to.
      old: Optional[str] = tempfile.mkdtemp(prefix=f".{self._name}.old-", dir=parent)
      os.replace(self.destination, old)
      try:
        os.replace(self.path, self.destination)
      except BaseException:
        os.replace(old, self.destination)
        raise
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.replace(self.path, self.destination)
    self._done = True
    return self.destination

  def abort(self) -> None:
    """Removes the staging folder (and the parents made for it, while empty)."""
    if self._done:
      return
    shutil.rmtree(self.path, ignore_errors=True)
    for folder in self._made_dirs:
      try:
        os.rmdir(folder)
      except OSError:
        break  # Not empty: something else lives there now.
    self._done = True

  def __enter__(self) -> "StagedFolder":
    return self

  def __exit__(self, exc_type, exc, traceback) -> None:
    if exc_type is not None:
      self.abort()
      return
    try:
      self.commit()
    except BaseException:
      self.abort()
      raise


# The hidden names of write_atomically's files and StagedFolder's folders (tempfile's
# random part is 8 of [a-z0-9_]).
_TEMPORARY_FILE = re.compile(r"\.tmp-[a-z0-9_]{8}-(.+)")
_STAGED_FOLDER = re.compile(r"\.(.+)\.(?:tmp|old)-[a-z0-9_]{8}")


def destination_of(path: str) -> str:
  """The path a temporary of this module stands for: its hidden names -> final names.

  An error while writing `/out/.prep.tmp-k2x9a7qd/volumes/.tmp-3jd8s0qa-a.npz` is about
  `/out/prep/volumes/a.npz`, which is what a user knows; other paths are returned as
  they are.
  """
  parts = path.split(os.sep)
  for index, part in enumerate(parts):
    match = _TEMPORARY_FILE.fullmatch(part) or _STAGED_FOLDER.fullmatch(part)
    if match:
      parts[index] = match.group(1)
  return os.sep.join(parts)


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _exchange(first: str, second: str) -> bool:
  """Swaps two existing paths atomically; False where the system cannot (then nothing
  has changed)."""
  if not sys.platform.startswith("linux"):
    return False
  try:
    renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
  except (AttributeError, OSError):
    return False  # glibc older than 2.28
  result = renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second),
                     _RENAME_EXCHANGE)
  if result == 0:
    return True
  code = ctypes.get_errno()
  if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
    return False  # A file system without the exchange (some network mounts).
  raise OSError(code, os.strerror(code), second)


def restore_interrupted_replace(destination: str) -> Optional[str]:
  """Repairs what a kill during StagedFolder's two-rename fallback left behind.

  With the destination missing, its newest `.<name>.old-XXXX` sibling (the old folder
  renamed aside) is renamed back. With the destination in place, such siblings are what
  a kill between the second rename and the clean-up left: they are removed.

  Returns:
    The restored folder's path, or None when nothing was restored.
  """
  destination = os.path.abspath(destination)
  parent, name = os.path.split(destination)
  olds = sorted(glob.glob(os.path.join(glob.escape(parent), f".{glob.escape(name)}.old-*")),
                key=os.path.getctime)  # A rename sets ctime.
  olds = [old for old in olds if os.path.isdir(old) and not os.path.islink(old)]
  if not olds:
    return None
  restored = None
  if not os.path.lexists(destination):
    os.replace(olds.pop(), destination)
    restored = destination
  for old in olds:
    shutil.rmtree(old, ignore_errors=True)
  return restored


def _mode_for(path: str, default: int = 0o666) -> int:
  """The permissions of what path holds now, else `default` less the umask."""
  try:
    return os.stat(path).st_mode & 0o777
  except OSError:
    umask = os.umask(0)
    os.umask(umask)
    return default & ~umask
