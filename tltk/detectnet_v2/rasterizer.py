"""DetectNet_v2 ground-truth targets: coverage and bbox grids, and the loss masks.

All functions are TensorFlow ops working on one image (use them in ``Dataset.map``).

Spaces: boxes come in model-input pixels ``(x1, y1, x2, y2)``; the output grid has
``W_out = W_in / stride_x`` columns and ``H_out = H_in / stride_y`` rows and output cell
``(i, j)`` (column i, row j) covers output coordinates ``[i, i + 1) x [j, j + 1)``.

Per box (output-space units, per-class parameters from ``bbox_rasterizer_config``):

* centre ``cx = xmin + cov_center_x (xmax - xmin)`` (same for y); half extent to the nearer
  edge ``hx`` (``cx - xmin`` if ``cov_center_x < 0.5`` else ``xmax - cx``);
* coverage ellipse semi-axes ``rx = max(cov_radius_x * hx, 0.1)`` (same for y), enlarged
  keeping the aspect ratio so that neither is below ``bbox_min_radius``;
* deadzone ellipse ``dx = max((1 - deadzone_radius) rx + deadzone_radius hx, rx)``;
* per cell, ``c`` and ``a`` are the fractions of 4x4 sub-samples (at ``i + (k + 0.5)/4``)
  strictly inside the coverage and the deadzone ellipse.

Compositing per class, boxes in order of increasing ``y2`` (lower boxes are nearer and drawn
later): a box takes a cell when ``a > 0`` and ``a >= maxcov`` of the cell, clearing what was
there and writing its values when ``c > 0``.  Values: ``cov = c``, ``cov_norm = c / max(4 rx ry, 1)``,
and the four bbox channels (not multiplied by coverage)::

    L = (X_i - x1) / scale   T = (Y_j - y1) / scale   R = (x2 - X_i) / scale   B = (y2 - Y_j) / scale
    X_i = stride_x * i + offset,  Y_j = stride_y * j + offset      (input pixels)

With TAO's ``scale = 35`` and ``offset = 0.5``.  Target layout matches the model outputs:
``cov`` [C, H_out, W_out], ``bbox`` [4C, H_out, W_out] with channel ``4c + k``,
``k`` = 0 L, 1 T, 2 R, 3 B, classes in ``cost_function_config.target_classes`` order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import tensorflow as tf

from tltk._proto import detectnet_v2_pb2 as pb
from tltk.errors import SpecError
from tltk.spec.fields import spec_default

__all__ = ["ClassRasterParams", "RasterizerParams", "rasterize_targets", "LossMaskRule", "LossMaskParams",
           "rasterize_loss_masks", "SUBSAMPLES"]

#: Sub-samples per output cell and axis used to estimate coverage fractions.
SUBSAMPLES = 4

#: ``model_config.objective_set.bbox.scale`` and ``.offset`` when a spec leaves them unset.
DEFAULT_BBOX_SCALE: float = spec_default(pb.ModelConfig.BboxObjective, "scale")
DEFAULT_BBOX_OFFSET: float = spec_default(pb.ModelConfig.BboxObjective, "offset")


@dataclass(frozen=True)
class ClassRasterParams:
    """``bbox_rasterizer_config.target_class_config[<class>]`` (all in [0, 1]).

    No defaults here: a spec's unset fields read the proto's (:meth:`RasterizerParams.from_config`).
    """

    cov_center_x: float
    cov_center_y: float
    cov_radius_x: float
    cov_radius_y: float
    bbox_min_radius: float


@dataclass(frozen=True)
class RasterizerParams:
    """Everything needed to build targets for one model.

    Attributes:
        class_names: target classes in output channel order.
        classes: per-class ellipse parameters, same order.
        deadzone_radius: global deadzone radius in [0, 1].
        input_width, input_height: model input size in pixels.
        stride_x, stride_y: input pixels per output cell (16 for DetectNet_v2).
        bbox_scale: ``model_config.objective_set.bbox.scale`` (the proto's default 35.0).
        bbox_offset: ``model_config.objective_set.bbox.offset`` (the proto's default 0.5).
    """

    class_names: tuple[str, ...]
    classes: tuple[ClassRasterParams, ...]
    deadzone_radius: float
    input_width: int
    input_height: int
    stride_x: int = 16
    stride_y: int = 16
    bbox_scale: float = DEFAULT_BBOX_SCALE
    bbox_offset: float = DEFAULT_BBOX_OFFSET

    @property
    def grid_width(self) -> int:
        """Output grid columns (``input_width // stride_x``)."""
        return self.input_width // self.stride_x

    @property
    def grid_height(self) -> int:
        """Output grid rows (``input_height // stride_y``)."""
        return self.input_height // self.stride_y

    @property
    def num_classes(self) -> int:
        """Number of target classes."""
        return len(self.class_names)

    @classmethod
    def from_config(cls, rasterizer_config: Any, class_names: list[str] | tuple[str, ...], input_width: int,
                    input_height: int, bbox_scale: float = DEFAULT_BBOX_SCALE,
                    bbox_offset: float = DEFAULT_BBOX_OFFSET,
                    stride: int = 16) -> RasterizerParams:
        """Build from ``bbox_rasterizer_config`` and the target class order.

        Args:
            rasterizer_config: the ``BboxRasterizerConfig`` message (``target_class_config`` map,
                ``deadzone_radius``).
            class_names: target classes in output channel order.
            input_width, input_height: model input size.
            bbox_scale, bbox_offset: the bbox objective's ``scale`` and ``offset``.
            stride: backbone output stride.

        The value ranges are the DetectNet_v2 spec rules' (checked when a spec is loaded); values
        given here directly are taken as they are.

        Raises:
            SpecError: a target class has no ``target_class_config`` entry.
        """
        problems: list[str] = []
        configs = dict(rasterizer_config.target_class_config)
        lowered = {str(k).lower(): v for k, v in configs.items()}
        per_class: list[ClassRasterParams] = []
        for name in class_names:
            cfg = configs.get(name, lowered.get(name.lower()))
            if cfg is None:
                problems.append(f"bbox_rasterizer_config.target_class_config: no entry for target class {name!r}")
                continue
            per_class.append(ClassRasterParams(**{k: float(getattr(cfg, k))
                                                  for k in ClassRasterParams.__dataclass_fields__}))
        if problems:
            raise SpecError("invalid bbox rasterizer configuration", problems)
        return cls(tuple(class_names), tuple(per_class), float(rasterizer_config.deadzone_radius), int(input_width),
                   int(input_height), stride, stride, float(bbox_scale), float(bbox_offset))


def _class_table(params: RasterizerParams) -> tf.Tensor:
    rows = [[c.cov_center_x, c.cov_center_y, c.cov_radius_x, c.cov_radius_y, c.bbox_min_radius] for c in params.classes]
    return tf.constant(rows if rows else [[0.0] * 5], tf.float32)


def _fractions(cx: tf.Tensor, cy: tf.Tensor, rx: tf.Tensor, ry: tf.Tensor, sample_x: tf.Tensor, sample_y: tf.Tensor,
               grid_h: int, grid_w: int) -> tf.Tensor:
    inside = (tf.square((sample_y[:, None] - cy) / ry) + tf.square((sample_x[None, :] - cx) / rx)) < 1.0
    blocks = tf.reshape(tf.cast(inside, tf.float32), [grid_h, SUBSAMPLES, grid_w, SUBSAMPLES])
    return tf.reduce_mean(blocks, axis=[1, 3])


def rasterize_targets(boxes: tf.Tensor, classes: tf.Tensor, params: RasterizerParams) -> dict[str, tf.Tensor]:
    """Rasterize the coverage, normalised-coverage and bbox targets of one image.

    Args:
        boxes: [N, 4] float32 ``x1, y1, x2, y2`` in model-input pixels.
        classes: [N] int32 target class indices in ``[0, C)``.
        params: rasterizer parameters.

    Returns:
        Dict with ``cov`` [C, H, W], ``cov_norm`` [C, H, W] and ``bbox`` [4C, H, W] float32
        (H, W = output grid size).
    """
    C, H, W = params.num_classes, params.grid_height, params.grid_width
    boxes = tf.reshape(tf.cast(boxes, tf.float32), [-1, 4])
    classes = tf.reshape(tf.cast(classes, tf.int32), [-1])
    order = tf.argsort(boxes[:, 3], stable=True)
    boxes = tf.gather(boxes, order)
    classes = tf.gather(classes, order)
    table = _class_table(params)
    sx, sy = float(params.stride_x), float(params.stride_y)
    scale, offset = params.bbox_scale, params.bbox_offset
    sub = (tf.range(SUBSAMPLES, dtype=tf.float32) + 0.5) / SUBSAMPLES
    sample_x = tf.reshape(tf.range(W, dtype=tf.float32)[:, None] + sub[None, :], [-1])
    sample_y = tf.reshape(tf.range(H, dtype=tf.float32)[:, None] + sub[None, :], [-1])
    anchor_x = sx * tf.range(W, dtype=tf.float32) + offset  # [W]
    anchor_y = sy * tf.range(H, dtype=tf.float32) + offset  # [H]
    deadzone = params.deadzone_radius

    def body(n: tf.Tensor, cov: tf.Tensor, cov_norm: tf.Tensor, bbox: tf.Tensor, maxcov: tf.Tensor):
        x1, y1, x2, y2 = tf.unstack(boxes[n])
        k = classes[n]
        cx_r, cy_r, rad_x, rad_y, rmin = tf.unstack(table[k])
        xmin, xmax, ymin, ymax = x1 / sx, x2 / sx, y1 / sy, y2 / sy
        cx = xmin + cx_r * (xmax - xmin)
        cy = ymin + cy_r * (ymax - ymin)
        hx = tf.where(cx_r < 0.5, cx - xmin, xmax - cx)
        hy = tf.where(cy_r < 0.5, cy - ymin, ymax - cy)
        rx = tf.maximum(rad_x * hx, 0.1)
        ry = tf.maximum(rad_y * hy, 0.1)
        small_x = rx < rmin
        rx, ry = tf.where(small_x, rmin, rx), tf.where(small_x, rmin * ry / rx, ry)
        small_y = ry < rmin
        rx, ry = tf.where(small_y, rmin * rx / ry, rx), tf.where(small_y, rmin, ry)
        dx = tf.maximum((1.0 - deadzone) * rx + deadzone * hx, rx)
        dy = tf.maximum((1.0 - deadzone) * ry + deadzone * hy, ry)
        inv_area = 1.0 / tf.maximum(4.0 * rx * ry, 1.0)
        c = _fractions(cx, cy, rx, ry, sample_x, sample_y, H, W)
        a = _fractions(cx, cy, dx, dy, sample_x, sample_y, H, W)
        win = (a > 0.0) & (a >= maxcov[k])
        write = win & (c > 0.0)
        grads = tf.stack([
            tf.broadcast_to((anchor_x[None, :] - x1) / scale, [H, W]),
            tf.broadcast_to((anchor_y[:, None] - y1) / scale, [H, W]),
            tf.broadcast_to((x2 - anchor_x[None, :]) / scale, [H, W]),
            tf.broadcast_to((y2 - anchor_y[:, None]) / scale, [H, W]),
        ])
        idx = tf.reshape(k, [1, 1])
        new_cov = tf.where(win, c, cov[k])
        new_norm = tf.where(win, c * inv_area, cov_norm[k])
        new_max = tf.where(win, c, maxcov[k])
        new_bbox = tf.where(write[None], grads, tf.where(win[None], 0.0, bbox[k]))
        cov = tf.tensor_scatter_nd_update(cov, idx, new_cov[None])
        cov_norm = tf.tensor_scatter_nd_update(cov_norm, idx, new_norm[None])
        maxcov = tf.tensor_scatter_nd_update(maxcov, idx, new_max[None])
        bbox = tf.tensor_scatter_nd_update(bbox, idx, new_bbox[None])
        return n + 1, cov, cov_norm, bbox, maxcov

    zeros = tf.zeros([C, H, W], tf.float32)
    n_boxes = tf.shape(boxes)[0]
    _, cov, cov_norm, bbox, _ = tf.while_loop(
        lambda n, *_: n < n_boxes, body,
        (tf.constant(0), zeros, zeros, tf.zeros([C, 4, H, W], tf.float32), zeros))
    return {"cov": cov, "cov_norm": cov_norm, "bbox": tf.reshape(bbox, [4 * C, H, W])}


# ---- loss masks ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class LossMaskRule:
    """One ``objective_label_filter_configs`` entry.

    Attributes:
        kind: ``all``, ``bbox_dimensions``, ``bbox_crop`` or ``source_class``.
        values: filter values: ``(min_width, min_height, max_width, max_height)`` for
            ``bbox_dimensions`` (a max of 0 means unbounded), ``(left, right, top, bottom)`` for
            ``bbox_crop`` (all zero means everything), none otherwise.
        source_classes: lower-cased source class names for ``source_class``.
        class_indices: target classes the rule applies to (empty: all).
        objectives: ``cov``/``bbox`` objectives the rule applies to (empty: both).
    """

    kind: str
    values: tuple[float, ...] = ()
    source_classes: tuple[str, ...] = ()
    class_indices: tuple[int, ...] = ()
    objectives: tuple[str, ...] = ()


@dataclass(frozen=True)
class LossMaskParams:
    """``loss_mask_label_filter``: rules, ``mask_multiplier`` and ``preserve_ground_truth``."""

    rules: tuple[LossMaskRule, ...] = ()
    mask_multiplier: float = 0.0
    preserve_ground_truth: bool = False

    @classmethod
    def from_config(cls, msg: Any, class_names: list[str] | tuple[str, ...]) -> LossMaskParams:
        """Build from an ``ObjectiveLabelFilter`` message (``None`` gives no rules).

        Raises:
            SpecError: a target class or objective name is unknown.
        """
        if msg is None:
            return cls()
        problems: list[str] = []
        rules: list[LossMaskRule] = []
        lookup = {n.lower(): i for i, n in enumerate(class_names)}
        for index, conf in enumerate(msg.objective_label_filter_configs):
            where = f"loss_mask_label_filter.objective_label_filter_configs[{index}]"
            indices = []
            for name in conf.target_class_names:
                if str(name).lower() not in lookup:
                    problems.append(f"{where}.target_class_names: {name!r} is not a target class")
                else:
                    indices.append(lookup[str(name).lower()])
            objectives = tuple(str(o) for o in conf.objective_names)
            for obj in objectives:
                if obj not in ("cov", "bbox"):
                    problems.append(f"{where}.objective_names: {obj!r} is not 'cov' or 'bbox'")
            rules.append(_rule(conf.label_filter if conf.HasField("label_filter") else None, tuple(indices), objectives))
        if problems:
            raise SpecError("invalid loss_mask_label_filter", problems)
        return cls(tuple(rules), float(msg.mask_multiplier), bool(msg.preserve_ground_truth))


def _rule(label_filter: Any, indices: tuple[int, ...], objectives: tuple[str, ...]) -> LossMaskRule:
    which = label_filter.WhichOneof("label_filter_params") if label_filter is not None else None
    if which == "bbox_dimensions_label_filter":
        f = label_filter.bbox_dimensions_label_filter
        vals = (float(f.min_width), float(f.min_height), float(f.max_width), float(f.max_height))
        return LossMaskRule("bbox_dimensions", vals, (), indices, objectives)
    if which == "bbox_crop_label_filter":
        f = label_filter.bbox_crop_label_filter
        vals = (float(f.crop_left), float(f.crop_right), float(f.crop_top), float(f.crop_bottom))
        return LossMaskRule("bbox_crop", vals, (), indices, objectives)
    if which == "source_class_label_filter":
        names = tuple(str(n).lower() for n in label_filter.source_class_label_filter.source_class_names)
        return LossMaskRule("source_class", (), names, indices, objectives)
    return LossMaskRule("all", (), (), indices, objectives)


def _selected(rule: LossMaskRule, boxes: tf.Tensor, classes: tf.Tensor, source_classes: tf.Tensor) -> tf.Tensor:
    n = tf.shape(boxes)[0]
    sel = tf.ones([n], tf.bool)
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    if rule.kind == "bbox_dimensions":
        min_w, min_h, max_w, max_h = rule.values
        sel = (w >= min_w) & (h >= min_h)
        if max_w > 0:
            sel &= w <= max_w
        if max_h > 0:
            sel &= h <= max_h
    elif rule.kind == "bbox_crop" and any(rule.values):
        left, right, top, bottom = rule.values
        sel = (boxes[:, 0] < right) & (boxes[:, 2] > left) & (boxes[:, 1] < bottom) & (boxes[:, 3] > top)
    if rule.kind == "source_class":
        if not rule.source_classes:
            return tf.zeros([n], tf.bool)
        names = tf.constant(list(rule.source_classes), tf.string)
        lowered = tf.strings.lower(source_classes)
        return tf.reduce_any(tf.equal(lowered[:, None], names[None, :]), axis=1)
    # Other filters only select labels that map to a target class.
    sel &= classes >= 0
    if rule.class_indices:
        wanted = tf.constant(list(rule.class_indices), tf.int32)
        sel &= tf.reduce_any(tf.equal(classes[:, None], wanted[None, :]), axis=1)
    return sel


def rasterize_loss_masks(boxes: tf.Tensor, classes: tf.Tensor, source_classes: tf.Tensor, cov: tf.Tensor,
                         params: RasterizerParams, mask_params: LossMaskParams | None = None,
                         source_weight: tf.Tensor | float = 1.0) -> dict[str, tf.Tensor]:
    """Per-class loss masks of one image.

    The default mask is ``source_weight`` everywhere.  Each ``loss_mask_label_filter`` rule
    selects labels and multiplies the mask by ``mask_multiplier`` in every output cell that a
    selected box overlaps, for the rule's objectives (both when none is listed):

    * ``bbox_dimensions``/``bbox_crop``/no filter: labels of a target class (restricted to the
      rule's ``target_class_names`` when listed) whose box passes the filter; each masks its
      own class channel;
    * ``source_class``: labels whose source (TFRecord) class is listed, including classes that
      ``target_class_mapping`` does not map (``dontcare``); a mapped label masks its own class
      channel (when it is one of the rule's classes, if listed), an unmapped one masks the
      rule's ``target_class_names`` channels (all classes when none is listed).

    With ``preserve_ground_truth``, cells where the class's coverage target is > 0 keep the
    plain mask.

    Args:
        boxes: [N, 4] float32 model-input pixels (all labels, mapped or not).
        classes: [N] int32 target class indices, -1 for labels of unmapped classes.
        source_classes: [N] string source (TFRecord) class names.
        cov: [C, H, W] coverage target from :func:`rasterize_targets`.
        params: rasterizer parameters (grid and stride).
        mask_params: the loss-mask filter, or None.
        source_weight: scalar weight of the frame's data source.

    Returns:
        Dict with ``cov_mask`` and ``bbox_mask``, each [C, H, W] float32.
    """
    C, H, W = params.num_classes, params.grid_height, params.grid_width
    weight = tf.cast(source_weight, tf.float32)
    base = tf.ones([C, H, W], tf.float32)
    masks = {"cov": base, "bbox": base}
    if mask_params is not None and mask_params.rules:
        boxes = tf.reshape(tf.cast(boxes, tf.float32), [-1, 4])
        classes = tf.reshape(tf.cast(classes, tf.int32), [-1])
        gx = boxes[:, 0:4:2] / float(params.stride_x)
        gy = boxes[:, 1:4:2] / float(params.stride_y)
        cols = tf.range(W, dtype=tf.float32)
        rows = tf.range(H, dtype=tf.float32)
        # Cell [i, i+1) overlaps [x1, x2) with positive length.
        in_x = (cols[None, :] + 1.0 > gx[:, :1]) & (cols[None, :] < gx[:, 1:])  # [N, W]
        in_y = (rows[None, :] + 1.0 > gy[:, :1]) & (rows[None, :] < gy[:, 1:])  # [N, H]
        rect = tf.cast(in_y[:, :, None] & in_x[:, None, :], tf.float32)  # [N, H, W]
        own = tf.one_hot(classes, C, dtype=tf.float32)  # [N, C]; all zero for class -1
        for rule in mask_params.rules:
            sel = tf.cast(_selected(rule, boxes, classes, source_classes), tf.float32)
            allowed = tf.reduce_sum(tf.one_hot(list(rule.class_indices), C), axis=0) if rule.class_indices \
                else tf.ones([C], tf.float32)
            channels = tf.where((classes < 0)[:, None], allowed[None, :], own * allowed[None, :])
            region = tf.einsum("nc,nhw->chw", channels * sel[:, None], rect) > 0.0
            if mask_params.preserve_ground_truth:
                region &= ~(cov > 0.0)
            for objective in ("cov", "bbox"):
                if not rule.objectives or objective in rule.objectives:
                    masks[objective] = tf.where(region, masks[objective] * mask_params.mask_multiplier,
                                                masks[objective])
    return {"cov_mask": masks["cov"] * weight, "bbox_mask": masks["bbox"] * weight}
