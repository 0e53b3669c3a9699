"""Exports a trained run as one serving model (SavedModel, .keras, model.json) per modality.

`export_run` is what `python -m csa_tf.export` runs; that command's docstring describes
the exported signature and files. Each modality's folder is built as a staged folder and
renamed into place whole (csa_tf.io.atomic).
"""
import os
from typing import Callable, Dict

import tensorflow as tf

from csa_tf.configs import train_config as config_lib
from csa_tf.configs import datasets
from csa_tf.io import atomic
from csa_tf.io import run_record
from csa_tf.errors import CsaInputError, param
from csa_tf.io.run_dir import RunDir
from csa_tf.io.run_lock import RunLock
from csa_tf.model.csa_net import CsaNet
from csa_tf.configs.downsampling import DOWNSAMPLE

SAVED_MODEL_SUBDIR = "saved_model"
KERAS_FILE = "model.keras"
DESCRIPTION_FILE = "model.json"
# Everything an export folder DIR/<modality>/ holds.
EXPORT_ENTRIES = (SAVED_MODEL_SUBDIR, KERAS_FILE, DESCRIPTION_FILE)


def single_modality_network(bundle, modality: str):
  """A float32 CsaNet holding only `modality`'s BN set, with the bundle's weights.

  The shared convolutions and the modality's BN parameters and moving statistics are
  copied site by site (both networks list them in forward order).
  """
  source = bundle.networks[modality]
  net = CsaNet(source.num_classes, [modality], feature_base=source.feature_base,
               in_channels=source.in_channels, dropout_rate=source.dropout_rate,
               spatial_dims=source.spatial_dims, name=f"csa_net_{modality}")
  depth = [2] if source.spatial_dims == 3 else []
  net(tf.zeros([1] + depth + [8, 8, source.in_channels]), modality=modality,
      training=False)
  for target, kernel in zip(net.conv_kernels, source.conv_kernels, strict=True):
    target.assign(kernel)
  for target, site in zip(net.bn_layers(), source.bn_layers(), strict=True):
    for t, s in zip(target.bn_for(modality).weights, site.bn_for(modality).weights,
                    strict=True):
      t.assign(s)
  return net


def description(config: config_lib.TrainConfig, modality: str, checkpoint: str) -> dict:
  """What model.json says about one exported model."""
  spec = datasets.get_spec(config.dataset)
  versions = run_record.library_versions()
  if config.input_patch_depth:
    layout = ("NDHWC: batch, consecutive slices (trained on windows of "
              f"{config.patch_depth}; at least 2), height, width, 1")
    window = (f" A 3D network: feed windows of {config.patch_depth} consecutive slices; "
              "csa_tf.predict covers a volume with windows overlapping by half a window "
              "and averages the probabilities (csa_tf/data/patches.py).")
  else:
    layout, window = "NHWC: batch, height, width, adjacent slices", ""
  shape = [None] * (1 + config.spatial_dims) + [config.in_channels]
  return {
      "modality": modality,
      "dataset": config.dataset,
      "method": config.method,
      "inputs": {
          "name": "images", "dtype": "float32",
          "shape": shape,
          "layout": layout,
          "spatial_multiple": DOWNSAMPLE,
          "training_crop_size": config.crop_size,
      },
      "preprocessing": (
          "2D slices in the dataset's standard orientation (see csa_tf.data.slicing); each "
          "slice z-scored on its own: (x - mean) / std with mean and std over the slice's "
          "image pixels (padding, the volume's minimum, left out), and all zeros where "
          "std <= 1e-6 (csa_tf.data.slicing.VolumeGeometry.network_slices). Training used "
          "crops "
          f"of {config.crop_size} x {config.crop_size} around the heart; whole slices "
          f"padded to a multiple of {DOWNSAMPLE} also work (csa_tf.predict does that)."
          + window),
      "outputs": {
          "probabilities": "float32 [batch, (D,) H, W, num_classes], softmax over classes",
          "classes": "int32 [batch, (D,) H, W], argmax of probabilities",
      },
      "class_names": list(spec.class_names),
      "label_values": [0] + list(spec.label_values),
      "label_values_note": "class i is written as label_values[i] in the dataset's "
                           "label files",
      "batch_norm": f"{modality}'s moving statistics (inference mode)",
      "checkpoint": checkpoint,
      "tensorflow": tf.__version__,
      "csa_tf": versions.get("csa_tf"),
      "git_commit": versions.get("git_commit"),
  }


