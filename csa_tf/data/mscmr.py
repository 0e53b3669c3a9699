"""MS-CMRSeg 2019 as released -> PREP (REFERENCE.md section 5; paper Sec. 3).

`prepare_mscmr` is what `python -m data_prep.mscmr` runs (its docstring says what the
command reads and writes). This module only finds the files and names the label values;
the shared work is csa_tf.data.preparation.
"""
import functools
import re


from csa_tf.configs import datasets
from csa_tf.errors import CsaInputError, param
from csa_tf.io.nifti import read_volume
from csa_tf.data.slicing import ORIENTATION_HEADER, short_axis_ornt
from csa_tf.data import discovery
from csa_tf.data import preparation



_FILE_PATTERN = re.compile(r"patient(\d+)_(C0|LGE|T2)(_manual)?\.nii(?:\.gz)?")


def prepare_mscmr(raw_dir: str, output_dir: str, *,
                  modalities=datasets.MSCMR.paper_modalities, crop_size: int = 224,
                  test_fraction: float = 0.2, seed: int = 0, overwrite: bool = False) -> str:
  """Prepares the release under raw_dir into output_dir; returns the summary text.

  Raises:
    CsaInputError: bad settings, no matching files, an image without its label (or the
      reverse), a patient missing a requested modality, a label whose affine differs
      from its image's, or any bad volume.
  """
  spec = datasets.MSCMR
  preparation.check_common_flags(crop_size, test_fraction, raw_dir, output_dir)
  modalities = discovery.check_modalities(modalities, list(datasets.MSCMR_SEQUENCE_TAGS),
                                          "MS-CMRSeg")
  found = discovery.find_files(raw_dir, _FILE_PATTERN)
  tags = {datasets.MSCMR_SEQUENCE_TAGS[m]: m for m in modalities}
  images = {(int(n), tags[tag]): path for (n, tag, manual), path in found.items()
            if tag in tags and not manual}
  labels = {(int(n), tags[tag]): path for (n, tag, manual), path in found.items()
            if tag in tags and manual}
  if not images and not labels:
    raise CsaInputError(
        f"{raw_dir}: no MS-CMRSeg files (patientN_{{C0,LGE,T2}}[_manual].nii.gz) for "
        f"modalities {','.join(modalities)}")
  tag_of = datasets.MSCMR_SEQUENCE_TAGS
  discovery.check_pairs(
      images, labels, label_word="manual label",
      image_name=lambda key: f"patient{key[0]}_{tag_of[key[1]]}.nii.gz",
      label_name=lambda key: f"patient{key[0]}_{tag_of[key[1]]}_manual.nii.gz")
  patients = sorted({n for n, _ in images})
  for n in patients:
    for modality in modalities:
      if (n, modality) not in images:
        raise CsaInputError(
            f"{raw_dir}: patient{n} has no {modality} "
            f"({datasets.MSCMR_SEQUENCE_TAGS[modality]}) image; prepare with "
            f"{param('modalities')} not including {modality} or add the file")

  def load(n, modality):
    image = read_volume(images[(n, modality)], kind="image")
    label = read_volume(labels[(n, modality)], kind="label")
    preparation.check_same_grid(image, label)
    return image, label, modality, f"patient{n}", short_axis_ornt(image.affine)

  jobs = [functools.partial(load, n, m) for m in modalities for n in patients]
  settings = dict(crop_size=crop_size, test_fraction=test_fraction, seed=seed,
                  raw_dir=raw_dir, modalities=modalities, orientation=ORIENTATION_HEADER)
  return preparation.run_preparation(output_dir, spec=spec, settings=settings,
                                     overwrite=overwrite, jobs=jobs,
                                     modalities=modalities)
