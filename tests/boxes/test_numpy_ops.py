"""NumPy box ops: hand-worked areas, IoU in both pixel conventions, NMS, clipping, conversions."""

from __future__ import annotations

import numpy as np
import pytest

from tltk.boxes.numpy_ops import (
    box_area,
    clip_boxes,
    dbscan_iou_matrix,
    greedy_nms,
    inclusive_iou,
    pairwise_iou,
    xywh_to_xyxy,
    xyxy_to_xywh,
)


def test_box_area_both_conventions():
    boxes = np.array([[0, 0, 10, 4], [2, 3, 2, 3]], float)
    assert box_area(boxes).tolist() == [40.0, 0.0]
    assert box_area(boxes, inclusive=True).tolist() == [55.0, 1.0]
    assert box_area(np.zeros((2, 3, 4))).shape == (2, 3)


def test_pairwise_iou_continuous():
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 5]], float)  # second box has no area
    b = np.array([[5, 0, 15, 10], [0, 0, 10, 10], [20, 20, 30, 30]], float)
    iou = pairwise_iou(a, b)
    assert iou.shape == (2, 3)
    # 50 / (100 + 100 - 50)
    assert iou[0].tolist() == pytest.approx([1 / 3, 1.0, 0.0])
    assert iou[1].tolist() == [0.0, 0.0, 0.0]
    assert pairwise_iou(np.zeros((0, 4)), b).shape == (0, 3)


def test_inclusive_iou_adds_one_pixel_per_side():
    # (0,0,9,9) vs (5,0,14,9): sides 10, intersection 5*10 = 50, union 100+100-50 = 150.
    assert inclusive_iou(np.array([[0, 0, 9, 9]]), np.array([[5, 0, 14, 9]]))[0, 0] == pytest.approx(1 / 3)
    # The same boxes read continuously: 4*9 / (81 + 81 - 36).
    assert pairwise_iou(np.array([[0, 0, 9, 9]]), np.array([[5, 0, 14, 9]]))[0, 0] == pytest.approx(36 / 126)
    # Empty union (a box from (0,0) to (-1,-1) has inclusive area 0) -> 0, not NaN.
    assert inclusive_iou(np.array([[0, 0, -1, -1]]), np.array([[0, 0, -1, -1]]))[0, 0] == 0.0


def test_dbscan_iou_pads_the_union():
    iou = dbscan_iou_matrix(np.array([[0, 0, 10, 10], [5, 0, 15, 10]], float))
    assert iou[0, 1] == pytest.approx(50 / 150.01, rel=1e-12)
    assert dbscan_iou_matrix(np.array([[0, 0, 10, 10]], float), union_epsilon=1e-5)[0, 0] == pytest.approx(
        100 / 100.00001, rel=1e-12)


def test_greedy_nms_conventions_and_limits():
    # (0,0,9,9) vs (0,0,9,4): inclusive IoU 0.5, continuous 36/81 = 0.444.
    boxes = np.array([[0, 0, 9, 9], [0, 0, 9, 4], [50, 50, 60, 60]], float)
    scores = np.array([0.9, 0.8, 0.7])
    assert greedy_nms(boxes, scores, 0.45, inclusive=True).tolist() == [0, 2]
    assert greedy_nms(boxes, scores, 0.45, inclusive=False).tolist() == [0, 1, 2]
    assert greedy_nms(boxes, scores, 0.45, 0.75, inclusive=False).tolist() == [0, 1]
    assert greedy_nms(boxes, scores, 0.45, inclusive=False, max_output=2).tolist() == [0, 1]
    assert greedy_nms(boxes, scores, 0.45, 0.95, inclusive=True).tolist() == []
    # Equal scores keep the input order.
    assert greedy_nms(boxes, np.ones(3), 0.9, inclusive=False).tolist() == [0, 1, 2]


def test_clip_boxes_keeps_corner_order():
    out = clip_boxes(np.array([[-10, 5, 70, 30], [70, 40, 80, 50]], float), (64, 32))
    assert out.tolist() == [[0, 5, 64, 30], [64, 32, 64, 32]]


def test_xywh_round_trip():
    xywh = np.array([[10.0, 20.0, 5.0, 8.0], [0.5, 0.25, 1.0, 2.0]])
    xyxy = xywh_to_xyxy(xywh)
    assert xyxy.tolist() == [[10.0, 20.0, 15.0, 28.0], [0.5, 0.25, 1.5, 2.25]]
    assert xyxy_to_xywh(xyxy).tolist() == xywh.tolist()
    assert xywh.tolist() == [[10.0, 20.0, 5.0, 8.0], [0.5, 0.25, 1.0, 2.0]]  # input untouched
