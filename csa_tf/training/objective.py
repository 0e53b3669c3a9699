"""The training loss of paper Eq. 5 for every setting of Tables 1-3.

  L = alpha * sum_m Dice_m + beta * sum_m CE_m + lambda * L_extra + L2

L_extra is UMMKD's KD loss, the affinity loss or the CSA loss, averaged over modality
pairs when there are more than two modalities (REFERENCE.md sections 2-3).

Under tf.distribute, `batch_sum` all-reduces every batch sum inside the losses, so each
replica computes the loss of the global batch (see csa_tf/training/distribution.py).
"""
import itertools
from typing import Dict, Tuple

import tensorflow as tf

from csa_tf import losses
from csa_tf.configs.train_config import TrainConfig
from csa_tf.losses import BatchSum
from csa_tf.model.bundle import ModelBundle


def forward(bundle: ModelBundle, batches, config: TrainConfig, *, training: bool,
            with_features: bool = False):
  """Runs each modality's batch through its network and BN set.

  Args:
    batches: {modality: (images [B, H, W, C_in], labels [B, H, W])}.
    with_features: return the CSA layer taps even when the setting does not use them
      (for image summaries).

  Returns:
    (logits, features): dicts keyed by modality; features hold the CSA layer taps (empty
    unless the setting needs them or with_features), from the same forward pass as the
    logits.
  """
  spec = config.method_spec
  modalities = list(config.modalities)
  wanted = {name for pair in config.csa_pairs for name in pair}
  logits, features = {}, {}
  if spec.shared_bn and config.joint_bn == "separate":
    # "Joint": one network with one BN set, each modality's batch in its own forward
    # pass (REFERENCE.md section 1): BN normalises with that batch's statistics.
    shared = bundle.networks[modalities[0]]
    for name in modalities:
      if with_features and wanted:
        logits[name], taps = shared.call_with_features(
            batches[name][0], modality=modalities[0], training=training)
        features[name] = {tap: taps[tap] for tap in wanted}
      else:
        logits[name] = shared(batches[name][0], modality=modalities[0], training=training)
    return logits, features
  if spec.shared_bn:
    # "Joint" with joint_bn="concat": both batches in one forward pass, so the BN
    # statistics are those of the mixed batch.
    net = bundle.networks[modalities[0]]
    sizes = [tf.shape(batches[m][0])[0] for m in modalities]
    joint_images = tf.concat([batches[m][0] for m in modalities], axis=0)
    if with_features and wanted:
      joint, taps = net.call_with_features(joint_images, modality=modalities[0],
                                           training=training)
      split_taps = {name: tf.split(taps[name], sizes, axis=0) for name in wanted}
      features = {m: {name: split_taps[name][i] for name in wanted}
                  for i, m in enumerate(modalities)}
    else:
      joint = net(joint_images, modality=modalities[0], training=training)
    logits = dict(zip(modalities, tf.split(joint, sizes, axis=0)))
    return logits, features
  need_features = spec.extra_loss in ("csa", "affinity") or (with_features and wanted)
  for modality in modalities:
    net = bundle.networks[modality]
    images = batches[modality][0]
    if need_features:
      logits[modality], taps = net.call_with_features(images, modality=modality,
                                                      training=training)
      features[modality] = {name: taps[name] for name in wanted}
    else:
      logits[modality] = net(images, modality=modality, training=training)
  return logits, features


def compute_losses(bundle: ModelBundle, batches, config: TrainConfig, *,
                   training: bool = True,
                   batch_sum: BatchSum = None) -> Tuple[tf.Tensor, Dict[str, tf.Tensor]]:
  """The total loss of Eq. 5 and each of its terms (float32 scalars).

  Args:
    bundle: the networks.
    batches: {modality: (images [B, H, W, C_in], labels [B, H, W])}.
    config: the run's config.
    training: forward in training mode (batch statistics, dropout).
    batch_sum: applied to every batch sum inside the losses (a cross-replica all-reduce
      under tf.distribute); None: this batch only.

  Returns:
    (total, terms) with terms "dice_<m>", "ce_<m>" per modality, the extra term under its
    name ("kd", "affinity" or "csa") when the setting has one, and "l2".
  """
  logits, features = forward(bundle, batches, config, training=training)
  return losses_from_outputs(bundle, batches, logits, features, config,
                             batch_sum=batch_sum)


