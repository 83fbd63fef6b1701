"""Evaluating DetectNet_v2 detections: a model on a split of its experiment spec, or KITTI files.

One code path serves validation during training (Keras network) and ``tltk detectnet_v2
evaluate`` (any backend: Keras, ONNX Runtime, TensorRT): a ``predict`` callable maps an NCHW
batch to the ``(cov, bbox)`` grids, the grids are clustered with the spec's
``postprocessing_config`` and scored with the spec's ``evaluation_config`` (TAO's AP).  Every
image of the split is counted exactly once.

:func:`evaluate_kitti_files` scores KITTI prediction files (16 columns, the last one the
confidence, as ``inference`` writes them) against KITTI label files with the same AP rules
(offline evaluation, ``evaluate --predictions_dir``).  Both sets are in the label files' pixels.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tltk import console
from tltk.detectnet_v2.postprocess import Detection, params_from_postprocessing_config, postprocess
from tltk.errors import InvalidInputError
from tltk.metrics.detection_ap import (
    DetectionEvaluator,
    EvaluationParams,
    EvaluationResult,
    GroundTruth,
    Prediction,
)

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
    """The bbox objective's ``scale`` and ``offset`` (the proto defaults 35.0 and 0.5 when unset)."""
    bbox = experiment.model_config.objective_set.bbox
    return float(bbox.scale), float(bbox.offset)


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


# --------------------------------------------------------------------------------------------
# Offline evaluation of KITTI prediction files

ClassResolver = Callable[[str], str | None]
"""Maps a class name read from a file to an evaluated class name, or None to skip the box."""

#: Problems quoted one by one in an error message (the rest are counted).
PROBLEMS_QUOTED = 20


def class_resolvers(class_names: Sequence[str], class_mapping: Mapping[str, int]) -> tuple[ClassResolver,
                                                                                        ClassResolver]:
    """Class-name resolvers for ground-truth and prediction files.

    Ground truth goes through ``target_class_mapping`` (keys compared case-insensitively, as the
    data loader does).  A prediction name is first compared with the target class names
    (case-insensitively; ``inference`` writes them, or the ``output_map`` names), then looked up
    in ``target_class_mapping`` like ground truth.

    Args:
        class_names: the evaluated (target) classes.
        class_mapping: lower-cased source class -> target class index (-1: not a target), as in
            :attr:`tltk.detectnet_v2.dataloader.DetectNetV2Data.class_mapping`.

    Returns:
        ``(resolve_ground_truth, resolve_prediction)``.
    """
    names = [str(c) for c in class_names]
    by_lower = {n.lower(): n for n in names}

    def resolve_gt(name: str) -> str | None:
        index = class_mapping.get(name.lower(), -1)
        return names[index] if 0 <= index < len(names) else None

    def resolve_pred(name: str) -> str | None:
        return by_lower.get(name.lower()) or resolve_gt(name)

    return resolve_gt, resolve_pred


@dataclass
class FileEvaluation:
    """Result of :func:`evaluate_kitti_files`.

    Attributes:
        result: AP per class, mAP, PR curves, one image per label file.
        images_without_predictions: label files that had no prediction file (scored as images
            without detections).
        unknown_prediction_classes: prediction class names that map to no evaluated class ->
            number of boxes (skipped).
    """

    result: EvaluationResult
    images_without_predictions: list[str] = field(default_factory=list)
    unknown_prediction_classes: dict[str, int] = field(default_factory=dict)


def _raise_problems(problems: Sequence[str], what: str) -> None:
    shown = "\n".join(f"  {p}" for p in problems[:PROBLEMS_QUOTED])
    more = f"\n  ... and {len(problems) - PROBLEMS_QUOTED} more" if len(problems) > PROBLEMS_QUOTED else ""
    raise InvalidInputError(f"{len(problems)} problem(s) in the {what}:\n{shown}{more}",
                            hint="prediction files have 16 columns: the 15 KITTI label columns and a confidence")


def read_prediction_file(path: str, resolve: ClassResolver) -> tuple[list[Prediction], list[str], Counter[str]]:
    """Read one KITTI prediction file (16 columns, the 16th the confidence).

    Args:
        path: the ``.txt`` file.
        resolve: maps each row's class name to an evaluated class (None: skipped and counted).

    Returns:
        ``(predictions, problems, unknown)``: the predictions in file pixels; one
        ``file:line: message`` string per malformed line (a 15-column row is malformed: it has
        no confidence); the skipped class names with their counts.
    """
    from tltk.data.kitti import read_kitti_labels

    objects, issues = read_kitti_labels(path, allow_score=True)
    problems = []
    for issue in issues:
        detail = issue.message.removeprefix("malformed KITTI line: ")
        count = re.search(r"found (\d+)$", detail)
        if count and detail.startswith("expected "):
            detail = f"found {count.group(1)} columns"
        problems.append(f"{issue.path}:{issue.line}: malformed prediction line ({detail}); expected 16 columns "
                        "(15 KITTI label columns and a confidence)")
    predictions: list[Prediction] = []
    unknown: Counter[str] = Counter()
    for obj in objects:
        if obj.score is None:
            problems.append(f"{path}:{obj.line}: expected 16 columns (15 KITTI label columns and a confidence), "
                            "found 15: a prediction needs its confidence in the last column")
            continue
        name = resolve(obj.type)
        if name is None:
            unknown[obj.type] += 1
            continue
        predictions.append(Prediction(name, *obj.bbox, confidence=float(obj.score)))
    return predictions, problems, unknown


