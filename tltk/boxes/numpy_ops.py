"""Box operations in NumPy: areas, pairwise IoU, greedy NMS, clipping and format conversion.

Boxes are corner boxes ``(x1, y1, x2, y2)`` in pixels, last axis 4, float64 results.  Areas,
IoU and NMS treat both axes alike, so ``(y1, x1, y2, x2)`` boxes (MaskRCNN's order) give the
same numbers; :func:`clip_boxes` and the ``xywh`` conversions name the axes.

Two pixel conventions appear in TAO and both live here:

* **continuous** (default): a box covers ``x2 - x1`` by ``y2 - y1`` square pixels
  (COCO, MaskRCNN, DetectNet_v2's DBSCAN);
* **inclusive** (``inclusive=True``): border pixels belong to the box, so each side is one
  pixel longer (``x2 - x1 + 1``); TAO's DetectNet_v2 NMS and KITTI-style evaluation use it.

DetectNet_v2's DBSCAN has its own IoU, ``intersection / (union + 0.01)``
(:func:`dbscan_iou_matrix`), which keeps empty boxes at IoU 0.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "DBSCAN_IOU_EPSILON",
    "box_area",
    "pairwise_iou",
    "inclusive_iou",
    "dbscan_iou_matrix",
    "greedy_nms",
    "clip_boxes",
    "xywh_to_xyxy",
    "xyxy_to_xywh",
]

DBSCAN_IOU_EPSILON = 0.01
"""Added to the union in DBSCAN's IoU (TAO's inference path), so empty boxes give IoU 0, not NaN."""


def _as_boxes(boxes: np.ndarray) -> np.ndarray:
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


def box_area(boxes: np.ndarray, inclusive: bool = False) -> np.ndarray:
    """Area of each box, ``(x2 - x1) * (y2 - y1)`` (each side ``+ 1`` when ``inclusive``).

    No clamping: an inverted box has a negative side, as in TAO's formulas.

    Args:
        boxes: float ``[..., 4]`` corner boxes in pixels.
        inclusive: use the inclusive-pixel convention.

    Returns:
        float64 ``[...]`` areas in square pixels.
    """
    b = np.asarray(boxes, dtype=np.float64)
    pad = 1.0 if inclusive else 0.0
    return (b[..., 2] - b[..., 0] + pad) * (b[..., 3] - b[..., 1] + pad)


def _intersection(a: np.ndarray, b: np.ndarray, pad: float) -> np.ndarray:
    iw = np.maximum(0.0, np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + pad)
    ih = np.maximum(0.0, np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + pad)
    return iw * ih


def pairwise_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU of every pair with continuous coordinates (COCO, MaskRCNN).

    A box without area (``x2 <= x1`` or ``y2 <= y1``) has IoU 0 with everything.

    Args:
        boxes_a: (M, 4) corner boxes in pixels.
        boxes_b: (N, 4) corner boxes in pixels.

    Returns:
        (M, N) float64 IoU in [0, 1].
    """
    a, b = _as_boxes(boxes_a), _as_boxes(boxes_b)
    inter = _intersection(a, b, 0.0)
    area_a = np.maximum(a[:, 2] - a[:, 0], 0.0) * np.maximum(a[:, 3] - a[:, 1], 0.0)
    area_b = np.maximum(b[:, 2] - b[:, 0], 0.0) * np.maximum(b[:, 3] - b[:, 1], 0.0)
    union = area_a[:, None] + area_b[None, :] - inter
    valid = (area_a[:, None] > 0.0) & (area_b[None, :] > 0.0)
    return np.where(valid, inter / np.where(valid, union, 1.0), 0.0)