def losses_from_outputs(bundle: ModelBundle, batches, logits, features,
                        config: TrainConfig, *, batch_sum: BatchSum = None
                        ) -> Tuple[tf.Tensor, Dict[str, tf.Tensor]]:
  """`compute_losses` from the outputs of `forward` (see there)."""
  spec = config.method_spec
  modalities = list(config.modalities)
  # float32 losses for float32 and half-precision networks; float64 networks (used to
  # check distributed gradients to rounding) keep float64.
  dtype = (tf.float64 if any(v.dtype == tf.float64 for v in logits.values())
           else tf.float32)
  terms = {}
  for modality in modalities:
    labels = batches[modality][1]
    probs = tf.nn.softmax(tf.cast(logits[modality], dtype), axis=-1)
    terms[f"dice_{modality}"] = losses.dice_loss(probs, labels,
                                                 num_classes=config.num_classes,
                                                 batch_sum=batch_sum)
    terms[f"ce_{modality}"] = losses.weighted_ce_loss(probs, labels,
                                                      num_classes=config.num_classes,
                                                      batch_sum=batch_sum)
  total = (config.alpha * tf.add_n([terms[f"dice_{m}"] for m in modalities])
           + config.beta * tf.add_n([terms[f"ce_{m}"] for m in modalities]))
  if spec.extra_loss is not None:
    pair_losses = []
    for a, b in itertools.combinations(modalities, 2):
      if spec.extra_loss == "kd":
        pair_losses.append(losses.kd_loss(
            logits[a], batches[a][1], logits[b], batches[b][1],
            num_classes=config.num_classes, temperature=config.kd_temperature,
            batch_sum=batch_sum))
      else:
        pair_losses.append(losses.csa_pairs_loss(
            features[a], batches[a][1], features[b], batches[b][1], config.csa_pairs,
            num_classes=config.num_classes, area_norm=config.csa_area_norm,
            reduction=config.csa_reduction, affinity=config.csa_affinity,
            class_specific=spec.extra_loss == "csa", batch_sum=batch_sum))
    terms[spec.extra_loss] = tf.add_n(pair_losses) / len(pair_losses)
    total += config.lam * terms[spec.extra_loss]
  terms["l2"] = losses.l2_loss(bundle.conv_kernels, weight=config.l2_weight)
  total += terms["l2"]
  return total, terms


def term_names(config: TrainConfig) -> Tuple[str, ...]:
  """The terms `losses_from_outputs` returns, in Eq. 5's order: "dice_<m>", "ce_<m>"
  per modality, the extra term ("kd", "affinity" or "csa") when the setting has one, and
  "l2"."""
  names = [f"{kind}_{m}" for kind in ("dice", "ce") for m in config.modalities]
  if config.method_spec.extra_loss is not None:
    names.append(config.method_spec.extra_loss)
  return tuple(names) + ("l2",)


def term_weight(name: str, config: TrainConfig) -> float:
  """A term's weight in Eq. 5 as `losses_from_outputs` applies it: alpha for Dice, beta
  for CE, lambda for the extra term, 1 for L2 (whose weight is inside the term).

  Raises:
    KeyError: not a term of this config (see `term_names`).
  """
  if name not in term_names(config):
    raise KeyError(name)
  if name.startswith("dice_"):
    return config.alpha
  if name.startswith("ce_"):
    return config.beta
  return 1.0 if name == "l2" else config.lam
