"""TensorFlow box ops: IoU, TAO's +1 box coder and clipping, with hand-worked numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from tltk.boxes.tf_ops import BBOX_XFORM_CLIP, clip_boxes, decode_boxes, encode_boxes, pairwise_iou  # noqa: E402


def test_pairwise_iou_by_hand() -> None:
    a = np.array([[0, 0, 10, 10], [-5, -5, 5, 5]], np.float32)
    b = np.array([[5, 5, 15, 15], [0, 0, 10, 10], [-1, -1, -1, -1], [20, 20, 30, 30]], np.float32)
    iou = pairwise_iou(a, b).numpy()
    assert iou.shape == (2, 4)
    np.testing.assert_allclose(iou[0], [25 / 175, 1.0, 0.0, 0.0], rtol=1e-6)
    # an anchor reaching past the image edge still has its full area
    np.testing.assert_allclose(iou[1], [0.0, 25 / 175, 0.0, 0.0], rtol=1e-6)


def test_pairwise_iou_batched_and_padding_pairs() -> None:
    a = np.array([[[0, 0, 4, 4]], [[-1, -1, -1, -1]]], np.float32)  # [2, 1, 4]
    b = np.array([[[0, 0, 2, 4], [-1, -1, -1, -1]], [[-1, -1, -1, -1], [0, 0, 1, 1]]], np.float32)
    iou = pairwise_iou(a, b).numpy()
    assert iou.shape == (2, 1, 2)
    np.testing.assert_allclose(iou, [[[0.5, 0.0]], [[0.0, 0.0]]])


def test_encode_by_hand_with_weights() -> None:
    anchor = np.array([0, 0, 9, 9], np.float32)  # +1 convention: h = w = 10, centre (5, 5)
    box = np.array([10, 0, 19, 19], np.float32)  # h = 10, w = 20, centre (15, 10)
    np.testing.assert_allclose(encode_boxes(box, anchor).numpy(), [1.0, 0.5, 0.0, math.log(2)], rtol=1e-6)
    np.testing.assert_allclose(encode_boxes(box, anchor, (10, 10, 5, 5)).numpy(),
                               [10.0, 5.0, 0.0, 5 * math.log(2)], rtol=1e-6)


def test_decode_inverts_encode_and_zero_deltas_give_anchor() -> None:
    rng = np.random.default_rng(0)
    anchors = np.concatenate([rng.uniform(0, 50, (20, 2)), rng.uniform(60, 120, (20, 2))], 1)[:, [0, 1, 2, 3]]
    anchors = anchors.astype(np.float32)
    boxes = (anchors + rng.uniform(-5, 5, anchors.shape)).astype(np.float32)
    weights = (10.0, 10.0, 5.0, 5.0)
    deltas = encode_boxes(boxes, anchors, weights)
    np.testing.assert_allclose(decode_boxes(deltas, anchors, weights).numpy(), boxes, atol=1e-3)
    np.testing.assert_allclose(decode_boxes(np.zeros_like(anchors), anchors).numpy(), anchors, atol=1e-4)


def test_decode_clamps_scale() -> None:
    anchor = np.array([0, 0, 9, 9], np.float32)
    out = decode_boxes(np.array([0, 0, 10.0, 10.0], np.float32), anchor).numpy()
    size = 10 * math.exp(BBOX_XFORM_CLIP)  # 625 px
    assert size == pytest.approx(625.0)
    np.testing.assert_allclose(out, [5 - size / 2, 5 - size / 2, 5 + size / 2 - 1, 5 + size / 2 - 1], rtol=1e-5)


def test_padding_rows_stay_finite() -> None:
    out = encode_boxes(np.full((1, 4), -1, np.float32), np.array([[0, 0, 9, 9]], np.float32)).numpy()
    assert np.all(np.isfinite(out))


def test_clip_scalar_and_per_image() -> None:
    boxes = np.array([[-5, 3, 20, 50]], np.float32)
    np.testing.assert_allclose(clip_boxes(boxes, 16, 32).numpy(), [[0, 3, 15, 31]])
    batch = np.array([[[-5, 3, 20, 50]], [[-5, 3, 20, 50]]], np.float32)  # [2, 1, 4]
    heights = np.array([[16.0], [8.0]], np.float32)
    widths = np.array([[32.0], [64.0]], np.float32)
    np.testing.assert_allclose(clip_boxes(batch, heights, widths).numpy(), [[[0, 3, 15, 31]], [[0, 3, 7, 50]]])
