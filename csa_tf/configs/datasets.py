"""What each supported dataset is: classes, raw label values, modalities, crop size.

REFERENCE.md section 5 pins these. Everything that needs a label value or a modality name
reads it from a `DatasetSpec` here rather than repeating the numbers.
"""
import dataclasses
from typing import Dict, FrozenSet, Tuple

from csa_tf.errors import CsaInputError


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """A dataset's label and modality conventions.

  Attributes:
    name: "mscmr" or "mmwhs".
    class_names: class names in class-index order, background first.
    label_values: the raw label value of each foreground class, in class order
      (class index i + 1 has raw value label_values[i]).
    known_raw_values: every value a released label volume may hold; values outside this
      set are an error. Raw values that are known but not a paper class map to background.
    raw_value_aliases: raw values read as another raw value (MM-WHS' stray 421 is 420).
    modalities: modality keys, in the order used everywhere.
    paper_modalities: the pair the paper trains on (Table 1: LGE + bSSFP; Tables 2-3:
      CT + MR), what csa_tf trains on and the demo generates unless told otherwise.
    default_crop_size: the paper's in-plane crop (pixels).
  """
  name: str
  class_names: Tuple[str, ...]
  label_values: Tuple[int, ...]
  known_raw_values: FrozenSet[int]
  raw_value_aliases: Dict[int, int]
  modalities: Tuple[str, ...]
  paper_modalities: Tuple[str, ...]
  default_crop_size: int

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  def foreground_names(self) -> Tuple[str, ...]:
    return self.class_names[1:]


MSCMR = DatasetSpec(
    name="mscmr",
    class_names=("background", "LV", "myo", "RV"),
    label_values=(500, 200, 600),
    known_raw_values=frozenset({0, 200, 500, 600}),
    raw_value_aliases={},
    modalities=("lge", "bssfp", "t2"),
    paper_modalities=("lge", "bssfp"),
    default_crop_size=224,
)

MMWHS = DatasetSpec(
    name="mmwhs",
    class_names=("background", "LVM", "LAC", "LVC", "AA"),
    label_values=(205, 420, 500, 820),
    known_raw_values=frozenset({0, 205, 420, 421, 500, 550, 600, 820, 850}),
    raw_value_aliases={421: 420},
    modalities=("ct", "mr"),
    paper_modalities=("ct", "mr"),
    default_crop_size=256,
)

# MS-CMRSeg's file-name tag of each modality (C0 is the bSSFP cine sequence).
MSCMR_SEQUENCE_TAGS = {"lge": "LGE", "bssfp": "C0", "t2": "T2"}

@dataclasses.dataclass(frozen=True)
class MscmrChallengeCopy:
  """MS-CMRSeg 2019 as released for the challenge (REFERENCE.md section 5b).

  Attributes:
    root: the release's top folder.
    image_folder: the folder of every patient's images patientN_{C0,LGE,T2}.nii.gz.
    label_folders: {modality: the folder of its patientN_<TAG>_manual.nii.gz labels}.
    num_patients: patients 1..num_patients have images.
    labelled_patients: {modality: patients 1..N of it have labels} (the others were
      the challenge's test set).
  """
  root: str
  image_folder: str
  label_folders: Dict[str, str]
  num_patients: int
  labelled_patients: Dict[str, int]


MSCMR_CHALLENGE = MscmrChallengeCopy(
    root="C0LET2_nii45_for_challenge19",
    image_folder="c0t2lge",
    label_folders={"lge": "lgegt", "bssfp": "c0gt", "t2": "t2gt"},
    num_patients=45,
    labelled_patients={"lge": 5, "bssfp": 35, "t2": 35},
)


# MyoPS 2020 holds MS-CMRSeg's classes and sequences (REFERENCE.md section 5b): its PREP is
# an "mscmr" PREP, so runs move between the two releases. Its one label per patient adds
# two pathology values inside the myocardium, read as normal myocardium (200):
# 1220 edema, 2221 scar.
MYOPS_LABELS = dataclasses.replace(
    MSCMR, known_raw_values=MSCMR.known_raw_values | {1220, 2221},
    raw_value_aliases={1220: 200, 2221: 200})
# MyoPS' file-name tag of each modality (DE, delayed enhancement, is LGE).
MYOPS_SEQUENCE_TAGS = {"lge": "DE", "bssfp": "C0", "t2": "T2"}


@dataclasses.dataclass(frozen=True)
class Release:
  """One distribution of a dataset's scans, recorded in PREP (prep_meta.json "release").

  Attributes:
    name: the key PREP records, e.g. "myops2020".
    title: how people call it, e.g. "MyoPS 2020".
    dataset: the DatasetSpec name its PREP holds.
    cohort: releases with the same cohort may hold the same patients under other ids,
      so a run trained on one and tested on the other may be tested on its training
      patients (csa_tf/evaluation/cross_release.py warns).
  """
  name: str
  title: str
  dataset: str
  cohort: str


# Both come from X. Zhuang's group, 45 patients with bSSFP, LGE and T2 each; no public
# source found states whether they are the same patients (README "Data").
_ZHUANG_CMR = "Zhuang group's 45-patient multi-sequence CMR cohort"
MYOPS2020 = Release("myops2020", "MyoPS 2020", "mscmr", _ZHUANG_CMR)
RELEASES = {release.name: release for release in (
    Release("mscmr2019", "MS-CMRSeg 2019", "mscmr", _ZHUANG_CMR),
    MYOPS2020,
    Release("mmwhs2017", "MM-WHS 2017", "mmwhs", "MM-WHS 2017"),
)}
# The release of a PREP that records none (made before releases were recorded, or by
# data_prep.mscmr / data_prep.mmwhs).
DEFAULT_RELEASE = {"mscmr": "mscmr2019", "mmwhs": "mmwhs2017"}

_SPECS = {spec.name: spec for spec in (MSCMR, MMWHS)}
# The supported datasets' names, e.g. the choices of a --dataset flag.
DATASETS = tuple(_SPECS)


def get_spec(name: str) -> DatasetSpec:
  """Returns the spec of dataset `name`.

  Raises:
    CsaInputError: `name` is not a supported dataset.
  """
  try:
    return _SPECS[name]
  except KeyError:
    raise CsaInputError(
        f"unknown dataset {name!r}; expected one of {sorted(_SPECS)}") from None
