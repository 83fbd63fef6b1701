"""The synthetic KITTI/COCO generator: layout, label validity, exact masks, determinism."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
from PIL import Image
from pycocotools.coco import COCO

from tltk.data.kitti import read_kitti_labels
from tltk.data.synthetic import (
    COCO_CATEGORIES,
    DONTCARE,
    SPEC_FILE_NAME,
    SYNTHETIC_CLASSES,
    _encode_png,
    _generate,
    mask_to_polygons,
    synthesize_coco,
    synthesize_kitti,
)
from tltk.errors import UsageError

W, H = 480, 272


def _rasterise(polygons: list[list[float]], h: int, w: int) -> np.ndarray:
    return mask_util.decode(mask_util.merge(mask_util.frPyObjects(polygons, h, w))).astype(bool)


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def kitti_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("kitti") / "ds"
    report = synthesize_kitti(out, num_images=40, image_size=(W, H), seed=7, workers=2)
    return out, report


@pytest.fixture(scope="module")
def coco_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("coco") / "ds"
    report = synthesize_coco(out, num_images=20, image_size=(W, H), seed=11, val_fraction=0.25, workers=1)
    return out, report


# ---- mask -> polygons ---------------------------------------------------------------------------

def test_mask_to_polygons_of_a_block_is_its_four_corners():
    mask = np.zeros((5, 6), dtype=bool)
    mask[1:3, 1:4] = True                      # 3 wide, 2 high, top-left pixel (1, 1)
    assert mask_to_polygons(mask) == [[1.0, 1.0, 4.0, 1.0, 4.0, 3.0, 1.0, 3.0]]
    assert mask_to_polygons(mask, 10, 20) == [[11.0, 21.0, 14.0, 21.0, 14.0, 23.0, 11.0, 23.0]]
    assert mask_to_polygons(np.zeros((4, 4), bool)) == []


def test_mask_to_polygons_hole_island_and_pinch_round_trip_exactly():
    mask = np.zeros((16, 16), dtype=bool)
    mask[1:15, 1:15] = True
    mask[4:12, 5:11] = False                   # a hole; the outer ring has no corner at x=5
    mask[7:9, 7:9] = True                      # an island inside the hole
    mask[13, 13] = False                       # a one-pixel hole
    polys = mask_to_polygons(mask)
    assert len(polys) == 2                     # ring (holes joined by cuts) + island
    assert (_rasterise(polys, 16, 16) == mask).all()
    pinch = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=bool)
    assert (_rasterise(mask_to_polygons(pinch), 3, 3) == pinch).all()


def test_mask_to_polygons_random_masks_round_trip_through_pycocotools():
    rng = np.random.default_rng(3)
    for trial in range(150):
        h, w = (int(v) for v in rng.integers(2, 30, 2))
        if trial % 2:
            small = rng.integers(0, 256, (4, 4)).astype(np.uint8)
            mask = np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR)) > 128
        else:
            mask = rng.random((h, w)) < rng.uniform(0.2, 0.8)
        if not mask.any():
            continue
        polys = mask_to_polygons(mask, 3, 5)
        back = _rasterise(polys, h + 5, w + 3)[5:, 3:]
        assert (back == mask).all(), trial
        assert all(len(p) % 2 == 0 and len(p) >= 8 for p in polys)


def test_png_encoder_round_trips_through_pil():
    img = np.random.default_rng(0).integers(0, 256, (17, 23, 3), dtype=np.uint8)
    from io import BytesIO

    back = np.asarray(Image.open(BytesIO(_encode_png(img))))
    assert back.shape == (17, 23, 3)
    assert (back == img).all()


# ---- scenes --------------------------------------------------------------------------------------

def test_scene_objects_are_exactly_the_painted_pixels_and_flags_match_visibility():
    for index in range(6):
        image, ids, objects = _generate(5, index, W, H)
        assert image.shape == (H, W, 3) and image.dtype == np.uint8
        covered = np.zeros((H, W), dtype=bool)
        for obj in objects:
            full = np.zeros((H, W), dtype=bool)
            x0, y0 = obj.origin
            fh, fw = obj.full_mask.shape
            full[y0:y0 + fh, x0:x0 + fw] = obj.full_mask
            # the written polygons rasterise to exactly the painted silhouette
            assert (_rasterise(obj.polygons, H, W) == full).all()
            ys, xs = np.nonzero(full)
            assert obj.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            # visible = where it is the topmost object, always inside its own silhouette
            visible = ids == obj.instance_id
            assert not (visible & ~full).any() and visible.sum() == obj.visible_pixels
            covered |= visible
            fraction = obj.visible_pixels / full.sum()
            assert fraction == pytest.approx(obj.visible_fraction)
            expected = 0 if fraction >= 0.95 else (1 if fraction >= 0.5 else 2)
            assert obj.occlusion == expected
            if not obj.ignore:
                assert fraction >= 0.25 and obj.box[3] - obj.box[1] >= 0.045 * H
        assert (covered == (ids > 0)).all()


def test_scene_sizes_follow_the_image_size():
    big = _generate(1, 2, 960, 544)[2]
    small = _generate(1, 2, 480, 272)[2]
    assert [o.class_name for o in big] == [o.class_name for o in small]
    for a, b in zip(big, small, strict=True):
        ha, hb = a.box[3] - a.box[1], b.box[3] - b.box[1]
        assert abs(ha - 2 * hb) <= 3


# ---- KITTI ---------------------------------------------------------------------------------------

def test_kitti_layout_and_spec(kitti_dir):
    out, report = kitti_dir
    images = sorted(os.listdir(out / "image_2"))
    labels = sorted(os.listdir(out / "label_2"))
    assert images == [f"{i:06d}.png" for i in range(40)]
    assert labels == [f"{i:06d}.txt" for i in range(40)]
    assert sorted(os.listdir(out)) == [SPEC_FILE_NAME, "image_2", "label_2"]
    with Image.open(out / "image_2" / "000013.png") as img:
        assert img.size == (W, H) and img.mode == "RGB"
    spec = (out / SPEC_FILE_NAME).read_text()
    fields = dict(re.findall(r"^\s*(\w+):\s*(\S+)\s*$", spec, flags=re.M))
    assert fields == {"root_directory_path": '"."', "image_dir_name": '"image_2"', "label_dir_name": '"label_2"',
                      "image_extension": '".png"', "partition_mode": '"random"', "num_partitions": "2",
                      "val_split": "20", "num_shards": "1", "image_directory_path": '"."'}
    assert spec.count("{") == spec.count("}") == 1
    assert report.num_val == 8 and report.num_train == 32


def test_kitti_labels_are_valid_15_column_rows(kitti_dir):
    out, report = kitti_dir
    counts = {name: 0 for name in SYNTHETIC_CLASSES}
    dontcare = 0
    for name in sorted(os.listdir(out / "label_2")):
        path = out / "label_2" / name
        lines = path.read_text().splitlines()
        assert 2 <= len(lines) <= 10
        for line in lines:
            cols = line.split()
            assert len(cols) == 15
            values = [float(v) for v in cols[1:]]
            x1, y1, x2, y2 = values[3:7]
            assert 0 <= x1 < x2 <= W and 0 <= y1 < y2 <= H
            assert all(re.fullmatch(r"-?\d+\.\d\d", c) for c in cols[4:8])
            if cols[0] == DONTCARE:
                dontcare += 1
                assert cols[1:4] == ["-1.00", "-1", "-10.00"]
                assert values[7:] == [-1, -1, -1, -1000, -1000, -1000, -10]
            else:
                counts[cols[0]] += 1
                assert cols[2] in {"0", "1", "2"}
                assert 0.0 <= values[0] <= 1.0
                assert y2 - y1 >= 12.0          # >= 0.045 * 272
        objects, problems = read_kitti_labels(path, allow_score=False)
        assert problems == [] and len(objects) == len(lines)
    assert counts == report.objects_per_class
    assert dontcare == report.num_dontcare > 0
    assert all(n >= 15 for n in counts.values())          # every class present (~1.7 per image each)


def test_kitti_occlusion_and_truncation_flags_are_consistent_with_boxes(kitti_dir):
    out, _ = kitti_dir
    occluded_rows = truncated_rows = 0
    for name in sorted(os.listdir(out / "label_2")):
        rows = [line.split() for line in (out / "label_2" / name).read_text().splitlines()]
        boxes = [tuple(float(v) for v in r[4:8]) for r in rows]
        for i, row in enumerate(rows):
            if row[0] == DONTCARE:
                continue
            x1, y1, x2, y2 = boxes[i]
            if int(row[2]) > 0:
                occluded_rows += 1
                # something drawn later (listed later) overlaps it
                assert any(min(x2, b[2]) > max(x1, b[0]) and min(y2, b[3]) > max(y1, b[1]) for b in boxes[i + 1:])
            if float(row[1]) > 0:
                truncated_rows += 1
                assert x1 == 0 or y1 == 0 or x2 == W or y2 == H
    assert occluded_rows > 5 and truncated_rows > 0


def test_kitti_same_seed_is_byte_identical_whatever_the_workers(kitti_dir, tmp_path):
    out, _ = kitti_dir
    again = tmp_path / "again"
    synthesize_kitti(again, num_images=40, image_size=(W, H), seed=7, workers=1)
    assert _tree_digest(again) == _tree_digest(out)
    other = tmp_path / "other"
    synthesize_kitti(other, num_images=3, image_size=(W, H), seed=8, workers=1)
    a, b = _tree_digest(out), _tree_digest(other)
    for i in range(3):
        assert a[f"image_2/{i:06d}.png"] != b[f"image_2/{i:06d}.png"]
        assert a[f"label_2/{i:06d}.txt"] != b[f"label_2/{i:06d}.txt"]


def test_kitti_val_split_in_spec_follows_val_fraction(tmp_path):
    synthesize_kitti(tmp_path / "a", num_images=2, image_size=(64, 48), val_fraction=0.125)
    assert "val_split: 12.5\n" in (tmp_path / "a" / SPEC_FILE_NAME).read_text()
    synthesize_kitti(tmp_path / "b", num_images=1, image_size=(64, 48), val_fraction=0.0)
    assert "val_split: 0\n" in (tmp_path / "b" / SPEC_FILE_NAME).read_text()


# ---- COCO ----------------------------------------------------------------------------------------

def test_coco_layout_split_and_spec(coco_dir):
    out, report = coco_dir
    assert sorted(os.listdir(out / "images" / "val")) == [f"{i:06d}.png" for i in range(5)]
    assert sorted(os.listdir(out / "images" / "train")) == [f"{i:06d}.png" for i in range(5, 20)]
    assert sorted(os.listdir(out / "annotations")) == ["instances_train.json", "instances_val.json"]
    assert (report.num_train, report.num_val) == (15, 5)
    spec = (out / SPEC_FILE_NAME).read_text()
    assert 'img_dir_names: ["images/val", "images/train"]' in spec
    assert 'annotation_files: ["annotations/instances_val.json", "annotations/instances_train.json"]' in spec
    assert "num_partitions: 2\n" in spec and "num_shards: [1, 1]\n" in spec
    assert 'root_directory_path: "."' in spec


def test_coco_loads_with_pycocotools_and_masks_are_exact(coco_dir):
    out, report = coco_dir
    seen_image_ids: set[int] = set()
    seen_ann_ids: set[int] = set()
    counts = {name: 0 for name in SYNTHETIC_CLASSES}
    crowd = 0
    for split in ("val", "train"):
        coco = COCO(str(out / "annotations" / f"instances_{split}.json"))
        assert [coco.cats[i] for i in sorted(coco.cats)] == list(COCO_CATEGORIES)
        for image_id in coco.getImgIds():
            rec = coco.imgs[image_id]
            assert image_id not in seen_image_ids and (rec["width"], rec["height"]) == (W, H)
            seen_image_ids.add(image_id)
            index = image_id - 1
            assert rec["file_name"] == f"{index:06d}.png"
            pixels = np.asarray(Image.open(out / "images" / split / rec["file_name"]))
            image, ids, objects = _generate(11, index, W, H)
            assert (pixels == image).all()
            anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id], iscrowd=None))
            drawn = [o for o in objects if o.visible_pixels > 0]
            assert len(anns) == len(drawn)
            for ann, obj in zip(anns, drawn, strict=True):
                assert ann["id"] not in seen_ann_ids
                seen_ann_ids.add(ann["id"])
                mask = coco.annToMask(ann).astype(bool)
                # the mask is exactly the region where this object is the topmost painted one
                assert (mask == (ids == obj.instance_id)).all()
                assert ann["area"] == mask.sum()
                ys, xs = np.nonzero(mask)
                assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
                assert ann["category_id"] == SYNTHETIC_CLASSES.index(obj.class_name) + 1
                if ann["iscrowd"]:
                    crowd += 1
                    assert isinstance(ann["segmentation"], dict) and obj.ignore
                else:
                    counts[obj.class_name] += 1
                    assert isinstance(ann["segmentation"], list) and not obj.ignore
                    assert all(len(p) % 2 == 0 and len(p) >= 6 for p in ann["segmentation"])
    assert seen_image_ids == set(range(1, 21))
    assert counts == report.objects_per_class and crowd == report.num_dontcare
    assert all(n > 0 for n in counts.values())


def test_coco_object_pixels_carry_their_class_colour_family(coco_dir):
    out, _ = coco_dir
    coco = COCO(str(out / "annotations" / "instances_train.json"))
    votes = {1: [], 2: [], 3: []}
    for image_id in coco.getImgIds():
        rec = coco.imgs[image_id]
        pixels = np.asarray(Image.open(out / "images" / "train" / rec["file_name"])).astype(int)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=[image_id], iscrowd=False)):
            r, g, b = (pixels[..., c][coco.annToMask(ann).astype(bool)] for c in range(3))
            family = {1: b > r + 20, 2: r > b + 20, 3: g > np.maximum(r, b) + 10}[ann["category_id"]]
            votes[ann["category_id"]].append(family.mean())
    for cat, fractions in votes.items():
        assert fractions and np.median(fractions) > 0.5, (cat, fractions)


def test_coco_occluded_objects_use_visible_part_polygons(coco_dir):
    out, _ = coco_dir
    data = json.loads((out / "annotations" / "instances_train.json").read_text())
    partial = [a for a in data["annotations"]
               if not a["iscrowd"] and all(float(v).is_integer() for p in a["segmentation"] for v in p)]
    assert partial, "expected some occluded objects (traced along pixel edges)"


def test_coco_same_seed_is_byte_identical(coco_dir, tmp_path):
    out, _ = coco_dir
    again = tmp_path / "again"
    synthesize_coco(again, num_images=20, image_size=(W, H), seed=11, val_fraction=0.25, workers=2)
    assert _tree_digest(again) == _tree_digest(out)


def test_coco_without_validation_writes_one_partition(tmp_path):
    report = synthesize_coco(tmp_path / "c", num_images=3, image_size=(64, 48), val_fraction=0.0)
    assert sorted(os.listdir(tmp_path / "c" / "annotations")) == ["instances_train.json"]
    assert not (tmp_path / "c" / "images" / "val").exists()
    spec = (tmp_path / "c" / SPEC_FILE_NAME).read_text()
    assert "num_partitions: 1\n" in spec and 'img_dir_names: ["images/train"]' in spec
    assert (report.num_train, report.num_val) == (3, 0)
    with pytest.raises(UsageError, match="no training image"):
        synthesize_coco(tmp_path / "d", num_images=2, image_size=(64, 48), val_fraction=0.9)


# ---- output folder and arguments -----------------------------------------------------------------

def test_refuses_non_empty_folder_and_overwrite_replaces_the_dataset(tmp_path):
    out = tmp_path / "ds"
    synthesize_kitti(out, num_images=5, image_size=(64, 48))
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="not empty"):
        synthesize_kitti(out, num_images=2, image_size=(64, 48))
    synthesize_kitti(out, num_images=2, image_size=(64, 48), overwrite=True)
    assert sorted(os.listdir(out / "image_2")) == ["000000.png", "000001.png"]
    assert (out / "notes.txt").read_text() == "mine"           # only our own paths are replaced
    synthesize_coco(out, num_images=2, image_size=(64, 48), overwrite=True)
    assert sorted(os.listdir(out)) == ["annotations", SPEC_FILE_NAME, "images", "notes.txt"]


@pytest.mark.parametrize("kwargs, message", [
    ({"num_images": 0}, "num_images"),
    ({"image_size": (16, 100)}, "image_size"),
    ({"seed": -1}, "seed"),
    ({"val_fraction": 1.0}, "val_fraction"),
    ({"workers": 0}, "workers"),
])
def test_invalid_arguments_raise_usage_errors(tmp_path, kwargs, message):
    with pytest.raises(UsageError, match=message):
        synthesize_kitti(tmp_path / "x", **{"num_images": 1, **kwargs})
