"""Loss-balance diagnostics: how hard each term of Eq. 5 pulls on the shared kernels.

For every loss term t as weighted in paper Eq. 5 (alpha * Dice_m, beta * CE_m,
lambda * L_extra, L2), `grad_norm_<t>` is the global norm of d(weight_t * t) / dW over the
conv kernels W shared across modalities. In every shared setting (UMMKD, Joint, MSBN,
Affinity, CSA) all conv kernels are shared (only BN differs, REFERENCE.md section 1), so W
is every conv kernel; BN parameters are left out. "Single" shares none: W is then every
network's own kernels together, so a modality's Dice and CE norms are those over its own
network (the other network's gradient is zero) and the L2 norm is over both networks.

The ratio grad_norm_csa / grad_norm_dice_<m> says whether lambda gives the CSA term a
say in training (REFERENCE.md section 2b: ~3e-7 at the paper's width with
csa_area_norm=count).

`csa_tf.train --log_term_gradients` computes them in the training step of log steps only
(csa_tf/training/trainer.py), from the same forward pass as the step's own gradient.
"""
from typing import Callable, Dict, Optional, Sequence

import tensorflow as tf

from csa_tf.configs.train_config import TrainConfig
from csa_tf.model.bundle import ModelBundle
from csa_tf.training import objective

# Output keys: PREFIX + term name ("grad_norm_dice_lge", "grad_norm_csa", ...).
PREFIX = "grad_norm_"


def norms_from_tape(tape: tf.GradientTape, terms: Dict[str, tf.Tensor],
                    config: TrainConfig, kernels: Sequence[tf.Variable], *,
                    factor=None, unscale=None,
                    reduce: Optional[Callable[[tf.Tensor], tf.Tensor]] = None
                    ) -> Dict[str, tf.Tensor]:
  """The global gradient norm of each weighted term over `kernels`.

  Each term is differentiated with its Eq. 5 weight (times `factor`) as the seed of the
  backward pass (`output_gradients`), which is d(weight * factor * term)/dW without
  recording anything more on the tape, and keeps fp16 loss scaling inside the backward
  pass, where it guards against underflow.

  Args:
    tape: a persistent tape that recorded the forward pass and the terms.
    terms: the loss terms of `objective.losses_from_outputs` (other keys, e.g. "total",
      are ignored).
    config: the run's config (the Eq. 5 weights).
    kernels: the variables the norm is taken over (`shared_kernels`).
    factor: a further scalar factor on every term, as the step's own loss has it: 1/R
      on R replicas, times the fp16 loss scale; None: 1.
    unscale: the norms are divided by it (the fp16 loss scale); None: 1.
    reduce: applied to each gradient before the norm (the cross-replica sum under
      tf.distribute, so that the norm is the global batch's).

  Returns:
    {PREFIX + term: float32 scalar} for every term of Eq. 5 (`objective.term_names`).
  """
  out = {}
  for name in objective.term_names(config):
    term = terms[name]
    seed = tf.constant(objective.term_weight(name, config), term.dtype)
    if factor is not None:
      seed = seed * tf.cast(factor, term.dtype)
    # None for a kernel the term does not reach ("single": the other network's).
    gradients = [g for g in tape.gradient(term, kernels, output_gradients=seed)
                 if g is not None]
    if reduce is not None:
      gradients = [reduce(g) for g in gradients]
    norm = (tf.cast(tf.linalg.global_norm(gradients), tf.float32) if gradients
            else tf.constant(0.0))
    if unscale is not None:
      norm = norm / tf.cast(unscale, tf.float32)
    out[PREFIX + name] = norm
  return out


def shared_kernels(bundle: ModelBundle) -> list:
  """The kernels the norms are taken over (see the module docstring): every conv kernel
  of every network of the bundle, BN parameters excluded."""
  return bundle.conv_kernels


def term_gradient_norms(bundle: ModelBundle, batches, config: TrainConfig, *,
                        training: bool = True) -> Dict[str, tf.Tensor]:
  """The diagnostics of one batch on a single device, from one forward pass.

  Args:
    bundle: the networks (their current weights).
    batches: {modality: (images [B, H, W, C_in], labels [B, H, W])}.
    config: the run's config.
    training: forward in training mode (batch BN statistics and dropout, as a training
      step; the BN moving statistics move as in a step).

  Returns:
    {PREFIX + term: float32 scalar}, e.g. grad_norm_dice_lge, grad_norm_ce_lge,
    grad_norm_csa, grad_norm_l2.
  """
  with tf.GradientTape(persistent=True) as tape:
    _, terms = objective.compute_losses(bundle, batches, config, training=training)
  try:
    return norms_from_tape(tape, terms, config, shared_kernels(bundle))
  finally:
    del tape
