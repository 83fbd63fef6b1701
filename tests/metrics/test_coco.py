"""COCO bbox/segm metrics on a tiny hand-made ground truth with hand-worked AP values."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tltk.errors import InvalidInputError
from tltk.metrics.coco import (
    METRIC_NAMES,
    evaluate_coco,
    format_coco_table,
    load_ground_truth,
    mask_to_rle,
    metric_names,
    rle_to_mask,
    validate_results,
)


def _rect_polygon(x: float, y: float, w: float, h: float) -> list[list[float]]:
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def _ground_truth() -> dict:
    """Two 40x30 images; category ids 1 ("cat") and 3 ("dog") -- not contiguous on purpose."""
    boxes = [(1, 1, [2, 2, 10, 10]), (1, 3, [20, 5, 12, 8]), (2, 1, [5, 5, 20, 20])]
    return {
        "images": [{"id": 1, "width": 40, "height": 30, "file_name": "a.jpg"},
                   {"id": 2, "width": 40, "height": 30, "file_name": "b.jpg"}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 3, "name": "dog"}],
        "annotations": [{"id": i + 1, "image_id": img, "category_id": cat, "bbox": box, "iscrowd": 0,
                         "area": float(box[2] * box[3]), "segmentation": _rect_polygon(*box)}
                        for i, (img, cat, box) in enumerate(boxes)],
    }


def _perfect_detections(gt_dict: dict) -> list[dict]:
    coco = load_ground_truth(gt_dict)
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9,
             "segmentation": mask_to_rle(coco.annToMask(a))} for a in gt_dict["annotations"]]


def test_perfect_detections_score_one(capsys):
    gt = _ground_truth()
    result = evaluate_coco(gt, _perfect_detections(gt))
    assert list(result.metrics) == list(metric_names("bbox")) + list(metric_names("segm"))
    for name in ("AP", "AP50", "AP75", "APs", "ARmax1", "ARmax10", "ARmax100", "ARs",
                 "mask_AP", "mask_AP50", "mask_AP75", "mask_ARmax100"):
        assert result.metrics[name] == pytest.approx(1.0), name
    # Every object is small (area < 32^2), so the medium and large ranges have no ground truth.
    assert result.metrics["APm"] == -1.0 and result.metrics["mask_APl"] == -1.0
    assert result.per_category == {"bbox": {"cat": pytest.approx(1.0), "dog": pytest.approx(1.0)},
                                   "segm": {"cat": pytest.approx(1.0), "dog": pytest.approx(1.0)}}
    assert result.category_ids == [1, 3] and result.image_ids == [1, 2]
    assert result.precision["bbox"].shape == (10, 101, 2, 4, 3)
    assert "Average Precision" in result.log
    assert capsys.readouterr().out == ""  # pycocotools' prints are captured
    assert result.to_dict()["AP"] == 100.0


def test_one_of_two_objects_found_gives_known_recall_and_ap():
    gt = _ground_truth()
    cats = [d for d in _perfect_detections(gt) if d["category_id"] == 1][:1]  # image 1's cat only
    result = evaluate_coco(gt, cats, iou_types=("bbox",))
    # cat: 2 ground truths, 1 found at precision 1 -> recall 0.5; the 101-point interpolated
    # precision is 1 at recall 0.00..0.50 (51 levels) and 0 above, so AP = 51/101.
    assert result.per_category["bbox"]["cat"] == pytest.approx(51 / 101)
    # dog: 1 ground truth, nothing found -> 0.  The mean over categories is (51/101 + 0) / 2.
    assert result.per_category["bbox"]["dog"] == 0.0
    assert result.metrics["AP"] == pytest.approx(51 / 202)
    assert result.metrics["ARmax100"] == pytest.approx(0.25)  # mean of recall 0.5 and 0
    assert "mask_AP" not in result.metrics
    curve = result.pr_curves("bbox", 0.5)["cat"]
    assert curve.recall.shape == (101,) and curve.recall[50] == pytest.approx(0.5)
    assert curve.precision[:51] == pytest.approx([1.0] * 51) and curve.precision[51:].tolist() == [0.0] * 50


def test_half_mask_passes_iou_050_only():
    gt = _ground_truth()
    gt["annotations"] = gt["annotations"][:1]  # one cat, box (2, 2, 10, 10)
    mask = np.zeros((30, 40), np.uint8)
    mask[2:12, 2:7] = 1  # the left half: mask IoU 50 / 100 = 0.5
    det = {"image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10], "score": 0.8, "segmentation": mask_to_rle(mask)}
    result = evaluate_coco(gt, [det], image_ids=[1])
    assert result.metrics["AP"] == pytest.approx(1.0)
    assert result.metrics["mask_AP50"] == pytest.approx(1.0)
    assert result.metrics["mask_AP75"] == 0.0
    assert result.metrics["mask_AP"] == pytest.approx(0.1)  # 1 of the 10 IoU thresholds


def test_image_ids_restrict_the_evaluation_and_empty_results_score_zero(tmp_path):
    gt = _ground_truth()
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(gt))
    only_image_2 = [d for d in _perfect_detections(gt) if d["image_id"] == 2]
    assert evaluate_coco(str(path), only_image_2, iou_types=("bbox",), image_ids=[2]).metrics["AP"] == pytest.approx(1.0)
    empty = evaluate_coco(path, [], iou_types=("bbox", "segm"))
    assert empty.metrics["AP"] == 0.0 and empty.metrics["mask_AP"] == 0.0
    with pytest.raises(InvalidInputError, match=r"image ids \[7\] are not in the ground truth"):
        evaluate_coco(gt, [], image_ids=[7])


def test_invalid_results_are_reported_by_index():
    gt = _ground_truth()
    good = _perfect_detections(gt)
    bad = [good[0],
           dict(good[1], image_id=99),
           dict(good[2], category_id=2, score="high"),
           dict(good[0], bbox=[1, 2, -3, 4]),
           dict(good[0], segmentation={"size": [10, 10], "counts": good[0]["segmentation"]["counts"]})]
    with pytest.raises(InvalidInputError) as info:
        validate_results(bad, gt)
    text = str(info.value)
    assert "4 of 5 detection result(s) are invalid" in text
    assert "results[1]: image_id 99 is not in the ground truth" in text
    assert "results[2]: category_id 2 is not in the ground truth; score 'high' is not a number" in text
    assert "results[3]: bbox [1, 2, -3, 4]" in text
    assert "results[4]: segmentation size [10, 10] is not the image's [height, width] [30, 40]" in text
    assert "results[0]" not in text
    validate_results([dict(good[0], segmentation=None)], gt, iou_types=("bbox",))  # segm not needed
    with pytest.raises(InvalidInputError, match="results\\[1\\]"):
        evaluate_coco(gt, bad[:2])


def test_ground_truth_problems_are_input_errors(tmp_path):
    with pytest.raises(InvalidInputError, match="does not exist"):
        evaluate_coco(str(tmp_path / "missing.json"), [])
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InvalidInputError, match="not readable JSON"):
        evaluate_coco(str(tmp_path / "bad.json"), [])
    with pytest.raises(InvalidInputError, match="'categories' is missing"):
        evaluate_coco({"images": [], "annotations": []}, [])
    no_masks = _ground_truth()
    for ann in no_masks["annotations"]:
        del ann["segmentation"]
    with pytest.raises(InvalidInputError, match="no segmentation"):
        evaluate_coco(no_masks, [])
    assert evaluate_coco(no_masks, [], iou_types=("bbox",)).metrics["AP"] == 0.0


def test_ground_truth_defaults_for_area_and_iscrowd():
    gt = _ground_truth()
    for ann in gt["annotations"]:
        del ann["area"], ann["iscrowd"]
    coco = load_ground_truth(gt)
    assert [a["area"] for a in coco.dataset["annotations"]] == [100.0, 96.0, 400.0]  # rectangles' mask areas
    assert {a["iscrowd"] for a in coco.dataset["annotations"]} == {0}
    assert "area" not in gt["annotations"][0] and "iscrowd" not in gt["annotations"][0]  # caller's dict untouched


def test_rle_round_trip_and_known_encoding():
    mask = np.array([[0, 1], [1, 1]], np.uint8)
    rle = mask_to_rle(mask)
    assert rle == {"size": [2, 2], "counts": "13"}  # column-major runs: 1 zero, then 3 ones
    np.testing.assert_array_equal(rle_to_mask(rle), mask)
    np.testing.assert_array_equal(rle_to_mask({"size": [2, 2], "counts": [1, 3]}), mask)  # uncompressed
    big = np.random.default_rng(0).random((31, 17)) > 0.5
    np.testing.assert_array_equal(rle_to_mask(mask_to_rle(big)), big.astype(np.uint8))
    with pytest.raises(InvalidInputError):
        rle_to_mask({"counts": "13"})


def test_format_coco_table_is_taos():
    metrics = {name: i / 100 for i, name in enumerate(METRIC_NAMES)}
    metrics.update({"mask_" + name: 0.5 for name in METRIC_NAMES})
    lines = format_coco_table(metrics).splitlines()
    assert lines[0] == "==================== Metrics ===================="
    assert lines[1:8] == ["AP: 0.000000000", "AP50: 0.010000000", "AP75: 0.020000000", "APl: 0.050000000",
                          "APm: 0.040000000", "APs: 0.030000000", "ARl: 0.110000000"]
    assert lines[8:13] == ["ARm: 0.100000000", "ARmax1: 0.060000000", "ARmax10: 0.070000000",
                           "ARmax100: 0.080000000", "ARs: 0.090000000"]
    assert lines[13] == "mask_AP: 0.500000000" and len(lines) == 25
    gt = _ground_truth()
    table = format_coco_table(evaluate_coco(gt, _perfect_detections(gt)), per_category=True).splitlines()
    assert table[-2].split() == ["cat", "1.0000", "1.0000"] and table[-1].split() == ["dog", "1.0000", "1.0000"]
    assert table[-4].split() == ["category", "AP", "mask_AP"]
