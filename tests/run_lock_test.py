"""One writer per run folder (issue 12 item 5): csa_tf/io/run_lock.py and its users."""
import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from csa_tf import errors
from csa_tf import interrupts
from csa_tf.errors import CsaInputError
from csa_tf.io.run_dir import RunDir
from csa_tf.io.run_lock import RunLock
from tests.helpers import make_config, quiet

HOST = socket.gethostname()
STARTED = "2026-12-01 12:00:00 UTC"


def _write_lock(model_dir, pid, host=HOST, command="csa_tf.train"):
  """A lock file as another process would have written it; returns its bytes."""
  os.makedirs(model_dir, exist_ok=True)
  path = RunDir(str(model_dir)).lock_path
  with open(path, "w", encoding="utf-8") as f:
    json.dump(dict(pid=pid, host=host, command=command, argv=[command],
                   started=STARTED, token="theirs"), f)
  with open(path, "rb") as f:
    return f.read()


def _read_bytes(path):
  with open(path, "rb") as f:
    return f.read()


def _dead_pid():
  """The pid of a process that has ended and been waited for (so it no longer runs)."""
  process = subprocess.Popen([sys.executable, "-c", "pass"])
  process.wait()
  return process.pid


def _in_use(model_dir, pid, command="csa_tf.train", started=STARTED):
  return (f"{model_dir}: in use by pid {pid} on host {HOST} ({command}, started "
          f"{started}); wait until it finishes (or stop it: kill {pid}), or use another "
          "folder")


def test_acquire_writes_the_holder_and_release_removes_it(tmp_path):
  model_dir = str(tmp_path / "run")
  before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
  with RunLock(model_dir, command="csa_tf.evaluate") as lock:
    assert lock.path == os.path.join(model_dir, "lock.json")
    record = json.load(open(lock.path, encoding="utf-8"))
    assert (record["pid"], record["host"], record["command"]) == (
        os.getpid(), HOST, "csa_tf.evaluate")
    assert record["argv"] == sys.argv
    started = datetime.datetime.strptime(record["started"], "%Y-%m-%d %H:%M:%S UTC")
    started = started.replace(tzinfo=datetime.timezone.utc)
    # Written within this test: at most a few seconds after `before` (whole seconds).
    assert 0 <= (started - before).total_seconds() < 5
    assert os.listdir(model_dir) == ["lock.json"]
  # The folder was made for the lock alone: nothing of it is left.
  assert not os.path.exists(model_dir)


def test_release_keeps_the_folder_and_what_was_written(tmp_path):
  run = RunDir(str(tmp_path / "run"))
  config = make_config(run.path)
  with RunLock(run.path, log=quiet):
    run.write_config(config)
    # Locked and being written: still a run (the lock file is not part of it).
    assert run.is_run()
    assert sorted(os.listdir(run.path)) == ["config.json", "lock.json"]
  assert run.is_run()
  assert os.listdir(run.path) == ["config.json"]


def test_default_command_is_the_running_program(tmp_path):
  # pytest runs as `python -m pytest` (module "pytest") or as the `pytest` script.
  with RunLock(str(tmp_path)) as lock:
    command = json.load(open(lock.path, encoding="utf-8"))["command"]
  assert command in ("pytest", os.path.basename(sys.argv[0]))


def test_second_process_is_refused_with_the_exact_message(tmp_path):
  model_dir = str(tmp_path / "run")
  holder = subprocess.Popen(
      [sys.executable, "-c",
       "import sys; from csa_tf.io.run_lock import RunLock\n"
       f"with RunLock({model_dir!r}, command='csa_tf.train'):\n"
       "  print('held', flush=True); sys.stdin.readline()"],
      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
      env=dict(os.environ, PYTHONPATH=os.getcwd()))
  try:
    assert holder.stdout.readline() == "held\n"
    path = RunDir(model_dir).lock_path
    held = _read_bytes(path)
    started = json.loads(held)["started"]
    with pytest.raises(CsaInputError) as info:
      RunLock(model_dir).acquire()
    assert str(info.value) == _in_use(model_dir, holder.pid, started=started)
    assert _read_bytes(path) == held  # The holder's lock is untouched.
  finally:
    holder.communicate("\n", timeout=10)
  assert holder.returncode == 0
  assert not os.path.exists(RunDir(model_dir).lock_path)


def test_live_holder_on_this_host_is_refused_and_kept(tmp_path):
  live = os.getppid()  # The process that started pytest: alive, and not this one.
  held = _write_lock(tmp_path, live)
  with pytest.raises(CsaInputError) as info:
    with RunLock(str(tmp_path)):
      pytest.fail("entered a held lock")
  assert str(info.value) == _in_use(tmp_path, live)
  assert _read_bytes(RunDir(str(tmp_path)).lock_path) == held


def test_lock_of_a_process_that_is_gone_is_taken_over(tmp_path):
  dead = _dead_pid()
  _write_lock(tmp_path, dead)
  lines = []
  with RunLock(str(tmp_path), command="csa_tf.train", log=lines.append) as lock:
    assert json.load(open(lock.path, encoding="utf-8"))["pid"] == os.getpid()
  assert lines == [f"{tmp_path}: taking over the lock of pid {dead} on host {HOST} "
                   f"(csa_tf.train, started {STARTED}), which no longer runs"]
  assert os.listdir(tmp_path) == []  # Neither the stale lock nor ours is left.


