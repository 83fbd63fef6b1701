"""RPN proposals: per-level top-k, decode, clip, NMS, then a global top-k (static shapes).

For every level ``l`` with ``N_l = H_l * W_l * A`` anchors:

1. keep the ``k_l = min(N_l, pre_nms_topn)`` highest objectness logits;
2. decode their deltas against their anchors (TAO's +1 coder, unit weights, dh/dw clamp) and
   clip to the image (``image_info``'s scaled size in training, the input canvas otherwise);
3. with ``rpn_min_size > 0``, zero the score of boxes whose height or width (+1) is below
   ``rpn_min_size`` input pixels or whose centre lies outside the image (TAO's filter);
4. NMS (``combined_non_max_suppression`` with one class and shared boxes, which converts to
   ONNX ``NonMaxSuppression``) keeping at most ``m_l = min(k_l, post_nms_topn)``.

The levels are concatenated and the ``R = min(post_nms_topn, sum m_l)`` best kept.  Empty
slots (NMS found fewer boxes) have score 0 and box 0: callers treat ``score > 0`` as the
validity flag.  Proposals carry no gradient (TAO).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tltk.boxes.tf_ops import clip_boxes, decode_boxes
from tltk.mask_rcnn.anchors import AnchorConfig, generate_anchors


def proposal_counts(cfg: AnchorConfig, pre_nms_topn: int, post_nms_topn: int) -> tuple[list[int], list[int], int]:
    """Static sizes of the proposal stage.

    Args:
        cfg: anchor layout.
        pre_nms_topn: candidates per level before NMS.
        post_nms_topn: proposals kept in total.

    Returns:
        ``(k_l per level, m_l per level, R)``.
    """
    a = cfg.anchors_per_location
    ks, ms = [], []
    for level in cfg.levels:
        h, w = cfg.feature_size(level)
        k = min(h * w * a, int(pre_nms_topn))
        ks.append(k)
        ms.append(min(k, int(post_nms_topn)))
    return ks, ms, min(int(post_nms_topn), sum(ms))


def propose_rois(
    score_maps: list[Any],
    box_maps: list[Any],
    anchors: list[np.ndarray],
    pre_nms_topn: int,
    post_nms_topn: int,
    nms_threshold: float,
    min_size: float,
    clip_height: Any,
    clip_width: Any,
) -> tuple[Any, Any]:
    """Proposals from RPN outputs (see the module docstring).

    Args:
        score_maps: per level, objectness logits ``[B, H_l, W_l, A]``.
        box_maps: per level, deltas ``[B, H_l, W_l, 4A]`` (channel ``4a + k``).
        anchors: per level, float32 ``[H_l * W_l * A, 4]`` in the same order.
        pre_nms_topn: candidates per level before NMS.
        post_nms_topn: proposals kept in total.
        nms_threshold: NMS IoU threshold.
        min_size: minimum side in input pixels (0 disables the filter).
        clip_height: image height: a number or ``[B, 1]``.
        clip_width: image width: a number or ``[B, 1]``.

    Returns:
        ``(rois [B, R, 4] float32 input pixels, scores [B, R] float32 in [0, 1])``, best first.
    """
    level_boxes, level_scores = [], []
    for logits_map, delta_map, level_anchors in zip(score_maps, box_maps, anchors, strict=True):
        n = int(level_anchors.shape[0])
        batch = tf.shape(logits_map)[0]
        logits = tf.reshape(tf.cast(logits_map, tf.float32), [batch, n])
        deltas = tf.reshape(tf.cast(delta_map, tf.float32), [batch, n, 4])
        k = min(n, int(pre_nms_topn))
        top_logits, index = tf.math.top_k(logits, k=k, sorted=True)
        top_deltas = tf.gather(deltas, index, batch_dims=1)
        top_anchors = tf.gather(tf.constant(level_anchors, tf.float32), index)
        boxes = clip_boxes(decode_boxes(top_deltas, top_anchors), clip_height, clip_width)
        scores = tf.sigmoid(top_logits)
        if min_size > 0:
            h = boxes[..., 2] - boxes[..., 0] + 1.0
            w = boxes[..., 3] - boxes[..., 1] + 1.0
            yc = boxes[..., 0] + 0.5 * h
            xc = boxes[..., 1] + 0.5 * w
            keep = (h >= max(float(min_size), 1.0)) & (w >= max(float(min_size), 1.0))
            keep &= (yc < tf.cast(clip_height, tf.float32)) & (xc < tf.cast(clip_width, tf.float32))
            scores = tf.where(keep, scores, tf.zeros_like(scores))
        m = min(k, int(post_nms_topn))
        nms = tf.image.combined_non_max_suppression(
            boxes[:, :, None, :], scores[:, :, None], max_output_size_per_class=m, max_total_size=m,
            iou_threshold=float(nms_threshold), score_threshold=0.0, pad_per_class=False, clip_boxes=False)
        level_boxes.append(nms.nmsed_boxes)
        level_scores.append(nms.nmsed_scores)
    boxes = tf.concat(level_boxes, axis=1)
    scores = tf.concat(level_scores, axis=1)
    total = min(int(post_nms_topn), int(scores.shape[1]))
    top_scores, index = tf.math.top_k(scores, k=total, sorted=True)
    top_boxes = tf.gather(boxes, index, batch_dims=1)
    return tf.stop_gradient(top_boxes), tf.stop_gradient(top_scores)


@keras.saving.register_keras_serializable(package="tltk")
class MultilevelProposals(keras.layers.Layer):
    """Keras layer around :func:`propose_rois` with TAO's anchors built in.

    Call: ``layer(score_maps, box_maps)`` (clip to the input canvas) or
    ``layer(score_maps, box_maps, image_info)`` (clip to ``image_info[:, 0:2]``, the scaled
    image size); returns ``(rois [B, R, 4], scores [B, R])``.

    Args:
        min_level, max_level, num_scales, aspect_ratios, anchor_scale, image_size: the anchor
            layout (:class:`tltk.mask_rcnn.anchors.AnchorConfig`).
        pre_nms_topn: candidates per level before NMS.
        post_nms_topn: proposals kept in total.
        nms_threshold: NMS IoU.
        min_size: ``rpn_min_size`` in input pixels.
    """

    def __init__(self, min_level: int, max_level: int, num_scales: int, aspect_ratios: Any,
                 anchor_scale: float, image_size: Any, pre_nms_topn: int, post_nms_topn: int,
                 nms_threshold: float, min_size: float = 0.0, **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.anchor_config = AnchorConfig(int(min_level), int(max_level), int(num_scales),
                                          [(float(x), float(y)) for x, y in aspect_ratios],
                                          float(anchor_scale), (int(image_size[0]), int(image_size[1])))
        self.pre_nms_topn = int(pre_nms_topn)
        self.post_nms_topn = int(post_nms_topn)
        self.nms_threshold = float(nms_threshold)
        self.min_size = float(min_size)
        anchors = generate_anchors(self.anchor_config)
        self._anchors = [anchors[level] for level in self.anchor_config.levels]

    @property
    def num_proposals(self) -> int:
        """R, the static number of proposals per image."""
        return proposal_counts(self.anchor_config, self.pre_nms_topn, self.post_nms_topn)[2]

    def call(self, score_maps: list[Any], box_maps: list[Any], image_info: Any = None) -> tuple[Any, Any]:
        if image_info is None:
            height, width = self.anchor_config.image_size
            clip_h: Any = float(height)
            clip_w: Any = float(width)
        else:
            info = tf.cast(image_info, tf.float32)
            clip_h, clip_w = info[:, 0:1], info[:, 1:2]
        return propose_rois(list(score_maps), list(box_maps), self._anchors, self.pre_nms_topn,
                            self.post_nms_topn, self.nms_threshold, self.min_size, clip_h, clip_w)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        cfg = self.anchor_config
        config.update(min_level=cfg.min_level, max_level=cfg.max_level, num_scales=cfg.num_scales,
                      aspect_ratios=[list(r) for r in cfg.aspect_ratios], anchor_scale=cfg.anchor_scale,
                      image_size=list(cfg.image_size), pre_nms_topn=self.pre_nms_topn,
                      post_nms_topn=self.post_nms_topn, nms_threshold=self.nms_threshold, min_size=self.min_size)
        return config


__all__ = ["MultilevelProposals", "proposal_counts", "propose_rois"]
