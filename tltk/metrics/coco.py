"""COCO bbox and segm metrics through pycocotools, named and printed as TAO's MaskRCNN does.

:func:`evaluate_coco` runs ``pycocotools.cocoeval.COCOeval`` once per IoU type (``bbox``, then
``segm``) and returns a :class:`CocoMetrics` with TAO's metric names, in ``COCOeval.stats``
order: ``AP, AP50, AP75, APs, APm, APl, ARmax1, ARmax10, ARmax100, ARs, ARm, ARl``; segm
metrics carry the prefix ``mask_`` (``mask_AP`` ... ``mask_ARl``).  Values are fractions in
[0, 1]; pycocotools reports -1 where a metric has no ground truth (for example ``APs`` when
no object is small), and so does tltk.  Whatever pycocotools prints goes into
:attr:`CocoMetrics.log` (and the debug log), not to stdout.

Detections are COCO results: ``{"image_id", "category_id", "score", "bbox": [x, y, w, h],
"segmentation": {"size": [H, W], "counts": ...}}`` in original-image pixels, with the
dataset's own category ids.  As in TAO, a bbox result's area is ``w * h`` and a segm result's
area and box come from its mask.  :func:`validate_results` checks a list before evaluation
and names bad entries by index.

:func:`mask_to_rle` / :func:`rle_to_mask` convert between binary masks and COCO's compressed
RLE; :func:`format_coco_table` prints the metrics as TAO's evaluator does.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import math
import numbers
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tltk.errors import InvalidInputError
from tltk.metrics.detection_ap import PRCurve

log = logging.getLogger(__name__)

__all__ = [
    "METRIC_NAMES",
    "IOU_TYPES",
    "metric_names",
    "CocoMetrics",
    "evaluate_coco",
    "load_ground_truth",
    "validate_results",
    "mask_to_rle",
    "rle_to_mask",
    "format_coco_table",
]

#: TAO's names for ``COCOeval.stats[0..11]``.
METRIC_NAMES: tuple[str, ...] = ("AP", "AP50", "AP75", "APs", "APm", "APl",
                                 "ARmax1", "ARmax10", "ARmax100", "ARs", "ARm", "ARl")

#: IoU type -> prefix of its metric names.
IOU_TYPES: dict[str, str] = {"bbox": "", "segm": "mask_"}

_MAX_REPORTED = 10


def metric_names(iou_type: str) -> tuple[str, ...]:
    """TAO's metric names for one IoU type: ``("AP", ...)`` or ``("mask_AP", ...)``."""
    return tuple(IOU_TYPES[iou_type] + name for name in METRIC_NAMES)


