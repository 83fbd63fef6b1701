"""Small reshaping layers of the MaskRCNN graph (no Lambda layers: every layer is registered).

* :class:`FoldRois` ``[B, R, H, W, C] -> [B * R, H, W, C]`` so 2-D convolutions run per ROI;
* :class:`UnfoldRois` ``[B * R, H, W, C] -> [B, R, H, W, C]`` (or ``[B, R, C, H, W]``, TAO's
  mask layout);
* :class:`SelectClassMasks` picks each ROI's class plane ``[B, R, H, W, C] -> [B, R, H, W]``;
* :class:`SplitDetections` gives the boxes ``[B, K, 4]`` of ``generate_detections`` rows.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="tltk")
class FoldRois(keras.layers.Layer):
    """``[B, R, H, W, C] -> [B * R, H, W, C]``."""

    def call(self, inputs: Any) -> Any:
        shape = inputs.shape
        return tf.reshape(inputs, [-1, int(shape[2]), int(shape[3]), int(shape[4])])


@keras.saving.register_keras_serializable(package="tltk")
class UnfoldRois(keras.layers.Layer):
    """``[B * R, H, W, C] -> [B, R, H, W, C]``, or ``[B, R, C, H, W]`` with ``channels_first``.

    Args:
        num_rois: R.
        channels_first: move the channels before the spatial axes (TAO's mask logits layout).
    """

    def __init__(self, num_rois: int, channels_first: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_rois = int(num_rois)
        self.channels_first = bool(channels_first)

    def call(self, inputs: Any) -> Any:
        h, w, c = (int(d) for d in inputs.shape[1:])
        if self.channels_first:
            inputs = tf.transpose(inputs, [0, 3, 1, 2])
            return tf.reshape(inputs, [-1, self.num_rois, c, h, w])
        return tf.reshape(inputs, [-1, self.num_rois, h, w, c])

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(num_rois=self.num_rois, channels_first=self.channels_first)
        return config


@keras.saving.register_keras_serializable(package="tltk")
class SelectClassMasks(keras.layers.Layer):
    """The plane of each ROI's class: ``([B, R, H, W, C], classes [B, R]) -> [B, R, H, W]``."""

    def call(self, masks: Any, classes: Any) -> Any:
        depth = int(masks.shape[-1])
        one_hot = tf.one_hot(tf.cast(classes, tf.int32), depth, dtype=masks.dtype)
        return tf.reduce_sum(masks * one_hot[:, :, None, None, :], axis=-1)


@keras.saving.register_keras_serializable(package="tltk")
class SplitDetections(keras.layers.Layer):
    """The ``(y1, x1, y2, x2)`` columns of ``[B, K, 6]`` detections: ``[B, K, 4]`` (float32)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def call(self, detections: Any) -> Any:
        return detections[..., :4]


__all__ = ["FoldRois", "SelectClassMasks", "SplitDetections", "UnfoldRois"]
