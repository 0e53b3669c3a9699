"""The training loss of paper Eq. 5 for every setting of Tables 1-3.

  L = alpha * sum_m Dice_m + beta * sum_m CE_m + lambda * L_extra + L2

L_extra is UMMKD's KD loss, the affinity loss or the CSA loss, averaged over modality
pairs when there are more than two modalities (REFERENCE.md sections 2-3).
"""
import itertools
from typing import Dict, Tuple

import tensorflow as tf

from csa_tf import losses
from csa_tf.config import TrainConfig
from csa_tf.model_bundle import ModelBundle


def forward(bundle: ModelBundle, batches, config: TrainConfig, *, training: bool):
  """Runs each modality's batch through its network and BN set.

  Args:
    batches: {modality: (images [B, H, W, C_in], labels [B, H, W])}.

  Returns:
    (logits, features): dicts keyed by modality; features hold the CSA layer taps (empty
    unless the setting needs them), from the same forward pass as the logits.
  """
  spec = config.method_spec
  modalities = list(config.modalities)
  logits, features = {}, {}
  if spec.shared_bn:
    # "Joint": one network with one BN set trained on both modalities together, so the
    # BN statistics are those of the mixed batch.
    net = bundle.networks[modalities[0]]
    sizes = [tf.shape(batches[m][0])[0] for m in modalities]
    joint = net(tf.concat([batches[m][0] for m in modalities], axis=0),
                modality=modalities[0], training=training)
    logits = dict(zip(modalities, tf.split(joint, sizes, axis=0)))
    return logits, features
  need_features = spec.extra_loss in ("csa", "affinity")
  for modality in modalities:
    net = bundle.networks[modality]
    images = batches[modality][0]
    if need_features:
      logits[modality], taps = net.call_with_features(images, modality=modality,
                                                      training=training)
      wanted = {name for pair in config.csa_pairs for name in pair}
      features[modality] = {name: taps[name] for name in wanted}
    else:
      logits[modality] = net(images, modality=modality, training=training)
  return logits, features


def compute_losses(bundle: ModelBundle, batches, config: TrainConfig, *,
                   training: bool = True) -> Tuple[tf.Tensor, Dict[str, tf.Tensor]]:
  """The total loss of Eq. 5 and each of its terms (float32 scalars).

  Returns:
    (total, terms) with terms "dice_<m>", "ce_<m>" per modality, the extra term under its
    name ("kd", "affinity" or "csa") when the setting has one, and "l2".
  """
  spec = config.method_spec
  modalities = list(config.modalities)
  logits, features = forward(bundle, batches, config, training=training)
  terms = {}
  for modality in modalities:
    labels = batches[modality][1]
    probs = tf.nn.softmax(tf.cast(logits[modality], tf.float32), axis=-1)
    terms[f"dice_{modality}"] = losses.dice_loss(probs, labels,
                                                 num_classes=config.num_classes)
    terms[f"ce_{modality}"] = losses.weighted_ce_loss(probs, labels,
                                                      num_classes=config.num_classes)
  total = (config.alpha * tf.add_n([terms[f"dice_{m}"] for m in modalities])
           + config.beta * tf.add_n([terms[f"ce_{m}"] for m in modalities]))
  if spec.extra_loss is not None:
    pair_losses = []
    for a, b in itertools.combinations(modalities, 2):
      if spec.extra_loss == "kd":
        pair_losses.append(losses.kd_loss(
            logits[a], batches[a][1], logits[b], batches[b][1],
            num_classes=config.num_classes, temperature=config.kd_temperature))
      else:
        pair_losses.append(losses.csa_pairs_loss(
            features[a], batches[a][1], features[b], batches[b][1], config.csa_pairs,
            num_classes=config.num_classes, area_norm=config.csa_area_norm,
            reduction=config.csa_reduction,
            class_specific=spec.extra_loss == "csa"))
    terms[spec.extra_loss] = tf.add_n(pair_losses) / len(pair_losses)
    total += config.lam * terms[spec.extra_loss]
  terms["l2"] = losses.l2_loss(bundle.conv_kernels, weight=config.l2_weight)
  total += terms["l2"]
  return total, terms
