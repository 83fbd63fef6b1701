"""FPN, RPN head, box head and mask head with TAO's layer names and initialisers.

All tensors are channels-last.  Layer names (and so weight names) are TAO's:

* FPN: laterals ``l2``..``l5`` (1x1, 256), top-down ``FPN_up_<l>`` (nearest x2) and
  ``FPN_add_<l>``, ``post_hoc_d2``..``post_hoc_d5`` (3x3, 256); ``p6`` is a 1x1/2 max-pool of
  P5 when ``max_level == 6``; above 6 every extra level ``p<l>`` is a 3x3/2 conv of the level
  below (TAO's rule).  No activations.
* RPN (shared by every level): ``rpn`` 3x3 256 ReLU, ``rpn-class`` 1x1 A logits,
  ``rpn-box`` 1x1 4A deltas, all N(0, 0.01) with zero bias.
* Box head: flatten in (C, H, W) order (TAO's ``fc6`` kernel layout), ``fc6``/``fc7`` Dense
  ReLU, ``class-predict`` (N(0, 0.01)) and ``box-predict`` (4C outputs, N(0, 0.001)).
* Mask head: ``mask-conv-l0``..``l3`` 3x3 256 ReLU, ``conv5-mask`` 2x2/2 transposed conv ReLU,
  ``mask_fcn_logits`` 1x1 C logits; normal init with std ``sqrt(2 / fan)`` as TAO.

The heads are objects so that the inference and training graphs call the same layers (shared
weights); every call site gets its own weightless reshaping layers (``name_suffix``).  A head
can also be made of the layers of a built model (``from_model``), whatever their widths: that
is how a pruned model is retrained.
"""

from __future__ import annotations

import math
from typing import Any

import keras

from tltk.backbones.layers import BackboneConfig, conv2d
from tltk.mask_rcnn.layers import FoldRois

FPN_CHANNELS = 256
MASK_HEAD_CHANNELS = 256


def fpn_level_layer_names(min_level: int, max_level: int) -> dict[int, str]:
    """The layer whose output is each pyramid level: ``post_hoc_d<l>`` up to 5, then ``p<l>``.

    Args:
        min_level: lowest pyramid level.
        max_level: highest pyramid level.

    Returns:
        level -> layer name.
    """
    return {level: f"post_hoc_d{level}" if level <= 5 else f"p{level}" for level in range(min_level, max_level + 1)}


def build_fpn(c_levels: dict[int, Any], min_level: int, max_level: int, kernel_regularizer: Any = None
              ) -> dict[int, Any]:
    """Feature pyramid P_min..P_max from ResNet levels C2..C5.

    Args:
        c_levels: level -> backbone feature map (NHWC), at least ``min_level..5``.
        min_level: lowest pyramid level (2..5).
        max_level: highest pyramid level (> min_level).
        kernel_regularizer: regularizer for every conv kernel, or None.

    Returns:
        level -> NHWC map with 256 channels, ``2**level`` times smaller than the input.
    """
    laterals = {
        level: keras.layers.Conv2D(FPN_CHANNELS, 1, padding="same", kernel_regularizer=kernel_regularizer,
                                   name=f"l{level}")(c_levels[level])
        for level in range(min_level, 6)
    }
    merged = {5: laterals[5]}
    for level in range(4, min_level - 1, -1):
        up = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"FPN_up_{level}")(merged[level + 1])
        merged[level] = keras.layers.Add(name=f"FPN_add_{level}")([laterals[level], up])
    names = fpn_level_layer_names(min_level, max_level)
    pyramid = {
        level: keras.layers.Conv2D(FPN_CHANNELS, 3, padding="same", kernel_regularizer=kernel_regularizer,
                                   name=names[level])(merged[level])
        for level in range(min_level, 6)
    }
    if max_level == 6:
        pyramid[6] = keras.layers.MaxPooling2D(pool_size=1, strides=2, padding="valid", name=names[6])(pyramid[5])
    elif max_level > 6:
        config = BackboneConfig(kernel_regularizer=kernel_regularizer)
        for level in range(6, max_level + 1):
            pyramid[level] = conv2d(pyramid[level - 1], FPN_CHANNELS, 3, strides=2, use_bias=True,
                                    name=names[level], config=config)
    return {level: pyramid[level] for level in range(min_level, max_level + 1)}


class RpnHead:
    """TAO's RPN head, one set of layers applied to every level.

    Args:
        anchors_per_location: A.
        kernel_regularizer: regularizer for the kernels, or None.
    """

    def __init__(self, anchors_per_location: int, kernel_regularizer: Any = None) -> None:
        init = keras.initializers.RandomNormal(stddev=0.01)
        common = dict(kernel_initializer=init, bias_initializer="zeros", kernel_regularizer=kernel_regularizer)
        self.conv = keras.layers.Conv2D(FPN_CHANNELS, 3, padding="same", activation="relu", name="rpn", **common)
        self.scores = keras.layers.Conv2D(anchors_per_location, 1, name="rpn-class", **common)
        self.boxes = keras.layers.Conv2D(4 * anchors_per_location, 1, name="rpn-box", **common)

    @classmethod
    def from_model(cls, model: keras.Model) -> RpnHead:
        """The head made of a built model's ``rpn``, ``rpn-class`` and ``rpn-box`` layers."""
        head = cls.__new__(cls)
        head.conv, head.scores, head.boxes = (model.get_layer(n) for n in ("rpn", "rpn-class", "rpn-box"))
        return head

    def __call__(self, feature: Any) -> tuple[Any, Any]:
        """Objectness logits ``[B, H, W, A]`` and deltas ``[B, H, W, 4A]`` of one level."""
        hidden = self.conv(feature)
        return self.scores(hidden), self.boxes(hidden)


