"""MaskRCNN dataset_convert: COCO JSON -> TFRecords with TAO's keys, masks equal to annToMask."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import io
import json
import logging
import os

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tltk.cli.app import cli
from tltk.data.synthetic import synthesize_coco
from tltk.data.tfrecord import COCO_INSTANCE, iterate_records, parse_example
from tltk.errors import InvalidInputError
from tltk.mask_rcnn.dataset_convert import annotation_mask, convert_coco, shard_path


def _coco(path: str):
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(path)


def _records(pattern: str) -> list[dict]:
    return [parse_example(COCO_INSTANCE, r) for r in iterate_records(sorted(glob.glob(pattern)))]


def _png_mask(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "PNG"
        return np.asarray(img)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    report = synthesize_coco(root / "data", num_images=14, image_size=(160, 96), seed=3, val_fraction=0.3, workers=1)
    return root, report


def test_synthetic_both_splits_convert_and_masks_equal_ann_to_mask(synthetic):
    root, syn = synthetic
    out = str(root / "tfrecords")
    for split, shards in (("train", 3), ("val", 2)):
        ann_file = syn.files[f"annotations_{split}"]
        report = convert_coco(syn.files[f"images_{split}"], ann_file, out, num_shards=shards, workers=1)
        tag = f"instances_{split}"
        assert report.tag == tag
        assert report.shards == [shard_path(out, tag, s, shards) for s in range(shards)]
        assert all(os.path.basename(p) == f"{tag}-{s:05d}-of-{shards:05d}.tfrecord" for s, p in enumerate(report.shards))
        coco = _coco(ann_file)
        images = coco.dataset["images"]
        assert report.images_written == len(images) and report.images_skipped == 0
        # Round robin: image i sits in shard i mod N, in JSON order within the shard.
        expected_ids = [[str(images[i]["id"]).encode() for i in range(s, len(images), shards)] for s in range(shards)]
        got_ids = [[r["image/source_id"] for r in _records(p)] for p in report.shards]
        assert got_ids == expected_ids
        n_masks = 0
        for rec in _records(os.path.join(out, f"{tag}-*.tfrecord")):
            img = coco.imgs[int(rec["image/source_id"])]
            path = os.path.join(syn.files[f"images_{split}"], img["file_name"])
            raw = open(path, "rb").read()
            assert rec["image/encoded"] == raw
            assert rec["image/key/sha256"] == hashlib.sha256(raw).hexdigest().encode()
            assert rec["image/filename"] == img["file_name"].encode()
            assert (int(rec["image/height"]), int(rec["image/width"])) == (img["height"], img["width"])
            anns = coco.imgToAnns[img["id"]]
            assert len(rec["image/object/mask"]) == len(anns)
            for k, ann in enumerate(anns):
                x, y, w, h = ann["bbox"]
                np.testing.assert_allclose([rec["image/object/bbox/xmin"][k], rec["image/object/bbox/ymin"][k],
                                            rec["image/object/bbox/xmax"][k], rec["image/object/bbox/ymax"][k]],
                                           [x / img["width"], y / img["height"], (x + w) / img["width"],
                                            (y + h) / img["height"]], rtol=1e-6)
                assert rec["image/object/class/label"][k] == ann["category_id"]
                assert rec["image/object/class/text"][k] == coco.cats[ann["category_id"]]["name"].encode()
                assert rec["image/object/is_crowd"][k] == ann["iscrowd"]
                assert rec["image/object/area"][k] == pytest.approx(ann["area"])
                mask = _png_mask(rec["image/object/mask"][k])
                assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
                np.testing.assert_array_equal(mask, coco.annToMask(ann))
                n_masks += 1
        assert n_masks == report.annotations_written > 0
        crowd = sum(a["iscrowd"] for a in coco.dataset["annotations"])
        assert report.crowd == crowd
        assert sum(report.instances_per_category.values()) == len(coco.dataset["annotations"]) - crowd


def _write_png(path, width: int, height: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)


def _hand_dataset(tmp_path, annotations, categories=None, images=None):
    img_dir = tmp_path / "images"
    img_dir.mkdir(exist_ok=True)
    images = images or [{"id": 7, "file_name": "a.png", "width": 40, "height": 30}]
    for k, img in enumerate(images):
        if not (img_dir / img["file_name"]).exists() and img.get("_write", True):
            _write_png(img_dir / img["file_name"], img["width"], img["height"], seed=k)
    doc = {"images": [{k: v for k, v in i.items() if not k.startswith("_")} for i in images],
           "annotations": annotations,
           "categories": categories or [{"id": 3, "name": "three"}, {"id": 7, "name": "seven"}]}
    ann_file = tmp_path / "hand.json"
    ann_file.write_text(json.dumps(doc))
    return str(img_dir), str(ann_file)


def _rle_uncompressed(mask: np.ndarray) -> dict:
    flat = mask.flatten(order="F")
    counts, value, run = [], 0, 0
    for v in flat:
        if v != value:
            counts.append(run)
            value, run = v, 0
        run += 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}


def test_polygon_and_both_rle_kinds_match_ann_to_mask(tmp_path):
    import pycocotools.mask as mask_util

    shape = np.zeros((30, 40), np.uint8)
    shape[5:20, 10:18] = 1
    shape[15:20, 18:30] = 1
    compressed = mask_util.encode(np.asfortranarray(shape))
    compressed["counts"] = compressed["counts"].decode("ascii")
    anns = [
        {"id": 1, "image_id": 7, "category_id": 7, "bbox": [2.0, 3.0, 20.0, 12.0], "area": 150.0, "iscrowd": 0,
         "segmentation": [[2.0, 3.0, 22.0, 3.0, 22.0, 15.0, 2.0, 15.0], [30.0, 20.0, 36.0, 20.0, 33.0, 27.0]]},
        {"id": 2, "image_id": 7, "category_id": 3, "bbox": [10.0, 5.0, 20.0, 15.0], "area": 180.0, "iscrowd": 1,
         "segmentation": _rle_uncompressed(shape)},
        {"id": 3, "image_id": 7, "category_id": 3, "bbox": [10.0, 5.0, 20.0, 15.0], "area": 180.0, "iscrowd": 0,
         "segmentation": compressed},
    ]
    img_dir, ann_file = _hand_dataset(tmp_path, anns)
    report = convert_coco(img_dir, ann_file, tmp_path / "out", num_shards=1, workers=1)
    assert report.annotations_written == 3 and report.crowd == 1
    assert report.instances_per_category == {"three": 1, "seven": 1}
    (rec,) = _records(str(tmp_path / "out" / "hand-*.tfrecord"))
    coco = _coco(ann_file)
    for k, ann in enumerate(coco.imgToAnns[7]):
        np.testing.assert_array_equal(_png_mask(rec["image/object/mask"][k]), coco.annToMask(ann))
    np.testing.assert_array_equal(_png_mask(rec["image/object/mask"][1]), shape)
    assert rec["image/object/class/label"].tolist() == [7, 3, 3]
    assert rec["image/format"] == b"png"


def test_bad_data_is_named_counted_and_skipped(tmp_path, caplog):
    images = [
        {"id": 1, "file_name": "good.png", "width": 40, "height": 30},
        {"id": 2, "file_name": "missing.png", "width": 40, "height": 30, "_write": False},
        {"id": 3, "file_name": "broken.png", "width": 40, "height": 30, "_write": False},
        {"id": 4, "file_name": "empty.png", "width": 40, "height": 30},
    ]
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    poly = [[5.0, 5.0, 15.0, 5.0, 15.0, 15.0, 5.0, 15.0]]
    anns = [
        {"id": 10, "image_id": 1, "category_id": 3, "bbox": [5.0, 5.0, 10.0, 10.0], "area": 100.0, "segmentation": poly},
        {"id": 11, "image_id": 1, "category_id": 3, "bbox": [35.0, 5.0, 10.0, 10.0], "area": 100.0, "segmentation": poly},
        {"id": 12, "image_id": 1, "category_id": 7, "bbox": [5.0, 5.0, 0.0, 10.0], "area": 0.0, "segmentation": poly},
        {"id": 13, "image_id": 1, "category_id": 7, "bbox": [5.0, 5.0, 10.0, 10.0], "area": 100.0},
        {"id": 14, "image_id": 2, "category_id": 3, "bbox": [5.0, 5.0, 10.0, 10.0], "area": 100.0, "segmentation": poly},
        {"id": 15, "image_id": 3, "category_id": 3, "bbox": [5.0, 5.0, 10.0, 10.0], "area": 100.0, "segmentation": poly},
        {"id": 16, "image_id": 1, "category_id": 7, "bbox": [5.0, 5.0, 10.0, 10.0], "area": 100.0,
         "segmentation": [[1.0, 2.0]]},
        {"id": 17, "image_id": 1, "category_id": 7, "bbox": [20.0, 20.0, 4.0, 4.0], "area": 100.0,
         "segmentation": poly},
    ]
    img_dir, ann_file = _hand_dataset(tmp_path, anns, images=images)
    with caplog.at_level(logging.WARNING):
        report = convert_coco(img_dir, ann_file, tmp_path / "out", tag="t", num_shards=2, workers=1)
    assert report.images_written == 2 and report.images_skipped == 2
    assert report.problem_counts() == {"bad_segmentation": 1, "box_outside_image": 1, "degenerate_box": 1,
                                       "missing_image": 1, "missing_segmentation": 1, "unreadable_image": 1}
    assert report.annotations_written == 2  # 10 and 17 (mask outside its box: kept, listed)
    assert report.annotations_skipped == 4 + 2
    assert report.masks_outside_box == 1
    text = caplog.text
    for needle in ("annotation 11 of image 1 (good.png)", "extends past the 40x30 image", "clip the box",
                   "annotation 12", "has no area", "annotation 13", "no segmentation", "missing.png",
                   "file not found", "broken.png", "not a readable image"):
        assert needle in text, needle
    warnings = json.loads((tmp_path / "out" / "t_warnings.json").read_text())
    assert warnings["1"]["box"] == [11, 12]
    assert warnings["1"]["mask"] == [17]
    assert sorted(s["annotation_id"] for s in warnings["1"]["skipped"]) == [11, 12, 13, 16]
    recs = _records(str(tmp_path / "out" / "t-*.tfrecord"))
    assert sorted(r["image/source_id"] for r in recs) == [b"1", b"4"]
    empty = next(r for r in recs if r["image/source_id"] == b"4")
    assert len(empty["image/object/mask"]) == 0


def test_category_zero_annotation_stops_the_run(tmp_path):
    poly = [[5.0, 5.0, 15.0, 5.0, 15.0, 15.0]]
    anns = [{"id": 5, "image_id": 7, "category_id": 0, "bbox": [5.0, 5.0, 10.0, 10.0], "area": 50.0,
             "segmentation": poly}]
    cats = [{"id": 0, "name": "_background_"}, {"id": 1, "name": "thing"}]
    img_dir, ann_file = _hand_dataset(tmp_path, anns, categories=cats)
    with pytest.raises(InvalidInputError, match="category id 0, e.g. annotation 5"):
        convert_coco(img_dir, ann_file, tmp_path / "out", num_shards=1, workers=1)
    assert not os.path.exists(tmp_path / "out") or not os.listdir(tmp_path / "out")
    img_dir, ann_file = _hand_dataset(tmp_path, anns, categories=[{"id": 1, "name": "thing"}])
    with pytest.raises(InvalidInputError, match="category id 0"):
        convert_coco(img_dir, ann_file, tmp_path / "out", num_shards=1, workers=1)


def test_unused_background_category_is_ignored_with_a_warning(tmp_path, caplog):
    poly = [[5.0, 5.0, 15.0, 5.0, 15.0, 15.0]]
    anns = [{"id": 5, "image_id": 7, "category_id": 1, "bbox": [5.0, 5.0, 10.0, 10.0], "area": 50.0,
             "segmentation": poly}]
    cats = [{"id": 0, "name": "_background_"}, {"id": 1, "name": "thing"}]
    img_dir, ann_file = _hand_dataset(tmp_path, anns, categories=cats)
    with caplog.at_level(logging.WARNING):
        report = convert_coco(img_dir, ann_file, tmp_path / "out", num_shards=1, workers=1)
    assert "_background_" in caplog.text and "ignored" in caplog.text
    assert report.instances_per_category == {"thing": 1}


def test_normalized_boxes_stop_the_run(tmp_path):
    anns = [{"id": 9, "image_id": 7, "category_id": 3, "bbox": [0.1, 0.2, 0.3, 0.4], "area": 0.12,
             "segmentation": [[0.1, 0.2, 0.4, 0.2, 0.4, 0.6]]}]
    img_dir, ann_file = _hand_dataset(tmp_path, anns)
    with pytest.raises(InvalidInputError, match="annotation 9 .* looks normalized") as err:
        convert_coco(img_dir, ann_file, tmp_path / "out", num_shards=1, workers=1)
    assert "multiply x and width by the image width" in str(err.value)


def test_failed_run_leaves_no_final_shards(tmp_path):
    images = [{"id": 1, "file_name": "gone.png", "width": 40, "height": 30, "_write": False}]
    img_dir, ann_file = _hand_dataset(tmp_path, [], images=images)
    with pytest.raises(InvalidInputError, match="no image"):
        convert_coco(img_dir, ann_file, tmp_path / "out", num_shards=3, workers=1)
    assert os.listdir(tmp_path / "out") == []


def test_annotation_mask_rejects_malformed_segmentations():
    with pytest.raises(ValueError, match="at least 3 points"):
        annotation_mask([[1.0, 2.0, 3.0, 4.0]], 10, 10)
    with pytest.raises(ValueError, match="the RLE is 5x5"):
        annotation_mask({"size": [5, 5], "counts": [25]}, 10, 10)
    with pytest.raises(ValueError, match="neither"):
        annotation_mask("nope", 10, 10)


def test_cli_with_tao_flags_and_parallel_workers(synthetic, tmp_path):
    _, syn = synthetic
    out = tmp_path / "tf"
    result = CliRunner().invoke(cli, ["mask_rcnn", "dataset_convert", "-i", syn.files["images_train"],
                                      "-a", syn.files["annotations_train"], "-o", str(out), "-s", "4",
                                      "--include_mask", "-r", str(tmp_path / "res"), "--workers", "2", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["tag"] == "instances_train" and data["num_shards"] == 4
    assert sorted(os.listdir(out)) == [f"instances_train-{s:05d}-of-00004.tfrecord" for s in range(4)]
    assert json.loads((tmp_path / "res" / "status.json").read_text()) == data
    serial = convert_coco(syn.files["images_train"], syn.files["annotations_train"], tmp_path / "serial",
                          num_shards=4, workers=1)
    for a, b in zip(sorted(glob.glob(str(out / "*"))), serial.shards, strict=True):
        assert open(a, "rb").read() == open(b, "rb").read()
    bad = CliRunner().invoke(cli, ["mask_rcnn", "dataset_convert", "-i", str(tmp_path), "-a",
                                   str(tmp_path / "none.json"), "-o", str(tmp_path / "x")])
    assert bad.exit_code == 2
