"""Evaluating a DetectNet_v2 model on a split of its experiment spec.

One code path serves validation during training (Keras network) and ``tltk detectnet_v2
evaluate`` (any backend: Keras, ONNX Runtime, TensorRT): a ``predict`` callable maps an NCHW
batch to the ``(cov, bbox)`` grids, the grids are clustered with the spec's
``postprocessing_config`` and scored with the spec's ``evaluation_config`` (TAO's AP).  Every
image of the split is counted exactly once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tltk import console
from tltk.detectnet_v2.postprocess import Detection, params_from_postprocessing_config, postprocess
from tltk.metrics.detection_ap import DetectionEvaluator, EvaluationParams, EvaluationResult, GroundTruth

log = logging.getLogger(__name__)

Predictor = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class SplitEvaluation:
    """Result of evaluating one split.

    Attributes:
        result: AP per class, mAP, PR curves (see :class:`EvaluationResult`).
        validation_cost: mean task cost over the split (None when not computed).
        detections: per image (in dataset order), ``(frame_id, detections)`` in model-input pixels.
    """

    result: EvaluationResult
    validation_cost: float | None
    detections: list[tuple[str, list[Detection]]]


def bbox_scale_offset(experiment: Any) -> tuple[float, float]:
    """The bbox objective's ``scale`` and ``offset`` (35.0 and 0.5 when unset)."""
    bbox = experiment.model_config.objective_set.bbox
    scale = float(bbox.scale) or 35.0
    offset = float(bbox.offset) if experiment.model_config.objective_set.HasField("bbox") else 0.5
    return scale, offset


def evaluate_split(predict: Predictor, data: Any, split: str = "val", batch_size: int | None = None,
                   cost_fn: Callable[[np.ndarray, np.ndarray, dict[str, Any]], float] | None = None,
                   keep_detections: bool = False) -> SplitEvaluation:
    """Run ``predict`` over a split and compute TAO's AP.

    Args:
        predict: maps images (B, C, H, W) float32 in [0, 1] to ``(cov (B, K, h, w),
            bbox (B, 4K, h, w))``.
        data: a :class:`tltk.detectnet_v2.dataloader.DetectNetV2Data`.
        split: ``val`` or ``train``.
        batch_size: images per batch (default: the spec's ``batch_size_per_gpu``).
        cost_fn: optional ``(cov, bbox, targets) -> cost`` to report the validation cost.
        keep_detections: also return every image's detections.

    Returns:
        A :class:`SplitEvaluation`.
    """
    experiment = data.experiment
    class_names = list(data.class_names)
    params = params_from_postprocessing_config(experiment.postprocessing_config)
    eval_params = EvaluationParams.from_config(experiment.evaluation_config)
    evaluator = DetectionEvaluator(class_names, eval_params)
    scale, offset = bbox_scale_offset(experiment)
    pre = data.augmentation.preprocessing
    output = "both" if cost_fn is not None else "labels"
    dataset = data.dataset(split, batch_size=batch_size, training=False, output=output, repeat=False, shuffle=False)
    costs: list[tuple[float, int]] = []
    kept: list[tuple[str, list[Detection]]] = []
    total = data.num_examples(split)
    seen = 0
    for batch in console.progress(dataset.as_numpy_iterator(), desc=f"evaluate {split}", unit="batch"):
        if cost_fn is not None:
            images, targets, labels = batch
        else:
            images, labels = batch
            targets = None
        cov, bbox = predict(images)
        if cost_fn is not None:
            costs.append((float(cost_fn(cov, bbox, targets)), len(images)))
        dets = postprocess(cov, bbox, class_names, params, stride=pre.output_width / cov.shape[-1], scale=scale,
                           offset=offset, image_size=(pre.output_width, pre.output_height))
        for i, image_dets in enumerate(dets):
            n = int(labels["num_boxes"][i])
            gts = [GroundTruth(class_names[int(c)], *map(float, b))
                   for b, c in zip(labels["boxes"][i][:n], labels["classes"][i][:n]) if int(c) >= 0]
            evaluator.accumulate(gts, image_dets)
            if keep_detections:
                kept.append((labels["frame_id"][i].decode("utf-8"), image_dets))
        seen += len(images)
    if seen != total:
        log.warning("evaluated %d images but the split has %d", seen, total)
    cost = sum(c * n for c, n in costs) / max(sum(n for _, n in costs), 1) if costs else None
    return SplitEvaluation(result=evaluator.result(), validation_cost=cost, detections=kept)
