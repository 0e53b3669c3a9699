"""Finding a release's files by name anywhere under a raw-data folder."""
import os
import re
from typing import Dict, Tuple

from csa_tf.errors import CsaInputError


def find_files(raw_dir: str, pattern: "re.Pattern") -> Dict[Tuple[str, ...], str]:
  """Maps each regex match's groups to its path, searching raw_dir recursively.

  Raises:
    CsaInputError: raw_dir is missing, or two files match with the same groups (e.g.
      the same patient's label in two folders), which would make pairing ambiguous.
  """
  if not os.path.isdir(raw_dir):
    raise CsaInputError(f"{raw_dir}: raw data folder not found")
  found: Dict[Tuple[str, ...], str] = {}
  for root, dirs, files in os.walk(raw_dir):
    dirs.sort()
    for name in sorted(files):
      match = pattern.fullmatch(name)
      if not match:
        continue
      key = match.groups()
      path = os.path.join(root, name)
      if key in found:
        raise CsaInputError(f"{path}: duplicate of {found[key]}; keep one copy under "
                            f"{raw_dir}")
      found[key] = path
  return found
