"""The MaskRCNN Keras models: one set of weights, an inference graph and a training graph.

``build_mask_rcnn(params)`` returns ``(inference_model, training_model)``; they share every
layer (and so every weight), and only the inference model is saved and exported.

Inference model (TAO's deployed contract)::

    Input [B, 3, H, W] float32 (TAO-normalised, NCHW)
      -> input_nhwc -> ResNet (TAO names, C2..C5) -> FPN P_min..P_max -> RPN (shared per level)
      -> multilevel_propose_rois (test_rpn_* settings, clipped to the canvas)
      -> multilevel_crop_resize (7x7) -> box head -> generate_detections        [B, K, 6]
      -> mrcnn_detection_bboxes -> multilevel_crop_resize_1 (14x14) -> mask head
      -> mask_head_reshape_1                                                   [B, K, C, 28, 28]

It returns ``{"generate_detections": ..., "mask_fcn_logits": ...}`` (the second only with
``include_mask``); the Keras output names are the producing layers' names, mapped to TAO's ONNX
names by :data:`ONNX_OUTPUT_NAMES` (``generate_detections``, ``mask_fcn_logits/BiasAdd``).
Detection rows are ``(y1, x1, y2, x2, class, score)`` in input pixels, sorted by score, empty
rows ``(0, 0, 0, 0, -1, 0)``; masks are raw logits of every class (plane 0 = background).

Training model: inputs ``[images, image_info, gt_boxes, gt_classes, cropped_gt_masks]`` (the
data contract, in :data:`TRAINING_INPUT_KEYS` order; use :func:`training_inputs`), outputs a
dict:

* ``rpn_score_<l>`` ``[B, H_l, W_l, A]`` and ``rpn_box_<l>`` ``[B, H_l, W_l, 4A]`` per level;
* ``class_outputs`` ``[B, S, C]``, ``box_outputs`` ``[B, S, 4C]``, ``class_targets`` int32
  ``[B, S]``, ``box_targets`` ``[B, S, 4]``, ``roi_weights`` ``[B, S]`` (1 for real samples),
  ``rois`` ``[B, S, 4]``, for S sampled ROIs per image;
* with the mask head: ``mask_outputs`` ``[B, K, 28, 28]`` (logits of the target class),
  ``mask_targets`` ``[B, K, 28, 28]``, ``mask_weights`` ``[B, K]`` (1 for foreground).

Proposals in training use the ``train_rpn_*`` settings and clip to ``image_info``'s scaled size.

Freezing (TAO): ``freeze_blocks`` makes the convolutions of those blocks non-trainable (0 =
``conv1``), their BNs keep training; ``freeze_bn`` makes every backbone BN normalise with its
moving statistics while gamma/beta stay trainable.  ResNet-101 taps C4 at ``block_3f_relu`` as
TAO does (units 3g..3w only feed C5).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import keras

from tltk.backbones import check_arch, freeze_block_ids, nchw_to_nhwc
from tltk.backbones.layers import BackboneConfig
from tltk.backbones.resnet import build_resnet
from tltk.errors import SpecError
from tltk.mask_rcnn.heads import BoxHead, MaskHead, RpnHead, build_fpn, fpn_level_layer_names
from tltk.mask_rcnn.layers import SelectClassMasks, SplitDetections, UnfoldRois
from tltk.mask_rcnn.params import MaskRCNNParams
from tltk.mask_rcnn.postprocess import MAX_CANDIDATES, GenerateDetections
from tltk.mask_rcnn.proposals import MultilevelProposals
from tltk.mask_rcnn.roi_align import MultilevelRoiAlign
from tltk.mask_rcnn.sampling import RoiSampler

log = logging.getLogger(__name__)

INPUT_NAME = "Input"
DETECTIONS_LAYER = "generate_detections"
MASK_OUTPUT_LAYER = "mask_head_reshape_1"

#: Keras output (layer) name -> TAO's ONNX tensor name, for ``tltk.export.onnx_export``.
ONNX_OUTPUT_NAMES = {DETECTIONS_LAYER: "generate_detections", MASK_OUTPUT_LAYER: "mask_fcn_logits/BiasAdd"}

#: The training model's inputs, in order (all but ``images`` are keys of the data targets).
TRAINING_INPUT_KEYS = ("images", "image_info", "gt_boxes", "gt_classes", "cropped_gt_masks")

#: ResNet feature taps C2..C5 per depth where they are not the last unit of a block.
_TAO_TAPS = {101: {4: "block_3f_relu"}}


def tao_weight_decay(l1_weight_decay: float, l2_weight_decay: float) -> keras.regularizers.Regularizer | None:
    """TAO's weight decay as one Keras regularizer for :func:`build_mask_rcnn`.

    TAO adds ``l2 * sum(v**2) / 2 + l1 * sum(|v|) / 2`` over the trainable variables whose
    names contain neither ``bias`` nor ``beta`` (BN ``gamma`` included).  ``build_mask_rcnn``
    puts the regularizer on every conv/dense kernel and every BN gamma, and Keras only counts
    trainable weights, so frozen blocks are not decayed (as in TAO).

    Args:
        l1_weight_decay: ``l1_weight_decay`` of the spec.
        l2_weight_decay: ``l2_weight_decay`` of the spec.

    Returns:
        ``keras.regularizers.L1L2(l1 / 2, l2 / 2)``, or None when both are 0.
    """
    if not l1_weight_decay and not l2_weight_decay:
        return None
    return keras.regularizers.L1L2(l1=float(l1_weight_decay) / 2.0, l2=float(l2_weight_decay) / 2.0)


def training_inputs(images: Any, targets: dict[str, Any]) -> list[Any]:
    """The training model's inputs from a data-pipeline element ``(images, targets)``.

    Args:
        images: float32 ``[B, 3, H, W]``.
        targets: the pipeline's targets dict (``image_info``, ``gt_boxes``, ``gt_classes``,
            ``cropped_gt_masks``, ...).

    Returns:
        ``[images, image_info, gt_boxes, gt_classes, cropped_gt_masks]``.
    """
    return [images, *(targets[key] for key in TRAINING_INPUT_KEYS[1:])]


def _backbone_levels(images_nhwc: Any, params: MaskRCNNParams, kernel_regularizer: Any) -> dict[int, Any]:
    check_arch(params.arch, params.nlayers)
    config = BackboneConfig(
        use_batch_norm=True,
        use_pooling=True,
        all_projections=False,
        freeze_blocks=freeze_block_ids(params.arch, params.freeze_blocks),
        freeze_bn=params.freeze_bn,
        freeze_bn_affine=False,
        use_bias=False,
        kernel_regularizer=kernel_regularizer,
        gamma_regularizer=kernel_regularizer,
        output_stride=32,
        fused_batch_norm=True,
    )
    backbone = build_resnet(images_nhwc, params.nlayers, config)
    taps = _TAO_TAPS.get(params.nlayers, {})
    return {
        level: backbone.endpoints[taps[level]] if level in taps else backbone.levels[f"C{level}"]
        for level in range(2, 6)
    }


@dataclass
class _Heads:
    rpn: RpnHead
    box: BoxHead
    mask: MaskHead | None


def build_mask_rcnn(params: MaskRCNNParams, kernel_regularizer: Any = None) -> tuple[keras.Model, keras.Model]:
    """Build the inference and training models (shared weights; see the module docstring).

    Args:
        params: the hyper-parameters (``MaskRCNNParams.from_experiment(exp)``).
        kernel_regularizer: regularizer for every kernel and BN gamma (``tao_weight_decay(...)``),
            or None; the losses appear in ``training_model.losses``.

    Returns:
        ``(inference_model, training_model)``.

    Raises:
        SpecError: unsupported backbone.
    """
    height, width = params.image_size
    images = keras.Input((3, height, width), name=INPUT_NAME)
    c_levels = _backbone_levels(nchw_to_nhwc(images), params, kernel_regularizer)
    pyramid = build_fpn(c_levels, params.min_level, params.max_level, kernel_regularizer)
    heads = _Heads(rpn=RpnHead(params.anchors_per_location, kernel_regularizer),
                   box=BoxHead(params.num_classes, params.fast_rcnn_mlp_head_dim, kernel_regularizer),
                   mask=MaskHead(params.num_classes, kernel_regularizer) if params.include_mask else None)
    return _assemble(images, pyramid, heads, params)


def rebuild_mask_rcnn(network: keras.Model, params: MaskRCNNParams, kernel_regularizer: Any = None
                      ) -> tuple[keras.Model, keras.Model]:
    """The inference and training models around the layers of a trained inference network.

    This is how a pruned model (``tltk mask_rcnn prune``, whose layers have fewer filters than
    ``params`` would build) is retrained: its backbone, FPN and head layers, with their weights
    and widths, are reused as they are; proposals, ROIAlign, detections and the training-only
    layers are built from ``params`` (the retraining spec) exactly as :func:`build_mask_rcnn`
    builds them.  Layers keep the ``trainable`` flags they were saved with (the freezing of the
    original training).

    Args:
        network: a MaskRCNN inference network (e.g. loaded from a pruned ``.tlt``).
        params: the hyper-parameters of the retraining spec.
        kernel_regularizer: set on every conv/dense kernel and BN gamma of ``network``
            (``tao_weight_decay(...)``), replacing the saved regularizers; None removes them.

    Returns:
        ``(inference_model, training_model)``, sharing ``network``'s layers.

    Raises:
        SpecError: the spec's input size, class count, FPN levels, anchors or mask head differ
            from the network's.
    """
    _check_rebuild(network, params)
    for layer in network.layers:
        for attribute in ("kernel", "gamma"):
            variable = getattr(layer, attribute, None) if isinstance(
                layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose, keras.layers.Dense,
                        keras.layers.BatchNormalization)) else None
            if variable is not None:
                variable.regularizer = kernel_regularizer
                setattr(layer, f"{attribute}_regularizer", kernel_regularizer)
    images = network.inputs[0]
    names = fpn_level_layer_names(params.min_level, params.max_level)
    pyramid = {level: network.get_layer(name).output for level, name in names.items()}
    heads = _Heads(rpn=RpnHead.from_model(network), box=BoxHead.from_model(network),
                   mask=MaskHead.from_model(network) if params.include_mask else None)
    return _assemble(images, pyramid, heads, params)


def _check_rebuild(network: keras.Model, params: MaskRCNNParams) -> None:
    names = {layer.name for layer in network.layers}
    expected = {"rpn", "rpn-class", "rpn-box", "class-predict", "box-predict",
                *fpn_level_layer_names(params.min_level, params.max_level).values()}
    missing = sorted(expected - names)
    if missing:
        raise SpecError(f"model {network.name!r} is not a MaskRCNN network for this spec: it has no "
                        f"{', '.join(missing)} layer(s) (maskrcnn_config.min_level/max_level "
                        f"{params.min_level}/{params.max_level})")
    shape = tuple(int(d) for d in network.inputs[0].shape[1:])
    if shape != (3, *params.image_size):
        raise SpecError(f"data_config.image_size {params.image_size} does not match the model's input "
                        f"{shape[1:]}", hint="retrain at the size the model was trained with")
    checks = [
        ("data_config.num_classes", params.num_classes, int(network.get_layer("class-predict").units)),
        ("anchors per location (num_scales x aspect_ratios)", params.anchors_per_location,
         int(network.get_layer("rpn-class").filters)),
        ("maskrcnn_config.include_mask", params.include_mask, "mask_fcn_logits" in names),
    ]
    for field_name, spec_value, model_value in checks:
        if spec_value != model_value:
            raise SpecError(f"{field_name} is {spec_value} in the spec but {model_value} in the model",
                            hint="use the settings the model was trained with")


def _assemble(images: Any, pyramid: dict[int, Any], heads: _Heads, params: MaskRCNNParams
              ) -> tuple[keras.Model, keras.Model]:
    """Both graphs from the input, the FPN levels and the head layers."""
    levels = list(range(params.min_level, params.max_level + 1))
    features = [pyramid[level] for level in levels]
    rpn_outputs = [heads.rpn(feature) for feature in features]
    score_maps = [scores for scores, _ in rpn_outputs]
    box_maps = [boxes for _, boxes in rpn_outputs]
    box_head, mask_head = heads.box, heads.mask
    anchor_args: dict[str, Any] = dict(
        min_level=params.min_level, max_level=params.max_level, num_scales=params.num_scales,
        aspect_ratios=params.aspect_ratios, anchor_scale=params.anchor_scale, image_size=params.image_size,
        min_size=params.rpn_min_size)

    # ---- inference graph
    pre_nms, post_nms = params.test_rpn_pre_nms_topn, params.test_rpn_post_nms_topn
    if max(pre_nms, post_nms) > MAX_CANDIDATES:
        log.warning("test_rpn_pre_nms_topn/test_rpn_post_nms_topn %d/%d: the inference graph keeps at most %d "
                    "(TensorRT's TopK takes K < 3840)", pre_nms, post_nms, MAX_CANDIDATES)
    rois, roi_scores = MultilevelProposals(
        pre_nms_topn=min(pre_nms, MAX_CANDIDATES), post_nms_topn=min(post_nms, MAX_CANDIDATES),
        nms_threshold=params.test_rpn_nms_thresh, name="multilevel_propose_rois", **anchor_args,
    )(score_maps, box_maps)
    box_features = MultilevelRoiAlign(params.box_roi_size, params.min_level, name="multilevel_crop_resize")(
        features, rois)
    class_logits, box_deltas = box_head(box_features)
    detections = GenerateDetections(
        params.num_classes, params.bbox_reg_weights, params.test_detections_per_image, params.test_nms,
        params.image_size, name=DETECTIONS_LAYER)(class_logits, box_deltas, rois, roi_scores)
    outputs: dict[str, Any] = {"generate_detections": detections}
    if mask_head is not None:
        det_boxes = SplitDetections(name="mrcnn_detection_bboxes")(detections)
        mask_features = MultilevelRoiAlign(params.mask_roi_size, params.min_level,
                                           name="multilevel_crop_resize_1")(features, det_boxes)
        outputs["mask_fcn_logits"] = UnfoldRois(params.test_detections_per_image, channels_first=True,
                                                dtype="float32", name=MASK_OUTPUT_LAYER)(mask_head(mask_features))
    inference_model = keras.Model(images, outputs, name=f"mask_rcnn_{params.arch}{params.nlayers}")

    # ---- training graph
    num_gt = params.max_num_instances
    crop = params.gt_mask_size + 4
    image_info = keras.Input((5,), name="image_info")
    gt_boxes = keras.Input((num_gt, 4), name="gt_boxes")
    gt_classes = keras.Input((num_gt,), dtype="int32", name="gt_classes")
    gt_masks = keras.Input((num_gt, crop, crop), name="cropped_gt_masks")
    train_rois, train_scores = MultilevelProposals(
        pre_nms_topn=params.train_rpn_pre_nms_topn, post_nms_topn=params.train_rpn_post_nms_topn,
        nms_threshold=params.train_rpn_nms_threshold, name="multilevel_propose_rois_train", **anchor_args,
    )(score_maps, box_maps, image_info)
    sampled = RoiSampler(
        params.batch_size_per_im, params.fg_fraction, params.fg_thresh, params.bg_thresh_hi, params.bg_thresh_lo,
        params.bbox_reg_weights, params.mask_rois_per_image if params.include_mask else 0, params.gt_mask_size,
        params.mrcnn_resolution, seed=params.seed, name="roi_sampler",
    )(train_rois, train_scores, gt_boxes, gt_classes, gt_masks)
    train_features = MultilevelRoiAlign(params.box_roi_size, params.min_level,
                                        name="multilevel_crop_resize_train")(features, sampled["rois"])
    train_logits, train_deltas = box_head(train_features, name_suffix="_train")
    train_outputs: dict[str, Any] = {}
    for level, scores, boxes in zip(levels, score_maps, box_maps, strict=True):
        train_outputs[f"rpn_score_{level}"] = scores
        train_outputs[f"rpn_box_{level}"] = boxes
    train_outputs.update(class_outputs=train_logits, box_outputs=train_deltas,
                         class_targets=sampled["class_targets"], box_targets=sampled["box_targets"],
                         roi_weights=sampled["valid"], rois=sampled["rois"])
    if mask_head is not None:
        mask_rois = int(sampled["mask_rois"].shape[1])
        train_mask_features = MultilevelRoiAlign(params.mask_roi_size, params.min_level,
                                                 name="multilevel_crop_resize_1_train")(features, sampled["mask_rois"])
        train_masks = UnfoldRois(mask_rois, name="mask_head_reshape_train")(
            mask_head(train_mask_features, name_suffix="_train"))
        train_outputs["mask_outputs"] = SelectClassMasks(name="mask_postprocess_train")(
            train_masks, sampled["mask_classes"])
        train_outputs["mask_targets"] = sampled["mask_targets"]
        train_outputs["mask_weights"] = sampled["mask_weights"]
    training_model = keras.Model(
        [images, image_info, gt_boxes, gt_classes, gt_masks], train_outputs, name=f"mask_rcnn_{params.arch}{params.nlayers}_train")
    return inference_model, training_model


__all__ = ["DETECTIONS_LAYER", "INPUT_NAME", "MASK_OUTPUT_LAYER", "ONNX_OUTPUT_NAMES", "TRAINING_INPUT_KEYS",
           "build_mask_rcnn", "rebuild_mask_rcnn", "tao_weight_decay", "training_inputs"]
