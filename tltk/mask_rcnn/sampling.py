"""Second-stage training targets, computed inside the training forward (static shapes).

ROI sampling (TAO's ``proposal_label_op`` with its static balanced sampler):

* candidates = the R proposals (valid when their score is > 0) and the M ground-truth boxes
  (valid when their class is > 0; padding rows are -1);
* each candidate takes the ground truth with the highest IoU (no +1); foreground when that IoU
  is above ``fg_thresh``, background when it lies in ``[bg_thresh_lo, bg_thresh_hi)``;
* exactly ``S = min(batch_size_per_im, R + M)`` ROIs per image: at most
  ``floor(fg_fraction * batch_size_per_im)`` foreground chosen at random, background chosen at
  random for the rest; when there are not enough, other candidates fill the slots with
  ``valid = 0`` (they carry no loss).  Foreground come first.
* targets: class (0 for background), the matched box encoded with ``bbox_reg_weights`` against
  the ROI (zero for background), and for the mask head the first
  ``mask_rois_per_image`` sampled ROIs (all foreground among them, the rest weight 0).

Mask targets (TAO's ``get_mask_targets``): each ROI is mapped into the 2-px-padded crop of its
ground-truth mask (``cropped_gt_masks``, side ``G + 4``), ``y' = (y1 - y1_gt) * G / h_gt + 2``,
``h' = h * G / h_gt``, sampled on the ``mrcnn_resolution`` grid with the ROIAlign sampler and
binarised at 0.5.  Nothing here carries gradient.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from tltk.boxes.tf_ops import encode_boxes, pairwise_iou
from tltk.mask_rcnn.roi_align import bilinear_gather


def sample_rois(
    rois: Any,
    roi_scores: Any,
    gt_boxes: Any,
    gt_classes: Any,
    random: Any,
    *,
    batch_size_per_im: int,
    fg_fraction: float,
    fg_thresh: float,
    bg_thresh_hi: float,
    bg_thresh_lo: float,
    bbox_reg_weights: tuple[float, float, float, float],
) -> dict[str, Any]:
    """Sample the ROIs of the second stage and build their class and box targets.

    Args:
        rois: float32 ``[B, R, 4]`` proposals (input pixels).
        roi_scores: float32 ``[B, R]``; proposals with score 0 are empty slots.
        gt_boxes: float32 ``[B, M, 4]``; padding rows -1.
        gt_classes: int ``[B, M]`` in 1..C-1; padding -1.
        random: float32 ``[B, R + M]`` uniform in [0, 1) (the sampling order).
        batch_size_per_im: ROIs per image (S is this, or R + M when fewer).
        fg_fraction: foreground share cap.
        fg_thresh: foreground when the best IoU is above this.
        bg_thresh_hi: background when the best IoU is below this ...
        bg_thresh_lo: ... and at least this.
        bbox_reg_weights: ``(wy, wx, wh, ww)`` box coder weights.

    Returns:
        dict of ``[B, S, ...]`` tensors: ``rois`` (float32 ``[B, S, 4]``), ``class_targets``
        (int32), ``box_targets`` (float32 ``[B, S, 4]``), ``matched_gt_boxes`` (float32),
        ``matched_gt_index`` (int32, into M), ``fg`` and ``valid`` (float32 0/1 flags).
    """
    rois = tf.cast(rois, tf.float32)
    gt_boxes = tf.cast(gt_boxes, tf.float32)
    gt_classes = tf.cast(gt_classes, tf.int32)
    num_candidates = int(rois.shape[1]) + int(gt_boxes.shape[1])
    size = min(int(batch_size_per_im), num_candidates)
    max_fg = min(int(fg_fraction * batch_size_per_im), size)

    gt_valid = gt_classes > 0
    candidates = tf.concat([rois, gt_boxes], axis=1)
    candidate_valid = tf.concat([tf.cast(roi_scores, tf.float32) > 0.0, gt_valid], axis=1)
    iou = pairwise_iou(candidates, gt_boxes)
    iou = tf.where(gt_valid[:, None, :], iou, -tf.ones_like(iou))
    best_iou = tf.maximum(tf.reduce_max(iou, axis=2), 0.0)
    best_gt = tf.argmax(iou, axis=2, output_type=tf.int32)

    fg = candidate_valid & (best_iou > fg_thresh)
    bg = candidate_valid & (best_iou >= bg_thresh_lo) & (best_iou < bg_thresh_hi) & ~fg
    random = tf.cast(random, tf.float32)
    if max_fg > 0:
        fg_key = tf.where(fg, random, -tf.ones_like(random))
        kth = tf.math.top_k(fg_key, k=max_fg, sorted=True).values[:, -1:]
        fg_chosen = fg & (fg_key >= kth)
    else:
        fg_chosen = tf.zeros_like(fg)
    priority = random + tf.where(fg_chosen, 3.0, tf.where(bg, 2.0, tf.where(candidate_valid, 1.0, 0.0)))
    index = tf.math.top_k(priority, k=size, sorted=True).indices

    def take(t: Any) -> Any:
        return tf.gather(t, index, batch_dims=1)

    sampled_rois = take(candidates)
    sampled_fg = take(fg_chosen)
    sampled_valid = sampled_fg | take(bg & ~fg_chosen)
    matched_index = take(best_gt)
    matched_boxes = tf.gather(gt_boxes, matched_index, batch_dims=1)
    matched_classes = tf.gather(gt_classes, matched_index, batch_dims=1)
    fg_float = tf.cast(sampled_fg, tf.float32)
    box_targets = encode_boxes(matched_boxes, sampled_rois, bbox_reg_weights) * fg_float[..., None]
    return {
        "rois": tf.stop_gradient(sampled_rois),
        "class_targets": tf.where(sampled_fg, matched_classes, tf.zeros_like(matched_classes)),
        "box_targets": tf.stop_gradient(box_targets),
        "matched_gt_boxes": tf.stop_gradient(matched_boxes),
        "matched_gt_index": matched_index,
        "fg": fg_float,
        "valid": tf.cast(sampled_valid, tf.float32),
    }


def mask_targets(rois: Any, matched_gt_boxes: Any, matched_gt_index: Any, cropped_gt_masks: Any,
                 gt_mask_size: int, resolution: int) -> Any:
    """Binary mask targets of ROIs from their ground truth's padded mask crop.

    Args:
        rois: float32 ``[B, K, 4]`` ROIs (input pixels).
        matched_gt_boxes: float32 ``[B, K, 4]`` the matched ground-truth boxes.
        matched_gt_index: int32 ``[B, K]`` index of the match in M.
        cropped_gt_masks: float32 ``[B, M, G + 4, G + 4]``.
        gt_mask_size: G.
        resolution: output side (``mrcnn_resolution``).

    Returns:
        float32 ``[B, K, resolution, resolution]`` of 0/1.
    """
    masks = tf.cast(cropped_gt_masks, tf.float32)
    num_gt = int(masks.shape[1])
    side = int(masks.shape[2])
    rois = tf.cast(rois, tf.float32)
    gt = tf.cast(matched_gt_boxes, tf.float32)
    g = float(gt_mask_size)
    scale_y = g / (gt[..., 2] - gt[..., 0] + 1e-8)
    scale_x = g / (gt[..., 3] - gt[..., 1] + 1e-8)
    y1 = (rois[..., 0] - gt[..., 0]) * scale_y + 2.0
    x1 = (rois[..., 1] - gt[..., 1]) * scale_x + 2.0
    y2 = y1 + (rois[..., 2] - rois[..., 0]) * scale_y
    x2 = x1 + (rois[..., 3] - rois[..., 1]) * scale_x
    boxes = tf.stack([y1, x1, y2, x2], axis=-1)
    batch = tf.shape(masks)[0]
    table = tf.reshape(masks, [-1, 1])
    image = tf.range(batch, dtype=tf.int32)[:, None] * num_gt
    base = (image + tf.cast(matched_gt_index, tf.int32)) * (side * side)
    crops = bilinear_gather(table, base, side, side, side, boxes, int(resolution))[..., 0]
    return tf.stop_gradient(tf.cast(crops >= 0.5, tf.float32))


class _StepCounter:
    """Holds the step variable outside Keras' attribute tracking (it belongs to the optimizer)."""

    def __init__(self, variable: Any) -> None:
        self.variable = variable


