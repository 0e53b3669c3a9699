"""csa_tf.io.atomic: outputs appear whole or not at all, and leave no temporary behind.

Faults are injected inside the writer (a half-written file, then an exception), and in
the rename itself (os.replace patched to fail), which is where a full disk or a crash
would strike.
"""
import json
import os
import subprocess
import sys

import pytest

from csa_tf.io import atomic


def _names(folder):
  """Every entry of folder, hidden ones included, sorted."""
  return sorted(os.listdir(folder))


class Crash(Exception):
  pass


# ---------------------------------------------------------------------------------------
# Files.
# ---------------------------------------------------------------------------------------
def test_text_json_csv_and_bytes_write_exactly_these_bytes(tmp_path):
  atomic.write_text(str(tmp_path / "a.md"), "# T\nrow\n")
  atomic.write_json(str(tmp_path / "b.json"), {"z": 1, "a": [1.5, None]}, sort_keys=True)
  atomic.write_json(str(tmp_path / "c.json"), {"z": 1, "a": 2}, indent=2,
                    final_newline=False)
  atomic.write_csv(str(tmp_path / "d.csv"), ("x", "y"),
                   [{"x": 1, "y": "a,b", "ignored": 3}, {"x": 2}])
  atomic.write_bytes(str(tmp_path / "e.bin"), b"\x00\xff")
  assert (tmp_path / "a.md").read_bytes() == b"# T\nrow\n"
  # indent 1, keys sorted, one final newline.
  assert (tmp_path / "b.json").read_text() == '{\n "a": [\n  1.5,\n  null\n ],\n "z": 1\n}\n'
  # Key order as given, no final newline (the phantom marker's bytes).
  assert (tmp_path / "c.json").read_text() == '{\n  "z": 1,\n  "a": 2\n}'
  # csv's own line ends (\r\n); a comma is quoted; a missing key is an empty cell.
  assert (tmp_path / "d.csv").read_bytes() == b'x,y\r\n1,"a,b"\r\n2,\r\n'
  assert (tmp_path / "e.bin").read_bytes() == b"\x00\xff"
  assert _names(tmp_path) == ["a.md", "b.json", "c.json", "d.csv", "e.bin"]


def test_a_crash_mid_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
  path = tmp_path / "summary.json"
  path.write_text("old")

  def half_then_crash(tmp):
    with open(tmp, "w") as f:
      f.write('{"half": ')
    raise Crash

  with pytest.raises(Crash):
    atomic.write_atomically(str(path), half_then_crash)
  assert path.read_text() == "old"
  assert _names(tmp_path) == ["summary.json"]


def test_a_crash_mid_write_of_a_new_file_leaves_nothing(tmp_path):
  def crash(tmp):
    with open(tmp, "w") as f:
      f.write("par")
    raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    atomic.write_atomically(str(tmp_path / "table.csv"), crash)
  assert _names(tmp_path) == []


def test_a_failing_rename_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
  path = tmp_path / "table.md"
  path.write_text("old")

  def no_space(src, dst):
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(atomic.os, "replace", no_space)
  with pytest.raises(OSError, match="No space left"):
    atomic.write_text(str(path), "new")
  assert path.read_text() == "old"
  assert _names(tmp_path) == ["table.md"]


def test_the_temporary_keeps_the_extension_and_is_hidden(tmp_path):
  seen = []
  atomic.write_atomically(str(tmp_path / "p.nii.gz"),
                          lambda tmp: (seen.append(tmp), open(tmp, "w").close()))
  name = os.path.basename(seen[0])
  assert name.startswith(".tmp-") and name.endswith("-p.nii.gz")
  assert os.path.dirname(seen[0]) == str(tmp_path)


def test_a_replaced_file_keeps_its_permissions(tmp_path):
  path = tmp_path / "shared.txt"
  path.write_text("old")
  os.chmod(path, 0o640)
  atomic.write_text(str(path), "new")
  assert os.stat(path).st_mode & 0o777 == 0o640
  assert path.read_text() == "new"


# ---------------------------------------------------------------------------------------
# Staged folders.
# ---------------------------------------------------------------------------------------
def _fill(folder, text):
  os.makedirs(os.path.join(folder, "sub"))
  with open(os.path.join(folder, "sub", "a.txt"), "w") as f:
    f.write(text)


def test_a_staged_folder_appears_only_on_commit(tmp_path):
  destination = tmp_path / "out"
  with atomic.StagedFolder(str(destination)) as staged:
    _fill(staged.path, "new")
    assert not destination.exists()
    hidden = os.path.basename(staged.path)
    assert hidden.startswith(".out.tmp-")
    assert _names(tmp_path) == [hidden]
  assert (destination / "sub" / "a.txt").read_text() == "new"
  assert _names(tmp_path) == ["out"]
  umask = os.umask(0)
  os.umask(umask)
  # Not mkdtemp's owner-only 0700: what os.makedirs would have made.
  assert os.stat(destination).st_mode & 0o777 == 0o777 & ~umask


@pytest.mark.parametrize("old_content", ["full", "empty"])
def test_commit_replaces_an_old_folder_in_one_rename(tmp_path, old_content):
  destination = tmp_path / "out"
  destination.mkdir()
  if old_content == "full":
    _fill(str(destination), "old")
  with atomic.StagedFolder(str(destination)) as staged:
    _fill(staged.path, "new")
  assert (destination / "sub" / "a.txt").read_text() == "new"
  assert _names(destination) == ["sub"]
  assert _names(tmp_path) == ["out"]  # no .out.old-* left behind


