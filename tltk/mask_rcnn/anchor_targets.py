"""RPN anchor targets, computed per image inside the ``tf.data`` pipeline (TAO's AnchorLabeler).

For the anchors of every level (:func:`tltk.mask_rcnn.anchors.generate_anchors`, concatenated
low level first) and an image's ground-truth boxes:

1. IoU (no +1) of every anchor with every box, over the whole padded input (anchors crossing
   the border are kept, as in TAO).
2. Arg-max matching: an anchor whose best IoU is ``>= rpn_positive_overlap`` is positive and
   matched to that box; ``< rpn_negative_overlap`` is negative; in between it is ignored.
3. Force matching: for every box, the anchor with the highest IoU (the first one on ties) is
   positive and matched to that box whatever its IoU (when two boxes pick the same anchor the
   first box wins).  A box that overlaps no anchor at all (IoU 0 everywhere) forces nothing.
4. Sampling: at most ``floor(rpn_fg_fraction * rpn_batch_size_per_im)`` positives drawn at
   random, then negatives drawn at random up to ``rpn_batch_size_per_im`` in all.
   ``score_targets``: 1 sampled positive, 0 sampled negative, -1 otherwise (ignored or not
   drawn).
5. ``box_targets``: the matched box encoded against the anchor with
   :func:`tltk.boxes.tf_ops.encode_boxes` (unit weights) for *every* positive anchor before
   sampling (TAO's RPN box loss covers all matched anchors), 0 elsewhere.

Outputs per level ``l`` (``A`` anchors per location, channel ``4a + k`` of the box targets is
delta ``k`` of anchor ``a``): ``score_targets_<l>`` int32 ``[H_l, W_l, A]`` and
``box_targets_<l>`` float32 ``[H_l, W_l, 4A]``.  Randomness comes only from the per-example
seed, so the targets are reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf
from google.protobuf.message import Message

from tltk.boxes.tf_ops import encode_boxes, pairwise_iou
from tltk.mask_rcnn.anchors import AnchorConfig, generate_anchors

__all__ = ["RpnTargetParams", "AnchorLabeler"]


@dataclass(frozen=True)
class RpnTargetParams:
    """How anchors become RPN targets (``maskrcnn_config`` fields).

    Attributes:
        positive_overlap: ``rpn_positive_overlap``; IoU at or above it makes a positive.
        negative_overlap: ``rpn_negative_overlap``; IoU below it makes a negative.
        batch_size_per_im: ``rpn_batch_size_per_im``; anchors sampled per image.
        fg_fraction: ``rpn_fg_fraction``; largest share of positives in the sample.
    """

    positive_overlap: float
    negative_overlap: float
    batch_size_per_im: int
    fg_fraction: float

    @property
    def max_positives(self) -> int:
        """``floor(fg_fraction * batch_size_per_im)``."""
        return int(math.floor(self.fg_fraction * self.batch_size_per_im + 1e-9))

    @classmethod
    def from_experiment(cls, exp: Message) -> RpnTargetParams:
        """The RPN target settings of a loaded MaskRCNN ``Experiment``."""
        mc = exp.maskrcnn_config
        return cls(float(mc.rpn_positive_overlap), float(mc.rpn_negative_overlap), int(mc.rpn_batch_size_per_im),
                   float(mc.rpn_fg_fraction))


class AnchorLabeler:
    """Turns one image's ground-truth boxes into per-level RPN targets.

    Args:
        anchors: the anchor layout (input size included).
        params: matching and sampling settings.
    """

    def __init__(self, anchors: AnchorConfig, params: RpnTargetParams) -> None:
        self.config = anchors
        self.params = params
        per_level = generate_anchors(anchors)
        self.levels = list(anchors.levels)
        self.num_anchors_per_location = anchors.anchors_per_location
        self.level_shapes = {level: anchors.feature_size(level) for level in self.levels}
        self.level_counts = [per_level[level].shape[0] for level in self.levels]
        self.anchors = np.concatenate([per_level[level] for level in self.levels], axis=0)

    @property
    def num_anchors(self) -> int:
        """Anchors over all levels."""
        return int(self.anchors.shape[0])

    def output_shapes(self) -> dict[str, tuple[int, ...]]:
        """Target name -> shape of one image's target (no batch axis)."""
        a = self.num_anchors_per_location
        out: dict[str, tuple[int, ...]] = {}
        for level in self.levels:
            h, w = self.level_shapes[level]
            out[f"score_targets_{level}"] = (h, w, a)
            out[f"box_targets_{level}"] = (h, w, 4 * a)
        return out

    def match(self, gt_boxes: Any) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Match every anchor to a box (steps 1-3 of the module docstring).

        Args:
            gt_boxes: float32 ``[n, 4]`` ``(y1, x1, y2, x2)`` in input pixels (real boxes only,
                no padding rows; n may be 0).

        Returns:
            ``(positive, negative, matched)``: bool ``[N]``, bool ``[N]`` and int32 ``[N]``
            (index of the matched box; meaningful where ``positive``), N = :attr:`num_anchors`.
        """
        p = self.params
        gt = tf.reshape(tf.convert_to_tensor(gt_boxes, tf.float32), [-1, 4])
        anchors = tf.constant(self.anchors)
        n_anchors = self.num_anchors
        iou = pairwise_iou(anchors, gt)  # [N, n]
        # A zero column makes the reductions well defined without boxes; it is never positive.
        iou_ext = tf.concat([iou, tf.zeros([n_anchors, 1], tf.float32)], axis=1)
        best_iou = tf.reduce_max(iou_ext, axis=1)
        matched = tf.argmax(iou_ext, axis=1, output_type=tf.int32)
        positive = best_iou >= p.positive_overlap
        negative = best_iou < p.negative_overlap
        best_anchor = tf.argmax(iou, axis=0, output_type=tf.int32)  # [n]
        forces = tf.reduce_max(iou, axis=0) > 0.0
        n_gt = tf.shape(gt)[0]
        box_ids = tf.where(forces, tf.range(n_gt, dtype=tf.int32), tf.int32.max)
        # Lowest box index that forces each anchor (int32.max where none does).
        forced_by = tf.math.unsorted_segment_min(box_ids, best_anchor, num_segments=n_anchors)
        forced = forced_by < n_gt
        matched = tf.where(forced, forced_by, matched)
        positive = tf.logical_or(positive, forced)
        negative = tf.logical_and(negative, tf.logical_not(forced))
        return positive, negative, matched

    def sample(self, positive: tf.Tensor, negative: tf.Tensor, seed: Any) -> tf.Tensor:
        """Balanced random sample of positives and negatives (step 4).

        Args:
            positive: bool ``[N]``.
            negative: bool ``[N]``.
            seed: int32/int64 ``[2]`` stateless seed.

        Returns:
            int32 ``[N]`` score targets: 1, 0 or -1.
        """
        p = self.params
        n_anchors = self.num_anchors
        keys = tf.random.stateless_uniform([2, n_anchors], seed=tf.cast(seed, tf.int64))
        num_pos = tf.minimum(tf.reduce_sum(tf.cast(positive, tf.int32)), p.max_positives)
        num_neg = tf.minimum(tf.reduce_sum(tf.cast(negative, tf.int32)), p.batch_size_per_im - num_pos)
        _, pos_idx = tf.math.top_k(tf.where(positive, keys[0], -1.0), k=num_pos, sorted=False)
        _, neg_idx = tf.math.top_k(tf.where(negative, keys[1], -1.0), k=num_neg, sorted=False)
        targets = -tf.ones([n_anchors], tf.int32)
        targets = tf.tensor_scatter_nd_update(targets, pos_idx[:, None], tf.ones_like(pos_idx))
        return tf.tensor_scatter_nd_update(targets, neg_idx[:, None], tf.zeros_like(neg_idx))

    def label(self, gt_boxes: Any, seed: Any) -> dict[str, tf.Tensor]:
        """RPN targets of one image.

        Args:
            gt_boxes: float32 ``[n, 4]`` ``(y1, x1, y2, x2)`` in input pixels, real boxes only.
            seed: int ``[2]`` stateless seed of this image.

        Returns:
            ``score_targets_<l>`` int32 ``[H_l, W_l, A]`` and ``box_targets_<l>`` float32
            ``[H_l, W_l, 4A]`` for every level ``l``.
        """
        gt = tf.reshape(tf.convert_to_tensor(gt_boxes, tf.float32), [-1, 4])
        positive, negative, matched = self.match(gt)
        scores = self.sample(positive, negative, seed)
        gt_ext = tf.concat([gt, tf.zeros([1, 4], tf.float32)], axis=0)
        deltas = encode_boxes(tf.gather(gt_ext, matched), tf.constant(self.anchors))
        deltas = tf.where(positive[:, None], deltas, 0.0)
        out: dict[str, tf.Tensor] = {}
        a = self.num_anchors_per_location
        score_parts = tf.split(scores, self.level_counts)
        box_parts = tf.split(deltas, self.level_counts)
        for level, s, b in zip(self.levels, score_parts, box_parts, strict=True):
            h, w = self.level_shapes[level]
            out[f"score_targets_{level}"] = tf.reshape(s, [h, w, a])
            out[f"box_targets_{level}"] = tf.reshape(b, [h, w, 4 * a])
        return out