@keras.saving.register_keras_serializable(package="tltk")
class RoiSampler(keras.layers.Layer):
    """Keras layer around :func:`sample_rois` plus the mask-head selection and mask targets.

    Call: ``layer(rois, roi_scores, gt_boxes, gt_classes, cropped_gt_masks)``; returns a dict
    with the :func:`sample_rois` entries and, when ``mask_rois > 0``, ``mask_rois``
    ``[B, K, 4]``, ``mask_classes`` int32 ``[B, K]``, ``mask_weights`` ``[B, K]`` and
    ``mask_targets`` ``[B, K, res, res]`` (K = ``mask_rois``).

    Args:
        batch_size_per_im, fg_fraction, fg_thresh, bg_thresh_hi, bg_thresh_lo,
            bbox_reg_weights: see :func:`sample_rois`.
        mask_rois: ROIs per image for the mask head (0: no mask branch).
        gt_mask_size: G of ``cropped_gt_masks``.
        mrcnn_resolution: mask target side.
        seed: seed of the sampling order (with :meth:`use_step_counter`, combined with the step).
    """

    def __init__(self, batch_size_per_im: int, fg_fraction: float, fg_thresh: float, bg_thresh_hi: float,
                 bg_thresh_lo: float, bbox_reg_weights: Any, mask_rois: int, gt_mask_size: int,
                 mrcnn_resolution: int, seed: int | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.batch_size_per_im = int(batch_size_per_im)
        self.fg_fraction = float(fg_fraction)
        self.fg_thresh = float(fg_thresh)
        self.bg_thresh_hi = float(bg_thresh_hi)
        self.bg_thresh_lo = float(bg_thresh_lo)
        self.bbox_reg_weights = tuple(float(w) for w in bbox_reg_weights)
        self.mask_rois = int(mask_rois)
        self.gt_mask_size = int(gt_mask_size)
        self.mrcnn_resolution = int(mrcnn_resolution)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._step_counter: _StepCounter | None = None

    def use_step_counter(self, counter: Any) -> None:
        """Draw the sampling order from ``(seed, counter)`` with a stateless generator.

        Without a counter the layer's own seed generator advances at every call; its state is
        not part of a checkpoint, so a resumed run would sample other ROIs than an uninterrupted
        one.  The trainer's optimizer iteration counter is restored from checkpoints, so with it
        step ``n`` samples the same ROIs in both runs.

        Args:
            counter: an integer scalar variable that counts training steps (``optimizer.iterations``).
        """
        self._step_counter = _StepCounter(counter)

    def call(self, rois: Any, roi_scores: Any, gt_boxes: Any, gt_classes: Any, cropped_gt_masks: Any) -> dict[str, Any]:
        batch = tf.shape(rois)[0]
        count = int(rois.shape[1]) + int(gt_boxes.shape[1])
        if self._step_counter is not None:
            step = tf.cast(tf.convert_to_tensor(self._step_counter.variable), tf.int64)
            # A stateless draw needs a number: a layer built without a seed uses 0.
            seed = tf.stack([tf.constant(0 if self.seed is None else int(self.seed), tf.int64), step])
            random = tf.random.stateless_uniform((batch, count), seed=seed)
        else:
            random = keras.random.uniform((batch, count), seed=self.seed_generator)
        out = sample_rois(rois, roi_scores, gt_boxes, gt_classes, random,
                          batch_size_per_im=self.batch_size_per_im, fg_fraction=self.fg_fraction,
                          fg_thresh=self.fg_thresh, bg_thresh_hi=self.bg_thresh_hi,
                          bg_thresh_lo=self.bg_thresh_lo, bbox_reg_weights=self.bbox_reg_weights)  # type: ignore[arg-type]
        if self.mask_rois > 0:
            k = min(self.mask_rois, int(out["rois"].shape[1]))
            out["mask_rois"] = out["rois"][:, :k]
            out["mask_classes"] = out["class_targets"][:, :k]
            out["mask_weights"] = out["fg"][:, :k]
            out["mask_targets"] = mask_targets(out["mask_rois"], out["matched_gt_boxes"][:, :k],
                                               out["matched_gt_index"][:, :k], cropped_gt_masks,
                                               self.gt_mask_size, self.mrcnn_resolution)
        return out

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(batch_size_per_im=self.batch_size_per_im, fg_fraction=self.fg_fraction,
                      fg_thresh=self.fg_thresh, bg_thresh_hi=self.bg_thresh_hi, bg_thresh_lo=self.bg_thresh_lo,
                      bbox_reg_weights=list(self.bbox_reg_weights), mask_rois=self.mask_rois,
                      gt_mask_size=self.gt_mask_size, mrcnn_resolution=self.mrcnn_resolution, seed=self.seed)
        return config


__all__ = ["RoiSampler", "mask_targets", "sample_rois"]
