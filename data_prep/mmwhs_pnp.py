r"""Converts the community's preprocessed MM-WHS release (PnP-AdaNet/SIFA) to PREP.

  python -m data_prep.mmwhs_pnp --pnp_dir=DIR --output_dir=PREP [--overwrite]

The release (REFERENCE.md section 5), searched recursively under DIR:
  * training slices: one TFRecord file per slice (`*.tfrecords` or `*.tfrecord`) holding
    one `tf.train.Example` with int64 `dsize_dim0..2`, `lsize_dim0..2` and bytes
    `data_vol`, `label_vol`: raw little-endian float32 arrays of dsize (image) and lsize
    (label), C order, normally 256x256x3 (three adjacent slices; the slice's own image and
    label are the middle channel). Labels: 0 background, 1 LVM, 2 LAC, 3 LVC, 4 AA,
    5 ignore.
  * test volumes: `*.npz` with `arr_0` (image) and `arr_1` (label), 256x256xN, slices
    along axis 2, flipped on axes 0 and 1 relative to the TFRecords.
The modality of every file is read from its path below DIR: a `ct` or `mr` token that
starts the path or follows `_`, `/` or `.`, and is not followed by a letter (e.g.
`ct_train_tfs/ct_train_slice100.tfrecords`, `test/image_mr_1003.npz`). A path with both
tokens or neither is an error. Any other file is ignored. DIR is only read.

What the conversion writes (the PREP format of csa_tf.data.prepared):
  * each modality's TFRecords become ONE training pseudo-volume `<modality>_pnp_train`
    (e.g. "ct_pnp_train"): the middle image channel of every file, stacked in natural sort
    order of the file paths (slice2 before slice10), each slice z-scored on its own. Its
    geometry is the identity: original_shape (256, 256, N), slices along axis 2, crop
    origin (0, 0), crop size 256. The release has no headers, so spacing is (1, 1, 1) and
    the affine the identity. TFRecords from validation folders (e.g. `ct_val_tfs`), if
    present, are training slices too: PREP has no validation split.
  * each test npz becomes one test volume `<modality>_<number>` from the last digit run
    of its file name (`image_ct_1003.npz` -> "ct_1003"; a name without digits keeps its
    stem). The flips are undone so that its slices have the TFRecords' orientation; the
    flip is recorded in the geometry's `ornt` (axes 0 and 1 flipped), so
    `PreparedVolume.original_label` is on the npz's own grid. NIfTI files (some copies
    of the release ship test volumes as `image_ct_1003.nii.gz` + `gth_ct_1003.nii.gz`)
    are not read; the summary counts them.
  * splits.json: train = the pseudo-volumes, test = the npz volumes (the release's own
    split; settings record test_fraction 0.0 and seed 0, which nothing here uses).

Deviation from the release: csa_tf has no ignore label, so label 5 ("ignore") is mapped
to background (0) in training and test volumes alike; the summary says how many voxels.
Labels 1..4 are csa_tf's MM-WHS classes (datasets.MMWHS: LVM, LAC, LVC, AA).
"""
from absl import flags

from csa_tf import cli
from csa_tf.data.mmwhs_pnp import prepare_pnp

FLAGS = flags.FLAGS


def define_flags():
  """Defines this command's flags (only when run as a command, never on import)."""
  flags.DEFINE_string("pnp_dir", None,
                      "Folder holding the preprocessed MM-WHS release of PnP-AdaNet/SIFA "
                      "(TFRecord training slices, npz test volumes).")
  flags.DEFINE_string("output_dir", None, "Where to write the prepared data (PREP).")
  flags.DEFINE_bool("overwrite", False, "Replace an existing preparation in --output_dir.")


def main(argv):
  del argv
  summary = prepare_pnp(FLAGS.pnp_dir, FLAGS.output_dir, overwrite=FLAGS.overwrite)
  print(summary, end="")
  print(f"prepared data written to {FLAGS.output_dir}")


if __name__ == "__main__":
  cli.run(main, define_flags, required=("pnp_dir", "output_dir"), tensorflow=True)
