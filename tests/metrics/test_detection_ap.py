"""TAO-exact AP: every expected value is worked out by hand in the comments."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from tltk.boxes.numpy_ops import inclusive_iou
from tltk.errors import InvalidInputError, SpecError
from tltk.metrics.detection_ap import (
    SAMPLE_RECALL_LEVELS,
    BoxFilter,
    DetectionEvaluator,
    EvaluationParams,
    GroundTruth,
    Prediction,
    average_precision,
    compute_ap,
    format_ap_table,
)


def gt(x1: float, y1: float, x2: float, y2: float, cls: str = "car") -> GroundTruth:
    return GroundTruth(cls, x1, y1, x2, y2)


def pred(x1: float, y1: float, x2: float, y2: float, conf: float, cls: str = "car") -> Prediction:
    return Prediction(cls, x1, y1, x2, y2, conf)


def ap_of(gts: list, preds: list, mode: str, overlap: float = 0.5, classes: tuple = ("car",),
          box_filter: BoxFilter | None = None) -> dict:
    params = EvaluationParams.uniform(list(classes), overlap, mode, box_filter)
    return compute_ap([gts], [preds], list(classes), params).ap_per_class


# Three ground truths G1, G2, G3 (10x10 inclusive pixels each) and four predictions:
#   p1 0.9 on G1 (TP), p2 0.8 far away (FP), p3 0.7 on G2 (TP), p4 0.6 on G1 again
#   (IoU 90/110 = 0.82 -> duplicate -> FP).
# Cumulative TP 1,1,2,2  FP 0,1,1,2  precision 1, 1/2, 2/3, 1/2  recall 1/3, 1/3, 2/3, 2/3.
GTS = [gt(0, 0, 9, 9), gt(100, 0, 109, 9), gt(200, 0, 209, 9)]
PREDS = [pred(0, 0, 9, 9, 0.9), pred(300, 300, 309, 309, 0.8), pred(100, 0, 109, 9, 0.7), pred(1, 0, 10, 9, 0.6)]


def test_hand_worked_sample() -> None:
    # Levels 0, .1, .2, .3(0000000000000004) <= 1/3: best precision 1  -> 4 x 1
    # levels .4, .5, .6: recall 2/3 reached, best precision max(2/3, 1/2) -> 3 x 2/3
    # levels .7 .. 1.0: recall never reaches them -> 0
    # AP = (4 + 2) / 11 = 6/11 = 0.5454...
    assert ap_of(GTS, PREDS, "SAMPLE")["car"] == pytest.approx(6 / 11, rel=1e-12)


def test_hand_worked_integrate() -> None:
    # Distinct recalls r0 = 1/3 (predictions 1-2), r1 = 2/3 (predictions 3-4); P1 = 0,
    # P0 = max(max(1, 1/2), P1) = 1.  AP = P0 * (r1 - r0) = 1/3.
    assert ap_of(GTS, PREDS, "INTEGRATE")["car"] == pytest.approx(1 / 3, rel=1e-12)


def test_hand_worked_false_positive_first() -> None:
    # p1 0.95 FP, p2 0.9 TP(G1), p3 0.8 FP, p4 0.7 TP(G2).
    # precision 0, 1/2, 1/3, 1/2; recall 0, 1/3, 1/3, 2/3.
    preds = [pred(500, 500, 509, 509, 0.95), pred(0, 0, 9, 9, 0.9), pred(600, 0, 609, 9, 0.8),
             pred(100, 0, 109, 9, 0.7)]
    # SAMPLE: levels 0 .. .6 (7 levels) have best precision 1/2, the rest 0 -> 3.5/11.
    assert ap_of(GTS, preds, "SAMPLE")["car"] == pytest.approx(3.5 / 11, rel=1e-12)
    # INTEGRATE: recalls 0, 1/3, 2/3; P2 = 0; P1 = max(1/2, 1/3, 0) = 1/2; P0 = max(0, P1) = 1/2.
    # AP = 1/2 * 1/3 + 1/2 * 1/3 = 1/3.
    assert ap_of(GTS, preds, "INTEGRATE")["car"] == pytest.approx(1 / 3, rel=1e-12)


def test_sample_levels_are_numpys_and_recall_three_tenths_misses_level_three() -> None:
    assert SAMPLE_RECALL_LEVELS[3] == 0.30000000000000004
    # 10 ground truths, 3 perfect predictions: recall 0.1, 0.2, 0.3 with precision 1.
    # 3/10 = 0.29999999999999999 < 0.30000000000000004, so only levels 0, .1, .2 count: AP = 3/11
    # (4/11 with exact arithmetic; TAO gives 3/11).
    gts = [gt(20 * i, 0, 20 * i + 9, 9) for i in range(10)]
    preds = [pred(20 * i, 0, 20 * i + 9, 9, 0.9 - 0.1 * i) for i in range(3)]
    assert ap_of(gts, preds, "SAMPLE")["car"] == pytest.approx(3 / 11, rel=1e-12)
    # INTEGRATE: recalls .1, .2, .3 -> 1 * (.2 - .1) + 1 * (.3 - .2) = 0.2.
    assert ap_of(gts, preds, "INTEGRATE")["car"] == pytest.approx(0.2, rel=1e-12)


def test_perfect_predictions() -> None:
    gts = [gt(0, 0, 9, 9), gt(50, 0, 59, 9)]
    preds = [pred(0, 0, 9, 9, 0.9), pred(50, 0, 59, 9, 0.8)]
    assert ap_of(gts, preds, "SAMPLE")["car"] == 1.0
    # TAO's INTEGRATE never counts [0, r0]: recalls 1/2, 1 -> AP = 1 * (1 - 1/2) = 0.5.
    assert ap_of(gts, preds, "INTEGRATE")["car"] == pytest.approx(0.5)


def test_inclusive_pixel_iou() -> None:
    # (0,0,9,9) and (5,0,14,9): intersection (9-5+1)*10 = 50, areas 100 each, union 150 -> 1/3
    # (continuous coordinates: 4*9 / (81+81-36) = 0.2857).
    assert inclusive_iou(np.array([[0, 0, 9, 9]]), np.array([[5, 0, 14, 9]]))[0, 0] == pytest.approx(1 / 3)
    # At overlap 0.3 this is a TP only with the +1 convention: 1 GT, 1 TP -> SAMPLE AP 1.
    assert ap_of([gt(0, 0, 9, 9)], [pred(5, 0, 14, 9, 0.9)], "SAMPLE", overlap=0.3)["car"] == 1.0
    assert ap_of([gt(0, 0, 9, 9)], [pred(5, 0, 14, 9, 0.9)], "SAMPLE", overlap=0.34)["car"] == 0.0


def test_min_overlap_boundary_is_inclusive() -> None:
    # (0,0,9,9) vs (0,0,9,4): 50 / (100 + 50 - 50) = 0.5 exactly: TP at 0.5, FP at 0.51.
    assert ap_of([gt(0, 0, 9, 9)], [pred(0, 0, 9, 4, 0.9)], "SAMPLE", overlap=0.5)["car"] == 1.0
    assert ap_of([gt(0, 0, 9, 9)], [pred(0, 0, 9, 4, 0.9)], "SAMPLE", overlap=0.51)["car"] == 0.0


def test_coordinates_are_rounded_half_to_even() -> None:
    # Prediction (2.5, 0, 11.5, 9) rounds to (2, 0, 12, 9): intersection 8*10 = 80, areas 100 and
    # 110, IoU 80/130 = 0.615.  (Round-half-up would give (3, 0, 12, 9): 70/130 = 0.538; no
    # rounding would give 75/125 = 0.6.)  So at overlap 0.61 it is a TP.
    assert ap_of([gt(0, 0, 9, 9)], [pred(2.5, 0, 11.5, 9, 0.9)], "SAMPLE", overlap=0.61)["car"] == 1.0
    assert ap_of([gt(0, 0, 9, 9)], [pred(2.5, 0, 11.5, 9, 0.9)], "SAMPLE", overlap=0.62)["car"] == 0.0


def test_no_fallback_to_the_next_best_ground_truth() -> None:
    # G1 (0,0,9,9), G2 (4,0,13,9).  p1 0.9 = G1 -> TP.  p2 0.8 (1,0,10,9): IoU with G1 = 90/110
    # = 0.82 (best), with G2 = 70/130 = 0.54 >= 0.5, but G1 is taken -> FP, G2 stays unmatched.
    result = compute_ap([[gt(0, 0, 9, 9), gt(4, 0, 13, 9)]], [[pred(0, 0, 9, 9, 0.9), pred(1, 0, 10, 9, 0.8)]],
                        ["car"], EvaluationParams.uniform(["car"], 0.5))
    assert result.counts["car"].true_positives == 1 and result.counts["car"].false_positives == 1
    # precision 1, 1/2; recall 1/2, 1/2 -> SAMPLE: levels 0 .. .5 -> 6/11.
    assert result.ap_per_class["car"] == pytest.approx(6 / 11)


def test_box_filter_applies_to_ground_truth_and_predictions() -> None:
    f = BoxFilter(minimum_height=4, maximum_height=9999, minimum_width=4, maximum_width=9999)
    # G1 (0,0,9,9) h=9 kept; G2 (100,0,109,3) h=3 removed.  p1 on G1 TP; p2 (100,0,109,5) h=5
    # kept but its GT was removed -> FP; p3 (200,0,209,2) h=2 removed entirely.
    gts = [gt(0, 0, 9, 9), gt(100, 0, 109, 3)]
    preds = [pred(0, 0, 9, 9, 0.9), pred(100, 0, 109, 5, 0.8), pred(200, 0, 209, 2, 0.95)]
    params = EvaluationParams.uniform(["car"], 0.5, "SAMPLE", f)
    result = compute_ap([gts], [preds], ["car"], params)
    c = result.counts["car"]
    assert (c.ground_truths, c.predictions, c.true_positives, c.false_positives) == (1, 2, 1, 1)
    # precision 1, 1/2; recall 1, 1 -> every level has best precision 1 -> AP 1.
    assert result.ap_per_class["car"] == 1.0
    # Without the filter: 2 GT, 3 predictions, p3 (0.95) first and FP: precision 0, 1/2, 2/3 ...
    unfiltered = compute_ap([gts], [preds], ["car"], EvaluationParams.uniform(["car"], 0.5))
    assert unfiltered.counts["car"].ground_truths == 2
    # p2 (100,0,109,5) vs G2 (100,0,109,3): 40/60 = 0.67 -> TP.  precision 0, 1/2, 2/3; recall
    # 0, 1/2, 1 -> levels 0 .. .5 best 2/3, .6 .. 1 best 2/3 -> AP 2/3.
    assert unfiltered.ap_per_class["car"] == pytest.approx(2 / 3)
    # The limits are inclusive: height exactly 4 is kept.
    assert f.accepts(np.array([[0, 0, 4, 4], [0, 0, 4, 3.9]])).tolist() == [True, False]


def test_multiple_images_match_only_within_their_image() -> None:
    # Image 1: G at (0,0,9,9) and p 0.9 on it (TP).  Image 2: G at (50,0,59,9), p 0.8 at
    # (0,0,9,9) -> FP (image 1's GT does not count).  precision 1, 1/2; recall 1/2, 1/2.
    params = EvaluationParams.uniform(["car"], 0.5, "SAMPLE")
    ev = DetectionEvaluator(["car"], params)
    ev.accumulate([gt(0, 0, 9, 9)], [pred(0, 0, 9, 9, 0.9)])
    ev.accumulate([gt(50, 0, 59, 9)], [pred(0, 0, 9, 9, 0.8)])
    ev.accumulate([], [])
    r = ev.result()
    assert r.num_images == 3
    assert r.ap_per_class["car"] == pytest.approx(6 / 11)
    np.testing.assert_allclose(r.pr_curves["car"].precision, [1.0, 0.5])
    np.testing.assert_allclose(r.pr_curves["car"].recall, [0.5, 0.5])
    # INTEGRATE with a single distinct recall level gives 0 (the [0, r0] segment is not counted).
    ev_int = DetectionEvaluator(["car"], EvaluationParams.uniform(["car"], 0.5, "INTEGRATE"))
    ev_int.accumulate([gt(0, 0, 9, 9)], [pred(0, 0, 9, 9, 0.9)])
    ev_int.accumulate([gt(50, 0, 59, 9)], [pred(0, 0, 9, 9, 0.8)])
    assert ev_int.result().ap_per_class["car"] == 0.0


def test_class_without_ground_truth_or_predictions_counts_zero_in_map() -> None:
    # car: perfect (AP 1); person: predictions but no GT (AP 0); bicycle: nothing at all (AP 0).
    classes = ("car", "person", "bicycle")
    gts = [gt(0, 0, 9, 9)]
    preds = [pred(0, 0, 9, 9, 0.9), pred(0, 0, 9, 9, 0.8, "person")]
    for mode in ("SAMPLE", "INTEGRATE"):
        r = compute_ap([gts], [preds], list(classes), EvaluationParams.uniform(list(classes), 0.5, mode))
        assert r.ap_per_class["person"] == 0.0 and r.ap_per_class["bicycle"] == 0.0
        assert r.counts["person"].false_positives == 1 and r.counts["bicycle"].predictions == 0
    r = compute_ap([gts], [preds], list(classes), EvaluationParams.uniform(list(classes), 0.5, "SAMPLE"))
    assert r.mean_ap == pytest.approx(1 / 3) and r.mAP == r.mean_ap


def test_dontcare_and_unknown_classes_are_skipped() -> None:
    # A "dontcare" GT is not evaluated: a car prediction on it is an FP, not ignored.
    gts = [gt(0, 0, 9, 9), gt(50, 0, 59, 9, "dontcare")]
    preds = [pred(0, 0, 9, 9, 0.9), pred(50, 0, 59, 9, 0.8), pred(0, 0, 9, 9, 0.7, "truck")]
    r = compute_ap([gts], [preds], ["car"], EvaluationParams.uniform(["car"], 0.5))
    c = r.counts["car"]
    assert (c.ground_truths, c.true_positives, c.false_positives) == (1, 1, 1)


def test_confidence_order_uses_float32() -> None:
    # 0.9 and 0.9 + 1e-12 are the same float32: the stable sort keeps input order, so the FP
    # listed first is ranked first: precision 0, 1/2 -> SAMPLE 0.5 at every level.
    gts = [gt(0, 0, 9, 9)]
    preds = [pred(100, 0, 109, 9, 0.9), pred(0, 0, 9, 9, 0.9 + 1e-12)]
    assert ap_of(gts, preds, "SAMPLE")["car"] == pytest.approx(0.5)


def test_average_precision_function_directly() -> None:
    assert average_precision(np.array([]), np.array([]), "SAMPLE") == 0.0
    assert average_precision(np.array([1.0, 0.5, 2 / 3, 0.5]), np.array([1, 1, 2, 2]) / 3, "INTEGRATE") == \
        pytest.approx(1 / 3)
    with pytest.raises(InvalidInputError):
        average_precision(np.array([1.0]), np.array([1.0]), "VOC")


def test_params_from_config_and_missing_classes() -> None:
    cfg = SimpleNamespace(
        minimum_detection_ground_truth_overlap={"car": 0.7, "person": 0.5},
        evaluation_box_config={"car": SimpleNamespace(minimum_height=4, maximum_height=9999, minimum_width=4,
                                                      maximum_width=9999),
                               "person": {"minimum_height": 10, "maximum_height": 9999, "minimum_width": 5,
                                          "maximum_width": 9999}},
        average_precision_mode=1)
    p = EvaluationParams.from_config(cfg)
    assert p.mode == "INTEGRATE"
    assert p.minimum_overlap == {"car": 0.7, "person": 0.5}
    assert p.box_filters["person"] == BoxFilter(10, 9999, 5, 9999)
    assert EvaluationParams.from_config({**vars(cfg), "average_precision_mode": "sample"}).mode == "SAMPLE"
    with pytest.raises(SpecError) as err:
        DetectionEvaluator(["car", "bicycle"], p)
    assert "minimum_detection_ground_truth_overlap: no entry for 'bicycle'" in str(err.value)
    assert "evaluation_box_config: no entry for 'bicycle'" in str(err.value)
    assert BoxFilter.from_config({"minimum_height": 4, "maximum_height": 20, "minimum_width": 2,
                                  "maximum_width": 10}) == BoxFilter(4, 20, 2, 10)
    with pytest.raises(SpecError, match="average_precision_mode"):
        EvaluationParams.from_config({**vars(cfg), "average_precision_mode": 3})


def test_format_ap_table_matches_tao_layout() -> None:
    classes = ["person", "car"]
    r = compute_ap([GTS], [PREDS], classes, EvaluationParams.uniform(classes, 0.5, "SAMPLE"))
    # car AP 6/11 -> 54.54545454545455 * ... printed with str(); person 0.0; mAP 27.2727 %.
    car = str(r.ap_per_class["car"] * 100)
    assert car.startswith("54.5454545454545")
    width = len("average precision (in %)")
    expected = "\n".join([
        "",
        "Validation cost: 0.001230",
        "Mean average_precision (in %): 27.2727",
        "",
        "+------------+--------------------------+",
        "| class name | average precision (in %) |",
        "+------------+--------------------------+",
        f"|    car     | {car:^{width}} |",
        "|   person   |           0.0            |",
        "+------------+--------------------------+",
        "",
        "Median Inference Time: 0.002100",
    ])
    assert format_ap_table(r, validation_cost=0.00123, median_inference_time=0.0021) == expected
    short = format_ap_table(r)
    assert short.splitlines()[:2] == ["", "Mean average_precision (in %): 27.2727"]
    assert "Median" not in short
    d = r.to_dict()
    assert d["mAP"] == 27.2727 and d["average_precision"] == {"person": 0.0, "car": 54.5455}
