"""TAO's MaskRCNN losses and their normalisations.

``huber(x, d)`` is elementwise ``0.5 x**2`` for ``|x| <= d`` and ``d (|x| - 0.5 d)`` beyond.

* ``rpn_score_loss``: per level, the sigmoid cross-entropy summed over anchors whose target is
  not -1, divided by ``B * rpn_batch_size_per_im``; summed over levels.
* ``rpn_box_loss``: per level, ``huber(d = 1/9)`` summed over the elements whose box target is
  non-zero, divided by the number of those elements in the level (whole batch); summed over
  levels; times ``rpn_box_loss_weight``.
* ``fast_rcnn_class_loss``: softmax cross-entropy of the sampled ROIs, averaged over them (TAO's
  ``B * batch_size_per_im``; tltk counts only real samples when an image has fewer candidates).
* ``fast_rcnn_box_loss``: the target class's 4 deltas of each foreground ROI, ``huber(d = 1)``
  summed and divided by ``4 * foreground ROIs``; times ``fast_rcnn_box_loss_weight``.
* ``mask_loss``: per-pixel sigmoid cross-entropy of the foreground mask ROIs divided by
  ``foreground mask ROIs * res * res``; times ``mrcnn_weight_loss_mask``.

The total is their sum.  Weight decay is not included: it comes from the kernel regularizers
(``tltk.mask_rcnn.model.tao_weight_decay``) through ``model.losses``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tensorflow as tf

from tltk.mask_rcnn.params import MaskRCNNParams

#: Component names, in TAO's logging order.
LOSS_NAMES = ("rpn_score_loss", "rpn_box_loss", "fast_rcnn_class_loss", "fast_rcnn_box_loss", "mask_loss")

RPN_HUBER_DELTA = 1.0 / 9.0
FAST_RCNN_HUBER_DELTA = 1.0


def huber(x: Any, delta: float) -> Any:
    """Elementwise Huber loss (TAO's, not Keras 3's mean over the last axis).

    Args:
        x: residuals, any shape.
        delta: the quadratic/linear switch point.

    Returns:
        Same shape as ``x``.
    """
    ax = tf.abs(x)
    return tf.where(ax <= delta, 0.5 * tf.square(x), delta * (ax - 0.5 * delta))


def _f32(x: Any) -> Any:
    return tf.cast(x, tf.float32)


def rpn_losses(outputs: Mapping[str, Any], targets: Mapping[str, Any], levels: list[int],
               rpn_batch_size_per_im: int) -> tuple[Any, Any]:
    """RPN score and box losses (unweighted).

    Args:
        outputs: ``rpn_score_<l>`` ``[B, H_l, W_l, A]`` logits and ``rpn_box_<l>``
            ``[B, H_l, W_l, 4A]`` deltas.
        targets: ``score_targets_<l>`` int ``[B, H_l, W_l, A]`` (1, 0, -1 ignored) and
            ``box_targets_<l>`` ``[B, H_l, W_l, 4A]`` (0 where not positive).
        levels: the pyramid levels.
        rpn_batch_size_per_im: anchors sampled per image.

    Returns:
        ``(score_loss, box_loss)`` scalars.
    """
    score_loss = tf.constant(0.0)
    box_loss = tf.constant(0.0)
    for level in levels:
        logits = _f32(outputs[f"rpn_score_{level}"])
        labels = _f32(targets[f"score_targets_{level}"])
        batch = _f32(tf.shape(logits)[0])
        weight = _f32(labels >= 0.0)
        ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.maximum(labels, 0.0), logits=logits)
        score_loss += tf.reduce_sum(ce * weight) / (batch * float(rpn_batch_size_per_im))
        deltas = _f32(outputs[f"rpn_box_{level}"])
        box_targets = _f32(targets[f"box_targets_{level}"])
        box_weight = _f32(tf.not_equal(box_targets, 0.0))
        per_element = huber(deltas - box_targets, RPN_HUBER_DELTA) * box_weight
        box_loss += tf.reduce_sum(per_element) / tf.maximum(tf.reduce_sum(box_weight), 1.0)
    return score_loss, box_loss


def fast_rcnn_losses(class_outputs: Any, box_outputs: Any, class_targets: Any, box_targets: Any,
                     roi_weights: Any) -> tuple[Any, Any]:
    """Second-stage class and box losses (unweighted).

    Args:
        class_outputs: ``[B, S, C]`` logits.
        box_outputs: ``[B, S, 4C]`` deltas.
        class_targets: int ``[B, S]`` (0 = background).
        box_targets: ``[B, S, 4]`` encoded targets (0 for background).
        roi_weights: ``[B, S]`` 1 for real samples, 0 for filler slots.

    Returns:
        ``(class_loss, box_loss)`` scalars.
    """
    logits = _f32(class_outputs)
    num_classes = int(logits.shape[-1])
    classes = tf.cast(class_targets, tf.int32)
    weights = _f32(roi_weights)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=classes, logits=logits)
    class_loss = tf.reduce_sum(ce * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)
    deltas = tf.reshape(_f32(box_outputs), [tf.shape(logits)[0], int(logits.shape[1]), num_classes, 4])
    selected = tf.reduce_sum(deltas * tf.one_hot(classes, num_classes)[..., None], axis=2)
    fg = _f32(classes > 0) * weights
    per_element = huber(selected - _f32(box_targets), FAST_RCNN_HUBER_DELTA) * fg[..., None]
    box_loss = tf.reduce_sum(per_element) / tf.maximum(4.0 * tf.reduce_sum(fg), 1.0)
    return class_loss, box_loss


def mask_loss(mask_outputs: Any, mask_targets: Any, mask_weights: Any) -> Any:
    """Mask loss (unweighted).

    Args:
        mask_outputs: ``[B, K, R, R]`` logits of each ROI's target class.
        mask_targets: ``[B, K, R, R]`` 0/1.
        mask_weights: ``[B, K]`` 1 for foreground ROIs.

    Returns:
        Scalar.
    """
    logits = _f32(mask_outputs)
    weights = _f32(mask_weights)
    pixels = float(int(logits.shape[2]) * int(logits.shape[3]))
    ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=_f32(mask_targets), logits=logits)
    return tf.reduce_sum(ce * weights[:, :, None, None]) / tf.maximum(tf.reduce_sum(weights) * pixels, 1.0)


def mask_rcnn_loss(outputs: Mapping[str, Any], targets: Mapping[str, Any], params: MaskRCNNParams
                   ) -> tuple[Any, dict[str, Any]]:
    """TAO's total MaskRCNN loss (without weight decay) and its components.

    Args:
        outputs: the training model's output dict (``tltk.mask_rcnn.model``).
        targets: the data pipeline's targets (``score_targets_<l>``, ``box_targets_<l>``).
        params: the hyper-parameters (levels, normalisers, loss weights, include_mask).

    Returns:
        ``(total, components)``: scalar float32 total and ``{name: scalar}`` for
        :data:`LOSS_NAMES`, each already multiplied by its weight (``mask_loss`` is 0 without
        the mask head).
    """
    levels = list(range(params.min_level, params.max_level + 1))
    rpn_score, rpn_box = rpn_losses(outputs, targets, levels, params.rpn_batch_size_per_im)
    frcnn_class, frcnn_box = fast_rcnn_losses(outputs["class_outputs"], outputs["box_outputs"],
                                              outputs["class_targets"], outputs["box_targets"],
                                              outputs["roi_weights"])
    if params.include_mask:
        masks = mask_loss(outputs["mask_outputs"], outputs["mask_targets"], outputs["mask_weights"])
    else:
        masks = tf.constant(0.0)
    components = {
        "rpn_score_loss": rpn_score,
        "rpn_box_loss": params.rpn_box_loss_weight * rpn_box,
        "fast_rcnn_class_loss": frcnn_class,
        "fast_rcnn_box_loss": params.fast_rcnn_box_loss_weight * frcnn_box,
        "mask_loss": params.mrcnn_weight_loss_mask * masks,
    }
    return tf.add_n(list(components.values())), components


__all__ = ["LOSS_NAMES", "fast_rcnn_losses", "huber", "mask_loss", "mask_rcnn_loss", "rpn_losses"]
