"""MaskRCNN outputs -> COCO results in original-image pixels (evaluation, inference labels).

The network gives ``generate_detections`` ``[K, 6]`` rows ``(y1, x1, y2, x2, class, score)``
in network-input pixels and per-class mask logits ``[K, C, M, M]``.  A detection becomes a
COCO result ``{image_id, category_id, bbox: [x, y, w, h], score, segmentation}``:

* boxes are divided by the letterbox scale (network pixels per original pixel) and clipped to
  the original image; ``bbox`` is ``[x1, y1, x2 - x1, y2 - y1]`` (no +1, as TAO's evaluation);
* ``category_id`` is the dataset's own id of the class index (:class:`CategoryMap`);
* the mask of the detected class goes through a sigmoid, is pasted into its box with TAO's
  algorithm (:func:`paste_mask`) and binarised at :data:`MASK_THRESHOLD`, the one threshold
  every backend uses (TAO's TF and TensorRT paths disagree; tltk does not).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

#: Probability above which a pasted mask pixel belongs to the instance (all backends).
MASK_THRESHOLD = 0.5


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function."""
    x = np.asarray(x, dtype=np.float32)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def paste_mask(mask: np.ndarray, box_xyxy: Sequence[float], height: int, width: int,
               threshold: float = MASK_THRESHOLD) -> np.ndarray:
    """Paste an ``M x M`` probability mask into its box of an ``height x width`` image.

    TAO's algorithm: expand the box about its centre by ``(M + 2) / M``, truncate to integers,
    zero-pad the mask to ``(M + 2) x (M + 2)``, resize it bilinearly to the expanded box
    (``x2 - x1 + 1`` by ``y2 - y1 + 1`` pixels, at least 1), binarise ``> threshold`` and paste it
    with clipping to the image.

    Args:
        mask: float ``[M, M]`` probabilities.
        box_xyxy: ``(x1, y1, x2, y2)`` in the image's pixels.
        height: image height.
        width: image width.
        threshold: binarisation threshold.

    Returns:
        uint8 ``[height, width]`` with values 0/1.
    """
    from PIL import Image

    m = int(mask.shape[0])
    scale = (m + 2.0) / m
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    half_w, half_h = (x2 - x1) / 2.0 * scale, (y2 - y1) / 2.0 * scale
    bx1, by1, bx2, by2 = int(cx - half_w), int(cy - half_h), int(cx + half_w), int(cy + half_h)
    padded = np.zeros((m + 2, m + 2), np.float32)
    padded[1:-1, 1:-1] = mask
    w, h = max(bx2 - bx1 + 1, 1), max(by2 - by1 + 1, 1)
    resized = np.asarray(Image.fromarray(padded, mode="F").resize((w, h), Image.BILINEAR))
    binary = (resized > threshold).astype(np.uint8)
    out = np.zeros((int(height), int(width)), np.uint8)
    ox1, oy1 = max(bx1, 0), max(by1, 0)
    ox2, oy2 = min(bx2 + 1, int(width)), min(by2 + 1, int(height))
    if ox2 > ox1 and oy2 > oy1:
        out[oy1:oy2, ox1:ox2] = binary[oy1 - by1:oy2 - by1, ox1 - bx1:ox2 - bx1]
    return out


def image_results(detections: np.ndarray, masks: np.ndarray | None, image_id: Any, scale: float,
                  original_hw: tuple[int, int], category_id_of: Any, score_threshold: float = 0.0,
                  with_masks: bool = True) -> tuple[list[dict[str, Any]], list[np.ndarray]]:
    """COCO results of one image (see the module docstring).

    Args:
        detections: float ``[K, 6]`` rows ``(y1, x1, y2, x2, class, score)`` in network pixels.
        masks: float ``[K, C, M, M]`` mask logits, or None.
        image_id: the COCO image id (or, for folders of images, the file name).
        scale: network pixels per original pixel (the letterbox scale).
        original_hw: ``(height, width)`` of the original image.
        category_id_of: class index -> the dataset's category id.
        score_threshold: detections below it are dropped.
        with_masks: paste and encode the masks (``segmentation``).

    Returns:
        ``(results, binary_masks)``: COCO result dicts (``segmentation`` as compressed RLE when
        masks are given) and the pasted uint8 masks in the same order.
    """
    from tltk.metrics.coco import mask_to_rle

    height, width = int(original_hw[0]), int(original_hw[1])
    results: list[dict[str, Any]] = []
    pasted: list[np.ndarray] = []
    for k, row in enumerate(np.asarray(detections, np.float32)):
        cls, score = int(round(float(row[4]))), float(row[5])
        if cls < 1 or score <= 0.0 or score < score_threshold:
            continue
        y1, x1, y2, x2 = (float(v) / scale for v in row[:4])
        x1, x2 = min(max(x1, 0.0), float(width)), min(max(x2, 0.0), float(width))
        y1, y2 = min(max(y1, 0.0), float(height)), min(max(y2, 0.0), float(height))
        if x2 <= x1 or y2 <= y1:
            continue
        result: dict[str, Any] = {"image_id": image_id, "category_id": int(category_id_of(cls)),
                                  "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                                  "score": round(score, 5)}
        if masks is not None and with_masks:
            binary = paste_mask(sigmoid(masks[k, cls]), (x1, y1, x2, y2), height, width)
            result["segmentation"] = mask_to_rle(binary)
            pasted.append(binary)
        results.append(result)
    return results, pasted
