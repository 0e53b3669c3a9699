"""Curated one-line bugs that the default suite must catch (`python -m tests.mutation_check`).

Each mutation replaces one exact piece of source (its anchor, which must occur exactly
once in its file) and names the test files, or pytest node ids, that should fail under
it. `tests/mutations_test.py` checks in the default suite that every anchor still
matches exactly once, so a later rewrite of the code cannot leave the check stale: it
fails there first, and the anchor is then moved to the rewritten line.

The first six are the bugs a mutation check planted by hand found surviving (issue 11);
the rest are the wrong readings of the paper and REFERENCE.md that are easiest to make.
"""
import dataclasses
from typing import Tuple


@dataclasses.dataclass(frozen=True)
class Mutation:
  """One deliberate bug.

  Attributes:
    name: a short identifier, printed by the check.
    path: the file to change, relative to the repository root.
    anchor: the exact source text to replace (occurs once in `path`).
    replacement: what replaces it.
    tests: pytest arguments (files or node ids) whose run must fail under the mutation.
    why: what the mutation gets wrong, in words.
  """
  name: str
  path: str
  anchor: str
  replacement: str
  tests: Tuple[str, ...]
  why: str


_OBJECTIVE = "csa_tf/training/objective.py"
_LOSSES = "csa_tf/losses.py"
_SLICING = "csa_tf/data/slicing.py"
_RECALIBRATION = "csa_tf/training/bn_recalibration.py"
_TRAINER_BN_TEST = ("tests/trainer_test.py::"
                    "test_train_step_moves_each_modality_bn_with_its_own_batch_only")

