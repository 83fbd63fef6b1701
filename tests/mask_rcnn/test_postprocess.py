"""generate_detections: class-aware NMS through shared boxes, TAO's row layout and empty rows."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from tltk.mask_rcnn.postprocess import GenerateDetections, generate_detections  # noqa: E402

ROIS = np.array([[[10, 10, 49, 49], [12, 10, 51, 49], [60, 60, 99, 99], [0, 0, 0, 0]]], np.float32)


def _logits(probs: list[list[float]]) -> np.ndarray:
    return np.log(np.array([probs], np.float32))


def _run(logits: np.ndarray, roi_scores: np.ndarray, k: int = 6, nms: float = 0.5) -> np.ndarray:
    deltas = np.zeros((1, 4, 12), np.float32)  # zero deltas: every class box is the roi itself
    return generate_detections(logits, deltas, ROIS, roi_scores, num_classes=3, bbox_reg_weights=(10, 10, 5, 5),
                               max_detections=k, nms_threshold=nms, image_size=(64, 128)).numpy()


def test_rows_by_hand() -> None:
    # rois 0 and 1 overlap (IoU 1443 / 1599 = 0.90): per class the better one survives, so class 1 keeps
    # roi 0 (0.6 > 0.5) and class 2 keeps roi 1 (0.4 > 0.3); roi 3 is an empty proposal slot (score 0)
    logits = _logits([[0.1, 0.6, 0.3], [0.1, 0.5, 0.4], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8]])
    det = _run(logits, np.array([[0.9, 0.8, 0.7, 0.0]], np.float32))
    assert det.shape == (1, 6, 6)
    # roi 2 is clipped to the 64 px high canvas: y2 = 63
    expected = [[60, 60, 63, 99, 1, 0.7], [10, 10, 49, 49, 1, 0.6], [12, 10, 51, 49, 2, 0.4],
                [60, 60, 63, 99, 2, 0.1], [0, 0, 0, 0, -1, 0], [0, 0, 0, 0, -1, 0]]
    np.testing.assert_allclose(det[0], expected, atol=1e-4)


def test_fewer_candidates_than_k_are_padded_with_empty_rows() -> None:
    logits = _logits([[0.5, 0.25, 0.25]] * 4)
    det = _run(logits, np.array([[0.9, 0.0, 0.0, 0.0]], np.float32), k=12)  # 4 rois x 2 classes = 8 < 12
    assert det.shape == (1, 12, 6)
    np.testing.assert_allclose(det[0, :2, 5], [0.25, 0.25], rtol=1e-5)
    assert sorted(det[0, :2, 4].tolist()) == [1.0, 2.0]
    np.testing.assert_array_equal(det[0, 2:], np.tile([0, 0, 0, 0, -1, 0], (10, 1)))


def test_layer_config_round_trip() -> None:
    layer = GenerateDetections(3, (10, 10, 5, 5), 6, 0.5, (64, 128), name="generate_detections")
    clone = GenerateDetections.from_config(layer.get_config())
    logits = _logits([[0.1, 0.6, 0.3], [0.1, 0.5, 0.4], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8]])
    args = (logits, np.zeros((1, 4, 12), np.float32), ROIS, np.ones((1, 4), np.float32))
    np.testing.assert_array_equal(layer(*args).numpy(), clone(*args).numpy())
