"""Imports TensorFlow without its start-up notices on a machine without a GPU.

TF 2.21 writes these from C++ to file descriptor 2 during `import tensorflow` and the
first device query, whatever TF_CPP_MIN_LOG_LEVEL says (some are printed before absl
logging is initialised):

  WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
  I0000 ... cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will ...
  I0000 ... cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use ...
  To enable the following instructions: AVX2 FMA, in other operations, rebuild ...
  E0000 ... cuda_platform.cc:52] failed call to cuInit: ... UNKNOWN ERROR (303)

and older builds add "oneDNN custom operations are on". A new user reads "E0000 ...
CUDA error" before anything of ours, on a machine where nothing is wrong. So
`import_tensorflow` sends descriptor 2 to a temporary file for the import and the
first device query, then writes back to stderr every line except exactly those notices:
Python warnings and any other native message still show, and a failing import still
raises with its traceback. The cuInit failure is dropped only together with cudart's
"Could not find cuda drivers" (a machine without a CUDA driver): on a GPU host it may be
the one line that explains a missing GPU.

Set CSA_TF_VERBOSE_TF=1 (or TF_CPP_MIN_LOG_LEVEL=0, asking TensorFlow for all of its
logs) to see everything. TF_ENABLE_ONEDNN_OPTS is left alone: turning oneDNN off would
change the numbers, not only the notice.
"""
import os
import re
import sys
import tempfile

# One pattern per notice, matched against whole lines.
_NOTICES = re.compile("|".join([
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to "
    r"STDERR",
    r"\S+ [\d:.]+ +\d+ cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine, "
    r"GPU will not be used\.",
    r"\S+ [\d:.]+ +\d+ cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized to "
    r"use available CPU instructions in performance-critical operations\.",
    r"To enable the following instructions: .*, in other operations, rebuild TensorFlow "
    r"with the appropriate compiler flags\.",
    r"\S+ [\d:.]+ +\d+ port\.cc:\d+\] oneDNN custom operations are on\. .*",
]))
_NO_DRIVER = "cudart_stub.cc"
_CUINIT = re.compile(r"\S+ [\d:.]+ +\d+ cuda_platform\.cc:\d+\] failed call to cuInit: .*")

_started = False


def verbose() -> bool:
  """True where the user asked for TensorFlow's start-up notices."""
  return (os.environ.get("CSA_TF_VERBOSE_TF") == "1"
          or os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0")


def without_notices(text: str) -> str:
  """`text` (captured stderr) less TensorFlow's start-up notices; other lines kept."""
  lines = text.splitlines(keepends=True)
  no_driver = any(_NO_DRIVER in line and _NOTICES.fullmatch(line.rstrip("\n"))
                  for line in lines)
  return "".join(line for line in lines
                 if not _NOTICES.fullmatch(line.rstrip("\n"))
                 and not (no_driver and _CUINIT.fullmatch(line.rstrip("\n"))))


def import_tensorflow():
  """Imports TensorFlow and queries its GPUs, without the start-up notices; returns tf.

  Call it before anything else imports TensorFlow: the commands that need it at once do,
  through `cli.run(..., tensorflow=True)`; train and the run folder's `networks()` call it
  after their cheap checks, so that a bad flag or file fails fast. A later call only
  returns the module.
  """
  global _started
  if _started or verbose():
    _started = True
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    return tf
  sys.stderr.flush()
  try:
    saved = os.dup(2)
  except OSError:  # No descriptor 2 to redirect: nothing would be printed anyway.
    saved = None
  with tempfile.TemporaryFile() as captured:
    if saved is not None:
      os.dup2(captured.fileno(), 2)
    try:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      tf.config.list_physical_devices("GPU")  # cuInit runs here, not at import.
    finally:
      sys.stderr.flush()
      if saved is not None:
        os.dup2(saved, 2)
        os.close(saved)
        captured.seek(0)
        kept = without_notices(captured.read().decode("utf-8", errors="replace"))
        if kept:
          sys.stderr.write(kept)
          sys.stderr.flush()
  _started = True
  return tf
