"""Writing a training checkpoint without leaving a full disk fuller."""
import os
import shutil

import tensorflow as tf

from csa_tf.errors import CsaInputError


def write_checkpoint(manager: tf.train.CheckpointManager, number: int) -> str:
  """Saves checkpoint ckpt-`number` through `manager`; returns its path.

  Raises:
    CsaInputError: the disk is full or the folder is not writable; TensorFlow's
      half-written `ckpt-N_temp` files are removed first.
  """
  try:
    return manager.save(checkpoint_number=number)
  except (tf.errors.ResourceExhaustedError, tf.errors.PermissionDeniedError,
          tf.errors.UnknownError, OSError) as error:
    # A full disk or a read-only folder: TensorFlow leaves its half-written
    # `ckpt-N_temp` behind, which would keep the disk full.
    directory = manager.directory
    for name in os.listdir(directory) if os.path.isdir(directory) else ():
      if name.startswith(f"ckpt-{number}_temp"):
        path = os.path.join(directory, name)
        if os.path.isdir(path):
          shutil.rmtree(path, ignore_errors=True)
        else:
          os.remove(path)
    cause = str(getattr(error, "message", None) or error).strip().splitlines()[0]
    raise CsaInputError(
        f"{directory}: cannot write checkpoint ckpt-{number} ({cause}); its temporary "
        "files were removed; free space or fix the folder's permissions, then run the "
        "same command again to resume from the last checkpoint") from None
