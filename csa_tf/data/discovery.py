"""Finding a release's files by name anywhere under a raw-data folder."""
import os
import re
from typing import Callable, Dict, Hashable, List, Sequence, Tuple

from csa_tf.errors import CsaInputError, param


def find_files(raw_dir: str, pattern: "re.Pattern") -> Dict[Tuple[str, ...], str]:
  """Maps each regex match's groups to its path, searching raw_dir recursively.

  Raises:
    CsaInputError: raw_dir is missing, or two files match with the same groups (e.g.
      the same patient's label in two folders, or `patient02` beside `patient2`: number
      groups are compared as numbers), which would make pairing ambiguous.
  """
  if not os.path.isdir(raw_dir):
    raise CsaInputError(f"{raw_dir}: raw data folder not found")
  found: Dict[Tuple[str, ...], str] = {}
  seen: Dict[Tuple[str, ...], str] = {}
  for root, dirs, files in os.walk(raw_dir):
    dirs.sort()
    for name in sorted(files):
      match = pattern.fullmatch(name)
      if not match:
        continue
      key = match.groups()
      path = os.path.join(root, name)
      # Readers key patients by number, so zero padding must not hide a duplicate.
      same = tuple(str(int(g)) if g and g.isdigit() else g for g in key)
      if same in seen:
        raise CsaInputError(f"{path}: duplicate of {seen[same]}; keep one copy under "
                            f"{raw_dir}")
      seen[same] = path
      found[key] = path
  return found


def check_modalities(modalities: Sequence[str], allowed: Sequence[str],
                     dataset_title: str) -> List[str]:
  """Returns modalities as a list after checking each is known and listed once.

  Raises:
    CsaInputError: naming the modalities parameter and the problem.
  """
  modalities = list(modalities)
  for modality in modalities:
    if modality not in allowed:
      raise CsaInputError(f"{param('modalities')}: unknown {dataset_title} modality "
                          f"{modality!r}; "
                          f"expected some of {list(allowed)}")
  if len(set(modalities)) != len(modalities) or not modalities:
    raise CsaInputError(f"{param('modalities', ','.join(modalities))}: list each "
                        "modality once")
  return modalities


def check_pairs(images: Dict[Hashable, str], labels: Dict[Hashable, str], *,
                image_name: Callable[[Hashable], str],
                label_name: Callable[[Hashable], str], label_word: str = "label",
                require_labels: bool = True) -> List[Hashable]:
  """Checks that every label has its image and, if required, every image its label.

  Args:
    images, labels: paths keyed alike (e.g. by (patient, modality)).
    image_name, label_name: the expected file name of a key's image / label.
    label_word: what the release calls a label ("manual label" for MS-CMRSeg).
    require_labels: an image without its label is an error; otherwise it is returned.

  Returns:
    The sorted keys of the images without a label (empty when labels are required).

  Raises:
    CsaInputError: naming the unmatched file and the file it lacks.
  """
  for key, path in sorted(labels.items()):
    if key not in images:
      raise CsaInputError(f"{path}: label without its image {image_name(key)}")
  unlabelled = sorted(key for key in images if key not in labels)
  if require_labels and unlabelled:
    key = unlabelled[0]
    raise CsaInputError(f"{images[key]}: no {label_word} found for this image "
                        f"(expected {label_name(key)})")
  return unlabelled
