"""Label scarcity: train a modality on only a few of its labelled training patients.

The MS-CMRSeg challenge gave 5 labelled LGE patients next to 35 labelled bSSFP ones,
the regime where knowledge shared across modalities should matter most (issue 14).
`--labelled_train_patients=lge:5` reproduces it on any PREP: LGE trains on the labelled
slices of 5 of its training patients; the test split is untouched.

Which patients: the first `count` of a seeded permutation of the modality's training
patients with labelled slices (sorted by id). The draw's seed is fixed per modality,
independent of the run's --seed and method, so that every seed and every setting of a
study trains on the same patients (seed-to-seed spread is then training noise alone, as
in the challenge, whose 5 labelled patients were fixed), and draws nest: the patients of
lge:3 are among those of lge:5.
"""
import zlib
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from csa_tf.configs.options import ConfigError
from csa_tf.data.prepared import PreparedDataset

# The draw's base seed; each modality's seed adds the CRC-32 of its name (stable across
# processes, unlike hash()).
_DRAW_SEED = 14


def draw_patients(patient_ids: Sequence[str], count: int, modality: str) -> List[str]:
  """The `count` patients of `modality` the draw keeps (see the module docstring).

  Args:
    patient_ids: the modality's labelled training patients.
    count: how many to keep, 1 <= count <= len(patient_ids).
    modality: the modality key (seeds the draw).

  Returns:
    The kept ids, sorted.
  """
  ids = sorted(set(patient_ids))
  rng = np.random.default_rng([_DRAW_SEED, zlib.crc32(modality.encode("utf-8"))])
  order = rng.permutation(len(ids))
  return sorted(ids[i] for i in order[:count])


def labelled_train_patients(prepared: PreparedDataset, modality: str) -> List[str]:
  """The training patients of `modality` that have labelled slices, in id order."""
  return [entry.patient_id for entry in prepared.entries_for("train", modality)
          if entry.num_labelled_slices > 0]


def train_patients(prepared: PreparedDataset, modalities: Sequence[str],
                   counts: Mapping[str, int]) -> Optional[Dict[str, List[str]]]:
  """{modality: the training patients it trains on}, or None when nothing is restricted.

  Args:
    prepared: the opened PREP.
    modalities: the run's modalities.
    counts: {modality: count} of `TrainConfig.labelled_train_patients`; modalities not
      in it train on every training patient.

  Raises:
    ConfigError: a count larger than the modality's labelled training patients, or a
      modality the run does not train (both name labelled_train_patients).
  """
  if not counts:
    return None
  out = {}
  for modality, count in counts.items():
    if modality not in modalities:
      raise ConfigError("{labelled_train_patients}: {modality} is not a modality of "
                        "this run ({run})", "labelled_train_patients",
                        modality=repr(modality), run=", ".join(modalities))
  for modality in modalities:
    if modality not in counts:
      out[modality] = prepared.patients("train", [modality])[modality]
      continue
    labelled = labelled_train_patients(prepared, modality)
    if counts[modality] > len(labelled):
      raise ConfigError(
          "{labelled_train_patients}: {modality}:{count} asks for {count} patients, but "
          "{prep} has {available} labelled {modality} training patients",
          "labelled_train_patients", modality=modality, count=counts[modality],
          prep=prepared.prep_dir, available=len(labelled))
    out[modality] = draw_patients(labelled, counts[modality], modality)
  return out