MUTATIONS: Tuple[Mutation, ...] = (
    Mutation(
        "affinity_class_specific", _OBJECTIVE,
        'class_specific=spec.extra_loss == "csa"', "class_specific=True",
        ("tests/objective_test.py",),
        "the Affinity baseline uses class masks, so it computes the CSA loss"),
    Mutation(
        "lambda_dropped", _OBJECTIVE,
        "total += config.lam * terms[spec.extra_loss]",
        "total += terms[spec.extra_loss]",
        ("tests/objective_test.py",),
        "Eq. 5 without lambda on the extra term"),
    Mutation(
        "bn_routed_to_first_modality", _OBJECTIVE,
        "logits[modality] = net(images, modality=modality, training=training)",
        "logits[modality] = net(images, modality=modalities[0], training=training)",
        ("tests/objective_test.py", _TRAINER_BN_TEST),
        "every modality goes through the first modality's BN set (MSBN, UMMKD, Single)"),
    Mutation(
        "bn_routed_to_first_modality_with_features", _OBJECTIVE,
        "logits[modality], taps = net.call_with_features(images, modality=modality,",
        "logits[modality], taps = net.call_with_features(images, modality=modalities[0],",
        ("tests/objective_test.py", _TRAINER_BN_TEST),
        "every modality goes through the first modality's BN set (CSA, Affinity)"),
    Mutation(
        "crop_centre_shifted", _SLICING,
        "start = (low + high + 1) // 2 - crop_size // 2",
        "start = (low + high + 1) // 2 - crop_size // 2 + 3",
        ("tests/slicing_test.py",),
        "the crop box is not centred on the heart's bounding box"),
    Mutation(
        "dice_eps_1e-6", _LOSSES, "_DICE_EPS = 1e-7", "_DICE_EPS = 1e-6",
        ("tests/constants_test.py", "tests/losses_test.py"),
        "Dice smoothing 1e-6 instead of UMMKD's 1e-7"),
    Mutation(
        "dice_eps_0", _LOSSES, "_DICE_EPS = 1e-7", "_DICE_EPS = 0.0",
        ("tests/constants_test.py", "tests/losses_test.py"),
        "Dice without smoothing"),
    Mutation(
        "alpha_on_ce", _OBJECTIVE,
        'total = (config.alpha * tf.add_n([terms[f"dice_{m}"]',
        'total = (config.beta * tf.add_n([terms[f"dice_{m}"]',
        ("tests/objective_test.py",),
        "Eq. 5's alpha and beta mixed up"),
    Mutation(
        "pairs_summed", _OBJECTIVE,
        "terms[spec.extra_loss] = tf.add_n(pair_losses) / len(pair_losses)",
        "terms[spec.extra_loss] = tf.add_n(pair_losses)",
        ("tests/objective_test.py",),
        "the extra term summed, not averaged, over modality pairs (REFERENCE.md s. 3)"),
    Mutation(
        "kd_default_temperature", _OBJECTIVE,
        "temperature=config.kd_temperature", "temperature=2.0",
        ("tests/objective_test.py",),
        "UMMKD's KD ignores --kd_temperature"),
    Mutation(
        "csa_fraction_at_label_resolution", _LOSSES,
        "area = counts / positions",
        "area = tf.reduce_sum(tf.one_hot(tf.reshape(labels, [-1]), num_classes, "
        "dtype=dtype), axis=0) / tf.cast(tf.size(labels), dtype)",
        ("tests/losses_test.py",),
        "the 'fraction' area counted on the full-size labels, not at feature resolution"),
    Mutation(
        "eq4_reduction_swapped", _LOSSES,
        'if reduction == "mean_then_square":', 'if reduction != "mean_then_square":',
        ("tests/losses_test.py",),
        "Eq. 4's two readings exchanged"),
    Mutation(
        "mask_resize_top_left", "csa_tf/feature_grid.py",
        'tf.image.resize(labels[..., None], (height, width),\n'
        '                         method="nearest")[..., 0]',
        "labels[:, ::labels.shape[1] // height, ::labels.shape[2] // width]",
        ("tests/losses_test.py", "tests/losses_3d_test.py"),
        "the CSA masks keep each block's top-left pixel, not its centre (REFERENCE.md s. 2)"),
    Mutation(
        "lr_decay_smooth", "csa_tf/training/trainer.py",
        "staircase=True", "staircase=False",
        ("tests/constants_test.py",),
        "the learning rate decays smoothly, not by 5% every 1000 steps (Sec. 3)"),
    Mutation(
        "zscore_per_volume", _SLICING,
        "mean = pixels.mean(axis=(1, 2), keepdims=True)",
        "mean = pixels.mean(axis=None, keepdims=True)",
        ("tests/slicing_test.py",),
        "slices centred on the volume's mean, not each on its own (Sec. 3)"),
    Mutation(
        "hd_vox_with_spacing", "csa_tf/metrics.py",
        "sets = threads.run_all(_directed_distances, ((pred_surface, gt_surface, None),",
        "sets = threads.run_all(_directed_distances, ((pred_surface, gt_surface, sampling),",
        ("tests/metrics_test.py",),
        "HD in voxels computed with the header spacing"),
    Mutation(
        "summary_without_spurious", "csa_tf/metrics.py",
        "included = ((STATUS_OK, STATUS_MISSED, STATUS_SPURIOUS) if key == \"dice\"",
        "included = ((STATUS_OK, STATUS_MISSED) if key == \"dice\"",
        ("tests/metrics_test.py",),
        "the summary's mean Dice leaves out spurious predictions"),
    Mutation(
        "bn_momentum_0.99", "csa_tf/model/modality_batch_norm.py",
        "momentum: float = 0.9,", "momentum: float = 0.99,",
        ("tests/constants_test.py",),
        "Keras' BN momentum instead of UMMKD's 0.9"),
    Mutation(
        "ce_clip_0.01", _LOSSES, "_CE_CLIP_MIN = 0.005", "_CE_CLIP_MIN = 0.01",
        ("tests/constants_test.py",),
        "cross-entropy clipped at 0.01 instead of UMMKD's 0.005"),
    Mutation(
        "leaky_slope_0.3", "csa_tf/model/pre_activation_conv.py",
        "LEAKY_SLOPE = 0.2", "LEAKY_SLOPE = 0.3",
        ("tests/constants_test.py",),
        "Keras' LeakyReLU slope instead of UMMKD's 0.2"),
    Mutation(
        "dropout_0.5", "csa_tf/configs/train_config.py",
        "0.25, check=options.in_interval(0, 1, low_open=False, high_open=True),",
        "0.5, check=options.in_interval(0, 1, low_open=False, high_open=True),",
        ("tests/constants_test.py",),
        "dropout 0.5 instead of the paper's keep_prob 0.75"),
    Mutation(
        "recalibration_with_dropout", _RECALIBRATION,
        "d.rate = 0.0", "d.rate = d.rate",
        ("tests/bn_recalibration_test.py",),
        "BN statistics re-estimated with dropout still on"),
    Mutation(
        "recalibration_averaged", _RECALIBRATION,
        "n.momentum = 0.0", "n.momentum = n.momentum",
        ("tests/bn_recalibration_test.py",),
        "BN statistics blended into the moving averages instead of re-estimated"),
    Mutation(
        "modality_bn_always_first", "csa_tf/model/modality_batch_norm.py",
        "return self.bn_for(modality)(x, training=training)",
        "return self.bn_for(self.modalities[0])(x, training=training)",
        ("tests/csa_net_test.py::test_convs_are_shared_and_bn_sites_are_per_modality",
         "tests/modality_batch_norm_test.py"),
        "one BN set for every modality: MSBN collapses to Joint"),
    Mutation(
        "evaluation_in_voxels", "csa_tf/evaluation/evaluator.py",
        "spec.num_classes, volume.spacing))",
        "spec.num_classes, 1.0))",
        ("tests/cli_test.py::test_evaluate_writes_csv_json_and_table",),
        "evaluation's mm distances computed without the header spacing"),
)
