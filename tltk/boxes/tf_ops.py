"""Box operations in TensorFlow with static shapes (MaskRCNN targets, proposals, detections).

Boxes are ``(y1, x1, y2, x2)`` in pixels, last axis 4.  Every op here broadcasts over leading
axes and uses only element-wise math, so it runs in ``tf.data`` maps, in Keras layers and
converts to plain ONNX ops.

Box coder: TAO's (Detectron's legacy) "+1" convention, for the RPN (unit weights) and the
second stage (``bbox_reg_weights``, e.g. (10, 10, 5, 5))::

    h = y2 - y1 + 1, w = x2 - x1 + 1, yc = y1 + h/2, xc = x1 + w/2
    encode: (dy, dx, dh, dw) = (wy (yc - yc_a)/h_a, wx (xc - xc_a)/w_a, wh log(h/h_a), ww log(w/w_a))
    decode: dh, dw divided by their weights and clamped at log(1000/16);
            y1 = yc - h/2, y2 = y1 + h - 1 (same for x)

tltk encodes the RPN targets with the same coder it decodes proposals with (TAO's input
pipeline used a coder without the +1, a small mismatch with its own decoder).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import tensorflow as tf

#: Largest dh/dw accepted by the decoder: boxes grow by at most 1000/16 = 62.5x per side.
BBOX_XFORM_CLIP = math.log(1000.0 / 16.0)

_EPS = 1e-8


def _split(boxes: Any) -> tuple[Any, Any, Any, Any]:
    return boxes[..., 0], boxes[..., 1], boxes[..., 2], boxes[..., 3]


def box_area(boxes: Any) -> Any:
    """Area without the +1, 0 for inverted or padding boxes.

    Args:
        boxes: float ``[..., 4]``.

    Returns:
        float ``[...]`` in square pixels.
    """
    y1, x1, y2, x2 = _split(boxes)
    return tf.maximum(y2 - y1, 0.0) * tf.maximum(x2 - x1, 0.0)


def pairwise_iou(a: Any, b: Any) -> Any:
    """Intersection over union of every pair (no +1), as TAO's anchor labeler and ROI sampler.

    Boxes without area (inverted, degenerate, or the ``-1`` padding rows) have IoU 0 with
    everything; callers that must tell padding apart mask it themselves.

    Args:
        a: float32 ``[..., N, 4]``.
        b: float32 ``[..., M, 4]`` with the same leading axes as ``a`` (or broadcastable).

    Returns:
        float32 ``[..., N, M]`` in [0, 1].
    """
    a = tf.convert_to_tensor(a, tf.float32)
    b = tf.convert_to_tensor(b, tf.float32)
    ay1, ax1, ay2, ax2 = (t[..., :, None] for t in _split(a))
    by1, bx1, by2, bx2 = (t[..., None, :] for t in _split(b))
    inter_h = tf.maximum(tf.minimum(ay2, by2) - tf.maximum(ay1, by1), 0.0)
    inter_w = tf.maximum(tf.minimum(ax2, bx2) - tf.maximum(ax1, bx1), 0.0)
    inter = inter_h * inter_w
    area_a = box_area(a)[..., :, None]
    area_b = box_area(b)[..., None, :]
    union = area_a + area_b - inter
    valid = tf.logical_and(area_a > 0.0, area_b > 0.0)
    return tf.where(valid, inter / tf.maximum(union, _EPS), tf.zeros_like(inter))


def _centres(boxes: Any) -> tuple[Any, Any, Any, Any]:
    y1, x1, y2, x2 = _split(boxes)
    h = tf.maximum(y2 - y1 + 1.0, _EPS)
    w = tf.maximum(x2 - x1 + 1.0, _EPS)
    return y1 + 0.5 * h, x1 + 0.5 * w, h, w


def encode_boxes(boxes: Any, anchors: Any, weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0)) -> Any:
    """Regression targets of ``boxes`` relative to ``anchors`` (TAO's +1 coder).

    Args:
        boxes: float32 ``[..., 4]`` target boxes (pixels).
        anchors: float32 ``[..., 4]`` reference boxes, broadcastable against ``boxes``.
        weights: ``(wy, wx, wh, ww)`` multipliers (``bbox_reg_weights`` for the second stage).

    Returns:
        float32 ``[..., 4]`` deltas ``(dy, dx, dh, dw)``.  Callers zero the rows of unmatched
        anchors themselves (sizes are clamped at 1e-8 so padding rows stay finite).
    """
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    anchors = tf.convert_to_tensor(anchors, tf.float32)
    yc, xc, h, w = _centres(boxes)
    yca, xca, ha, wa = _centres(anchors)
    wy, wx, wh, ww = (float(v) for v in weights)
    return tf.stack(
        [wy * (yc - yca) / ha, wx * (xc - xca) / wa, wh * tf.math.log(h / ha), ww * tf.math.log(w / wa)],
        axis=-1,
    )


def decode_boxes(deltas: Any, anchors: Any, weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0)) -> Any:
    """Boxes from regression deltas (inverse of :func:`encode_boxes`), dh/dw clamped.

    Args:
        deltas: float32 ``[..., 4]`` ``(dy, dx, dh, dw)``.
        anchors: float32 ``[..., 4]`` reference boxes, broadcastable against ``deltas``.
        weights: ``(wy, wx, wh, ww)`` the deltas were encoded with.

    Returns:
        float32 ``[..., 4]`` boxes ``(y1, x1, y2, x2)`` in pixels (not clipped).
    """
    deltas = tf.convert_to_tensor(deltas, tf.float32)
    anchors = tf.convert_to_tensor(anchors, tf.float32)
    yca, xca, ha, wa = _centres(anchors)
    wy, wx, wh, ww = (float(v) for v in weights)
    dy = deltas[..., 0] / wy
    dx = deltas[..., 1] / wx
    dh = tf.minimum(deltas[..., 2] / wh, BBOX_XFORM_CLIP)
    dw = tf.minimum(deltas[..., 3] / ww, BBOX_XFORM_CLIP)
    yc = dy * ha + yca
    xc = dx * wa + xca
    h = tf.exp(dh) * ha
    w = tf.exp(dw) * wa
    y1 = yc - 0.5 * h
    x1 = xc - 0.5 * w
    return tf.stack([y1, x1, y1 + h - 1.0, x1 + w - 1.0], axis=-1)


def clip_boxes(boxes: Any, height: Any, width: Any) -> Any:
    """Clip boxes to ``[0, height - 1] x [0, width - 1]`` (TAO clips to the last pixel).

    Args:
        boxes: float32 ``[..., 4]``.
        height: image height in pixels: a number, or a tensor broadcastable against
            ``boxes[..., 0]`` (e.g. ``[B, 1]`` for boxes ``[B, N, 4]``).
        width: image width, same form as ``height``.

    Returns:
        float32 ``[..., 4]`` clipped boxes.
    """
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    ymax = tf.cast(height, tf.float32) - 1.0
    xmax = tf.cast(width, tf.float32) - 1.0
    y1, x1, y2, x2 = _split(boxes)
    return tf.stack(
        [
            tf.minimum(tf.maximum(y1, 0.0), ymax),
            tf.minimum(tf.maximum(x1, 0.0), xmax),
            tf.minimum(tf.maximum(y2, 0.0), ymax),
            tf.minimum(tf.maximum(x2, 0.0), xmax),
        ],
        axis=-1,
    )


__all__ = ["BBOX_XFORM_CLIP", "box_area", "clip_boxes", "decode_boxes", "encode_boxes", "pairwise_iou"]