def export_run(model_dir: str, output_dir: str, *, overwrite: bool = False,
               log: Callable[[str], None] = print) -> Dict[str, str]:
  """Exports every modality of the run's latest checkpoint; returns {modality: folder}.

  Each DIR/M/ is built in a staged sibling folder and renamed into place whole (an old
  export is replaced only then), so a failure leaves the old export or none, never half
  of one.

  Raises:
    CsaInputError: model_dir is not a trained run, or an export exists and not
      overwrite (checked for every modality before anything is written), or the
      export goes into model_dir while another process writes there.
  """
  run = RunDir(model_dir)
  config = run.config
  folders = {m: os.path.join(output_dir, m) for m in config.modalities}
  for folder in folders.values():
    # A replace killed half-way is undone before the folder is judged.
    atomic.restore_interrupted_replace(folder)
    if os.path.lexists(folder) and not overwrite:
      raise CsaInputError(f"{folder}: exists; pass {param('overwrite', True)} to "
                          "replace it")
    if os.path.lexists(folder) and not os.path.isdir(folder):
      raise CsaInputError(f"{folder}: exists and is not a folder")
    entries = os.listdir(folder) if os.path.isdir(folder) else []
    if entries:
      # --overwrite replaces an export, never a folder of something else.
      foreign = sorted(set(entries) - set(EXPORT_ENTRIES))
      if foreign or DESCRIPTION_FILE not in entries:
        what = (f"holds files csa_tf did not make ({', '.join(foreign[:5])})" if foreign
                else f"is not a csa_tf export (no {DESCRIPTION_FILE})")
        raise CsaInputError(f"{folder}: {what}; {param('overwrite')} replaces only "
                            f"an export; move them out or choose another "
                            f"{param('output_dir')}")
  # An export inside the run folder writes into it: then its one writer.
  with RunLock.around_output(model_dir, output_dir, log=log):
    return _export(run, folders, log=log)


def _export(run: RunDir, folders: Dict[str, str], *,
            log: Callable[[str], None]) -> Dict[str, str]:
  """`export_run` after its checks: writes folders[modality] for every modality."""
  config = run.config
  bundle = run.networks()
  checkpoint = run.checkpoint_path
  written = {}
  for modality, folder in folders.items():
    net = single_modality_network(bundle, modality)
    module = _ServingModule(net, modality, [None] * (1 + config.spatial_dims)
                            + [config.in_channels])
    with atomic.StagedFolder(folder) as staged:
      tf.saved_model.save(module, os.path.join(staged.path, SAVED_MODEL_SUBDIR),
                          signatures={"serving_default": module.serve})
      net.save(os.path.join(staged.path, KERAS_FILE))
      atomic.write_json(os.path.join(staged.path, DESCRIPTION_FILE),
                        description(config, modality, os.path.basename(checkpoint)))
    log(f"exported {modality} to {folder}")
    written[modality] = folder
  return written


class _ServingModule(tf.Module):
  """The exported object: one network's variables and its signature.

  The network itself is not an attribute: Keras would add a default signature of its
  own to the SavedModel, traced without the modality keyword. Its variables are.
  """

  def __init__(self, net, modality: str, input_shape):
    super().__init__(name=f"csa_tf_{modality}")
    self.network_variables = [v.value for v in net.variables]

    def serve(images):
      logits = net(images, modality=modality, training=False)
      probabilities = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
      return {"probabilities": probabilities,
              "classes": tf.argmax(probabilities, axis=-1, output_type=tf.int32)}

    self.serve = tf.function(
        serve, input_signature=[tf.TensorSpec(input_shape, tf.float32, name="images")])
