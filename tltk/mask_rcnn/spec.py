"""MaskRCNN spec rules and typed accessors.

MaskRCNN has one spec kind (``experiment``).  Tuple and list values are strings holding
Python literals; the accessors below parse them with :mod:`tltk.spec.literals` (never
``eval``) and return plain Python values::

    image_size(exp)              -> (832, 1344)                    # (height, width)
    aspect_ratios(exp)           -> [(1.0, 1.0), (1.4, 0.7), (0.7, 1.4)]
    bbox_reg_weights(exp)        -> (10.0, 10.0, 5.0, 5.0)
    learning_rate_steps(exp)     -> [60000, 80000, 100000]
    learning_rate_decay_levels(exp) -> [0.1, 0.02, 0.002]
    freeze_blocks(exp)           -> [0, 1]
    total_steps(exp)             -> steps after resolving num_epochs

Unlike TAO, an omitted field takes its documented default (TAO turns it into 0).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from typing import Any

from google.protobuf.message import Message

from tltk._proto import mask_rcnn_pb2 as pb
from tltk.spec.literals import LiteralError, parse_int_sequence, parse_number_sequence, parse_pair_list
from tltk.spec.problems import Reporter
from tltk.spec.rules import (
    Check,
    DataPath,
    KindSchema,
    Required,
    Rule,
    between,
    multiple_of,
    non_negative,
    one_of,
    positive,
)

NLAYERS = (10, 18, 34, 50, 101)
FREEZABLE_BLOCKS = (0, 1, 2, 3, 4)


def image_size(exp: Message) -> tuple[int, int]:
    """Network input size from ``data_config.image_size``.

    Args:
        exp: a MaskRCNN ``Experiment``.

    Returns:
        ``(height, width)`` in pixels.

    Raises:
        LiteralError: when the string is not a pair of whole numbers.
    """
    values = parse_int_sequence(exp.data_config.image_size, length=2)
    if values is None:
        raise LiteralError("data_config.image_size is empty; write e.g. \"(832, 1344)\"")
    return values[0], values[1]


def aspect_ratios(exp: Message) -> list[tuple[float, float]]:
    """Anchor aspect ratios from ``maskrcnn_config.aspect_ratios``.

    Args:
        exp: a MaskRCNN ``Experiment``.

    Returns:
        ``(x_factor, y_factor)`` pairs; anchors per location = len(result) * num_scales.

    Raises:
        LiteralError: when malformed or empty.
    """
    pairs = parse_pair_list(exp.maskrcnn_config.aspect_ratios)
    if not pairs:
        raise LiteralError("maskrcnn_config.aspect_ratios is empty; write e.g. \"[(1.0, 1.0), (1.4, 0.7)]\"")
    return pairs


def bbox_reg_weights(exp: Message) -> tuple[float, float, float, float]:
    """Box regression weights ``(w_y, w_x, w_h, w_w)`` from ``maskrcnn_config.bbox_reg_weights``.

    Raises:
        LiteralError: when not four numbers.
    """
    values = parse_number_sequence(exp.maskrcnn_config.bbox_reg_weights, length=4)
    if values is None:
        raise LiteralError("maskrcnn_config.bbox_reg_weights is empty; write e.g. \"(10., 10., 5., 5.)\"")
    return values[0], values[1], values[2], values[3]


def learning_rate_steps(exp: Message) -> list[int]:
    """Learning-rate decay boundaries in steps (empty list when unset).

    Raises:
        LiteralError: when not a list of whole numbers.
    """
    return parse_int_sequence(exp.learning_rate_steps) or []


def learning_rate_decay_levels(exp: Message) -> list[float]:
    """Multipliers of ``init_learning_rate`` after each boundary (empty list when unset).

    Raises:
        LiteralError: when not a list of numbers.
    """
    return parse_number_sequence(exp.learning_rate_decay_levels) or []


def freeze_blocks(exp: Message) -> list[int]:
    """Backbone block ids to freeze (0 = stem conv1, 1..4 = stages); empty when unset.

    Raises:
        LiteralError: when not a list of whole numbers.
    """
    return parse_int_sequence(exp.maskrcnn_config.freeze_blocks) or []


def total_steps(exp: Message) -> int:
    """Training steps: ``ceil(num_epochs * num_examples_per_epoch / train_batch_size)`` when
    ``num_epochs > 0`` (and ``num_examples_per_epoch > 0``), else ``total_steps``.

    Args:
        exp: a MaskRCNN ``Experiment``.

    Returns:
        The number of optimizer steps (per device).
    """
    if exp.num_epochs > 0 and exp.num_examples_per_epoch > 0:
        return math.ceil(exp.num_epochs * exp.num_examples_per_epoch / max(exp.train_batch_size, 1))
    return int(exp.total_steps)


_DC = "data_config."
_MC = "maskrcnn_config."

REQUIRED = (
    Required("data_config", "it names the data and image size"),
    Required("maskrcnn_config", "it describes the model"),
)

RULES = [
    Rule("train_batch_size", positive()),
    Rule("eval_batch_size", positive()),
    Rule("num_steps_per_eval", positive(), note="checkpoints and evaluations happen every N steps"),
    Rule("momentum", between(0, 1, hi_open=True)),
    Rule("l1_weight_decay", non_negative()),
    Rule("l2_weight_decay", non_negative()),
    Rule("warmup_learning_rate", non_negative()),
    Rule("init_learning_rate", positive()),
    Rule("global_gradient_clip_ratio", non_negative()),
    Rule("logging_frequency", between(1, 1000)),
    Rule(_DC + "num_classes", Check(lambda v: v > 1, "> 1"),
         note="categories + 1 for the background (a 1-category dataset has 2)"),
    Rule(_DC + "max_num_instances", positive()),
    Rule(_MC + "arch", one_of("resnet")),
    Rule(_MC + "nlayers", one_of(*NLAYERS)),
    Rule(_MC + "rpn_box_loss_weight", non_negative()),
    Rule(_MC + "fast_rcnn_box_loss_weight", non_negative()),
    Rule(_MC + "mrcnn_weight_loss_mask", non_negative()),
    Rule(_MC + "gt_mask_size", positive()),
    Rule(_MC + "rpn_positive_overlap", between(0, 1, lo_open=True)),
    Rule(_MC + "rpn_negative_overlap", between(0, 1)),
    Rule(_MC + "rpn_batch_size_per_im", positive()),
    Rule(_MC + "rpn_fg_fraction", between(0, 1, lo_open=True)),
    Rule(_MC + "rpn_min_size", non_negative()),
    Rule(_MC + "batch_size_per_im", positive()),
    Rule(_MC + "fg_fraction", between(0, 1, lo_open=True)),
    Rule(_MC + "fg_thresh", between(0, 1)),
    Rule(_MC + "bg_thresh_hi", between(0, 1)),
    Rule(_MC + "bg_thresh_lo", between(0, 1)),
    Rule(_MC + "fast_rcnn_mlp_head_dim", positive()),
    Rule(_MC + "mrcnn_resolution", positive() & multiple_of(4)),
    Rule(_MC + "train_rpn_pre_nms_topn", positive()),
    Rule(_MC + "train_rpn_post_nms_topn", positive()),
    Rule(_MC + "train_rpn_nms_threshold", between(0, 1)),
    Rule(_MC + "test_detections_per_image", positive()),
    Rule(_MC + "test_nms", between(0, 1)),
    Rule(_MC + "test_rpn_pre_nms_topn", positive()),
    Rule(_MC + "test_rpn_post_nms_topn", positive()),
    Rule(_MC + "test_rpn_nms_thresh", between(0, 1)),
    Rule(_MC + "min_level", between(1, 8)),
    Rule(_MC + "max_level", between(1, 8)),
    Rule(_MC + "num_scales", positive()),
    Rule(_MC + "anchor_scale", positive()),
    Rule(_MC + "include_mask", one_of(True), severity="warning",
         note="TAO can only train with the mask head; detection-only training is a tltk extension"),
]


def _literal(rep: Reporter, path: str, read: Callable[[], Any]) -> Any:
    try:
        return read()
    except LiteralError as exc:
        rep.error(path, str(exc))
        return None


def _checks(exp: Message, rep: Reporter) -> None:
    mc, dc = exp.maskrcnn_config, exp.data_config
    if exp.HasField("maskrcnn_config") and mc.min_level >= mc.max_level:
        rep.error(_MC + "max_level", f"max_level ({mc.max_level}) must be above min_level ({mc.min_level})")
    elif exp.HasField("maskrcnn_config") and (mc.min_level, mc.max_level) != (2, 6):
        rep.warning(_MC + "min_level", f"FPN levels {mc.min_level}-{mc.max_level}: TAO models and the TensorRT "
                                       "plugins use levels 2-6")
    if exp.HasField("data_config"):
        size = _literal(rep, _DC + "image_size", lambda: image_size(exp))
        if size is not None:
            stride = 2 ** mc.max_level
            h, w = size
            if h <= 0 or w <= 0:
                rep.error(_DC + "image_size", f"({h}, {w}) must be positive")
            elif h % stride or w % stride:
                rep.error(_DC + "image_size", f"({h}, {w}) must be divisible by 2^max_level = {stride} "
                                              f"(e.g. ({math.ceil(h / stride) * stride}, "
                                              f"{math.ceil(w / stride) * stride}))")
        if dc.eval_samples and dc.eval_samples < exp.eval_batch_size:
            rep.error(_DC + "eval_samples", f"{dc.eval_samples} is fewer than eval_batch_size "
                                            f"({exp.eval_batch_size})")
        if not dc.training_file_pattern:
            rep.warning(_DC + "training_file_pattern", "is empty; train needs the training TFRecords")
        if not dc.validation_file_pattern:
            rep.warning(_DC + "validation_file_pattern", "is empty; train and evaluate need the validation "
                                                         "TFRecords")
        if not dc.val_json_file:
            rep.warning(_DC + "val_json_file", "is empty; evaluation needs the COCO annotation JSON")
    if exp.HasField("maskrcnn_config"):
        if mc.rpn_negative_overlap > mc.rpn_positive_overlap:
            rep.error(_MC + "rpn_negative_overlap", f"({mc.rpn_negative_overlap:g}) is above "
                                                    f"rpn_positive_overlap ({mc.rpn_positive_overlap:g})")
        if mc.bg_thresh_lo > mc.bg_thresh_hi:
            rep.error(_MC + "bg_thresh_lo", f"({mc.bg_thresh_lo:g}) is above bg_thresh_hi ({mc.bg_thresh_hi:g})")
        ratios = _literal(rep, _MC + "aspect_ratios", lambda: aspect_ratios(exp))
        if ratios is not None and any(x <= 0 or y <= 0 for x, y in ratios):
            rep.error(_MC + "aspect_ratios", "every factor must be > 0")
        weights = _literal(rep, _MC + "bbox_reg_weights", lambda: bbox_reg_weights(exp))
        if weights is not None and any(v <= 0 for v in weights):
            rep.error(_MC + "bbox_reg_weights", "every weight must be > 0")
        blocks = _literal(rep, _MC + "freeze_blocks", lambda: freeze_blocks(exp))
        if blocks:
            bad = [b for b in blocks if b not in FREEZABLE_BLOCKS]
            if bad:
                rep.error(_MC + "freeze_blocks", f"block ids must be in 0..4; got {bad}")
    steps = _literal(rep, "learning_rate_steps", lambda: learning_rate_steps(exp))
    levels = _literal(rep, "learning_rate_decay_levels", lambda: learning_rate_decay_levels(exp))
    if steps is not None and levels is not None:
        if len(steps) != len(levels):
            rep.error("learning_rate_decay_levels", f"{len(levels)} level(s) for {len(steps)} step boundary(ies) "
                                                    "in learning_rate_steps; give one level per boundary")
        if any(s < 0 for s in steps) or any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
            rep.error("learning_rate_steps", f"{steps} must be non-negative and strictly increasing")
        if any(v <= 0 for v in levels):
            rep.error("learning_rate_decay_levels", "every level must be > 0")
        if steps and steps[-1] >= total_steps(exp) and exp.total_steps:
            rep.warning("learning_rate_steps", f"the last boundary ({steps[-1]}) is not before the end of "
                                               f"training ({total_steps(exp)} steps)")
    if exp.num_epochs > 0 and exp.num_examples_per_epoch == 0:
        rep.error("num_examples_per_epoch", "must be > 0 when num_epochs is set (steps per epoch = "
                                            "num_examples_per_epoch / train_batch_size)")
    if exp.num_epochs == 0 and exp.total_steps == 0:
        rep.error("total_steps", "set total_steps or num_epochs (with num_examples_per_epoch)")
    if exp.use_amp:
        rep.warning("use_amp", "is not read from the spec: pass --use_amp to `tltk mask_rcnn train` for mixed "
                               "precision")
    if exp.skip_checkpoint_variables:
        try:
            re.compile(exp.skip_checkpoint_variables)
        except re.error as exc:
            rep.error("skip_checkpoint_variables", f"{exp.skip_checkpoint_variables!r} is not a regular expression "
                                                   f"({exc}); e.g. \"class-predict|box-predict|mask_fcn_logits\"")
    if exp.checkpoint and exp.pruned_model_path:
        rep.warning("checkpoint", "pruned_model_path is also set; the pruned model is used and checkpoint is "
                                  "ignored")


def _categories_fit(exp: Message, path: str) -> list[tuple[str, str]]:
    """``num_classes`` leaves room for every category of the COCO file at ``path``."""
    from tltk.errors import InvalidInputError
    from tltk.mask_rcnn.categories import CategoryMap

    num_classes = int(exp.data_config.num_classes)
    if num_classes < 2:
        return []  # the num_classes rule reports it
    try:
        CategoryMap.from_coco_json(path, num_classes)
    except InvalidInputError as exc:
        field = _DC + ("num_classes" if "num_classes" in exc.message else "val_json_file")
        return [(field, exc.message + (f"; {exc.hint}" if exc.hint else ""))]
    return []


def _paths(exp: Message) -> Iterable[DataPath]:
    dc = exp.data_config
    yield DataPath(_DC + "training_file_pattern", dc.training_file_pattern, "glob")
    yield DataPath(_DC + "validation_file_pattern", dc.validation_file_pattern, "glob")
    yield DataPath(_DC + "val_json_file", dc.val_json_file, "file", inspect=lambda path: _categories_fit(exp, path))
    yield DataPath("checkpoint", exp.checkpoint, "any")
    yield DataPath("pruned_model_path", exp.pruned_model_path, "file")


SCHEMAS: dict[str, KindSchema] = {
    "experiment": KindSchema(
        model="mask_rcnn", kind="experiment", message_class=pb.Experiment,
        description="MaskRCNN experiment spec",
        required=REQUIRED, rules=RULES, checks=(_checks,), data_paths=_paths,
        zero_means_default=(
            "logging_frequency",
            "data_config.shuffle_buffer_size",
            "data_config.n_workers",
            "data_config.max_num_instances",
        ),
    ),
}