class BoxHead:
    """TAO's two-layer MLP box head.

    Args:
        num_classes: C with the background.
        mlp_dim: ``fast_rcnn_mlp_head_dim``.
        kernel_regularizer: regularizer for the kernels, or None.
    """

    def __init__(self, num_classes: int, mlp_dim: int, kernel_regularizer: Any = None) -> None:
        self.num_classes = int(num_classes)
        self.fc6 = keras.layers.Dense(mlp_dim, activation="relu", kernel_regularizer=kernel_regularizer, name="fc6")
        self.fc7 = keras.layers.Dense(mlp_dim, activation="relu", kernel_regularizer=kernel_regularizer, name="fc7")
        self.class_predict = keras.layers.Dense(
            num_classes, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
            kernel_regularizer=kernel_regularizer, name="class-predict")
        self.box_predict = keras.layers.Dense(
            4 * num_classes, kernel_initializer=keras.initializers.RandomNormal(stddev=0.001),
            kernel_regularizer=kernel_regularizer, name="box-predict")

    @classmethod
    def from_model(cls, model: keras.Model) -> BoxHead:
        """The head made of a built model's ``fc6``, ``fc7``, ``class-predict`` and ``box-predict`` layers."""
        head = cls.__new__(cls)
        head.fc6, head.fc7, head.class_predict, head.box_predict = (
            model.get_layer(n) for n in ("fc6", "fc7", "class-predict", "box-predict"))
        head.num_classes = int(head.class_predict.units)
        return head

    def __call__(self, roi_features: Any, name_suffix: str = "") -> tuple[Any, Any]:
        """Class logits ``[B, R, C]`` and box deltas ``[B, R, 4C]`` of ROI features ``[B, R, S, S, F]``."""
        rois, size, _, channels = (int(d) for d in roi_features.shape[1:])
        x = keras.layers.Permute((1, 4, 2, 3), name=f"box_head_chw{name_suffix}")(roi_features)
        x = keras.layers.Reshape((rois, channels * size * size), name=f"box_head_reshape1{name_suffix}")(x)
        x = self.fc7(self.fc6(x))
        return self.class_predict(x), self.box_predict(x)


class MaskHead:
    """TAO's mask head (4 convs, a transposed conv, per-class logits).

    Args:
        num_classes: C with the background.
        kernel_regularizer: regularizer for the kernels, or None.
    """

    def __init__(self, num_classes: int, kernel_regularizer: Any = None) -> None:
        def normal(fan: int) -> Any:
            return keras.initializers.RandomNormal(stddev=math.sqrt(2.0 / fan))

        self.convs = [
            keras.layers.Conv2D(MASK_HEAD_CHANNELS, 3, padding="same", activation="relu",
                                kernel_initializer=normal(3 * 3 * MASK_HEAD_CHANNELS),
                                kernel_regularizer=kernel_regularizer, name=f"mask-conv-l{i}")
            for i in range(4)
        ]
        self.deconv = keras.layers.Conv2DTranspose(
            MASK_HEAD_CHANNELS, 2, strides=2, padding="valid", activation="relu",
            kernel_initializer=normal(2 * 2 * MASK_HEAD_CHANNELS), kernel_regularizer=kernel_regularizer,
            name="conv5-mask")
        self.logits = keras.layers.Conv2D(num_classes, 1, kernel_initializer=normal(num_classes),
                                          kernel_regularizer=kernel_regularizer, name="mask_fcn_logits")

    @classmethod
    def from_model(cls, model: keras.Model) -> MaskHead:
        """The head made of a built model's ``mask-conv-l0..3``, ``conv5-mask`` and ``mask_fcn_logits`` layers."""
        head = cls.__new__(cls)
        head.convs = [model.get_layer(f"mask-conv-l{i}") for i in range(4)]
        head.deconv = model.get_layer("conv5-mask")
        head.logits = model.get_layer("mask_fcn_logits")
        return head

    def __call__(self, roi_features: Any, name_suffix: str = "") -> Any:
        """Per-class mask logits ``[B * R, 2S, 2S, C]`` of ROI features ``[B, R, S, S, F]``."""
        x = FoldRois(name=f"mask_head_fold{name_suffix}")(roi_features)
        for conv in self.convs:
            x = conv(x)
        return self.logits(self.deconv(x))


__all__ = ["FPN_CHANNELS", "BoxHead", "MaskHead", "RpnHead", "build_fpn", "fpn_level_layer_names"]
