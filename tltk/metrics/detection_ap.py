"""KITTI/VOC-style average precision computed exactly as TAO's DetectNet_v2 evaluator does.

The rules, per class (TAO ``evaluate`` and validation during training):

* **Box filtering** (``evaluation_box_config``): ground truths *and* predictions of the class
  are kept only when ``minimum_height <= y2 - y1 <= maximum_height`` and
  ``minimum_width <= x2 - x1 <= maximum_width`` (model-input pixels, before rounding).
  Filtered ground truths are removed entirely, not "ignored": a prediction on one is a
  false positive.  There is no DontCare / difficult / truncation handling; ground truths of
  classes that are not evaluated (``dontcare`` included, unless it is one of the evaluated
  classes) are skipped.
* **Rounding**: after filtering, all coordinates are rounded to integers with round-half-to-
  even (Python's ``round``).
* **Matching**: predictions of the class over all images are sorted by confidence (as
  float32), descending.  Each one takes the ground truth of the same image and class with
  the highest IoU (inclusive pixels: side ``max(0, min(x2) - max(x1) + 1)``, area
  ``(x2 - x1 + 1) * (y2 - y1 + 1)``).  IoU below the class's
  ``minimum_detection_ground_truth_overlap`` -> false positive; otherwise a true positive
  if that ground truth is not matched yet, else a false positive (no fall-back to the
  next-best ground truth).
* **Precision/recall**: cumulative ``TP / (TP + FP)`` and ``TP / #GT`` (after filtering).
* **AP** ``SAMPLE``: the mean over the 11 recall levels ``numpy.linspace(0, 1, 11)`` of the
  highest precision at recall ``>=`` the level (0 when none).  The levels are used as
  NumPy produces them (0.30000000000000004, 0.6000000000000001, 0.7000000000000001), so a
  recall of exactly 3/10 does not reach the 0.3 level, as in TAO.
* **AP** ``INTEGRATE``: with the distinct cumulative recalls ``r_0 < ... < r_{m-1}``,
  ``P_{m-1} = 0`` and ``P_k = max(best precision among predictions at recall r_k,
  P_{k+1})``; ``AP = sum_{k<m-1} P_k (r_{k+1} - r_k)``.  (The segment ``[0, r_0]`` is never
  counted; this is TAO's formula, not VOC2010's.)
* A class without ground truth gets AP 0; mAP is the plain mean over all classes.

Use :class:`DetectionEvaluator` to accumulate image by image, or :func:`compute_ap` for a
whole dataset at once; :func:`format_ap_table` prints TAO's table.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from tltk.boxes.numpy_ops import inclusive_iou
from tltk.errors import InvalidInputError, SpecError

AP_MODES: tuple[str, ...] = ("SAMPLE", "INTEGRATE")
"""Average-precision modes in the order of TAO's ``AP_MODE`` enum values 0 and 1."""

SAMPLE_RECALL_LEVELS: np.ndarray = np.linspace(0.0, 1.0, 11)
"""The 11 recall levels of ``SAMPLE`` mode, exactly as NumPy (and TAO) computes them."""


class BoxLike(Protocol):
    """Anything with a class name and ``x1, y1, x2, y2`` pixel coordinates."""

    class_name: str
    x1: float
    y1: float
    x2: float
    y2: float


class ScoredBoxLike(BoxLike, Protocol):
    """A :class:`BoxLike` with a confidence (e.g. :class:`tltk.detectnet_v2.postprocess.Detection`)."""

    confidence: float


@dataclass(frozen=True)
class GroundTruth:
    """One ground-truth box.

    Attributes:
        class_name: target class name (after class mapping).
        x1: left edge, model-input pixels.
        y1: top edge, model-input pixels.
        x2: right edge, model-input pixels.
        y2: bottom edge, model-input pixels.
    """

    class_name: str
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass(frozen=True)
class Prediction:
    """One predicted box.

    Attributes:
        class_name: predicted class name.
        x1: left edge, model-input pixels.
        y1: top edge, model-input pixels.
        x2: right edge, model-input pixels.
        y2: bottom edge, model-input pixels.
        confidence: detection confidence (any scale; only the order matters).
    """

    class_name: str
    x1: float
    y1: float
    x2: float
    y2: float
    confidence: float


