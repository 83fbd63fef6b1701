"""DetectNet_v2 postprocessing: decoding, DBSCAN/NMS/HYBRID clustering, parameters.

All expected numbers are worked out by hand in the comments.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from tltk.boxes.numpy_ops import clip_boxes, dbscan_iou_matrix, greedy_nms, inclusive_iou
from tltk.detectnet_v2.postprocess import (
    DBSCAN_BACKENDS,
    ClusteringParams,
    Detection,
    cluster_candidates,
    dbscan_labels,
    decode_grids,
    encode_boxes,
    params_from_bbox_handler_config,
    params_from_postprocessing_config,
    postprocess,
    resolve_params,
    scale_detections,
)
from tltk.errors import InvalidInputError, SpecError

# ---------------------------------------------------------------------------------------------
# Helpers


def grids_with_objects(h: int, w: int, objects: list[tuple[tuple[float, float, float, float], dict]],
                       num_classes: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """cov (1, C, h, w) and bbox (1, 4C, h, w): each object writes its box into the given cells.

    objects: [(box, {(class, row, col): coverage})].
    """
    cov = np.zeros((1, num_classes, h, w), np.float32)
    bbox = np.zeros((1, 4 * num_classes, h, w), np.float32)
    for box, cells in objects:
        enc = encode_boxes(np.tile(np.asarray(box, float), (h, w, 1)), h, w)
        for (c, row, col), value in cells.items():
            cov[0, c, row, col] = value
            bbox[0, 4 * c:4 * c + 4, row, col] = enc[:, row, col]
    return cov, bbox


DBSCAN1 = ClusteringParams(coverage_threshold=0.005, minimum_bounding_box_height=0, algorithm="DBSCAN",
                           dbscan_eps=0.3, dbscan_min_samples=1.0, dbscan_confidence_threshold=0.0)


# ---------------------------------------------------------------------------------------------
# Decoding


def test_decode_one_cell_by_hand() -> None:
    # Grid 2 rows x 3 columns.  Cell (row j=1, column i=2): anchor X = 16*2 + 0.5 = 32.5,
    # Y = 16*1 + 0.5 = 16.5.  Channels (L, T, R, B) = (1, 0.5, 2, 0):
    # x1 = 32.5 - 35*1 = -2.5, y1 = 16.5 - 35*0.5 = -1, x2 = 32.5 + 35*2 = 102.5, y2 = 16.5 + 0 = 16.5.
    cov = np.zeros((1, 1, 2, 3), np.float32)
    bbox = np.zeros((1, 4, 2, 3), np.float32)
    bbox[0, :, 1, 2] = [1.0, 0.5, 2.0, 0.0]
    boxes = decode_grids(cov, bbox)
    assert boxes.shape == (1, 1, 2, 3, 4)
    assert boxes.dtype == np.float32
    np.testing.assert_allclose(boxes[0, 0, 1, 2], [-2.5, -1.0, 102.5, 16.5])
    # A zero cell decodes to the point anchor itself: cell (row 0, column 1) -> (16.5, 0.5).
    np.testing.assert_allclose(boxes[0, 0, 0, 1], [16.5, 0.5, 16.5, 0.5])


def test_encode_then_decode_exact_box_by_hand() -> None:
    # Box (10, 5, 50, 40) at cell (row 1, column 2): X = 32.5, Y = 16.5.
    # L = (32.5 - 10)/35 = 22.5/35, T = (16.5 - 5)/35 = 11.5/35, R = (50 - 32.5)/35 = 0.5,
    # B = (40 - 16.5)/35 = 23.5/35.
    enc = encode_boxes(np.tile([10.0, 5.0, 50.0, 40.0], (2, 3, 1)), 2, 3)
    np.testing.assert_allclose(enc[:, 1, 2], [22.5 / 35, 11.5 / 35, 0.5, 23.5 / 35])
    # Row and column are not interchangeable: cell (row 0, column 1) has X = 16.5, Y = 0.5.
    np.testing.assert_allclose(enc[:, 0, 1], [6.5 / 35, -4.5 / 35, 33.5 / 35, 39.5 / 35])
    boxes = decode_grids(np.zeros((1, 1, 2, 3)), enc[None].astype(np.float64))
    np.testing.assert_allclose(boxes[0, 0].reshape(-1, 4), np.tile([10.0, 5.0, 50.0, 40.0], (6, 1)), atol=1e-9)


def test_decode_uses_the_class_channels_and_custom_stride() -> None:
    # Class 1 uses channels 4..7.  stride 8, scale 10, offset 0: cell (row 0, col 1) anchor (8, 0).
    cov = np.zeros((1, 2, 1, 2), np.float32)
    bbox = np.zeros((1, 8, 1, 2), np.float32)
    bbox[0, 4:8, 0, 1] = [0.5, 0.0, 1.0, 2.0]
    boxes = decode_grids(cov, bbox, stride=8, scale=10.0, offset=0.0)
    np.testing.assert_allclose(boxes[0, 1, 0, 1], [3.0, 0.0, 18.0, 20.0])
    np.testing.assert_allclose(boxes[0, 0, 0, 1], [8.0, 0.0, 8.0, 0.0])


def test_decode_random_round_trip() -> None:
    rng = np.random.default_rng(0)
    h, w = 34, 60
    x1 = rng.uniform(0, 900, (h, w))
    y1 = rng.uniform(0, 500, (h, w))
    boxes = np.stack([x1, y1, x1 + rng.uniform(1, 60, (h, w)), y1 + rng.uniform(1, 40, (h, w))], axis=-1)
    enc = encode_boxes(boxes, h, w)
    back = decode_grids(np.zeros((1, 1, h, w)), enc[None])
    np.testing.assert_allclose(back[0, 0], boxes, atol=1e-9)


def test_decode_rejects_mismatched_shapes() -> None:
    with pytest.raises(InvalidInputError, match="4\\*C|does not match"):
        decode_grids(np.zeros((1, 2, 3, 4)), np.zeros((1, 4, 3, 4)))
    with pytest.raises(InvalidInputError, match="N, C, H, W"):
        decode_grids(np.zeros((2, 3, 4)), np.zeros((1, 4, 3, 4)))


# ---------------------------------------------------------------------------------------------
# IoU definitions


def test_dbscan_iou_is_continuous_with_001_in_the_union() -> None:
    # (0,0,10,10) and (5,0,15,10): intersection 5*10 = 50, union 100 + 100 - 50 = 150.
    iou = dbscan_iou_matrix(np.array([[0, 0, 10, 10], [5, 0, 15, 10]], float))
    assert iou[0, 1] == pytest.approx(50 / 150.01, rel=1e-12)
    assert iou[0, 0] == pytest.approx(100 / 100.01, rel=1e-12)


def test_nms_iou_uses_inclusive_pixels() -> None:
    # (0,0,9,9) and (0,0,9,4): areas 10*10 = 100 and 10*5 = 50, intersection 50 -> 50/100 = 0.5
    # (continuous coordinates would give 36/81 = 0.444).
    b = np.array([[0, 0, 9, 9], [0, 0, 9, 4]], float)
    iou = inclusive_iou(b, b)
    assert iou[0, 1] == pytest.approx(0.5)


# ---------------------------------------------------------------------------------------------
# DBSCAN


A = (0.0, 0.0, 100.0, 100.0)
B = (10.0, 0.0, 110.0, 100.0)
C = (0.0, 10.0, 100.0, 110.0)


@pytest.mark.parametrize("backend", DBSCAN_BACKENDS)
def test_dbscan_weighted_box_and_aggregate_confidence_by_hand(backend: str) -> None:
    # Candidates A (0.5), B (0.25), C (0.25), D = A (0.5).
    # IoU(A,B) = IoU(A,C) = 9000/(11000 + 0.01) = 0.818 -> distance 0.18 <= eps 0.3;
    # IoU(B,C) = 8100/(11900 + 0.01) = 0.681 -> distance 0.32 > 0.3 (linked through A and D).
    # Neighbourhood weights (min_samples 1): A, D: 1.5; B: A+B+D = 1.25; C: 1.25 -> all core.
    # Cluster weight 1.5; box = sum(w*box)/1.5:
    #   x1 = (0.25*10)/1.5 = 1.6667, y1 = (0.25*10)/1.5 = 1.6667,
    #   x2 = (0.5*100 + 0.25*110 + 0.25*100 + 0.5*100)/1.5 = 152.5/1.5 = 101.6667, y2 likewise.
    # aggregate_cov = 1.5 (above 1, like TAO/DeepStream), mean_cov = 1.5/4 = 0.375.
    boxes = np.array([A, B, C, A])
    covs = np.array([0.5, 0.25, 0.25, 0.5])
    out = cluster_candidates(boxes, covs, DBSCAN1, dbscan_backend=backend)
    assert len(out) == 1
    np.testing.assert_allclose(out.boxes[0], [2.5 / 1.5, 2.5 / 1.5, 152.5 / 1.5, 152.5 / 1.5])
    assert out.confidences[0] == pytest.approx(1.5)
    assert out.num_raw_boxes[0] == 4
    assert out.coverages[0] == pytest.approx(0.375)
    mean = cluster_candidates(boxes, covs, replace(DBSCAN1, confidence_model="mean_cov"), dbscan_backend=backend)
    assert mean.confidences[0] == pytest.approx(0.375)


def test_dbscan_labels_by_hand_and_border_point_goes_to_the_first_cluster() -> None:
    # Points 0..4 on a line, distances |i - j|, eps 1, weights 1, 1, 0.5, 1, 1.
    # Neighbourhood weights: 2, 2.5, 2.5, 2.5, 2.  min_samples 3 -> no core point, all noise;
    # min_samples 2 -> all core and chained -> one cluster.
    pos = np.arange(5.0)
    dist = np.abs(pos[:, None] - pos[None, :])
    w = np.array([1.0, 1.0, 0.5, 1.0, 1.0])
    for backend in DBSCAN_BACKENDS:
        assert dbscan_labels(dist, w, 1.0, 3, backend).tolist() == [-1, -1, -1, -1, -1]
        assert dbscan_labels(dist, w, 1.0, 2, backend).tolist() == [0, 0, 0, 0, 0]
    # Weights 3, 0.1, 0.1, 0.1, 3, min_samples 3: neighbourhood weights 3.1, 3.2, 0.3, 3.2, 3.1
    # -> cores 0, 1 (one cluster) and 3, 4 (another; 1 and 3 are 2 apart).  Point 2 touches
    # cores 1 and 3: a border point joins the cluster with the lower core index -> 0, 0, 0, 1, 1.
    w2 = np.array([3.0, 0.1, 0.1, 0.1, 3.0])
    for backend in DBSCAN_BACKENDS:
        assert dbscan_labels(dist, w2, 1.0, 3, backend).tolist() == [0, 0, 0, 1, 1]
    # Weights 0.1, 3, 0.1, 3 at min_samples 3 (points 0..3): neighbourhood weights 3.1, 3.2,
    # 6.1, 3.1 -> all core, chained -> all label 0.
    d4 = np.abs(np.arange(4.0)[:, None] - np.arange(4.0)[None, :])
    for backend in DBSCAN_BACKENDS:
        assert dbscan_labels(d4, np.array([0.1, 3.0, 0.1, 3.0]), 1.0, 3, backend).tolist() == [0, 0, 0, 0]
    # Weights 0.1, 0.1, 3 at min_samples 3: neighbourhood weights 0.2, 3.2, 3.1 -> cores 1, 2;
    # point 0 is not core but touches core 1 -> border -> 0, 0, 0.  With eps 0.5 only the
    # points themselves are neighbours: point 2 (3 >= 3) is a lone core, 0 and 1 are noise.
    d3 = np.abs(np.arange(3.0)[:, None] - np.arange(3.0)[None, :])
    for backend in DBSCAN_BACKENDS:
        assert dbscan_labels(d3, np.array([0.1, 0.1, 3.0]), 1.0, 3, backend).tolist() == [0, 0, 0]
        assert dbscan_labels(d3, np.array([0.1, 0.1, 3.0]), 0.5, 3, backend).tolist() == [-1, -1, 0]


def test_numpy_dbscan_matches_sklearn_on_random_boxes() -> None:
    rng = np.random.default_rng(7)
    for trial in range(40):
        k = int(rng.integers(1, 120))
        xy = rng.uniform(0, 300, (k, 2))
        wh = rng.uniform(5, 80, (k, 2))
        boxes = np.concatenate([xy, xy + wh], axis=1)
        covs = rng.uniform(0.01, 1.0, k)
        dist = np.maximum(1.0 - dbscan_iou_matrix(boxes), 0.0)
        eps = float(rng.choice([0.1, 0.3, 0.5, 0.8]))
        min_samples = int(rng.choice([1, 2, 3]))
        a = dbscan_labels(dist, covs, eps, min_samples, "numpy")
        b = dbscan_labels(dist, covs, eps, min_samples, "sklearn")
        assert a.tolist() == b.tolist(), f"trial {trial}"
    with pytest.raises(InvalidInputError, match="backend"):
        dbscan_labels(np.zeros((1, 1)), np.ones(1), 0.3, 1, "cuml")


def test_dbscan_border_points_join_through_a_core_point() -> None:
    # A (0.5), B (0.25), C (0.25): A's neighbourhood weighs 1.0 >= 1 (core); B (0.75) and C (0.75)
    # are border points of A's cluster.  Box = 0.5*A + 0.25*B + 0.25*C = (2.5, 2.5, 102.5, 102.5).
    out = cluster_candidates(np.array([A, B, C]), np.array([0.5, 0.25, 0.25]), DBSCAN1)
    assert len(out) == 1
    np.testing.assert_allclose(out.boxes[0], [2.5, 2.5, 102.5, 102.5])
    assert out.confidences[0] == pytest.approx(1.0)
    # With min_samples 2 nothing is core: no detection.
    none = cluster_candidates(np.array([A, B, C]), np.array([0.5, 0.25, 0.25]),
                              replace(DBSCAN1, dbscan_min_samples=2.0))
    assert len(none) == 0


def test_dbscan_min_samples_below_one_behaves_as_one() -> None:
    # TAO: min_samples = max(int(0.05), 1) = 1, so a lone cell of coverage 0.9 is noise.
    p = replace(DBSCAN1, dbscan_min_samples=0.05)
    assert p.effective_min_samples == 1
    assert replace(DBSCAN1, dbscan_min_samples=2.7).effective_min_samples == 2
    assert len(cluster_candidates(np.array([A]), np.array([0.9]), p)) == 0
    single = cluster_candidates(np.array([A]), np.array([1.0]), p)
    assert len(single) == 1 and single.confidences[0] == pytest.approx(1.0)


def test_two_separated_objects_give_two_boxes_end_to_end() -> None:
    # Object 1 (20, 10, 60, 50) in cells (1,1)=0.6, (1,2)=0.6; object 2 (120, 30, 170, 90) in
    # (2,7)=0.7, (2,8)=0.7, (3,8)=0.7.  Identical boxes per object -> the means are the boxes;
    # aggregate confidences 1.2 and 2.1 (sorted descending).
    cov, bbox = grids_with_objects(5, 10, [
        ((20.0, 10.0, 60.0, 50.0), {(0, 1, 1): 0.6, (0, 1, 2): 0.6}),
        ((120.0, 30.0, 170.0, 90.0), {(0, 2, 7): 0.7, (0, 2, 8): 0.7, (0, 3, 8): 0.7}),
    ])
    dets = postprocess(cov, bbox, ["car"], {"car": DBSCAN1})
    assert len(dets) == 1 and len(dets[0]) == 2
    d0, d1 = dets[0]
    assert d0.class_name == "car" and d0.num_raw_boxes == 3
    np.testing.assert_allclose(d0.box, (120, 30, 170, 90), atol=1e-4)
    assert d0.confidence == pytest.approx(2.1, rel=1e-6)
    np.testing.assert_allclose(d1.box, (20, 10, 60, 50), atol=1e-4)
    assert d1.confidence == pytest.approx(1.2, rel=1e-6)
    assert d1.coverage == pytest.approx(0.6, rel=1e-6)


def test_coverage_threshold_is_strict() -> None:
    cov, bbox = grids_with_objects(3, 3, [((0.0, 0.0, 40.0, 40.0), {(0, 1, 1): 0.5, (0, 1, 2): 0.5})])
    assert len(postprocess(cov, bbox, ["car"], {"car": replace(DBSCAN1, coverage_threshold=0.4)})[0]) == 1
    # cov > 0.5 is false for 0.5: no candidates.
    assert postprocess(cov, bbox, ["car"], {"car": replace(DBSCAN1, coverage_threshold=0.5)}) == [[]]


def test_minimum_bounding_box_height_drops_height_at_or_below() -> None:
    # Box height 50 - 30 = 20: dropped when min height is 20 (<=), kept at 19.
    boxes = np.array([[0.0, 30.0, 40.0, 50.0]] * 2)
    covs = np.array([0.5, 0.5])
    assert len(cluster_candidates(boxes, covs, replace(DBSCAN1, minimum_bounding_box_height=20))) == 0
    assert len(cluster_candidates(boxes, covs, replace(DBSCAN1, minimum_bounding_box_height=19))) == 1


def test_dbscan_confidence_threshold_is_strict() -> None:
    # Aggregate confidence 0.5 + 0.25 + 0.25 = 1.0 (exact in binary).
    boxes = np.array([A, A, A])
    covs = np.array([0.5, 0.25, 0.25])
    assert len(cluster_candidates(boxes, covs, replace(DBSCAN1, dbscan_confidence_threshold=1.0))) == 0
    assert len(cluster_candidates(boxes, covs, replace(DBSCAN1, dbscan_confidence_threshold=0.99))) == 1
    # mean_cov = 1/3: kept at 0.33, dropped at 0.34.
    mean = replace(DBSCAN1, confidence_model="mean_cov")
    assert len(cluster_candidates(boxes, covs, replace(mean, dbscan_confidence_threshold=0.33))) == 1
    assert len(cluster_candidates(boxes, covs, replace(mean, dbscan_confidence_threshold=0.34))) == 0


# ---------------------------------------------------------------------------------------------
# NMS and HYBRID


def test_greedy_nms_keeps_highest_and_suppresses_above_threshold() -> None:
    # P (0,0,9,9) 0.9; Q (0,0,9,4) 0.8 with inclusive IoU(P,Q) = 0.5; R (20,20,29,29) 0.7 apart;
    # S = P with 0.05 (below the 0.1 score threshold).
    boxes = np.array([[0, 0, 9, 4], [20, 20, 29, 29], [0, 0, 9, 9], [0, 0, 9, 9]], float)
    scores = np.array([0.8, 0.7, 0.9, 0.05])
    # Nt 0.5: 0.5 is not > 0.5, Q survives.  Order: P (idx 2), Q (0), R (1).
    assert greedy_nms(boxes, scores, 0.5, 0.1, inclusive=True).tolist() == [2, 0, 1]
    # Nt 0.45: inclusive IoU 0.5 > 0.45 suppresses Q (continuous IoU 0.444 would not).
    assert greedy_nms(boxes, scores, 0.45, 0.1, inclusive=True).tolist() == [2, 1]
    # Score threshold is strict: 0.7 is not > 0.7.
    assert greedy_nms(boxes, scores, 0.45, 0.7, inclusive=True).tolist() == [2]


def test_greedy_nms_suppressed_box_does_not_suppress() -> None:
    # P (0,0,9,9) 0.9, Q (5,0,14,9) 0.8, R (10,0,19,9) 0.7.  Inclusive IoU(P,Q) = 50/150 = 1/3,
    # IoU(Q,R) = 1/3, IoU(P,R) = 0.  Nt 0.3: P suppresses Q; R survives (Q is gone).
    boxes = np.array([[0, 0, 9, 9], [5, 0, 14, 9], [10, 0, 19, 9]], float)
    assert greedy_nms(boxes, np.array([0.9, 0.8, 0.7]), 0.3, 0.1, inclusive=True).tolist() == [0, 2]


def _reference_swap_nms(boxes: np.ndarray, scores: np.ndarray, nt: float, threshold: float) -> set[int]:
    """Fact sheet 9.2 literally: move the best remaining score to position i, zero later boxes
    with inclusive IoU > nt, finally keep scores > threshold (no pre-filtering)."""
    boxes = boxes.copy()
    scores = scores.copy()
    idx = np.arange(len(scores))
    for i in range(len(scores)):
        m = i + int(np.argmax(scores[i:]))
        if scores[m] > scores[i]:
            for arr in (boxes, scores, idx):
                arr[[i, m]] = arr[[m, i]]
        for j in range(i + 1, len(scores)):
            if inclusive_iou(boxes[[i]], boxes[[j]])[0, 0] > nt:
                scores[j] = 0.0
    return {int(k) for k in idx[scores > threshold]}


def test_greedy_nms_matches_the_swap_formulation() -> None:
    rng = np.random.default_rng(3)
    for _ in range(30):
        k = int(rng.integers(1, 40))
        xy = rng.uniform(0, 100, (k, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(5, 40, (k, 2))], axis=1)
        scores = rng.permutation(np.linspace(0.02, 0.98, k))  # distinct scores
        nt, thr = float(rng.choice([0.1, 0.3, 0.5])), float(rng.choice([0.1, 0.4]))
        kept = greedy_nms(boxes, scores, nt, thr, inclusive=True)
        assert set(kept.tolist()) == _reference_swap_nms(boxes, scores, nt, thr)


def test_nms_mode_uses_raw_coverage_and_ignores_min_height() -> None:
    # Two cells with the same 10-px-high box: NMS keeps the 0.8 cell with confidence 0.8
    # even though the minimum height (30) would drop it in DBSCAN mode.
    cov, bbox = grids_with_objects(2, 3, [((0.0, 0.0, 40.0, 10.0), {(0, 0, 0): 0.8, (0, 0, 1): 0.6})])
    p = replace(DBSCAN1, algorithm="NMS", minimum_bounding_box_height=30, nms_iou_threshold=0.3,
                nms_confidence_threshold=0.1)
    dets = postprocess(cov, bbox, ["car"], {"default": p})[0]
    assert len(dets) == 1
    assert dets[0].confidence == pytest.approx(0.8, rel=1e-6)
    assert dets[0].num_raw_boxes == 1
    np.testing.assert_allclose(dets[0].box, (0, 0, 40, 10), atol=1e-4)
    assert postprocess(cov, bbox, ["car"], {"default": replace(p, algorithm="DBSCAN")}) == [[]]


def test_hybrid_is_dbscan_then_nms_over_member_cells() -> None:
    # A (0.75) and B (0.5): IoU 0.818, both core (weight 1.25 >= 1) -> one cluster.  E far away
    # with 0.3 is DBSCAN noise (0.3 < 1).  NMS over A, B: inclusive IoU(A,B) = 91*101/(2*101*101
    # - 91*101) = 91/111 = 0.82 > 0.3 -> B suppressed.  HYBRID output: A with raw confidence 0.75.
    E = (300.0, 300.0, 340.0, 340.0)
    boxes = np.array([A, B, E])
    covs = np.array([0.75, 0.5, 0.3])
    hybrid = replace(DBSCAN1, algorithm="HYBRID", nms_iou_threshold=0.3, nms_confidence_threshold=0.1)
    out = cluster_candidates(boxes, covs, hybrid)
    assert len(out) == 1
    np.testing.assert_allclose(out.boxes[0], A)
    assert out.confidences[0] == pytest.approx(0.75)
    # NMS alone keeps A and E; DBSCAN alone gives the weighted box with confidence 1.25:
    # x1 = 0.5*10/1.25 = 4, x2 = (0.75*100 + 0.5*110)/1.25 = 104.
    nms = cluster_candidates(boxes, covs, replace(hybrid, algorithm="NMS"))
    np.testing.assert_allclose(nms.boxes, [A, E])
    db = cluster_candidates(boxes, covs, replace(hybrid, algorithm="DBSCAN"))
    np.testing.assert_allclose(db.boxes, [[4.0, 0.0, 104.0, 100.0]])
    assert db.confidences[0] == pytest.approx(1.25)
    # A DBSCAN confidence threshold of 1.3 removes the cluster, so HYBRID outputs nothing.
    assert len(cluster_candidates(boxes, covs, replace(hybrid, dbscan_confidence_threshold=1.3))) == 0


# ---------------------------------------------------------------------------------------------
# Per-class parameters


def test_default_entry_and_per_class_params() -> None:
    # Same two cells (identical boxes, coverage 0.6) for both classes.  "car" has its own NMS
    # entry: the second cell is suppressed (IoU 1), one box with raw coverage 0.6.  "person"
    # falls back to "default" (DBSCAN): one cluster with aggregate coverage 0.6 + 0.6 = 1.2.
    box = (20.0, 10.0, 60.0, 50.0)
    cov, bbox = grids_with_objects(3, 4, [(box, {(0, 1, 1): 0.6, (0, 1, 2): 0.6, (1, 1, 1): 0.6,
                                                 (1, 1, 2): 0.6})], num_classes=2)
    params = {"car": replace(DBSCAN1, algorithm="NMS"), "default": DBSCAN1}
    dets = postprocess(cov, bbox, ["car", "person"], params)[0]
    assert [d.class_name for d in dets] == ["car", "person"]
    assert dets[0].confidence == pytest.approx(0.6, rel=1e-6)
    assert dets[1].confidence == pytest.approx(1.2, rel=1e-6)
    # A class-specific coverage threshold of 0.7 removes only that class.
    params2 = {"car": replace(DBSCAN1, coverage_threshold=0.7), "default": DBSCAN1}
    dets2 = postprocess(cov, bbox, ["car", "person"], params2)[0]
    assert [d.class_name for d in dets2] == ["person"]
    with pytest.raises(SpecError, match="no 'default' entry"):
        postprocess(cov, bbox, ["car", "person"], {"car": DBSCAN1})
    assert resolve_params(params, "bicycle") is DBSCAN1


def test_postprocess_checks_class_count() -> None:
    with pytest.raises(InvalidInputError, match="2 class names"):
        postprocess(np.zeros((1, 1, 2, 2)), np.zeros((1, 4, 2, 2)), ["a", "b"], {"default": DBSCAN1})


def test_batch_gives_one_list_per_image() -> None:
    cov1, bbox1 = grids_with_objects(3, 4, [((20.0, 10.0, 60.0, 50.0), {(0, 1, 1): 0.9, (0, 1, 2): 0.9})])
    cov = np.concatenate([cov1, np.zeros_like(cov1), cov1])
    bbox = np.concatenate([bbox1, bbox1, bbox1])
    dets = postprocess(cov, bbox, ["car"], {"default": DBSCAN1})
    assert [len(d) for d in dets] == [1, 0, 1]


def test_clipping_to_the_model_frame() -> None:
    # (-10, 5, 70, 30) in a 64x32 frame -> (0, 5, 64, 30); (70, 40, 80, 50) -> (64, 32, 64, 32).
    out = clip_boxes(np.array([[-10, 5, 70, 30], [70, 40, 80, 50]], float), (64, 32))
    np.testing.assert_allclose(out, [[0, 5, 64, 30], [64, 32, 64, 32]])
    cov, bbox = grids_with_objects(2, 4, [((-10.0, 5.0, 70.0, 30.0), {(0, 0, 1): 0.6, (0, 1, 1): 0.6})])
    dets = postprocess(cov, bbox, ["car"], {"default": DBSCAN1}, image_size=(64, 32))[0]
    np.testing.assert_allclose(dets[0].box, (0, 5, 64, 30), atol=1e-4)


def test_scale_detections_to_original_image() -> None:
    # Model 960x544 -> original 1920x1088: factor 2 in both axes, after clipping x2 to 960.
    d = Detection("car", 10.0, 20.0, 1000.0, 200.0, 0.9)
    (s,) = scale_detections([d], (960, 544), (1920, 1088))
    assert s.box == (20.0, 40.0, 1920.0, 400.0)
    assert s.confidence == 0.9 and s.class_name == "car"


# ---------------------------------------------------------------------------------------------
# Parameters from configs


def test_from_config_reads_proto_like_objects() -> None:
    cfg = SimpleNamespace(coverage_threshold=0.005, minimum_bounding_box_height=4, clustering_algorithm=1,
                          dbscan_eps=0.15, dbscan_min_samples=0.05, neighborhood_size=0,
                          dbscan_confidence_threshold=0.9, nms_iou_threshold=0.45, nms_confidence_threshold=0.2)
    p = ClusteringParams.from_config(cfg, confidence_model="mean_cov")
    assert p.algorithm == "NMS"
    assert p.nms_iou_threshold == 0.45 and p.nms_confidence_threshold == 0.2
    assert p.dbscan_eps == 0.15 and p.dbscan_confidence_threshold == 0.9
    assert p.minimum_bounding_box_height == 4 and p.confidence_model == "mean_cov"
    assert ClusteringParams.from_config({"clustering_algorithm": "hybrid"}).algorithm == "HYBRID"
    assert ClusteringParams.from_config({"clustering_algorithm": 2, "nms_iou_threshold": 0.5}).nms_iou_threshold == 0.5
    # Fields left out take the proto's defaults, which are also the dataclass defaults.
    assert ClusteringParams.from_config({}) == ClusteringParams()
    assert ClusteringParams() == ClusteringParams(
        coverage_threshold=0.005, minimum_bounding_box_height=0, algorithm="DBSCAN", dbscan_eps=0.3,
        dbscan_min_samples=0.05, dbscan_confidence_threshold=0.1, nms_iou_threshold=0.3,
        nms_confidence_threshold=0.1, confidence_model="aggregate_cov")


def test_from_config_of_a_proto_message_uses_its_defaults() -> None:
    from google.protobuf import text_format

    from tltk._proto import detectnet_v2_pb2 as pb

    msg = text_format.Parse("clustering_algorithm: HYBRID dbscan_confidence_threshold: 0.9", pb.ClusteringConfig())
    p = ClusteringParams.from_config(msg)
    assert p.algorithm == "HYBRID" and p.dbscan_confidence_threshold == pytest.approx(0.9)
    assert p.dbscan_eps == pytest.approx(0.3) and p.nms_iou_threshold == pytest.approx(0.3)


def test_from_config_reports_unreadable_values_with_their_field_path() -> None:
    with pytest.raises(SpecError) as err:
        ClusteringParams.from_config({"clustering_algorithm": 5, "dbscan_eps": "wide"},
                                     field_path="bbox_handler_config.classwise_bbox_handler_config['car']"
                                                ".clustering_config")
    text = str(err.value)
    assert "clustering_config.clustering_algorithm: enum value 5" in text
    assert "clustering_config.dbscan_eps: 'wide' is not a number" in text
    with pytest.raises(ValueError, match="confidence_model 'max_cov'"):
        ClusteringParams.from_config({}, confidence_model="max_cov")
    with pytest.raises(ValueError, match="algorithm 'FOO'"):
        ClusteringParams(algorithm="FOO")


def test_params_from_spec_maps() -> None:
    handler = {"classwise_bbox_handler_config": {
        "car": {"confidence_model": "aggregate_cov", "clustering_config": {"dbscan_eps": 0.3,
                                                                            "dbscan_confidence_threshold": 0.9}},
        "default": {"confidence_model": "mean_cov", "clustering_config": {"clustering_algorithm": "NMS"}},
    }}
    params = params_from_bbox_handler_config(handler)
    assert params["car"].dbscan_confidence_threshold == 0.9 and params["car"].confidence_model == "aggregate_cov"
    assert params["default"].algorithm == "NMS" and params["default"].confidence_model == "mean_cov"
    post = params_from_postprocessing_config(SimpleNamespace(target_class_config={
        "car": SimpleNamespace(clustering_config=SimpleNamespace(dbscan_confidence_threshold=0.2,
                                                                 nms_confidence_threshold=0.6))}))
    # No threshold swap: the DBSCAN threshold stays the DBSCAN threshold.
    assert post["car"].dbscan_confidence_threshold == 0.2 and post["car"].nms_confidence_threshold == 0.6
    with pytest.raises(SpecError, match="empty"):
        params_from_bbox_handler_config({"classwise_bbox_handler_config": {}})


# ---------------------------------------------------------------------------------------------
# No TensorFlow


def test_importing_and_running_does_not_import_tensorflow() -> None:
    code = (
        "import sys, numpy as np\n"
        "from tltk.detectnet_v2 import postprocess as pp\n"
        "import tltk.metrics.detection_ap, tltk.viz.plots\n"
        "cov = np.zeros((1, 1, 4, 4), np.float32); cov[0, 0, 1:3, 1:3] = 0.6\n"
        "bbox = np.ones((1, 4, 4, 4), np.float32)\n"
        "for alg in pp.ALGORITHMS:\n"
        "    for backend in pp.DBSCAN_BACKENDS:\n"
        "        pp.postprocess(cov, bbox, ['car'], {'default': pp.ClusteringParams(algorithm=alg)},\n"
        "                       dbscan_backend=backend)\n"
        "assert 'sklearn' in sys.modules and 'scipy.sparse.csgraph' in sys.modules\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf2onnx'))\n"
        "print('BAD', bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
