"""Patient-level train/test splits of a PREP (REFERENCE.md section 5: 80/20 by patient,
seeded), also for releases whose modalities are labelled for different patients."""
from typing import Dict, List, Sequence, Tuple

import numpy as np


def seeded_patient_split(patient_ids: Sequence[str], *, test_fraction: float,
                         seed: int) -> Dict[str, List[str]]:
  """Splits patients (not slices) into train and test with a seeded permutation.

  At least one patient goes to each side when there are two or more and the fraction
  is strictly between 0 and 1.
  """
  ids = sorted(set(patient_ids))
  order = np.random.default_rng(seed).permutation(len(ids))
  num_test = int(round(test_fraction * len(ids)))
  if len(ids) >= 2 and 0 < test_fraction < 1:
    num_test = min(max(num_test, 1), len(ids) - 1)
  test = sorted(ids[i] for i in order[:num_test])
  train = sorted(ids[i] for i in order[num_test:])
  return {"train": train, "test": test}


def split_by_labelled_modalities(modalities_of: Dict[str, Sequence[str]], *,
                                 test_fraction: float, seed: int) -> Dict[str, List[str]]:
  """Splits patients by patient id within groups of the same labelled modalities.

  Modalities are unpaired (a challenge-copy patient may have bSSFP labels and no LGE
  label), yet one patient must never train in one modality and test in another, so the
  split stays one list of patients. Patients are grouped by the set of modalities they
  have labelled volumes of, and each group is split by `seeded_patient_split` with the
  same seed, so each group keeps its share of test patients. When every patient has
  every modality (the full release) there is one group and the split is exactly
  `seeded_patient_split` of all patients.

  A modality with two or more labelled patients but none in test (its patients spread
  over groups of one) then gets one: the first of its training patients, in a seeded
  order, whose move leaves every modality of that patient a training patient.

  Args:
    modalities_of: {patient id: the modalities it has labelled volumes of}.
    test_fraction, seed: as for `seeded_patient_split`.

  Returns:
    {"train": sorted ids, "test": sorted ids}.
  """
  groups: Dict[Tuple[str, ...], List[str]] = {}
  for patient_id, modalities in modalities_of.items():
    groups.setdefault(tuple(sorted(set(modalities))), []).append(patient_id)
  train: List[str] = []
  test: List[str] = []
  for key in sorted(groups):
    part = seeded_patient_split(groups[key], test_fraction=test_fraction, seed=seed)
    train += part["train"]
    test += part["test"]
  if 0 < test_fraction < 1:
    rng = np.random.default_rng(seed)
    patients_of = {m: sorted(p for p, ms in modalities_of.items() if m in ms)
                   for ms in modalities_of.values() for m in ms}
    for modality, labelled in sorted(patients_of.items()):
      if len(labelled) < 2 or set(labelled) & set(test):
        continue
      for index in rng.permutation(len(labelled)):
        candidate = labelled[index]
        if all(set(patients_of[m]) & (set(train) - {candidate})
               for m in modalities_of[candidate]):
          train.remove(candidate)
          test.append(candidate)
          break
  return {"train": sorted(train), "test": sorted(test)}


def split_shortfalls(modalities_of: Dict[str, Sequence[str]],
                     splits: Dict[str, List[str]], *, test_fraction: float) -> List[str]:
  """Warning lines for modalities with fewer test patients than test_fraction asks.

  A modality's share is round(test_fraction * labelled patients), at least one when the
  fraction is above 0 (a modality with one labelled patient trains on it and is tested
  on none).
  """
  if test_fraction <= 0:
    return []
  test = set(splits["test"])
  lines = []
  for modality in sorted({m for ms in modalities_of.values() for m in ms}):
    labelled = [p for p, ms in modalities_of.items() if modality in ms]
    tested = len(test.intersection(labelled))
    asked = max(1, int(round(test_fraction * len(labelled))))
    if tested < asked:
      consequence = (": it cannot be evaluated on this PREP" if not tested else
                     " (the split is drawn within groups of patients with the same "
                     "labelled modalities)")
      lines.append(f"warning: {modality}: {tested} of {len(labelled)} labelled patients "
                   f"in the test split, fewer than test fraction {test_fraction:g} asks "
                   f"({asked}){consequence}")
  return lines