@dataclass(frozen=True)
class BoxFilter:
    """TAO's ``EvaluationBoxConfig``: the box sizes that take part in evaluation.

    Attributes:
        minimum_height: smallest accepted ``y2 - y1``, pixels (inclusive).
        maximum_height: largest accepted ``y2 - y1``, pixels (inclusive).
        minimum_width: smallest accepted ``x2 - x1``, pixels (inclusive).
        maximum_width: largest accepted ``x2 - x1``, pixels (inclusive).
    """

    minimum_height: float = 0.0
    maximum_height: float = math.inf
    minimum_width: float = 0.0
    maximum_width: float = math.inf

    def accepts(self, boxes: np.ndarray) -> np.ndarray:
        """Which boxes pass the filter.

        Args:
            boxes: (K, 4) ``x1, y1, x2, y2`` in pixels.

        Returns:
            (K,) bool mask.
        """
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        w = b[:, 2] - b[:, 0]
        h = b[:, 3] - b[:, 1]
        return (h >= self.minimum_height) & (h <= self.maximum_height) & (w >= self.minimum_width) & (
            w <= self.maximum_width)

    @classmethod
    def from_config(cls, config: Any) -> BoxFilter:
        """Read an ``EvaluationBoxConfig`` (message, object or mapping) of a loaded spec.

        Args:
            config: has ``minimum_height``, ``maximum_height``, ``minimum_width``,
                ``maximum_width`` (the spec rules checked their ranges).

        Returns:
            The filter.
        """
        def get(name: str) -> float:
            return float(config[name] if isinstance(config, Mapping) else getattr(config, name))

        return cls(get("minimum_height"), get("maximum_height"), get("minimum_width"), get("maximum_width"))


@dataclass(frozen=True)
class EvaluationParams:
    """What TAO's ``evaluation_config`` says about AP.

    Attributes:
        minimum_overlap: ``{class: IoU}`` (``minimum_detection_ground_truth_overlap``).
        box_filters: ``{class: BoxFilter}`` (``evaluation_box_config``).
        mode: ``"SAMPLE"`` (11-point) or ``"INTEGRATE"``.
    """

    minimum_overlap: Mapping[str, float]
    box_filters: Mapping[str, BoxFilter]
    mode: str = "SAMPLE"

    def __post_init__(self) -> None:
        if self.mode not in AP_MODES:
            raise SpecError(f"average_precision_mode: {self.mode!r} is not one of {', '.join(AP_MODES)}")

    @classmethod
    def uniform(cls, class_names: Sequence[str], minimum_overlap: float = 0.5, mode: str = "SAMPLE",
                box_filter: BoxFilter | None = None) -> EvaluationParams:
        """The same overlap and box filter for every class.

        Args:
            class_names: the evaluated classes.
            minimum_overlap: IoU needed for a match.
            mode: ``"SAMPLE"`` or ``"INTEGRATE"``.
            box_filter: the filter for all classes (default: accept every box).

        Returns:
            The parameters.
        """
        f = box_filter or BoxFilter()
        return cls({c: float(minimum_overlap) for c in class_names}, {c: f for c in class_names}, mode)

    @classmethod
    def from_config(cls, evaluation_config: Any, field_path: str = "evaluation_config") -> EvaluationParams:
        """Read TAO's ``evaluation_config`` of a loaded spec (protobuf message, object or mapping).

        Reads ``minimum_detection_ground_truth_overlap`` (class -> float),
        ``evaluation_box_config`` (class -> EvaluationBoxConfig) and
        ``average_precision_mode`` (``SAMPLE=0``, ``INTEGRATE=1``, or the name); all three
        must be present (a protobuf message always has them; the spec rules checked the
        values).

        Args:
            evaluation_config: the config.
            field_path: where it sits in the spec, for error messages.

        Returns:
            The parameters.

        Raises:
            SpecError: an unknown mode.
        """
        def get(name: str) -> Any:
            if isinstance(evaluation_config, Mapping):
                return evaluation_config[name]
            return getattr(evaluation_config, name)

        overlaps = {str(k): float(v) for k, v in get("minimum_detection_ground_truth_overlap").items()}
        filters = {str(k): BoxFilter.from_config(v) for k, v in get("evaluation_box_config").items()}
        raw_mode = get("average_precision_mode")
        if isinstance(raw_mode, (int, np.integer)) and not isinstance(raw_mode, bool):
            if not 0 <= int(raw_mode) < len(AP_MODES):
                raise SpecError(f"{field_path}.average_precision_mode: enum value {int(raw_mode)} is not "
                                "0 (SAMPLE) or 1 (INTEGRATE)")
            mode = AP_MODES[int(raw_mode)]
        else:
            mode = str(raw_mode).strip().upper()
            if mode not in AP_MODES:
                raise SpecError(f"{field_path}.average_precision_mode: {raw_mode!r} is not SAMPLE or INTEGRATE")
        return cls(overlaps, filters, mode)

    def check_classes(self, class_names: Sequence[str]) -> None:
        """Make sure every class has an overlap and a box filter (TAO refuses to run otherwise).

        Args:
            class_names: the evaluated classes.

        Raises:
            SpecError: listing every missing entry.
        """
        problems = []
        for name in class_names:
            if name not in self.minimum_overlap:
                problems.append(f"evaluation_config.minimum_detection_ground_truth_overlap: no entry for {name!r}")
            if name not in self.box_filters:
                problems.append(f"evaluation_config.evaluation_box_config: no entry for {name!r}")
        if problems:
            raise SpecError("evaluation_config does not cover every target class", problems=problems,
                            hint="add one entry per target class to both maps")


