"""Whether a run is evaluated on another release of the cohort it was trained on.

MS-CMRSeg 2019 and MyoPS 2020 come from one group's 45-patient cohort
(datasets.RELEASES); no public source says whether their patients are the same, so a run
trained on one and tested on the other may be tested on its own training patients under
other ids. csa_tf cannot tell, so evaluation says so (summary.json
"cross_release_warning") instead of refusing.
"""
from typing import Optional

from csa_tf.configs import datasets
from csa_tf.errors import CsaInputError
from csa_tf.data.prepared import PreparedDataset
from csa_tf.io.run_dir import RunDir


def release_warning(trained: Optional[str], evaluated: str) -> Optional[str]:
  """The warning for a run trained on release `trained`, evaluated on `evaluated`.

  Args:
    trained, evaluated: datasets.RELEASES keys; trained None when not known.

  Returns:
    One line, or None when the releases are the same, either is not known, or their
    cohorts differ.
  """
  first, second = datasets.RELEASES.get(trained), datasets.RELEASES.get(evaluated)
  if first is None or second is None or first is second or first.cohort != second.cohort:
    return None
  return (f"cross-release evaluation: the run was trained on {first.title} and is "
          f"evaluated on {second.title}, both from the {first.cohort}; their patients may "
          "be the same under other ids, so test patients may be training patients and "
          "the scores may be optimistic")


def trained_release(run: RunDir) -> Optional[str]:
  """The release the run was trained on: from its training_data.json, else (runs made
  before it recorded one) from the PREP it names when still there; None if unknown."""
  record = run.read_training_data() or {}
  if record.get("release"):
    return record["release"]
  try:
    return PreparedDataset.open(record.get("data_dir") or run.config.data_dir).release
  except CsaInputError:
    return None


def cross_release_warning(run: RunDir, prepared: PreparedDataset) -> Optional[str]:
  """`release_warning` for evaluating `run` on `prepared`."""
  return release_warning(trained_release(run), prepared.release)
