"""The exported ONNX gives the Keras model's detections and masks (in original image pixels)."""

from __future__ import annotations

import importlib.util
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from tltk.models import load_spec, make_task  # noqa: E402


def _experiments() -> Any:
    name = "_mrcnn_experiments"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("_experiments.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _box_iou(a: list[float], b: list[float]) -> float:
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    w = max(0.0, min(ax2, bx2) - max(a[0], b[0]))
    h = max(0.0, min(ay2, by2) - max(a[1], b[1]))
    inter = w * h
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 1.0


def _mask_iou(a: dict[str, Any], b: dict[str, Any]) -> float:
    from pycocotools import mask as mask_utils

    ma, mb = mask_utils.decode(a).astype(bool), mask_utils.decode(b).astype(bool)
    union = np.logical_or(ma, mb).sum()
    return float(np.logical_and(ma, mb).sum() / union) if union else 1.0


def _by_image(results: list[dict[str, Any]]) -> dict[Any, list[dict[str, Any]]]:
    out: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for row in results:
        out[row["image_id"]].append(row)
    return out


@pytest.mark.slow
def test_onnx_detections_and_masks_match_keras(tmp_path_factory: pytest.TempPathFactory) -> None:
    from tltk.modelfile.container import load_keras_model
    from tltk.runtime.backends import open_backend

    trained = _experiments().trained_model(tmp_path_factory)
    task = make_task("mask_rcnn", load_spec(trained["spec"], model="mask_rcnn", kind="experiment"))
    network, _ = load_keras_model(trained["tlt"])
    keras_rows, keras_ids, _ = task.predictions(task.keras_predictor(network), "val", batch_size=2)
    with open_backend(str(trained["onnx"]), model="mask_rcnn") as backend:
        assert backend.kind == "onnxruntime"
        onnx_rows, onnx_ids, _ = task.predictions(backend.run, "val", batch_size=2)
    assert keras_ids == onnx_ids and len(keras_ids) == 4
    keras_by_image, onnx_by_image = _by_image(keras_rows), _by_image(onnx_rows)
    compared = 0
    for image_id in keras_ids:
        mine, theirs = keras_by_image[image_id], onnx_by_image[image_id]
        assert len(mine) == len(theirs) == 20, image_id
        # The last kept score: a detection within 1e-3 of it may fall on either side of the cut.
        cut = min(r["score"] for r in mine) + 1e-3
        for row in mine:
            candidates = [o for o in theirs if o["category_id"] == row["category_id"]]
            best = max(candidates, key=lambda o: _box_iou(row["bbox"], o["bbox"]), default=None)
            if row["score"] < cut and (best is None or _box_iou(row["bbox"], best["bbox"]) < 0.99):
                continue
            assert best is not None, row
            assert _box_iou(row["bbox"], best["bbox"]) >= 0.99, (row, best)
            assert abs(row["score"] - best["score"]) <= 1e-3, (row, best)
            assert _mask_iou(row["segmentation"], best["segmentation"]) >= 0.98, (row["bbox"], best["bbox"])
            compared += 1
    assert compared >= 60  # most of the 80 detections are away from the cut and compared