@dataclass(frozen=True)
class CocoMetrics:
    """Result of :func:`evaluate_coco`.

    Attributes:
        metrics: TAO's metric name -> value in [0, 1] (-1 where pycocotools has no ground
            truth for it), bbox metrics first, then ``mask_`` ones.
        per_category: IoU type -> ``{category name: AP@[.50:.95]}`` (all areas, 100
            detections; -1 for a category without ground truth).
        precision: IoU type -> ``COCOeval.eval["precision"]``, float64
            ``[T, R, K, A, M]`` = IoU thresholds x recall thresholds x categories x area
            ranges (all, small, medium, large) x max detections (1, 10, 100); -1 where
            undefined.
        scores: IoU type -> ``COCOeval.eval["scores"]``, the detection score at each
            precision point, same shape.
        iou_thresholds: ``[T]`` IoU thresholds (0.50, 0.55, ..., 0.95).
        recall_thresholds: ``[R]`` recall levels (0.00, 0.01, ..., 1.00).
        category_ids: ``[K]`` the dataset's category ids, in the precision arrays' order.
        category_names: ``[K]`` their names.
        image_ids: the image ids that were evaluated.
        log: what pycocotools printed.
    """

    metrics: dict[str, float]
    per_category: dict[str, dict[str, float]]
    precision: dict[str, np.ndarray] = field(repr=False)
    scores: dict[str, np.ndarray] = field(repr=False)
    iou_thresholds: np.ndarray = field(repr=False)
    recall_thresholds: np.ndarray = field(repr=False)
    category_ids: list[int] = field(repr=False)
    category_names: list[str] = field(repr=False)
    image_ids: list[int] = field(repr=False)
    log: str = field(default="", repr=False)

    def to_dict(self) -> dict[str, float]:
        """The metrics as TAO's ``status.json`` KPI: each value x 100, rounded to 4 decimals."""
        return {k: round(v * 100.0, 4) for k, v in self.metrics.items()}

    def pr_curves(self, iou_type: str = "bbox", iou_threshold: float = 0.5) -> dict[str, PRCurve]:
        """COCO's interpolated precision-recall curve of each category at one IoU threshold.

        Args:
            iou_type: ``"bbox"`` or ``"segm"`` (must have been evaluated).
            iou_threshold: one of :attr:`iou_thresholds` (nearest is taken).

        Returns:
            ``{category name: PRCurve}`` with ``recall`` = the 101 recall levels,
            ``precision`` the interpolated precision there (0 above the highest recall
            reached) and ``confidence`` the score at which it is reached (all areas, 100
            detections); empty arrays for a category without ground truth.
        """
        if iou_type not in self.precision:
            raise KeyError(f"{iou_type!r} was not evaluated; evaluated: {sorted(self.precision)}")
        t = int(np.argmin(np.abs(self.iou_thresholds - iou_threshold)))
        curves: dict[str, PRCurve] = {}
        for k, name in enumerate(self.category_names):
            prec = self.precision[iou_type][t, :, k, 0, -1]
            reached = prec > -1  # -1 only for a category without ground truth
            curves[name] = PRCurve(precision=prec[reached].astype(np.float64),
                                   recall=self.recall_thresholds[reached].astype(np.float64),
                                   confidence=self.scores[iou_type][t, :, k, 0, -1][reached].astype(np.float32))
        return curves