@dataclass(frozen=True)
class PRCurve:
    """Cumulative precision/recall of one class, one point per prediction in confidence order.

    Attributes:
        precision: (P,) float64 cumulative precision.
        recall: (P,) float64 cumulative recall (zeros when the class has no ground truth).
        confidence: (P,) float32 confidences in the same (descending) order.
    """

    precision: np.ndarray
    recall: np.ndarray
    confidence: np.ndarray


@dataclass(frozen=True)
class ClassCounts:
    """Per-class counts after filtering.

    Attributes:
        ground_truths: number of ground-truth boxes.
        predictions: number of predictions.
        true_positives: matched predictions.
        false_positives: unmatched predictions.
    """

    ground_truths: int
    predictions: int
    true_positives: int
    false_positives: int


@dataclass(frozen=True)
class EvaluationResult:
    """Result of an AP evaluation.

    Attributes:
        ap_per_class: ``{class: AP in [0, 1]}`` in evaluation class order.
        mean_ap: mean of the per-class APs (classes without ground truth count as 0).
        mode: ``"SAMPLE"`` or ``"INTEGRATE"``.
        num_images: number of images accumulated (each counted once).
        pr_curves: ``{class: PRCurve}``.
        counts: ``{class: ClassCounts}``.
    """

    ap_per_class: dict[str, float]
    mean_ap: float
    mode: str
    num_images: int
    pr_curves: dict[str, PRCurve] = field(repr=False)
    counts: dict[str, ClassCounts]

    @property
    def mAP(self) -> float:  # noqa: N802 - the name everyone uses
        """Alias of :attr:`mean_ap`."""
        return self.mean_ap

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (percentages rounded to 4 decimals, as TAO's status log).

        Returns:
            ``{"mAP": %, "average_precision": {class: %}, "mode", "num_images", "counts"}``.
        """
        return {
            "mAP": round(self.mean_ap * 100.0, 4),
            "average_precision": {k: round(v * 100.0, 4) for k, v in self.ap_per_class.items()},
            "mode": self.mode,
            "num_images": self.num_images,
            "counts": {k: vars(c).copy() for k, c in self.counts.items()},
        }


# --------------------------------------------------------------------------------------------
# Primitives


def average_precision(precision: np.ndarray, recall: np.ndarray, mode: str = "SAMPLE") -> float:
    """AP from cumulative precision/recall in prediction order, as TAO computes it.

    Args:
        precision: (P,) cumulative precision, predictions in descending confidence order.
        recall: (P,) cumulative recall (non-decreasing).
        mode: ``"SAMPLE"`` (11 recall levels) or ``"INTEGRATE"`` (see the module docstring).

    Returns:
        AP in [0, 1]; 0 for empty input or NaN.
    """
    precision = np.asarray(precision, dtype=np.float64).reshape(-1)
    recall = np.asarray(recall, dtype=np.float64).reshape(-1)
    if precision.shape != recall.shape:
        raise InvalidInputError(f"precision {precision.shape} and recall {recall.shape} differ in length")
    if precision.size == 0:
        return 0.0
    if mode == "SAMPLE":
        reached = recall[None, :] >= SAMPLE_RECALL_LEVELS[:, None]
        best = np.where(reached, precision[None, :], -np.inf).max(axis=1)
        # Summed one level at a time, then divided, like TAO, so the printed digits agree.
        total = 0.0
        for value in best:
            total += float(value) if np.isfinite(value) else 0.0
        ap = total / SAMPLE_RECALL_LEVELS.size
    elif mode == "INTEGRATE":
        levels, first = np.unique(recall, return_index=True)
        if levels.size < 2:
            return 0.0
        heights = np.zeros(levels.size)
        widths = np.zeros(levels.size)
        segment_max = np.maximum.reduceat(precision, first)[:-1]
        heights[:-1] = np.maximum.accumulate(segment_max[::-1])[::-1]
        widths[:-1] = np.diff(levels)
        # The last level has height 0; it stays in the sum so NumPy adds in TAO's order.
        ap = float(np.sum(heights * widths))
    else:
        raise InvalidInputError(f"unknown AP mode {mode!r}; use SAMPLE or INTEGRATE")
    return 0.0 if math.isnan(ap) else ap


def _as_arrays(items: Iterable[Any], class_names: Sequence[str],
               scored: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    index = {name: i for i, name in enumerate(class_names)}
    cls: list[int] = []
    boxes: list[tuple[float, float, float, float]] = []
    conf: list[float] = []
    for it in items:
        ci = index.get(str(it.class_name))
        if ci is None:
            continue
        cls.append(ci)
        boxes.append((float(it.x1), float(it.y1), float(it.x2), float(it.y2)))
        if scored:
            conf.append(float(it.confidence))
    return (np.asarray(cls, dtype=np.int64), np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
            np.asarray(conf, dtype=np.float64))


# --------------------------------------------------------------------------------------------
# Evaluator


class DetectionEvaluator:
    """Accumulates images and computes TAO-exact AP per class.

    Example::

        ev = DetectionEvaluator(["car", "person"], EvaluationParams.from_config(spec.evaluation_config))
        for gts, dets in dataset:
            ev.accumulate(gts, dets)
        print(format_ap_table(ev.result()))
    """

    def __init__(self, class_names: Sequence[str], params: EvaluationParams) -> None:
        """Create an empty evaluator.

        Args:
            class_names: the evaluated classes, in the order results are reported (the
                cost function's target class order in TAO).
            params: overlap thresholds, box filters and AP mode; every class needs entries.

        Raises:
            SpecError: a class lacks an overlap or box-filter entry.
            InvalidInputError: duplicate class names.
        """
        if len(set(class_names)) != len(class_names):
            raise InvalidInputError(f"duplicate class names in {list(class_names)}")
        params.check_classes(class_names)
        self.class_names = [str(c) for c in class_names]
        self.params = params
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        n = len(self.class_names)
        self._num_images = 0
        self._num_gt = [0] * n
        self._conf: list[list[np.ndarray]] = [[] for _ in range(n)]
        self._iou: list[list[np.ndarray]] = [[] for _ in range(n)]
        self._gt_key: list[list[np.ndarray]] = [[] for _ in range(n)]

    @property
    def num_images(self) -> int:
        """Number of images accumulated."""
        return self._num_images

    def accumulate(self, ground_truths: Iterable[BoxLike], predictions: Iterable[ScoredBoxLike]) -> None:
        """Add one image.

        Boxes of classes that are not evaluated are skipped.  Coordinates are model-input
        pixels (both sets in the same frame).

        Args:
            ground_truths: the image's ground-truth boxes (objects with ``class_name``,
                ``x1``, ``y1``, ``x2``, ``y2``), e.g. :class:`GroundTruth`.
            predictions: the image's predictions (the same plus ``confidence``), e.g.
                :class:`Prediction` or postprocessing ``Detection`` objects.
        """
        g_cls, g_box, _ = _as_arrays(ground_truths, self.class_names, scored=False)
        p_cls, p_box, p_conf = _as_arrays(predictions, self.class_names, scored=True)
        for ci, name in enumerate(self.class_names):
            box_filter = self.params.box_filters[name]
            gt = g_box[g_cls == ci]
            gt = np.round(gt[box_filter.accepts(gt)])
            sel = p_cls == ci
            pred, conf = p_box[sel], p_conf[sel]
            keep = box_filter.accepts(pred)
            pred, conf = np.round(pred[keep]), conf[keep]
            if pred.shape[0]:
                if gt.shape[0]:
                    iou = inclusive_iou(pred, gt)
                    best = np.argmax(iou, axis=1)
                    best_iou = iou[np.arange(pred.shape[0]), best]
                    key = best + self._num_gt[ci]
                else:
                    best_iou = np.full(pred.shape[0], -np.inf)
                    key = np.full(pred.shape[0], -1, dtype=np.int64)
                self._conf[ci].append(conf.astype(np.float32))
                self._iou[ci].append(best_iou)
                self._gt_key[ci].append(key.astype(np.int64))
            self._num_gt[ci] += int(gt.shape[0])
        self._num_images += 1

    def result(self) -> EvaluationResult:
        """Compute AP for everything accumulated so far.

        Returns:
            The :class:`EvaluationResult`.
        """
        aps: dict[str, float] = {}
        curves: dict[str, PRCurve] = {}
        counts: dict[str, ClassCounts] = {}
        for ci, name in enumerate(self.class_names):
            n_gt = self._num_gt[ci]
            if self._conf[ci]:
                conf = np.concatenate(self._conf[ci])
                best_iou = np.concatenate(self._iou[ci])
                key = np.concatenate(self._gt_key[ci])
            else:
                conf = np.zeros(0, dtype=np.float32)
                best_iou = np.zeros(0)
                key = np.zeros(0, dtype=np.int64)
            order = np.argsort(-conf, kind="stable")
            conf, best_iou, key = conf[order], best_iou[order], key[order]
            tp = np.zeros(conf.size, dtype=bool)
            candidates = np.flatnonzero(best_iou >= float(self.params.minimum_overlap[name]))
            if candidates.size:
                _, first = np.unique(key[candidates], return_index=True)
                tp[candidates[first]] = True
            cum_tp = np.cumsum(tp)
            cum_fp = np.cumsum(~tp)
            precision = cum_tp / np.maximum(cum_tp + cum_fp, 1)
            recall = cum_tp / n_gt if n_gt > 0 else np.zeros(conf.size)
            aps[name] = average_precision(precision, recall, self.params.mode) if n_gt > 0 else 0.0
            curves[name] = PRCurve(precision.astype(np.float64), recall.astype(np.float64), conf)
            counts[name] = ClassCounts(n_gt, int(conf.size), int(tp.sum()), int(conf.size - tp.sum()))
        mean_ap = float(np.mean(list(aps.values()))) if aps else 0.0
        return EvaluationResult(aps, mean_ap, self.params.mode, self._num_images, curves, counts)


def compute_ap(ground_truths: Sequence[Iterable[BoxLike]], predictions: Sequence[Iterable[ScoredBoxLike]],
               class_names: Sequence[str], params: EvaluationParams) -> EvaluationResult:
    """Evaluate a whole dataset at once (see :class:`DetectionEvaluator`).

    Args:
        ground_truths: per image, its ground-truth boxes.
        predictions: per image (same order and length), its predictions.
        class_names: the evaluated classes.
        params: overlap thresholds, box filters and AP mode.

    Returns:
        The :class:`EvaluationResult`.

    Raises:
        InvalidInputError: the two sequences differ in length.
    """
    if len(ground_truths) != len(predictions):
        raise InvalidInputError(f"{len(ground_truths)} images of ground truth but {len(predictions)} of predictions")
    ev = DetectionEvaluator(class_names, params)
    for g, p in zip(ground_truths, predictions, strict=True):
        ev.accumulate(g, p)
    return ev.result()


# --------------------------------------------------------------------------------------------
# TAO's printed table


def _pretty_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    # The layout of tabulate's "pretty" format: centred cells, one space of padding, '+-|' rules.
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def line(cells: Sequence[str]) -> str:
        return "|" + "|".join(" " + f"{c:^{w}}" + " " for c, w in zip(cells, widths, strict=True)) + "|"

    out = [rule, line(headers), rule]
    out += [line(r) for r in rows]
    out.append(rule)
    return "\n".join(out)


def format_ap_table(result: EvaluationResult, validation_cost: float | None = None,
                    median_inference_time: float | None = None) -> str:
    """TAO's evaluation printout.

    The lines are: an empty line, ``Validation cost: %f`` (only when given),
    ``Mean average_precision (in %): <mAP*100 with 4 decimals>``, an empty line, a table
    (tabulate's ``pretty`` layout) with headers ``class name`` and
    ``average precision (in %)``, one row per class sorted by class name, AP*100 with
    Python's default float formatting, and ``\\nMedian Inference Time: %f`` (only when given).

    Args:
        result: the evaluation result.
        validation_cost: the validation cost to print, if any.
        median_inference_time: seconds per image to print, if any.

    Returns:
        The text, without a trailing newline.
    """
    lines = [""]
    if validation_cost is not None:
        lines.append(f"Validation cost: {validation_cost:f}")
    lines.append(f"Mean average_precision (in %): {result.mean_ap * 100.0:0.4f}")
    lines.append("")
    rows = [(name, str(ap * 100)) for name, ap in sorted(result.ap_per_class.items())]
    lines.append(_pretty_table(["class name", "average precision (in %)"], rows))
    if median_inference_time is not None:
        lines.append(f"\nMedian Inference Time: {median_inference_time:f}")
    return "\n".join(lines)