def test_an_error_inside_the_block_keeps_the_old_folder_and_leaves_nothing(tmp_path):
  destination = tmp_path / "out"
  destination.mkdir()
  _fill(str(destination), "old")
  with pytest.raises(Crash):
    with atomic.StagedFolder(str(destination)) as staged:
      _fill(staged.path, "half")
      raise Crash
  assert (destination / "sub" / "a.txt").read_text() == "old"
  assert _names(tmp_path) == ["out"]


def test_an_abort_removes_the_parent_folders_it_made(tmp_path):
  (tmp_path / "keep").mkdir()
  staged = atomic.StagedFolder(str(tmp_path / "keep" / "new1" / "new2" / "out"))
  _fill(staged.path, "half")
  staged.abort()
  assert _names(tmp_path) == ["keep"]
  assert _names(tmp_path / "keep") == []


def test_a_failing_final_rename_puts_the_old_folder_back(tmp_path, monkeypatch):
  destination = tmp_path / "out"
  destination.mkdir()
  _fill(str(destination), "old")
  real_replace = os.replace

  def fail_on_the_staged_folder(src, dst):
    if ".out.tmp-" in os.path.basename(src):
      raise OSError(5, "Input/output error")
    real_replace(src, dst)

  monkeypatch.setattr(atomic, "_exchange", lambda first, second: False)
  monkeypatch.setattr(atomic.os, "replace", fail_on_the_staged_folder)
  with pytest.raises(OSError, match="Input/output error"):
    with atomic.StagedFolder(str(destination)) as staged:
      _fill(staged.path, "new")
  assert (destination / "sub" / "a.txt").read_text() == "old"
  assert _names(tmp_path) == ["out"]


def test_a_file_at_the_destination_is_not_replaced(tmp_path):
  destination = tmp_path / "out"
  destination.write_text("a file")
  with pytest.raises(NotADirectoryError, match="exists and is not a folder"):
    with atomic.StagedFolder(str(destination)) as staged:
      _fill(staged.path, "new")
  assert destination.read_text() == "a file"
  assert _names(tmp_path) == ["out"]


def test_json_inside_a_staged_folder(tmp_path):
  with atomic.StagedFolder(str(tmp_path / "prep")) as staged:
    atomic.write_json(os.path.join(staged.path, "meta.json"), {"format_version": 1})
  assert json.load(open(tmp_path / "prep" / "meta.json")) == {"format_version": 1}
  assert _names(tmp_path / "prep") == ["meta.json"]


def test_replacing_swaps_the_folders_in_one_exchange(tmp_path, monkeypatch):
  destination = tmp_path / "out"
  destination.mkdir()
  _fill(str(destination), "old")
  real_replace = os.replace

  def no_rename_of_the_destination(src, dst):
    assert os.path.abspath(dst) != str(destination) and src != str(destination)
    real_replace(src, dst)

  monkeypatch.setattr(atomic.os, "replace", no_rename_of_the_destination)
  with atomic.StagedFolder(str(destination)) as staged:
    _fill(staged.path, "new")
  assert (destination / "sub" / "a.txt").read_text() == "new"
  assert _names(tmp_path) == ["out"]


_KILLED_BETWEEN_RENAMES = """
import os, sys
from csa_tf.io import atomic
atomic._exchange = lambda first, second: False  # the two-rename fallback
real_replace = os.replace
def replace(src, dst):
  if ".out.tmp-" in os.path.basename(src):
    os._exit(9)  # kill -9 after the old folder moved aside, before the new one moved in
  real_replace(src, dst)
atomic.os.replace = replace
with atomic.StagedFolder(sys.argv[1]) as staged:
  os.makedirs(os.path.join(staged.path, "sub"))
  open(os.path.join(staged.path, "sub", "a.txt"), "w").write("new")
"""


@pytest.mark.parametrize("next_writer", ["staged_folder", "restore"])
def test_a_kill_between_the_fallbacks_renames_is_undone_by_the_next_writer(tmp_path,
                                                                           next_writer):
  destination = tmp_path / "out"
  destination.mkdir()
  _fill(str(destination), "old")
  killed = subprocess.run([sys.executable, "-c", _KILLED_BETWEEN_RENAMES, str(destination)],
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          check=False)
  assert killed.returncode == 9
  assert not destination.exists()
  hidden = _names(tmp_path)
  assert len(hidden) == 2 and {name[:9] for name in hidden} == {".out.old-", ".out.tmp-"}
  if next_writer == "restore":
    assert atomic.restore_interrupted_replace(str(destination)) == str(destination)
  else:
    atomic.StagedFolder(str(destination)).abort()
  assert (destination / "sub" / "a.txt").read_text() == "old"
  # The dead writer's staging folder stays (it may be a live writer's): only .old-* go.
  assert [n[:9] for n in _names(tmp_path)] == [".out.tmp-", "out"]


def test_old_folders_beside_a_destination_in_place_are_removed(tmp_path):
  destination = tmp_path / "out"
  _fill(str(destination), "new")
  _fill(str(tmp_path / ".out.old-abc"), "old")
  assert atomic.restore_interrupted_replace(str(destination)) is None
  assert _names(tmp_path) == ["out"]
  assert (destination / "sub" / "a.txt").read_text() == "new"