def test_lock_with_this_pid_but_not_held_here_is_stale(tmp_path):
  # After a crash the next process may get the dead holder's pid (small pid spaces in
  # containers): a lock naming this process that it does not hold is a dead one's.
  _write_lock(tmp_path, os.getpid())
  lines = []
  with RunLock(str(tmp_path), log=lines.append):
    pass
  assert len(lines) == 1 and f"lock of pid {os.getpid()} on host {HOST}" in lines[0]


def test_lock_of_another_host_is_never_broken(tmp_path):
  # Its pid means nothing here: even one that is not alive on this host.
  dead = _dead_pid()
  held = _write_lock(tmp_path, dead, host="worker-0.cluster")
  lock_path = RunDir(str(tmp_path)).lock_path
  with pytest.raises(CsaInputError) as info:
    RunLock(str(tmp_path), log=pytest.fail).acquire()
  assert str(info.value) == (
      f"{tmp_path}: in use by pid {dead} on host worker-0.cluster (csa_tf.train, "
      f"started {STARTED}); a lock of another host is never broken automatically: if "
      f"that process is really gone, remove {lock_path} and run this again")
  assert _read_bytes(lock_path) == held


def test_unreadable_lock_file_is_reported_after_a_short_wait(tmp_path):
  lock_path = RunDir(str(tmp_path)).lock_path
  open(lock_path, "w").close()  # Empty: a creator killed between open and write.
  start = time.perf_counter()
  with pytest.raises(CsaInputError, match="its lock file .*lock.json is unreadable; if no"):
    RunLock(str(tmp_path)).acquire()
  # It waited _UNREADABLE_WAIT_S (1 s) for a writer to finish the file, no longer.
  assert 0.9 < time.perf_counter() - start < 3
  assert _read_bytes(lock_path) == b""


@pytest.mark.parametrize("error", [
    ValueError("boom"), errors.Interrupted("interrupted", signal.SIGINT),
    errors.NonFiniteLossError("nan")])
def test_released_on_exceptions(tmp_path, error):
  with pytest.raises(type(error)):
    with RunLock(str(tmp_path)):
      assert os.path.exists(RunDir(str(tmp_path)).lock_path)
      raise error
  assert os.listdir(tmp_path) == []
  with RunLock(str(tmp_path)):  # Free again.
    pass


def test_released_on_sigint(tmp_path):
  # Every command runs under raise_on_signals (csa_tf/cli.py): Ctrl-C unwinds the block.
  with pytest.raises(errors.Interrupted):
    with interrupts.raise_on_signals(), RunLock(str(tmp_path)):
      os.kill(os.getpid(), signal.SIGINT)
      time.sleep(5)  # The handler raises here, in the main thread.
  assert os.listdir(tmp_path) == []


def test_reentrant_within_one_process(tmp_path):
  # csa_tf.train takes the lock before TensorFlow loads, the Trainer again in train().
  lock_path = RunDir(str(tmp_path)).lock_path
  with RunLock(str(tmp_path)):
    held = _read_bytes(lock_path)
    with RunLock(str(tmp_path), log=pytest.fail):
      assert _read_bytes(lock_path) == held
    assert _read_bytes(lock_path) == held  # The inner block does not release it.
  assert not os.path.exists(lock_path)


def test_release_leaves_a_lock_that_is_no_longer_its_own(tmp_path):
  lock_path = RunDir(str(tmp_path)).lock_path
  live = os.getppid()
  with RunLock(str(tmp_path)):
    # An operator removed our file and another writer took the folder.
    os.remove(lock_path)
    theirs = _write_lock(tmp_path, live)
  assert _read_bytes(lock_path) == theirs


def test_around_output_locks_only_outputs_inside_the_run(tmp_path):
  run = tmp_path / "run"
  run.mkdir()
  lock_path = RunDir(str(run)).lock_path
  with RunLock.around_output(str(run), str(run / "figures")):
    assert os.path.exists(lock_path)
  with RunLock.around_output(str(run), str(run)):
    assert os.path.exists(lock_path)
  for outside in (tmp_path / "export", tmp_path / "run2"):  # run2 shares a prefix only
    with RunLock.around_output(str(run), str(outside)):
      assert not os.path.exists(lock_path)
  assert os.listdir(run) == []


# ---------------------------------------------------------------------------------------
# The writers: refused before they load networks or write anything.
# ---------------------------------------------------------------------------------------
def _evaluate(run, prep):
  from csa_tf.evaluation.evaluator import evaluate_run  # pylint: disable=g-import-not-at-top
  evaluate_run(run, prep, log=quiet)


def _export(run, prep):
  del prep
  from csa_tf.serving.exporter import export_run  # pylint: disable=g-import-not-at-top
  export_run(run, os.path.join(run, "export"), log=quiet)


def _visualize(run, prep):
  from csa_tf.visualization.figures import make_figures  # pylint: disable=g-import-not-at-top
  make_figures(run, data_dir=prep, log=quiet)


@pytest.mark.parametrize("write", [_evaluate, _export, _visualize])
def test_writers_of_a_busy_run_are_refused(tiny_prep, tmp_path, write):
  run = RunDir(str(tmp_path / "run"))
  # A config and no checkpoint: a writer that got past the lock would fail on the
  # missing checkpoint instead.
  run.write_config(make_config(run.path, data_dir=tiny_prep.prep_dir))
  live = os.getppid()
  held = _write_lock(run.path, live)
  with pytest.raises(CsaInputError) as info:
    write(run.path, tiny_prep.prep_dir)
  assert str(info.value) == _in_use(run.path, live)
  assert sorted(os.listdir(run.path)) == ["config.json", "lock.json"]
  assert _read_bytes(run.lock_path) == held
