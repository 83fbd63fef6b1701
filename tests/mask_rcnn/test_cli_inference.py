"""``tltk mask_rcnn inference``: folders and single images, any-case extensions, labels, -t, -c, drawn masks."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tltk.cli.app import cli


def _experiments() -> Any:
    name = "_mrcnn_experiments"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("_experiments.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _inference(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(cli, ["mask_rcnn", "inference", *args, "--json"], env={"TLTK_NO_PROGRESS": "1"})
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def _threshold(rows: list[dict[str, Any]], at_least: int) -> tuple[int, float]:
    """``(k, t)``: ``t`` lies in the first gap of at least 2e-4 below the ``k``-th best score, ``k >= at_least``."""
    scores = sorted((r["score"] for r in rows), reverse=True)
    for k in range(at_least, len(scores)):
        if scores[k - 1] - scores[k] >= 2e-4:
            return k, (scores[k - 1] + scores[k]) / 2
    raise AssertionError(f"no gap between the scores {scores}")


def _mask(rows: list[dict[str, Any]], shape: tuple[int, int]) -> np.ndarray:
    from pycocotools import mask as mask_utils

    union = np.zeros(shape, bool)
    for row in rows:
        union |= mask_utils.decode(row["segmentation"]).astype(bool)
    return union


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Inference over a folder of mixed-case image names (masks drawn) and over one image (boxes only),
    both with a class map (the overlays' label texts are the same)."""
    trained = _experiments().trained_model(tmp_path_factory)
    out = tmp_path_factory.mktemp("mrcnn_inference")
    val = trained["root"] / "coco" / "images" / "val"
    images = out / "images"
    images.mkdir()
    shutil.copy(val / "000000.png", images / "A.PNG")
    shutil.copy(val / "000001.png", images / "b.Png")
    Image.open(val / "000002.png").convert("RGB").save(images / "c.JPG", quality=95)
    (images / "notes.txt").write_text("not an image")
    reference = json.loads((trained["labels"] / "000000.json").read_text())  # -t 0 rows of the same pixels
    kept, threshold = _threshold(reference, at_least=2)
    class_map = out / "classes.txt"
    class_map.write_text("BG\nvehicle\nperson\nbike\n")
    spec, tlt = str(trained["spec"]), str(trained["tlt"])
    folder = _inference("-m", tlt, "-i", str(images), "-o", str(out / "masks"), "-l", str(out / "labels"), "-e", spec,
                        "-t", str(threshold), "-c", str(class_map), "--include_mask")
    single = _inference("-m", tlt, "-i", str(images / "A.PNG"), "-o", str(out / "boxes"), "-l",
                        str(out / "single_labels"), "-e", spec, "-t", str(threshold), "-c", str(class_map))
    return {"out": out, "images": images, "folder": folder, "single": single, "threshold": threshold,
            "kept": kept, "reference": reference}


@pytest.mark.slow
def test_folder_with_any_case_extensions_gives_labels_per_image_and_one_results_file(runs: dict[str, Any]) -> None:
    out = runs["out"]
    assert runs["folder"]["images"] == 3
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["A.PNG", "b.Png", "c.JPG"]
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["A.json", "b.json", "c.json", "results.json"]
    combined = json.loads((out / "labels" / "results.json").read_text())
    per_image = [json.loads((out / "labels" / f"{stem}.json").read_text()) for stem in ("A", "b", "c")]
    assert len(combined) == sum(len(rows) for rows in per_image) == runs["folder"]["detections_total"]
    # files outside the validation JSON keep their file name as image id
    for name, rows in zip(("A.PNG", "b.Png", "c.JPG"), per_image):
        assert {r["image_id"] for r in rows} <= {name}
    assert len(per_image[0]) == runs["kept"]
    for rows in per_image:
        assert [r["id"] for r in rows] == list(range(len(rows)))
        for row in rows:
            assert row["iscrowd"] == 0 and row["area"] == pytest.approx(row["bbox"][2] * row["bbox"][3], abs=0.01)
            assert row["score"] >= runs["threshold"] and row["category_id"] in (1, 2, 3)
            assert row["segmentation"]["size"] == [128, 192]


@pytest.mark.slow
def test_threshold_keeps_exactly_the_detections_above_it(runs: dict[str, Any]) -> None:
    expected = [r for r in runs["reference"] if r["score"] >= runs["threshold"]]
    assert len(expected) == runs["kept"] < len(runs["reference"])
    got = json.loads((runs["out"] / "single_labels" / "A.json").read_text())
    assert runs["single"]["images"] == 1 and len(got) == runs["kept"]
    for a, b in zip(got, expected):
        assert a["category_id"] == b["category_id"]
        assert a["score"] == pytest.approx(b["score"], abs=1e-5)
        np.testing.assert_allclose(a["bbox"], b["bbox"], atol=0.01)


@pytest.mark.slow
def test_class_map_names_the_detections(runs: dict[str, Any]) -> None:
    for run in ("folder", "single"):
        counts = runs[run]["detections"]
        assert set(counts) == {"vehicle", "person", "bike"} and sum(counts.values()) == runs[run]["detections_total"]
    # the labels keep the dataset's category ids whatever the names
    rows = json.loads((runs["out"] / "labels" / "results.json").read_text())
    assert {r["category_id"] for r in rows} <= {1, 2, 3}


@pytest.mark.slow
def test_masks_change_the_pixels_inside_detected_masks_only(runs: dict[str, Any]) -> None:
    out = runs["out"]
    original = np.asarray(Image.open(runs["images"] / "A.PNG").convert("RGB")).astype(int)
    with_masks = np.asarray(Image.open(out / "masks" / "A.PNG").convert("RGB")).astype(int)
    boxes_only = np.asarray(Image.open(out / "boxes" / "A.PNG").convert("RGB")).astype(int)
    rows = json.loads((out / "labels" / "A.json").read_text())
    inside = _mask(rows, original.shape[:2])
    assert inside.sum() > 100
    changed_by_masks = np.any(with_masks != boxes_only, axis=-1)
    assert not np.any(changed_by_masks & ~inside)  # outside every mask the overlay is the boxes-only one
    untouched_by_boxes = ~np.any(boxes_only != original, axis=-1)
    region = inside & untouched_by_boxes
    assert region.sum() > 100
    differs = np.any(with_masks != original, axis=-1)
    assert differs[region].mean() > 0.95  # translucent class colour over (almost) every mask pixel
