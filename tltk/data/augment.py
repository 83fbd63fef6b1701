"""Preprocessing and augmentation of detection frames as TensorFlow ops.

Everything spatial is one 3x3 matrix per image, applied to the image (one bilinear warp) and
to the boxes (their four corners), so boxes always land where their pixels go.

Coordinate convention: continuous pixel coordinates, pixel ``i`` covers ``[i, i + 1)`` and its
centre is ``i + 0.5``; box coordinates ``(x1, y1, x2, y2)`` are edges in this system (a box
``(2, 3, 6, 8)`` covers pixel columns 2..5 and rows 3..7).  A spatial matrix ``M`` acts on
column vectors ``[x, y, 1]`` and maps a point of the *output* image to the point of the
*source* image it is sampled from; boxes are mapped with ``M⁻¹``.

Order (the documented one, see docs/data_pipeline.md):

1. optional auto-resize of the whole image to the output size (``enable_auto_resize``);
2. crop ``[crop_left, crop_right) x [crop_top, crop_bottom)`` of that image (when any crop
   value is non-zero), then scale by ``scale_width``/``scale_height`` (when not 1).  The
   result is the *canvas*;
3. training only: random flips (horizontal and vertical), translation, zoom and rotation on
   the canvas, drawn per image;
4. the canvas is placed at the top-left of the output tensor: padded with zeros or clipped on
   the right and bottom to ``output_image_width x output_image_height``.  Pixels sampled
   outside the source image (exposed by translation, zoom-out or rotation) get 0.5;
5. training and 3 channels only: colour matrix (contrast, hue/saturation, brightness shift);
   values are clipped to [0, 1];
6. boxes: mapped with the same matrix, clipped to the visible canvas, then boxes with no
   area left or smaller than ``min_bbox_width``/``min_bbox_height`` are dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import tensorflow as tf

__all__ = [
    "PreprocessingParams",
    "SpatialAugmentationParams",
    "ColorAugmentationParams",
    "AugmentationParams",
    "flip_matrix",
    "translation_matrix",
    "zoom_matrix",
    "rotation_matrix",
    "preprocessing_matrix",
    "random_spatial_matrix",
    "random_color_transform",
    "warp_image",
    "transform_boxes",
    "apply_color_transform",
    "AugmentedFrame",
    "augment_frame",
    "FILL_VALUE",
]

#: Value of output pixels sampled outside the source image (TAO's choice).
FILL_VALUE = 0.5


@dataclass(frozen=True)
class PreprocessingParams:
    """``augmentation_config.preprocessing``: output size, crop, scale and label filters.

    Attributes:
        output_width: network input width in pixels (multiple of 16).
        output_height: network input height in pixels (multiple of 16).
        output_channels: 1 or 3.
        crop_left, crop_top, crop_right, crop_bottom: crop rectangle in (resized) image pixels;
            all zero means no crop.
        scale_width, scale_height: scale factors applied after the crop; 1 means no scaling
            (a spec's unset or explicit 0 reads as 1, the proto's default).
        min_bbox_width, min_bbox_height: boxes narrower/lower than this (output pixels, after
            augmentation and clipping) are dropped.
        enable_auto_resize: resize every image to the output size first (aspect not kept).
    """

    output_width: int
    output_height: int
    output_channels: int = 3
    crop_left: int = 0
    crop_top: int = 0
    crop_right: int = 0
    crop_bottom: int = 0
    scale_width: float = 1.0
    scale_height: float = 1.0
    min_bbox_width: float = 0.0
    min_bbox_height: float = 0.0
    enable_auto_resize: bool = False

    @property
    def has_crop(self) -> bool:
        """Whether a crop rectangle is configured (any crop value non-zero)."""
        return any((self.crop_left, self.crop_top, self.crop_right, self.crop_bottom))

    @classmethod
    def from_config(cls, msg: Any) -> PreprocessingParams:
        """Read a ``Preprocessing`` message of a loaded (validated) spec.

        Unset fields are the proto's defaults; ranges were checked by the spec rules.
        """
        return cls(output_width=int(msg.output_image_width), output_height=int(msg.output_image_height),
                   output_channels=int(msg.output_image_channel), crop_left=int(msg.crop_left),
                   crop_top=int(msg.crop_top), crop_right=int(msg.crop_right), crop_bottom=int(msg.crop_bottom),
                   scale_width=float(msg.scale_width), scale_height=float(msg.scale_height),
                   min_bbox_width=float(msg.min_bbox_width), min_bbox_height=float(msg.min_bbox_height),
                   enable_auto_resize=bool(msg.enable_auto_resize))


@dataclass(frozen=True)
class SpatialAugmentationParams:
    """``augmentation_config.spatial_augmentation`` (training only).

    Attributes:
        hflip_probability: probability of a horizontal flip.
        vflip_probability: probability of a vertical flip.
        zoom_min, zoom_max: zoom ratio range; ratio r > 1 shrinks the content (zoom out),
            r < 1 enlarges it (zoom in).
        translate_max_x, translate_max_y: maximum shift in pixels (integers drawn uniformly in
            ``[-max, max]``).
        rotate_rad_max: maximum rotation angle in radians (angle uniform in ``[-max, max]``).
        rotate_probability: probability of rotating (the spec loader reads an explicit 0 as
            the default 1.0, as TAO does).

    The field defaults describe no augmentation, for parameters built in code; a spec's
    unset fields take the proto's defaults through :meth:`from_config`.
    """

    hflip_probability: float = 0.0
    vflip_probability: float = 0.0
    zoom_min: float = 1.0
    zoom_max: float = 1.0
    translate_max_x: int = 0
    translate_max_y: int = 0
    rotate_rad_max: float = 0.0
    rotate_probability: float = 1.0

    @classmethod
    def from_config(cls, msg: Any) -> SpatialAugmentationParams:
        """Read a ``SpatialAugmentation`` message of a loaded (validated) spec.

        Unset fields are the proto's defaults; ranges were checked by the spec rules.
        """
        return cls(float(msg.hflip_probability), float(msg.vflip_probability), float(msg.zoom_min),
                   float(msg.zoom_max), int(msg.translate_max_x), int(msg.translate_max_y),
                   float(msg.rotate_rad_max), float(msg.rotate_probability))


@dataclass(frozen=True)
class ColorAugmentationParams:
    """``augmentation_config.color_augmentation`` (training, 3 channels only).

    Attributes:
        color_shift_stddev: standard deviation of the brightness offset (same for R, G, B),
            drawn from a normal truncated at two standard deviations.
        hue_rotation_max: maximum hue rotation in degrees (truncated normal, sigma = max/2).
        saturation_shift_max: saturation factor is ``1 + U(-max, max)``.
        contrast_scale_max: contrast slope change (truncated normal, sigma = max/2).
        contrast_center: pixel value the contrast pivots around.

    The field defaults describe no colour change, for parameters built in code; a spec's
    unset fields take the proto's defaults through :meth:`from_config`.
    """

    color_shift_stddev: float = 0.0
    hue_rotation_max: float = 0.0
    saturation_shift_max: float = 0.0
    contrast_scale_max: float = 0.0
    contrast_center: float = 0.5

    @property
    def enabled(self) -> bool:
        """Whether any colour change can happen."""
        return any((self.color_shift_stddev, self.hue_rotation_max, self.saturation_shift_max, self.contrast_scale_max))

    @classmethod
    def from_config(cls, msg: Any) -> ColorAugmentationParams:
        """Read a ``ColorAugmentation`` message of a loaded (validated) spec.

        Unset fields are the proto's defaults; ranges were checked by the spec rules.
        """
        return cls(float(msg.color_shift_stddev), float(msg.hue_rotation_max), float(msg.saturation_shift_max),
                   float(msg.contrast_scale_max), float(msg.contrast_center))


@dataclass(frozen=True)
class AugmentationParams:
    """The whole ``augmentation_config``."""

    preprocessing: PreprocessingParams
    spatial: SpatialAugmentationParams = field(default_factory=SpatialAugmentationParams)
    color: ColorAugmentationParams = field(default_factory=ColorAugmentationParams)

    @classmethod
    def from_config(cls, msg: Any) -> AugmentationParams:
        """Read an ``AugmentationConfig`` message of a loaded (validated) spec.

        Blocks the spec leaves out read as the proto's defaults (an unset sub-message of a
        protobuf message has its default values).
        """
        return cls(PreprocessingParams.from_config(msg.preprocessing),
                   SpatialAugmentationParams.from_config(msg.spatial_augmentation),
                   ColorAugmentationParams.from_config(msg.color_augmentation))


# ---- matrices (float32, column-vector convention, output point -> source point) -------------

def _mat(rows: list[list[Any]]) -> tf.Tensor:
    return tf.stack([tf.stack([tf.cast(v, tf.float32) for v in row]) for row in rows])


def flip_matrix(width: Any, height: Any, horizontal: Any, vertical: Any) -> tf.Tensor:
    """Flip on a ``width x height`` canvas: ``x -> width - x`` and/or ``y -> height - y``.

    Args:
        width, height: canvas size in pixels (scalars).
        horizontal, vertical: booleans (scalars or tensors).

    Returns:
        [3, 3] float32 matrix.
    """
    h = tf.cast(horizontal, tf.float32)
    v = tf.cast(vertical, tf.float32)
    w = tf.cast(width, tf.float32)
    ht = tf.cast(height, tf.float32)
    return _mat([[1.0 - 2.0 * h, 0.0, h * w], [0.0, 1.0 - 2.0 * v, v * ht], [0.0, 0.0, 1.0]])


def translation_matrix(tx: Any, ty: Any) -> tf.Tensor:
    """Translation: output point ``p`` samples source ``p + (tx, ty)`` (content moves by ``-t``).

    Returns:
        [3, 3] float32 matrix.
    """
    return _mat([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]])


def zoom_matrix(ratio: Any, tx: Any, ty: Any) -> tf.Tensor:
    """Zoom: output point ``p`` samples source ``(p - (tx, ty)) * ratio``.

    ``ratio > 1`` shrinks the content (zoom out), ``ratio < 1`` enlarges it (zoom in).

    Returns:
        [3, 3] float32 matrix.
    """
    r = tf.cast(ratio, tf.float32)
    return _mat([[r, 0.0, -r * tf.cast(tx, tf.float32)], [0.0, r, -r * tf.cast(ty, tf.float32)], [0.0, 0.0, 1.0]])


def rotation_matrix(angle: Any, width: Any, height: Any) -> tf.Tensor:
    """Rotation by ``angle`` radians about the centre of a ``width x height`` canvas.

    Output point ``p`` samples ``c + R(angle) (p - c)``, ``c = (width/2, height/2)``.

    Returns:
        [3, 3] float32 matrix.
    """
    a = tf.cast(angle, tf.float32)
    cx = tf.cast(width, tf.float32) / 2.0
    cy = tf.cast(height, tf.float32) / 2.0
    cos, sin = tf.cos(a), tf.sin(a)
    return _mat([[cos, -sin, cx - cos * cx + sin * cy], [sin, cos, cy - sin * cx - cos * cy], [0.0, 0.0, 1.0]])


def preprocessing_matrix(image_width: Any, image_height: Any, params: PreprocessingParams
                         ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """The deterministic part: auto-resize, crop, scale.

    Args:
        image_width, image_height: size of the decoded image in pixels (scalars).
        params: preprocessing parameters.

    Returns:
        ``(matrix [3, 3], canvas_width, canvas_height)``: the matrix maps canvas points to
        source-image points; the canvas size is float32 pixels.
    """
    w = tf.cast(image_width, tf.float32)
    h = tf.cast(image_height, tf.float32)
    m = tf.eye(3, dtype=tf.float32)
    if params.enable_auto_resize:
        m = _mat([[w / params.output_width, 0.0, 0.0], [0.0, h / params.output_height, 0.0], [0.0, 0.0, 1.0]])
        w = tf.constant(float(params.output_width))
        h = tf.constant(float(params.output_height))
    if params.has_crop:
        m = m @ translation_matrix(float(params.crop_left), float(params.crop_top))
        w = tf.constant(float(params.crop_right - params.crop_left))
        h = tf.constant(float(params.crop_bottom - params.crop_top))
    sw = params.scale_width
    sh = params.scale_height
    if sw != 1.0 or sh != 1.0:
        m = m @ _mat([[1.0 / sw, 0.0, 0.0], [0.0, 1.0 / sh, 0.0], [0.0, 0.0, 1.0]])
        w = w * sw
        h = h * sh
    return m, w, h


def _seeds(seed: tf.Tensor, num: int) -> list[tf.Tensor]:
    seed = tf.cast(seed, tf.int64)
    return list(tf.unstack(tf.random.experimental.stateless_split(seed, num=num)))


def random_spatial_matrix(seed: tf.Tensor, canvas_width: Any, canvas_height: Any,
                          params: SpatialAugmentationParams) -> tf.Tensor:
    """Draw one random spatial augmentation: flips, translation, zoom, rotation (in this order).

    Args:
        seed: [2] integer tensor; the same seed gives the same matrix.
        canvas_width, canvas_height: canvas size in pixels.
        params: spatial augmentation parameters.

    Returns:
        [3, 3] float32 matrix, canvas-after-augmentation point -> canvas-before point.
    """
    s = _seeds(seed, 9)
    w = tf.cast(canvas_width, tf.float32)
    h = tf.cast(canvas_height, tf.float32)

    def uniform(i: int) -> tf.Tensor:
        return tf.random.stateless_uniform([], s[i], dtype=tf.float32)

    hflip = uniform(0) < params.hflip_probability
    vflip = uniform(1) < params.vflip_probability
    m = flip_matrix(w, h, hflip, vflip)
    tx = tf.random.stateless_uniform([], s[2], minval=-params.translate_max_x, maxval=params.translate_max_x + 1,
                                     dtype=tf.int32)
    ty = tf.random.stateless_uniform([], s[3], minval=-params.translate_max_y, maxval=params.translate_max_y + 1,
                                     dtype=tf.int32)
    m = m @ translation_matrix(tf.cast(tx, tf.float32), tf.cast(ty, tf.float32))
    ratio = params.zoom_min + (params.zoom_max - params.zoom_min) * uniform(4)
    zx = uniform(5) * (w - w / ratio)
    zy = uniform(6) * (h - h / ratio)
    m = m @ zoom_matrix(ratio, zx, zy)
    rotate = uniform(7) < params.rotate_probability
    angle = (2.0 * uniform(8) - 1.0) * params.rotate_rad_max * tf.cast(rotate, tf.float32)
    return m @ rotation_matrix(angle, w, h)


# Luma-preserving hue rotation / saturation, written for column vectors (out = M @ rgb):
# M = K + s*cos(h)*A + s*sin(h)*B.
_HUE_K = [[0.299, 0.587, 0.114], [0.299, 0.587, 0.114], [0.299, 0.587, 0.114]]
_HUE_A = [[0.701, -0.587, -0.114], [-0.299, 0.413, -0.114], [-0.299, -0.587, 0.886]]
_HUE_B = [[0.168, 0.330, -0.497], [-0.328, 0.035, 0.292], [1.25, -1.05, -0.203]]


def hue_saturation_matrix(hue_degrees: Any, saturation: Any) -> tf.Tensor:
    """3x3 colour matrix (column vectors) rotating hue by ``hue_degrees`` and scaling
    saturation by ``saturation`` while keeping luma (0.299 R + 0.587 G + 0.114 B)."""
    h = tf.cast(hue_degrees, tf.float32) * (math.pi / 180.0)
    s = tf.cast(saturation, tf.float32)
    return (tf.constant(_HUE_K) + s * tf.cos(h) * tf.constant(_HUE_A) + s * tf.sin(h) * tf.constant(_HUE_B))


def random_color_transform(seed: tf.Tensor, params: ColorAugmentationParams) -> tuple[tf.Tensor, tf.Tensor]:
    """Draw one colour transform: contrast, then hue/saturation, then brightness shift.

    Args:
        seed: [2] integer tensor.
        params: colour augmentation parameters.

    Returns:
        ``(matrix [3, 3], offset [3])``: ``rgb_out = matrix @ rgb + offset`` (before clipping).
    """
    s = _seeds(seed, 4)
    shift = tf.random.stateless_truncated_normal([], s[0]) * params.color_shift_stddev
    hue = tf.random.stateless_truncated_normal([], s[1]) * (params.hue_rotation_max / 2.0)
    saturation = 1.0 + params.saturation_shift_max * (2.0 * tf.random.stateless_uniform([], s[2]) - 1.0)
    contrast = tf.random.stateless_truncated_normal([], s[3]) * (params.contrast_scale_max / 2.0)
    hs = hue_saturation_matrix(hue, saturation)
    matrix = hs * (1.0 + contrast)
    offset = tf.reduce_sum(hs, axis=1) * (-contrast * params.contrast_center) + shift
    return matrix, offset


def apply_color_transform(image: tf.Tensor, matrix: tf.Tensor, offset: tf.Tensor) -> tf.Tensor:
    """Apply ``rgb_out = matrix @ rgb + offset`` per pixel and clip to [0, 1].

    Args:
        image: [H, W, 3] float32 in [0, 1].
        matrix: [3, 3]; offset: [3].

    Returns:
        [H, W, 3] float32 in [0, 1].
    """
    out = tf.einsum("hwc,dc->hwd", image, matrix) + offset
    return tf.clip_by_value(out, 0.0, 1.0)


def warp_image(image: tf.Tensor, matrix: tf.Tensor, output_height: int, output_width: int,
               fill_value: float = FILL_VALUE) -> tf.Tensor:
    """Resample ``image`` through ``matrix`` (bilinear) into an ``output_height x output_width`` image.

    Args:
        image: [H, W, C] float32.
        matrix: [3, 3] output point -> source point (continuous coordinates, pixel centres at
            ``i + 0.5``).
        output_height, output_width: output size in pixels.
        fill_value: value of samples falling outside the source image.

    Returns:
        [output_height, output_width, C] float32.
    """
    # Convert to pixel-index coordinates (centres at integers), which the TF op uses.
    to_index = tf.constant([[1.0, 0.0, -0.5], [0.0, 1.0, -0.5], [0.0, 0.0, 1.0]])
    from_index = tf.constant([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
    m = to_index @ tf.cast(matrix, tf.float32) @ from_index
    m = m / m[2, 2]
    transform = tf.reshape(tf.concat([m[0, :], m[1, :], m[2, :2]], axis=0), [1, 8])
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[tf.newaxis], transforms=transform,
        output_shape=tf.constant([output_height, output_width], tf.int32),
        fill_value=tf.constant(fill_value, tf.float32), interpolation="BILINEAR", fill_mode="CONSTANT")
    return out[0]


def transform_boxes(boxes: tf.Tensor, matrix: tf.Tensor) -> tf.Tensor:
    """Map source-image boxes into the output image: the tight box around the four mapped corners.

    Args:
        boxes: [N, 4] float32 ``x1, y1, x2, y2`` in source pixels.
        matrix: [3, 3] output point -> source point (the matrix the image was warped with).

    Returns:
        [N, 4] float32 boxes in output pixels (not clipped).
    """
    inv = tf.linalg.inv(tf.cast(matrix, tf.float32))
    x1, y1, x2, y2 = tf.unstack(tf.cast(boxes, tf.float32), axis=-1)
    xs = tf.stack([x1, x2, x2, x1], axis=-1)
    ys = tf.stack([y1, y1, y2, y2], axis=-1)
    ones = tf.ones_like(xs)
    pts = tf.stack([xs, ys, ones], axis=-1)  # [N, 4, 3]
    mapped = tf.einsum("ij,nkj->nki", inv, pts)
    mx = mapped[..., 0] / mapped[..., 2]
    my = mapped[..., 1] / mapped[..., 2]
    return tf.stack([tf.reduce_min(mx, -1), tf.reduce_min(my, -1), tf.reduce_max(mx, -1), tf.reduce_max(my, -1)], -1)


@dataclass
class AugmentedFrame:
    """Result of :func:`augment_frame`.

    Attributes:
        image: [output_height, output_width, C] float32 in [0, 1].
        boxes: [N, 4] float32 boxes in output pixels, clipped to the visible canvas.
        keep: [N] bool, False for boxes that were dropped (too small before augmentation, no
            area left after clipping, or below ``min_bbox_width/height``).
        matrix: [3, 3] the spatial matrix used (output point -> source point).
    """

    image: tf.Tensor
    boxes: tf.Tensor
    keep: tf.Tensor
    matrix: tf.Tensor


def augment_frame(image: tf.Tensor, boxes: tf.Tensor, params: AugmentationParams, training: bool,
                  seed: tf.Tensor | None = None) -> AugmentedFrame:
    """Preprocess (and when ``training``, randomly augment) one image with its boxes.

    Args:
        image: [H, W, C] uint8 or float32 (float images must already be in [0, 1]).
        boxes: [N, 4] float32 ``x1, y1, x2, y2`` in source-image pixels.
        params: augmentation parameters.
        training: apply the random spatial and colour augmentation.
        seed: [2] integer tensor for the random draws (required when ``training``).

    Returns:
        The augmented frame (see :class:`AugmentedFrame`).
    """
    pre = params.preprocessing
    if image.dtype == tf.uint8:
        image = tf.cast(image, tf.float32) / 255.0
    else:
        image = tf.cast(image, tf.float32)
    shape = tf.shape(image)
    img_h, img_w = shape[0], shape[1]
    boxes = tf.reshape(tf.cast(boxes, tf.float32), [-1, 4])

    # TAO drops labels smaller than one pixel (after the optional auto-resize scaling).
    sx = float(pre.output_width) / tf.cast(img_w, tf.float32) if pre.enable_auto_resize else tf.constant(1.0)
    sy = float(pre.output_height) / tf.cast(img_h, tf.float32) if pre.enable_auto_resize else tf.constant(1.0)
    big_enough = ((boxes[:, 2] - boxes[:, 0]) * sx >= 1.0) & ((boxes[:, 3] - boxes[:, 1]) * sy >= 1.0)

    if pre.has_crop and not pre.enable_auto_resize:
        # Crop rectangles reaching past the image see zero padding (right/bottom), as documented.
        pad_h = tf.maximum(pre.crop_bottom - img_h, 0)
        pad_w = tf.maximum(pre.crop_right - img_w, 0)
        image = tf.pad(image, [[0, pad_h], [0, pad_w], [0, 0]])

    matrix, canvas_w, canvas_h = preprocessing_matrix(img_w, img_h, pre)
    if training:
        if seed is None:
            raise ValueError("augment_frame(training=True) needs a seed")
        spatial_seed, color_seed = tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2))
        matrix = matrix @ random_spatial_matrix(spatial_seed, canvas_w, canvas_h, params.spatial)

    out = warp_image(image, matrix, pre.output_height, pre.output_width)
    # Zero padding right/bottom of the canvas.
    cols = tf.range(pre.output_width, dtype=tf.float32) + 0.5
    rows = tf.range(pre.output_height, dtype=tf.float32) + 0.5
    inside = tf.cast(rows[:, None] < canvas_h, tf.float32) * tf.cast(cols[None, :] < canvas_w, tf.float32)
    out = out * inside[:, :, None]
    if training and pre.output_channels == 3 and params.color.enabled:
        cmat, offset = random_color_transform(color_seed, params.color)
        out = apply_color_transform(out, cmat, offset)
    else:
        out = tf.clip_by_value(out, 0.0, 1.0)
    out = tf.ensure_shape(out, [pre.output_height, pre.output_width, None])

    mapped = transform_boxes(boxes, matrix)
    vis_w = tf.minimum(canvas_w, float(pre.output_width))
    vis_h = tf.minimum(canvas_h, float(pre.output_height))
    clipped = tf.stack([tf.clip_by_value(mapped[:, 0], 0.0, vis_w), tf.clip_by_value(mapped[:, 1], 0.0, vis_h),
                        tf.clip_by_value(mapped[:, 2], 0.0, vis_w), tf.clip_by_value(mapped[:, 3], 0.0, vis_h)], -1)
    bw = clipped[:, 2] - clipped[:, 0]
    bh = clipped[:, 3] - clipped[:, 1]
    keep = big_enough & (bw > 0.0) & (bh > 0.0) & (bw >= pre.min_bbox_width) & (bh >= pre.min_bbox_height)
    return AugmentedFrame(image=out, boxes=clipped, keep=keep, matrix=matrix)
