"""Detections from the box head: TAO's ``generate_detections`` output as one exportable layer.

TAO's TF evaluation semantics (class-aware): softmax over the classes, background dropped,
every (ROI, class) box decoded with ``bbox_reg_weights`` (+1 coder, dh/dw clamp) and clipped to
the input canvas, then per-class NMS (IoU ``test_nms``) keeping the ``K`` best overall.

Per-class NMS is run as ONE single-class ``combined_non_max_suppression`` with boxes shared
across classes (the form tf2onnx turns into ONNX ``NonMaxSuppression``): each class's boxes are
shifted by ``class * (max(H, W) + 1)`` so boxes of different classes never overlap, and the
class is read back from the shift.  Before NMS the ``min(R * (C - 1), MAX_CANDIDATES)``
best-scoring (ROI, class) pairs are kept, so ONNX Runtime and TensorRT (TopK < 3840) see the
same candidates.

Output ``[B, K, 6]`` rows ``(y1, x1, y2, x2, class, score)`` in input pixels, class 1..C-1 as
float, sorted by descending score; empty rows are ``(0, 0, 0, 0, -1, 0)`` (the TensorRT
plugin's convention).
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from tltk.boxes.tf_ops import clip_boxes, decode_boxes

#: Largest number of (ROI, class) candidates entering the detection NMS.
MAX_CANDIDATES = 3000


def generate_detections(class_logits: Any, box_deltas: Any, rois: Any, roi_scores: Any, *, num_classes: int,
                        bbox_reg_weights: tuple[float, float, float, float], max_detections: int,
                        nms_threshold: float, image_size: tuple[int, int],
                        max_candidates: int = MAX_CANDIDATES) -> Any:
    """Detections of a batch (see the module docstring).

    Args:
        class_logits: ``[B, R, C]`` box-head class logits (C with the background).
        box_deltas: ``[B, R, 4C]`` box-head deltas, class ``c`` in channels ``4c..4c+3``.
        rois: float32 ``[B, R, 4]`` proposals (input pixels).
        roi_scores: ``[B, R]`` proposal scores; ROIs with score 0 are empty slots.
        num_classes: C.
        bbox_reg_weights: ``(wy, wx, wh, ww)``.
        max_detections: K.
        nms_threshold: per-class NMS IoU.
        image_size: input ``(H, W)``; boxes are clipped to ``[0, H-1] x [0, W-1]``.
        max_candidates: cap on the (ROI, class) pairs entering NMS.

    Returns:
        float32 ``[B, K, 6]``.
    """
    classes = int(num_classes) - 1
    num_rois = int(rois.shape[1])
    height, width = (int(v) for v in image_size)
    batch = tf.shape(rois)[0]
    probs = tf.nn.softmax(tf.cast(class_logits, tf.float32), axis=-1)[:, :, 1:]
    probs = probs * tf.cast(tf.cast(roi_scores, tf.float32) > 0.0, tf.float32)[..., None]
    deltas = tf.reshape(tf.cast(box_deltas, tf.float32), [batch, num_rois, classes + 1, 4])[:, :, 1:, :]
    boxes = decode_boxes(deltas, tf.cast(rois, tf.float32)[:, :, None, :], bbox_reg_weights)
    boxes = clip_boxes(boxes, height, width)

    pairs = num_rois * classes
    count = min(pairs, int(max_candidates))
    scores, index = tf.math.top_k(tf.reshape(probs, [batch, pairs]), k=count, sorted=True)
    candidates = tf.gather(tf.reshape(boxes, [batch, pairs, 4]), index, batch_dims=1)
    class_index = index - (index // classes) * classes
    stride = float(max(height, width) + 1)
    shifted = candidates + tf.cast(class_index, tf.float32)[..., None] * stride

    keep = min(int(max_detections), count)
    nms = tf.image.combined_non_max_suppression(
        shifted[:, :, None, :], scores[:, :, None], max_output_size_per_class=keep, max_total_size=keep,
        iou_threshold=float(nms_threshold), score_threshold=0.0, pad_per_class=False, clip_boxes=False)
    shift = tf.floor((nms.nmsed_boxes[..., 0] + 0.5) / stride)
    out_boxes = nms.nmsed_boxes - shift[..., None] * stride
    out_scores = nms.nmsed_scores
    valid = out_scores > 0.0
    rows = tf.concat([out_boxes, (shift + 1.0)[..., None], out_scores[..., None]], axis=-1)
    empty = tf.constant([0.0, 0.0, 0.0, 0.0, -1.0, 0.0], tf.float32)
    rows = tf.where(valid[..., None], rows, empty + tf.zeros_like(rows))
    if keep < int(max_detections):
        padding = tf.tile(empty[None, None, :], [batch, int(max_detections) - keep, 1])
        rows = tf.concat([rows, padding], axis=1)
    return rows


@keras.saving.register_keras_serializable(package="tltk")
class GenerateDetections(keras.layers.Layer):
    """Keras layer around :func:`generate_detections` (TAO's layer and output name).

    Call: ``layer(class_logits, box_deltas, rois, roi_scores)`` -> ``[B, K, 6]``.

    Args:
        num_classes: C with the background.
        bbox_reg_weights: ``(wy, wx, wh, ww)``.
        max_detections: K (``test_detections_per_image``).
        nms_threshold: ``test_nms``.
        image_size: input ``(H, W)``.
        max_candidates: (ROI, class) pairs entering NMS.
    """

    def __init__(self, num_classes: int, bbox_reg_weights: Any, max_detections: int, nms_threshold: float,
                 image_size: Any, max_candidates: int = MAX_CANDIDATES, **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.bbox_reg_weights = tuple(float(w) for w in bbox_reg_weights)
        self.max_detections = int(max_detections)
        self.nms_threshold = float(nms_threshold)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.max_candidates = int(max_candidates)

    def call(self, class_logits: Any, box_deltas: Any, rois: Any, roi_scores: Any) -> Any:
        return generate_detections(class_logits, box_deltas, rois, roi_scores, num_classes=self.num_classes,
                                   bbox_reg_weights=self.bbox_reg_weights,  # type: ignore[arg-type]
                                   max_detections=self.max_detections, nms_threshold=self.nms_threshold,
                                   image_size=self.image_size, max_candidates=self.max_candidates)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(num_classes=self.num_classes, bbox_reg_weights=list(self.bbox_reg_weights),
                      max_detections=self.max_detections, nms_threshold=self.nms_threshold,
                      image_size=list(self.image_size), max_candidates=self.max_candidates)
        return config


__all__ = ["MAX_CANDIDATES", "GenerateDetections", "generate_detections"]