# --------------------------------------------------------------------------------------------
# Masks


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """Encode one binary mask as COCO compressed RLE.

    Args:
        mask: ``[H, W]`` bool or integer array; non-zero pixels belong to the instance.

    Returns:
        ``{"size": [H, W], "counts": str}`` (counts as ASCII text, ready for JSON).

    Raises:
        ValueError: the mask is not two-dimensional.
    """
    from pycocotools import mask as mask_utils

    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be [H, W], got shape {m.shape}")
    rle = mask_utils.encode(np.asfortranarray((m != 0).astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def rle_to_mask(rle: Mapping[str, Any]) -> np.ndarray:
    """Decode COCO RLE (compressed, ``counts`` as str or bytes, or uncompressed, a list).

    Args:
        rle: ``{"size": [H, W], "counts": ...}``.

    Returns:
        ``[H, W]`` uint8 mask with values 0/1.

    Raises:
        InvalidInputError: ``rle`` is not an RLE dict.
    """
    from pycocotools import mask as mask_utils

    if not isinstance(rle, Mapping) or "size" not in rle or "counts" not in rle:
        raise InvalidInputError(f"not a COCO RLE (needs 'size' and 'counts'): {str(rle)[:80]}")
    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, list):
        compressed = mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    else:
        compressed = {"size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return np.asarray(mask_utils.decode(compressed), dtype=np.uint8)


# --------------------------------------------------------------------------------------------
# Ground truth and results


def load_ground_truth(ground_truth: str | os.PathLike[str] | Mapping[str, Any]) -> Any:
    """Build a ``pycocotools.coco.COCO`` from a COCO JSON file or an already loaded dict.

    Annotations without ``iscrowd`` count as not crowd; without ``area`` they get the area of
    their segmentation (or of their box when they have none).

    Args:
        ground_truth: path of the instances JSON, or the parsed dict.

    Returns:
        The COCO object (index built, nothing printed).

    Raises:
        InvalidInputError: the file is missing or not JSON, or ``images``, ``annotations`` or
            ``categories`` is missing or malformed.
    """
    from pycocotools.coco import COCO

    where = "ground truth"
    if isinstance(ground_truth, (str, os.PathLike)):
        where = os.fspath(ground_truth)
        try:
            with open(where, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError as exc:
            raise InvalidInputError(f"ground-truth file {where} does not exist",
                                    hint="pass the COCO instances JSON of the evaluated images") from exc
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidInputError(f"ground-truth file {where} is not readable JSON: {exc}") from exc
    else:
        data = copy.deepcopy(dict(ground_truth))
    if not isinstance(data, dict):
        raise InvalidInputError(f"{where}: expected a JSON object with images, annotations and categories")
    problems = [f"'{key}' is missing or not a list" for key in ("images", "annotations", "categories")
                if not isinstance(data.get(key), list)]
    if problems:
        raise InvalidInputError(f"{where} is not COCO instances data: {'; '.join(problems)}")
    for key, required in (("images", ("id",)), ("categories", ("id", "name")),
                          ("annotations", ("id", "image_id", "category_id", "bbox"))):
        bad = [i for i, entry in enumerate(data[key])
               if not isinstance(entry, dict) or any(r not in entry for r in required)]
        if bad:
            raise InvalidInputError(f"{where}: {key}[{', '.join(map(str, bad[:_MAX_REPORTED]))}] lack one of "
                                    f"{', '.join(required)}")
    sizes = {img["id"]: (img.get("height"), img.get("width")) for img in data["images"]}
    for ann in data["annotations"]:
        ann.setdefault("iscrowd", 0)
        if "area" not in ann:
            ann["area"] = _segmentation_area(ann, sizes.get(ann["image_id"]))
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _segmentation_area(ann: Mapping[str, Any], size: tuple[Any, Any] | None) -> float:
    from pycocotools import mask as mask_utils

    segm = ann.get("segmentation")
    if segm and size is not None and None not in size:
        h, w = int(size[0]), int(size[1])
        if isinstance(segm, list):
            rle = mask_utils.merge(mask_utils.frPyObjects(segm, h, w))
        elif isinstance(segm.get("counts"), list):
            rle = mask_utils.frPyObjects(segm, h, w)
        else:
            rle = segm
        return float(mask_utils.area(rle))
    return float(ann["bbox"][2]) * float(ann["bbox"][3])


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


def validate_results(detections: Sequence[Mapping[str, Any]], ground_truth: Any,
                     iou_types: Iterable[str] = ("bbox", "segm")) -> None:
    """Check COCO results against the ground truth before evaluating them.

    Args:
        detections: COCO result dicts.
        ground_truth: a ``COCO`` object (see :func:`load_ground_truth`), a path or a dict.
        iou_types: the IoU types the results will be evaluated for; ``bbox`` needs ``bbox``
            ``[x, y, w, h]`` with ``w, h >= 0``, ``segm`` needs an RLE ``segmentation`` whose
            ``size`` is the image's ``[height, width]``.

    Raises:
        InvalidInputError: listing (up to 10 of) the bad entries by index: not a dict, unknown
            ``image_id`` or ``category_id``, ``score`` not a number, malformed ``bbox`` or
            ``segmentation``.
    """
    gt = ground_truth if hasattr(ground_truth, "imgs") else load_ground_truth(ground_truth)
    iou_types = tuple(iou_types)
    images = gt.imgs
    categories = set(gt.cats)
    problems: list[str] = []
    for i, det in enumerate(detections):
        if not isinstance(det, Mapping):
            problems.append(f"results[{i}]: not an object")
            continue
        issues = []
        image_id = det.get("image_id")
        if image_id not in images:
            issues.append(f"image_id {image_id!r} is not in the ground truth")
        if det.get("category_id") not in categories:
            issues.append(f"category_id {det.get('category_id')!r} is not in the ground truth")
        if not _is_number(det.get("score")):
            issues.append(f"score {det.get('score')!r} is not a number")
        if "bbox" in iou_types:
            bbox = det.get("bbox")
            if (not isinstance(bbox, (list, tuple, np.ndarray)) or len(bbox) != 4
                    or not all(_is_number(v) for v in bbox) or bbox[2] < 0 or bbox[3] < 0):
                issues.append(f"bbox {bbox!r} is not [x, y, width, height] with width, height >= 0")
        if "segm" in iou_types:
            segm = det.get("segmentation")
            if not isinstance(segm, Mapping) or "size" not in segm or not isinstance(segm.get("counts"), (str, bytes)):
                issues.append("segmentation is not a compressed RLE {'size': [H, W], 'counts': str}")
            elif image_id in images:
                img = images[image_id]
                expected = [img.get("height"), img.get("width")]
                if [int(v) for v in segm["size"]] != expected:
                    issues.append(f"segmentation size {list(segm['size'])} is not the image's [height, width] {expected}")
        if issues:
            problems.append(f"results[{i}]: " + "; ".join(issues))
    if problems:
        shown = problems[:_MAX_REPORTED]
        more = f"\n  ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
        raise InvalidInputError(f"{len(problems)} of {len(detections)} detection result(s) are invalid:\n  "
                                + "\n  ".join(shown) + more,
                                hint="results need the ground truth's image ids and category ids "
                                     "(the dataset's own ids, not class indices)")


def _result_coco(gt: Any, detections: Sequence[Mapping[str, Any]], iou_type: str) -> Any:
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    anns = []
    for i, det in enumerate(detections, start=1):
        ann: dict[str, Any] = {"id": i, "image_id": det["image_id"], "category_id": det["category_id"],
                               "score": float(det["score"]), "iscrowd": 0}
        if iou_type == "bbox":
            x, y, w, h = (float(v) for v in det["bbox"])
            ann["bbox"] = [x, y, w, h]
            ann["area"] = w * h
        else:
            rle = dict(det["segmentation"])
            if isinstance(rle["counts"], str):
                rle["counts"] = rle["counts"].encode("ascii")
            ann["segmentation"] = rle
            ann["area"] = float(mask_utils.area(rle))
            ann["bbox"] = [float(v) for v in mask_utils.toBbox(rle)]
        anns.append(ann)
    res = COCO()
    res.dataset = {"images": list(gt.dataset["images"]), "categories": copy.deepcopy(gt.dataset["categories"]),
                   "annotations": anns}
    res.createIndex()
    return res


def _category_names(gt: Any, ids: Sequence[int]) -> list[str]:
    names = [str(gt.cats[c]["name"]) for c in ids]
    duplicated = {n for n in names if names.count(n) > 1}
    return [f"{n} ({c})" if n in duplicated else n for n, c in zip(names, ids, strict=True)]


def evaluate_coco(ground_truth: str | os.PathLike[str] | Mapping[str, Any] | Any,
                  detections: Sequence[Mapping[str, Any]],
                  iou_types: Sequence[str] = ("bbox", "segm"),
                  image_ids: Iterable[int] | None = None) -> CocoMetrics:
    """COCO evaluation of detection results with pycocotools, as TAO's MaskRCNN evaluates.

    Args:
        ground_truth: COCO instances JSON path, its parsed dict, or a ``COCO`` object.
        detections: COCO result dicts (see the module docstring); may be empty (every AP is
            then 0 where there is ground truth).
        iou_types: any of ``"bbox"``, ``"segm"``, evaluated in the order given.
        image_ids: restrict the evaluation to these images (TAO passes the evaluated
            images); default every image of the ground truth.

    Returns:
        The metrics, per-category AP and precision arrays.

    Raises:
        InvalidInputError: the ground truth or the results are malformed, or an image id
            is not in the ground truth.
        ValueError: an unknown IoU type.
    """
    from pycocotools.cocoeval import COCOeval

    unknown = [t for t in iou_types if t not in IOU_TYPES]
    if unknown or not iou_types:
        raise ValueError(f"iou_types must be a non-empty subset of {tuple(IOU_TYPES)}, got {tuple(iou_types)}")
    gt = ground_truth if hasattr(ground_truth, "imgs") else load_ground_truth(ground_truth)
    if "segm" in iou_types:
        no_segm = [i for i, ann in enumerate(gt.dataset["annotations"]) if not ann.get("segmentation")]
        if no_segm:
            raise InvalidInputError(f"ground truth annotations[{', '.join(map(str, no_segm[:_MAX_REPORTED]))}] have "
                                    "no segmentation, so segm metrics cannot be computed",
                                    hint="evaluate with iou_types=('bbox',) or use ground truth with masks")
    validate_results(detections, gt, iou_types)
    ids = sorted(gt.getImgIds()) if image_ids is None else sorted({int(i) for i in image_ids})
    missing = [i for i in ids if i not in gt.imgs]
    if missing:
        raise InvalidInputError(f"image ids {missing[:_MAX_REPORTED]} are not in the ground truth")
    category_ids = sorted(gt.getCatIds())
    captured = io.StringIO()
    metrics: dict[str, float] = {}
    per_category: dict[str, dict[str, float]] = {}
    precision: dict[str, np.ndarray] = {}
    scores: dict[str, np.ndarray] = {}
    names = _category_names(gt, category_ids)
    iou_thresholds = recall_thresholds = np.zeros(0)
    with contextlib.redirect_stdout(captured):
        for iou_type in iou_types:
            evaluator = COCOeval(gt, _result_coco(gt, detections, iou_type), iouType=iou_type)
            evaluator.params.imgIds = ids
            evaluator.params.catIds = category_ids
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
            metrics.update({name: float(v) for name, v in zip(metric_names(iou_type), evaluator.stats, strict=True)})
            prec = np.asarray(evaluator.eval["precision"], dtype=np.float64)
            precision[iou_type] = prec
            scores[iou_type] = np.asarray(evaluator.eval["scores"], dtype=np.float64)
            per_category[iou_type] = {}
            for k, name in enumerate(names):
                valid = prec[:, :, k, 0, -1]
                valid = valid[valid > -1]
                per_category[iou_type][name] = float(valid.mean()) if valid.size else -1.0
            iou_thresholds = np.asarray(evaluator.params.iouThrs, dtype=np.float64)
            recall_thresholds = np.asarray(evaluator.params.recThrs, dtype=np.float64)
    text = captured.getvalue()
    log.debug("pycocotools output:\n%s", text)
    return CocoMetrics(metrics=metrics, per_category=per_category, precision=precision, scores=scores,
                       iou_thresholds=iou_thresholds, recall_thresholds=recall_thresholds,
                       category_ids=category_ids, category_names=names, image_ids=ids, log=text)


# --------------------------------------------------------------------------------------------
# Printing


def format_coco_table(result: CocoMetrics | Mapping[str, float], per_category: bool = False) -> str:
    """The metrics as TAO's MaskRCNN evaluator prints them.

    A ``==================== Metrics ====================`` line, then ``name: value`` with 9
    decimals, sorted by name (``AP, AP50, AP75, APl, APm, APs, ARl, ...``, then ``mask_AP``
    ...).  With ``per_category`` (and a :class:`CocoMetrics`), a table of AP@[.50:.95] per
    category and IoU type follows.

    Args:
        result: a :class:`CocoMetrics` or a ``name -> value`` mapping.
        per_category: add the per-category table.

    Returns:
        The text, lines joined with ``\\n`` (no trailing newline).
    """
    values = result.metrics if isinstance(result, CocoMetrics) else dict(result)
    lines = ["=" * 20 + " Metrics " + "=" * 20]
    lines += [f"{name}: {values[name]:.9f}" for name in sorted(values)]
    if per_category and isinstance(result, CocoMetrics) and result.per_category:
        types = list(result.per_category)
        width = max([len("category")] + [len(n) for n in result.category_names])
        header = f"{'category':<{width}}" + "".join(f"  {IOU_TYPES[t] + 'AP':>9}" for t in types)
        lines += ["", header, "-" * len(header)]
        for name in result.category_names:
            cells = "".join(f"  {result.per_category[t][name]:>9.4f}" for t in types)
            lines.append(f"{name:<{width}}{cells}")
    return "\n".join(lines)