def read_ground_truth_file(path: str, resolve: ClassResolver) -> tuple[list[GroundTruth], list[str]]:
    """Read one KITTI label file as ground truth (classes mapped, unmapped ones skipped).

    Args:
        path: the ``.txt`` label file (15 columns; a 16th is ignored).
        resolve: maps each row's class name to an evaluated class (None: skipped).

    Returns:
        ``(ground_truths, problems)`` with one ``file:line: message`` per malformed line.
    """
    from tltk.data.kitti import read_kitti_labels

    objects, issues = read_kitti_labels(path, allow_score=True)
    gts = []
    for obj in objects:
        name = resolve(obj.type)
        if name is not None:
            gts.append(GroundTruth(name, *obj.bbox))
    return gts, [str(p) for p in issues]


def evaluate_kitti_files(label_files: Sequence[tuple[str, str]], prediction_files: Mapping[str, str],
                         class_names: Sequence[str], params: EvaluationParams, resolve_ground_truth: ClassResolver,
                         resolve_prediction: ClassResolver) -> FileEvaluation:
    """Score KITTI prediction files against KITTI label files with TAO's AP rules.

    Every label file is one image, counted once; a label file without a prediction file is an
    image without detections.  Boxes stay in the files' pixels (the original image size), so
    ``evaluation_box_config`` limits apply in those pixels.

    Args:
        label_files: ``(image stem, label file path)`` per image.
        prediction_files: image stem -> prediction file path.
        class_names: the evaluated classes, in report order.
        params: overlap thresholds, box filters and AP mode (``EvaluationParams.from_config``).
        resolve_ground_truth: label-file class name -> evaluated class (or None).
        resolve_prediction: prediction-file class name -> evaluated class (or None).

    Returns:
        The :class:`FileEvaluation`.

    Raises:
        InvalidInputError: a prediction file has no label file (named, with the label folder
            looked in), a line of any file is malformed (``file:line`` and what was expected),
            or two label files share a stem.
    """
    stems = [stem for stem, _ in label_files]
    duplicates = sorted(s for s, n in Counter(stems).items() if n > 1)
    if duplicates:
        raise InvalidInputError(f"several label files for image(s) {', '.join(duplicates[:10])}; prediction files "
                                "are matched by file name, so every image name must be unique")
    known = set(stems)
    orphans = [prediction_files[s] for s in sorted(prediction_files) if s not in known]
    if orphans:
        folders = sorted({os.path.dirname(p) for _, p in label_files}) or ["(no label file)"]
        listed = "\n".join(f"  {p}: no label file {os.path.splitext(os.path.basename(p))[0]}.txt"
                           for p in orphans[:PROBLEMS_QUOTED])
        raise InvalidInputError(f"{len(orphans)} prediction file(s) without a matching label file (looked in "
                                f"{', '.join(folders[:3])}):\n{listed}",
                                hint="name each prediction file after its image, like the label file")
    evaluator = DetectionEvaluator(list(class_names), params)
    problems: list[str] = []
    unknown: Counter[str] = Counter()
    missing: list[str] = []
    pairs = []
    for stem, label_path in label_files:
        gts, gt_problems = read_ground_truth_file(label_path, resolve_ground_truth)
        problems += gt_problems
        pred_path = prediction_files.get(stem)
        preds: list[Prediction] = []
        if pred_path is None:
            missing.append(label_path)
        else:
            preds, pred_problems, skipped = read_prediction_file(pred_path, resolve_prediction)
            problems += pred_problems
            unknown.update(skipped)
        pairs.append((gts, preds))
    if problems:
        _raise_problems(problems, "label and prediction files")
    for gts, preds in console.progress(pairs, desc="score", unit="img"):
        evaluator.accumulate(gts, preds)
    if missing:
        log.info("%d image(s) have no prediction file and count as images without detections", len(missing))
    if unknown:
        log.warning("prediction boxes of classes that are not evaluated were skipped: %s",
                    ", ".join(f"{k}: {v}" for k, v in sorted(unknown.items())))
    return FileEvaluation(evaluator.result(), missing, dict(sorted(unknown.items())))
