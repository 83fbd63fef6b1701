"""``tltk mask_rcnn evaluate``: .tlt, .onnx and ``--predictions_file`` agree; bad results files; ``--json``."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from tltk.cli.app import cli

pytest.importorskip("onnxruntime")

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "ARmax1", "ARmax10", "ARmax100", "ARs", "ARm", "ARl")
ALL_METRICS = METRICS + tuple(f"mask_{m}" for m in METRICS)
#: COCO's area ranges (pixels) of the metrics with an s/m/l suffix.
AREAS = {"s": (0, 32 ** 2), "m": (32 ** 2, 96 ** 2), "l": (96 ** 2, 1e10)}


def _experiments() -> Any:
    name = "_mrcnn_experiments"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("_experiments.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _evaluate(*args: str) -> Any:
    return CliRunner().invoke(cli, ["mask_rcnn", "evaluate", *args], env={"TLTK_NO_PROGRESS": "1"})


def _json(result: Any) -> dict[str, Any]:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _experiments().trained_model(tmp_path_factory)


def _three_ways(trained: dict[str, Any], out: Path, *extra: str) -> dict[str, dict[str, Any]]:
    spec = str(trained["spec"])
    return {
        "tlt": _json(_evaluate("-e", spec, "-m", str(trained["tlt"]), "-r", str(out / "tlt"), "--json", *extra)),
        "onnx": _json(_evaluate("-e", spec, "-m", str(trained["onnx"]), "--batch_size", "1", "-r", str(out / "onnx"),
                                "--json", *extra)),
        "file": _json(_evaluate("-e", spec, "--predictions_file", str(trained["labels"] / "results.json"),
                                "-r", str(out / "file"), "--json", *extra)),
    }


def _ground_truth_areas(path: Path) -> list[float]:
    return [float(a["area"]) for a in json.loads(path.read_text())["annotations"] if not a.get("iscrowd")]


@pytest.mark.slow
def test_json_document_and_the_three_sources_agree(trained: dict[str, Any], tmp_path: Path) -> None:
    runs = _three_ways(trained, tmp_path)
    areas = _ground_truth_areas(trained["root"] / "coco" / "annotations" / "instances_val.json")
    for name, data in runs.items():
        assert data["num_images"] == 4, name
        for key in ALL_METRICS:
            value = data[key]
            assert isinstance(value, float), (name, key)
            lo, hi = AREAS[key[-1]] if key[-2:] in {p + a for p in "PR" for a in AREAS} else (0, 1e10)
            if any(lo <= a < hi for a in areas):
                assert 0.0 <= value <= 1.0, (name, key, value)
            else:  # pycocotools' "no ground truth in this area range"
                assert value == -1.0, (name, key, value)
        assert (tmp_path / name / "evaluation.json").is_file()
    for key in ALL_METRICS:
        assert abs(runs["onnx"][key] - runs["tlt"][key]) <= 0.01, key
        assert abs(runs["file"][key] - runs["tlt"][key]) <= 0.01, key
    assert runs["tlt"]["source"]["backend"] == "keras" and runs["onnx"]["source"]["backend"] == "onnxruntime"


def _ground_truth_from(results: list[dict[str, Any]], val_json: Path, out: Path) -> float:
    """A ground truth made of the detections scoring above their median: a perfect model scores AP 1.

    Every detection at or above the threshold has its own ground-truth twin (IoU 1) and ranks
    above every detection below it, so the .tlt's own results have precision 1 at every recall.
    """
    from pycocotools import mask as mask_utils

    threshold = float(np.median([r["score"] for r in results]))
    kept = [r for r in results if r["score"] >= threshold]
    data = json.loads(val_json.read_text())
    data["annotations"] = [
        {"id": i + 1, "image_id": r["image_id"], "category_id": r["category_id"], "bbox": r["bbox"], "iscrowd": 0,
         "area": float(mask_utils.area(r["segmentation"])), "segmentation": r["segmentation"]}
        for i, r in enumerate(kept)]
    out.write_text(json.dumps(data))
    return threshold


@pytest.mark.slow
def test_a_ground_truth_made_of_the_models_detections_scores_one_on_every_backend(
        trained: dict[str, Any], tmp_path: Path) -> None:
    results = json.loads((trained["labels"] / "results.json").read_text())
    assert len(results) == 4 * 20  # -t 0: every detection of the 4 validation images
    gt = tmp_path / "gt.json"
    _ground_truth_from(results, trained["root"] / "coco" / "annotations" / "instances_val.json", gt)
    runs = _three_ways(trained, tmp_path, "--set", f"data_config.val_json_file={gt}")
    assert runs["file"]["AP"] == pytest.approx(1.0) and runs["file"]["AP50"] == pytest.approx(1.0)
    for name, data in runs.items():
        assert data["AP"] >= 0.99 and data["ARmax100"] >= 0.99, (name, data["AP"])
        assert abs(data["mask_AP"] - runs["file"]["mask_AP"]) <= 0.01, name
    for key in ALL_METRICS:
        assert abs(runs["onnx"][key] - runs["tlt"][key]) <= 0.01, key
        assert abs(runs["file"][key] - runs["tlt"][key]) <= 0.01, key


@pytest.fixture(scope="module")
def data_spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _experiments().experiment(tmp_path_factory.mktemp("mrcnn_eval_data"), num_images=8)


def _a_result(val_json: Path) -> dict[str, Any]:
    data = json.loads(val_json.read_text())
    image, category = data["images"][0], data["categories"][0]
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(np.ones((image["height"], image["width"]), np.uint8)))
    return {"image_id": image["id"], "category_id": category["id"], "bbox": [1.0, 2.0, 10.0, 12.0], "score": 0.9,
            "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}}


def test_unknown_ids_in_a_results_file_are_reported_by_index(data_spec: Path, tmp_path: Path) -> None:
    val_json = data_spec.parent / "coco" / "annotations" / "instances_val.json"
    good = _a_result(val_json)
    results = [good, {**good, "image_id": 987654}, good, {**good, "category_id": 77}]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    result = _evaluate("-e", str(data_spec), "--predictions_file", str(path), "-r", str(tmp_path / "out"))
    assert result.exit_code == 2, result.output
    assert "2 of 4 detection result(s) are invalid" in result.output
    assert "results[1]: image_id 987654 is not in the ground truth" in result.output
    assert "results[3]: category_id 77 is not in the ground truth" in result.output
    assert "results[0]" not in result.output and "results[2]" not in result.output
    assert not (tmp_path / "out" / "evaluation.json").exists()


def test_a_hand_made_results_file_scores_as_worked_out(data_spec: Path, tmp_path: Path) -> None:
    """The ground truth itself as results: AP 1; half of each image's objects: recall 0.5."""
    val_json = data_spec.parent / "coco" / "annotations" / "instances_val.json"
    data = json.loads(val_json.read_text())
    truth = [a for a in data["annotations"] if not a.get("iscrowd")]
    assert len(truth) >= 4
    results = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.5}
               for a in truth]
    path = tmp_path / "all.json"
    path.write_text(json.dumps(results))
    perfect = _json(_evaluate("-e", str(data_spec), "--predictions_file", str(path), "-r", str(tmp_path / "a"),
                              "--json"))
    assert perfect["AP"] == pytest.approx(1.0) and perfect["ARmax100"] == pytest.approx(1.0)
    assert perfect["num_images"] == 2 and "mask_AP" not in perfect  # boxes only: bbox metrics only
    # every other object of each image (the first, third ...): recall = found / ground truths
    kept = [r for i, r in enumerate(results) if i % 2 == 0]
    path.write_text(json.dumps(kept))
    half = _json(_evaluate("-e", str(data_spec), "--predictions_file", str(path), "-r", str(tmp_path / "b"), "--json"))
    by_category: dict[int, list[int]] = {}
    for i, a in enumerate(truth):
        by_category.setdefault(a["category_id"], []).append(i % 2 == 0)
    # pycocotools averages recall over the categories present in the ground truth
    expected_recall = float(np.mean([np.mean(found) for found in by_category.values()]))
    assert half["ARmax100"] == pytest.approx(expected_recall, abs=1e-9)
