"""Floating-point operations of a CsaNet forward pass, counted from its layers.

Convolutions are the network's work: 2 FLOPs per multiply-add, as TensorFlow's profiler
counts them (REFERENCE.md section 1 derives 59.6 GFLOP per 224x224 slice for the
paper's network this way). Everything else (BN, leaky ReLU, the residual adds, pooling,
padding, depth_to_space) is elementwise and adds well under 1% at the paper's size
(measured against the profiler in tests/flops_test.py), so it is not counted.

A training step costs about 3 forward passes per image: the backward pass of a
convolution computes the gradients of its input and of its kernel, each as many
multiply-adds as the forward pass.
"""
from typing import Dict

import keras

from csa_tf.configs.downsampling import DOWNSAMPLE

# Forward + backward of a convolution, in forward passes (see the module docstring).
TRAINING_PASSES = 3
# The paper's network and slice (REFERENCE.md section 1): feature_base 16, 224x224,
# 4 classes (background, LV, myocardium, RV), one input channel.
PAPER_NETWORK = dict(feature_base=16, num_classes=4, in_channels=1, size=224)


def _output_divisor(top_level_name: str, net) -> int:
  """Spatial divisor of the outputs of the convs under the top-level layer
  `top_level_name` (e.g. "g3_rb2" -> 4)."""
  if top_level_name == "out_conv":
    return 1
  if top_level_name == "g10_conv":
    # A valid 3x3 conv on g9's output padded by 1: the H/8 grid.
    return DOWNSAMPLE
  group = top_level_name.split("_")[0]
  return net.feature_specs(net.feature_base)[group][0]


def conv_flops(net, height: int, width: int) -> Dict[str, int]:
  """{conv layer name: FLOPs of one image's forward pass} in forward order.

  FLOPs of a conv = 2 * output pixels * kernel height * kernel width * in * out
  channels (bias-free convs; dilation changes no count).

  Args:
    net: a built `CsaNet`.
    height, width: the input image's size (multiples of 8).

  Returns:
    One entry per Conv2D, keyed "<top-level layer>/<conv name>", e.g.
    "g3_rb1/unit1/conv".
  """
  counts: Dict[str, int] = {}
  # pylint: disable-next=protected-access
  for top in net._flatten_layers(include_self=False, recursive=False):
    if isinstance(top, keras.layers.Conv2D):
      convs = {top.name: top}
    else:
      # pylint: disable-next=protected-access
      convs = {f"{top.name}/{layer.path.split(top.name + '/', 1)[-1]}": layer
               for layer in top._flatten_layers(include_self=False)
               if isinstance(layer, keras.layers.Conv2D)}
    if not convs:
      continue
    divisor = _output_divisor(top.name, net)
    pixels = (height // divisor) * (width // divisor)
    for key, conv in convs.items():
      kh, kw, cin, cout = (int(d) for d in conv.kernel.shape)
      counts[key] = 2 * pixels * kh * kw * cin * cout
  return counts


def forward_flops_per_image(net, height: int, width: int) -> int:
  """Total conv FLOPs of one image's forward pass (see `conv_flops`)."""
  return sum(conv_flops(net, height, width).values())


def training_step_flops(net, height: int, width: int, *, images_per_step: int) -> int:
  """FLOPs of one training step: forward + backward of `images_per_step` images
  (batch size x modalities), TRAINING_PASSES forward passes each."""
  return TRAINING_PASSES * images_per_step * forward_flops_per_image(net, height, width)


def paper_network_gflops_per_image() -> float:
  """Forward GFLOPs of the paper's network on one 224x224 slice (59.6)."""
  from csa_tf.model.csa_net import CsaNet  # pylint: disable=g-import-not-at-top
  spec = PAPER_NETWORK
  net = CsaNet(spec["num_classes"], ["lge"], feature_base=spec["feature_base"],
               in_channels=spec["in_channels"])
  net.build((None, spec["size"], spec["size"], spec["in_channels"]))
  return forward_flops_per_image(net, spec["size"], spec["size"]) / 1e9
