"""Multilevel ROIAlign with TAO's sampling, as one gather (training and export share it).

TAO's sampler (TPU reference lineage): a ROI of size ``h x w`` input pixels goes to FPN level
``l = floor(log2(sqrt(h * w) / 224)) + 4`` clamped to ``[min_level, max_level]``; its box is
divided by ``2**l`` and an ``S x S`` grid is sampled with ONE bilinear sample per bin at
``y1 + (i + 0.5) * h / S`` (feature pixel ``u`` sits at coordinate ``u``, no half-pixel shift).
The two neighbours of a sample are ``floor(y)`` clamped to ``[0, H_l - 1]`` and that plus one,
clamped again; the weights come from the clamped ``floor``, exactly as TAO, so samples past the
last row read the last row.

The levels are flattened into one ``[B * sum(H_l * W_l), C]`` table, each sample's four
neighbours are gathered at once and blended: only Gather/Mul/Add/ReduceSum in ONNX, with no
per-ROI loop.  :func:`bilinear_gather` is the generic core, also used for the mask targets.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import tensorflow as tf

#: TAO's canonical ROI size and level: a 224 x 224 ROI reads level 4.
CANONICAL_SIZE = 224.0
CANONICAL_LEVEL = 4


def _axis_samples(start: Any, length: Any, size: int, bound: Any) -> tuple[Any, Any]:
    """Neighbour indices ``[..., size, 2]`` and weights ``[..., size, 2]`` along one axis."""
    grid = (tf.range(size, dtype=tf.float32) + 0.5) / float(size)
    pos = start[..., None] + grid * length[..., None]
    bound = tf.cast(bound, tf.float32)[..., None]
    low = tf.minimum(tf.maximum(tf.floor(pos), 0.0), bound)
    high = tf.minimum(low + 1.0, bound)
    frac = pos - low
    index = tf.stack([low, high], axis=-1)
    weight = tf.stack([1.0 - frac, frac], axis=-1)
    return tf.cast(index, tf.int32), weight


def bilinear_gather(table: Any, base: Any, row_stride: Any, height: Any, width: Any, boxes: Any,
                    size: int) -> Any:
    """Sample an ``size x size`` grid inside each box of a flattened set of maps.

    Args:
        table: ``[N, C]`` every map's pixels, row-major, one row per pixel.
        base: int32 ``[B, R]`` row of ``table`` holding pixel (0, 0) of each box's map.
        row_stride: int32 ``[B, R]`` (or scalar) pixels per row of each box's map.
        height: ``[B, R]`` (or scalar) map height; rows past ``height - 1`` are clamped.
        width: ``[B, R]`` (or scalar) map width.
        boxes: float32 ``[B, R, 4]`` ``(y1, x1, y2, x2)`` in the map's pixel coordinates.
        size: output side S.

    Returns:
        ``[B, R, S, S, C]`` in ``table``'s dtype.
    """
    boxes = tf.cast(boxes, tf.float32)
    y1, x1, y2, x2 = boxes[..., 0], boxes[..., 1], boxes[..., 2], boxes[..., 3]
    height = tf.cast(height, tf.float32) + tf.zeros_like(y1)
    width = tf.cast(width, tf.float32) + tf.zeros_like(x1)
    yi, wy = _axis_samples(y1, y2 - y1, size, height - 1.0)  # [B, R, S, 2]
    xi, wx = _axis_samples(x1, x2 - x1, size, width - 1.0)
    row_stride = tf.cast(row_stride, tf.int32) + tf.zeros_like(base)
    rows = base[..., None, None] + yi * row_stride[..., None, None]  # [B, R, S, 2]
    # [B, R, S (y), S (x), 2 (y neighbour), 2 (x neighbour)] -> the 4 neighbours on one axis
    index = rows[:, :, :, None, :, None] + xi[:, :, None, :, None, :]
    weight = wy[:, :, :, None, :, None] * wx[:, :, None, :, None, :]
    num_boxes = int(boxes.shape[1])
    index = tf.reshape(index, [-1, num_boxes, size, size, 4])
    weight = tf.reshape(weight, [-1, num_boxes, size, size, 4, 1])
    values = tf.gather(table, index)  # [B, R, S, S, 4, C]
    return tf.reduce_sum(values * tf.cast(weight, values.dtype), axis=4)


def roi_levels(boxes: Any, min_level: int, max_level: int) -> Any:
    """FPN level of each ROI (TAO's rule, sizes without +1).

    Args:
        boxes: float32 ``[..., 4]`` in input pixels.
        min_level: lowest level.
        max_level: highest level.

    Returns:
        int32 ``[...]`` levels in ``[min_level, max_level]``.
    """
    boxes = tf.cast(boxes, tf.float32)
    h = boxes[..., 2] - boxes[..., 0]
    w = boxes[..., 3] - boxes[..., 1]
    area = tf.maximum(h * w, 1e-8)
    level = tf.floor(tf.math.log(tf.sqrt(area) / CANONICAL_SIZE) / math.log(2.0)) + CANONICAL_LEVEL
    return tf.cast(tf.clip_by_value(level, float(min_level), float(max_level)), tf.int32)


def multilevel_roi_align(features: list[Any], boxes: Any, size: int, min_level: int) -> Any:
    """ROIAlign of every ROI on its FPN level.

    Args:
        features: channels-last maps ``[B, H_l, W_l, C]`` for levels ``min_level, min_level+1,
            ...`` (ascending), each ``2**l`` times smaller than the input.
        boxes: float32 ``[B, R, 4]`` ``(y1, x1, y2, x2)`` in input pixels.
        size: output side S (7 for the box head, 14 for the mask head).
        min_level: level of ``features[0]``.

    Returns:
        ``[B, R, S, S, C]`` in the features' dtype.
    """
    max_level = min_level + len(features) - 1
    heights = [int(f.shape[1]) for f in features]
    widths = [int(f.shape[2]) for f in features]
    channels = int(features[0].shape[-1])
    pixels = [h * w for h, w in zip(heights, widths, strict=True)]
    total = sum(pixels)
    offsets = [sum(pixels[:i]) for i in range(len(pixels))]
    batch = tf.shape(features[0])[0]
    table = tf.concat([tf.reshape(f, [batch, -1, channels]) for f in features], axis=1)
    table = tf.reshape(table, [-1, channels])

    boxes = tf.cast(boxes, tf.float32)
    level = roi_levels(boxes, min_level, max_level) - min_level  # [B, R] in 0..L-1
    scale = tf.pow(2.0, -tf.cast(level + min_level, tf.float32))
    level_boxes = boxes * scale[..., None]
    level_height = tf.gather(tf.constant(heights, tf.int32), level)
    level_width = tf.gather(tf.constant(widths, tf.int32), level)
    image_base = tf.range(batch, dtype=tf.int32)[:, None] * total
    base = image_base + tf.gather(tf.constant(offsets, tf.int32), level)
    return bilinear_gather(table, base, level_width, level_height, level_width, level_boxes, size)


@keras.saving.register_keras_serializable(package="tltk")
class MultilevelRoiAlign(keras.layers.Layer):
    """Keras layer around :func:`multilevel_roi_align`.

    Call: ``layer(features, boxes)`` with ``features`` a list of ``[B, H_l, W_l, C]`` maps for
    levels ``min_level..`` and ``boxes`` ``[B, R, 4]`` input pixels; returns ``[B, R, S, S, C]``.

    Args:
        output_size: S.
        min_level: level of the first feature map.
    """

    def __init__(self, output_size: int, min_level: int, **kwargs: Any) -> None:
        # boxes stay float32 under a mixed-precision policy; the output keeps the features' dtype
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.output_size = int(output_size)
        self.min_level = int(min_level)

    def call(self, features: list[Any], boxes: Any) -> Any:
        return multilevel_roi_align(list(features), boxes, self.output_size, self.min_level)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(output_size=self.output_size, min_level=self.min_level)
        return config


__all__ = ["CANONICAL_LEVEL", "CANONICAL_SIZE", "MultilevelRoiAlign", "bilinear_gather", "multilevel_roi_align",
           "roi_levels"]