def inclusive_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU of every pair with TAO's inclusive-pixel convention (DetectNet_v2 NMS and AP).

    Sides are ``max(0, min(x2) - max(x1) + 1)``; areas ``(x2 - x1 + 1) * (y2 - y1 + 1)``.

    Args:
        boxes_a: (M, 4) corner boxes in (integer) pixels.
        boxes_b: (N, 4) corner boxes in (integer) pixels.

    Returns:
        (M, N) float64 IoU; pairs with an empty union give 0.
    """
    a, b = _as_boxes(boxes_a), _as_boxes(boxes_b)
    inter = _intersection(a, b, 1.0)
    union = box_area(a, inclusive=True)[:, None] + box_area(b, inclusive=True)[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / union
    return np.where(np.isfinite(iou), iou, 0.0)


def dbscan_iou_matrix(boxes: np.ndarray, union_epsilon: float = DBSCAN_IOU_EPSILON) -> np.ndarray:
    """Pairwise IoU as TAO's DetectNet_v2 DBSCAN uses it: continuous, ``inter / (union + eps)``.

    Args:
        boxes: (K, 4) corner boxes in pixels.
        union_epsilon: added to every union (TAO's inference path uses 0.01).

    Returns:
        (K, K) float64 IoU matrix (the diagonal is slightly below 1).
    """
    b = _as_boxes(boxes)
    x1, y1, x2, y2 = (np.ascontiguousarray(b[:, k]) for k in range(4))
    # Same operations and order as TAO's formula, computed in place to keep it fast.
    inter = np.minimum.outer(x2, x2)
    inter -= np.maximum.outer(x1, x1)
    np.maximum(inter, 0.0, out=inter)
    ih = np.minimum.outer(y2, y2)
    ih -= np.maximum.outer(y1, y1)
    np.maximum(ih, 0.0, out=ih)
    inter *= ih
    area = (x2 - x1) * (y2 - y1)
    union = np.add.outer(area, area, out=ih)
    union -= inter
    union += union_epsilon
    inter /= union
    return inter


def greedy_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, score_threshold: float = -np.inf,
               *, inclusive: bool, max_output: int | None = None) -> np.ndarray:
    """Greedy NMS: highest score first, suppress boxes whose IoU with a kept box is above a threshold.

    Only boxes with ``score > score_threshold`` survive; a box at or below the threshold can
    only suppress lower-scoring boxes, which would be dropped anyway, so those boxes are
    removed before suppression.  Ties in score keep the input order.  A NaN IoU (empty
    union) does not suppress.  This is TAO's DetectNet_v2 "method 4" NMS with
    ``inclusive=True``.

    Args:
        boxes: (K, 4) corner boxes in pixels.
        scores: (K,) scores.
        iou_threshold: a box is suppressed when its IoU with a kept, higher-scoring box is
            strictly greater than this.
        score_threshold: boxes must score strictly above this.
        inclusive: IoU with the inclusive-pixel convention (``True``) or continuous.
        max_output: stop after this many kept boxes (``None``: no limit).

    Returns:
        (M,) int64 indices into ``boxes`` of the kept boxes, in descending score order.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    candidates = np.flatnonzero(scores > score_threshold)
    if candidates.size == 0 or max_output == 0:
        return np.zeros(0, dtype=np.int64)
    order = candidates[np.argsort(-scores[candidates], kind="stable")]
    b = _as_boxes(boxes)[order]
    x1, y1, x2, y2 = (np.ascontiguousarray(b[:, k]) for k in range(4))
    pad = 1.0 if inclusive else 0.0
    area = (x2 - x1 + pad) * (y2 - y1 + pad)
    remaining = np.arange(order.size)
    keep: list[int] = []
    # One iteration per kept box: its IoU with the boxes still in play, then drop the overlaps.
    with np.errstate(divide="ignore", invalid="ignore"):
        while remaining.size and (max_output is None or len(keep) < max_output):
            i = int(remaining[0])
            keep.append(i)
            rest = remaining[1:]
            iw = np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + pad
            ih = np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + pad
            inter = np.maximum(iw, 0.0) * np.maximum(ih, 0.0)
            iou = inter / (area[i] + area[rest] - inter)
            remaining = rest[~(iou > iou_threshold)]
    return order[np.asarray(keep, dtype=np.int64)].astype(np.int64)


def clip_boxes(boxes: np.ndarray, image_size: tuple[float, float]) -> np.ndarray:
    """Clip ``(x1, y1, x2, y2)`` boxes to a frame the way TAO does before writing outputs.

    ``x1`` to ``[0, W]``, ``y1`` to ``[0, H]``, ``x2`` to ``[x1, W]``, ``y2`` to ``[y1, H]``.

    Args:
        boxes: (M, 4) ``x1, y1, x2, y2`` in pixels.
        image_size: ``(width, height)`` of the frame in pixels.

    Returns:
        (M, 4) float64 clipped boxes (a new array).
    """
    w, h = float(image_size[0]), float(image_size[1])
    b = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    b[:, 0] = np.clip(b[:, 0], 0.0, w)
    b[:, 1] = np.clip(b[:, 1], 0.0, h)
    b[:, 2] = np.maximum(np.minimum(b[:, 2], w), b[:, 0])
    b[:, 3] = np.maximum(np.minimum(b[:, 3], h), b[:, 1])
    return b


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """COCO ``(x, y, width, height)`` boxes to corners ``(x1, y1, x2, y2)`` (continuous).

    Args:
        boxes: float ``[..., 4]`` in pixels.

    Returns:
        float64 ``[..., 4]`` with ``x2 = x + width``, ``y2 = y + height``.
    """
    b = np.array(boxes, dtype=np.float64)
    b[..., 2] += b[..., 0]
    b[..., 3] += b[..., 1]
    return b


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """Corner boxes ``(x1, y1, x2, y2)`` to COCO ``(x, y, width, height)`` (continuous).

    Args:
        boxes: float ``[..., 4]`` in pixels.

    Returns:
        float64 ``[..., 4]`` with ``width = x2 - x1``, ``height = y2 - y1``.
    """
    b = np.array(boxes, dtype=np.float64)
    b[..., 2] -= b[..., 0]
    b[..., 3] -= b[..., 1]
    return b
