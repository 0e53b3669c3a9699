"""Threads for array work that releases the GIL (scipy.ndimage, large NumPy reductions).

csa_tf.metrics runs each class's surface extraction and distance transforms here, and
csa_tf.evaluation sizes its scoring workers by `usable_cores`. Only leaf jobs run in the
pool (none waits on another), so callers in other threads, such as the evaluator scoring
several volumes at once, share it without deadlock.
"""
import os
import threading
from concurrent import futures
from typing import Callable, Optional, Sequence

_lock = threading.Lock()
_pool: Optional[futures.ThreadPoolExecutor] = None


def usable_cores() -> int:
  """The CPU cores this process may use."""
  try:
    return max(len(os.sched_getaffinity(0)), 1)
  except AttributeError:  # not on Linux
    return max(os.cpu_count() or 1, 1)


def run_all(function: Callable, jobs: Sequence[tuple]) -> list:
  """`[function(*job) for job in jobs]`, in the pool's threads when that can pay (two
  jobs or more, two cores or more), in job order."""
  global _pool
  if len(jobs) < 2 or usable_cores() < 2:
    return [function(*job) for job in jobs]
  with _lock:
    if _pool is None:
      _pool = futures.ThreadPoolExecutor(max_workers=usable_cores(),
                                         thread_name_prefix="csa_tf-array")
    pool = _pool
  return list(pool.map(lambda job: function(*job), jobs))
