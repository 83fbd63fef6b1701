"""dataset_convert: shard names, features, counts, partitioning, bad data, atomicity, COCO."""

from __future__ import annotations

import glob
import json
import os
import random
from types import SimpleNamespace as NS

import numpy as np
import pytest
from PIL import Image

from tltk.data.tfrecord import FEATURES, iterate_records, parse_detection_example
from tltk.detectnet_v2 import dataset_convert as dc
from tltk.errors import InvalidInputError, SpecError


def _image(path: str, w: int = 64, h: int = 48) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(path)


def _label(path: str, lines: list[str]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def _row(cls: str, box: tuple[float, float, float, float]) -> str:
    return f"{cls} 0.00 0 0.00 {box[0]} {box[1]} {box[2]} {box[3]} 1.5 1.6 3.9 1.0 2.0 30.0 0.1"


def _kitti(root: str, n: int, **kw) -> NS:
    for i in range(n):
        _image(os.path.join(root, "image_2", f"{i:06d}.png"))
        _label(os.path.join(root, "label_2", f"{i:06d}.txt"), [_row("Car", (4, 4, 20, 30)), _row("Pedestrian", (30, 5, 40, 40))])
    cfg = dict(root_directory_path=root, image_dir_name="image_2", label_dir_name="label_2", image_extension=".png",
               partition_mode="random", num_partitions=2, val_split=20, num_shards=2)
    cfg.update(kw)
    return NS(kitti_config=NS(**cfg))


def test_random_partition_shard_names_features_and_counts(tmp_path):
    cfg = _kitti(str(tmp_path / "data"), 10)
    prefix = str(tmp_path / "out" / "kitti_trainval")
    report = dc.convert_dataset(cfg, prefix)
    names = sorted(os.path.basename(p) for p in glob.glob(prefix + "*"))
    assert names == [
        "kitti_trainval-fold-000-of-002-shard-00000-of-00002",
        "kitti_trainval-fold-000-of-002-shard-00001-of-00002",
        "kitti_trainval-fold-001-of-002-shard-00000-of-00002",
        "kitti_trainval-fold-001-of-002-shard-00001-of-00002",
    ]
    # val_split 20 of 10 images: the first 2 sorted ids are the validation fold.
    val = [parse_detection_example(r) for r in iterate_records(sorted(glob.glob(prefix + "-fold-000*")))]
    train = [parse_detection_example(r) for r in iterate_records(sorted(glob.glob(prefix + "-fold-001*")))]
    assert sorted(f.frame_id for f in val) == ["image_2/000000", "image_2/000001"]
    assert len(train) == 8
    # Shards: 2 val frames -> 1 + 1; 8 train frames -> 4 + 4.
    sizes = [sum(1 for _ in iterate_records([p])) for p in sorted(glob.glob(prefix + "*"))]
    assert sizes == [1, 1, 4, 4]
    # Class names lower-cased; the class map keeps the original spelling.
    assert {o.object_class for f in train for o in f.objects} == {"car", "pedestrian"}
    assert report.class_map == {"Car": "car", "Pedestrian": "pedestrian"}
    assert report.partitions[0].class_counts == {"car": 2, "pedestrian": 2}
    assert report.total_counts == {"car": 10, "pedestrian": 10}
    f = train[0]
    assert (f.width, f.height) == (64, 48)
    car = [o for o in f.objects if o.object_class == "car"][0]
    assert (car.x1, car.y1, car.x2, car.y2) == (4.0, 4.0, 20.0, 30.0)
    assert car.world_bbox_z == 30.0 and abs(car.world_bbox_rot_y - 0.1) < 1e-6


def test_every_tao_feature_key_with_its_kind(tmp_path):
    import tensorflow as tf

    cfg = _kitti(str(tmp_path / "d"), 3, num_shards=0, val_split=0)
    prefix = str(tmp_path / "o" / "x")
    dc.convert_dataset(cfg, prefix)
    # num_shards 0: one shard, no shard suffix; val_split 0 leaves fold 0 empty (not written).
    assert [os.path.basename(p) for p in glob.glob(prefix + "*")] == ["x-fold-001-of-002"]
    example = tf.train.Example.FromString(next(iterate_records(glob.glob(prefix + "*"))))
    feats = example.features.feature
    expected = {k for k, v in FEATURES.items() if not v.optional}
    assert set(feats.keys()) == expected
    for key in expected:
        kind = feats[key].WhichOneof("kind")
        assert kind == {"bytes": "bytes_list", "int64": "int64_list", "float": "float_list"}[FEATURES[key].kind], key


def test_shuffle_matches_python_random_seed_42(tmp_path):
    cfg = _kitti(str(tmp_path / "d"), 10, num_shards=1)
    prefix = str(tmp_path / "o" / "x")
    dc.convert_dataset(cfg, prefix)
    ids = [f"{i:06d}" for i in range(10)]
    val, train = ids[:2], ids[2:]
    rng = random.Random(42)
    rng.shuffle(val)
    rng.shuffle(train)
    got = [parse_detection_example(r).frame_id.split("/")[1] for r in iterate_records([prefix + "-fold-001-of-002-shard-00000-of-00001"])]
    assert got == train


def test_sequence_partition_round_robin_reversed(tmp_path):
    root = str(tmp_path / "d")
    cfg = _kitti(root, 9, partition_mode="sequence", num_partitions=2, num_shards=0,
                 kitti_sequence_to_frames_file="seq.json")
    with open(os.path.join(root, "seq.json"), "w") as f:
        json.dump({"a": ["000000", "000001"], "b": ["000002", "000003", "000004", "000005"], "c": ["000006"],
                   "d": ["000007", "000008"]}, f)
    prefix = str(tmp_path / "o" / "seq")
    report = dc.convert_dataset(cfg, prefix)
    # Order by (-count, name): b(4), a(2), d(2), c(1); round robin -> [b, d], [a, c]; reversed.
    def ids(fold):
        return sorted(parse_detection_example(r).frame_id[-1] for r in iterate_records([f"{prefix}-fold-{fold:03d}-of-002"]))
    assert ids(0) == ["0", "1", "6"]
    assert ids(1) == ["2", "3", "4", "5", "7", "8"]
    assert [p.num_frames for p in report.partitions] == [3, 6]


def test_bad_data_is_reported_with_lines_and_counted(tmp_path):
    root = str(tmp_path / "d")
    cfg = _kitti(root, 6, val_split=0, num_shards=1)
    # 000001: malformed line 2 -> frame skipped; 000002: label missing; extra label without image;
    # 000003: invalid (inverted) box on line 1 and a box outside the image on line 2; 000004 unreadable image.
    _label(os.path.join(root, "label_2", "000001.txt"), [_row("Car", (1, 1, 9, 9)), "Car 0 0 0 1 2 3"])
    os.remove(os.path.join(root, "label_2", "000002.txt"))
    _label(os.path.join(root, "label_2", "999999.txt"), [_row("Car", (1, 1, 9, 9))])
    _label(os.path.join(root, "label_2", "000003.txt"), [_row("Car", (20, 5, 10, 9)), _row("Car", (70, 5, 90, 20)),
                                                         _row("Van", (1, 1, 10, 10))])
    with open(os.path.join(root, "image_2", "000004.png"), "wb") as f:
        f.write(b"not a png")
    prefix = str(tmp_path / "o" / "bad")
    report = dc.convert_dataset(cfg, prefix)
    counts = report.problem_counts()
    assert counts == {"box_outside_image": 1, "image_without_label": 1, "invalid_box": 1, "label_without_image": 1,
                      "malformed_line": 1, "unreadable_image": 1}
    where = {p.kind: (os.path.basename(p.path), p.line) for p in report.problems}
    assert where["malformed_line"] == ("000001.txt", 2)
    assert where["invalid_box"] == ("000003.txt", 1)
    assert where["box_outside_image"] == ("000003.txt", 2)
    assert report.frames_skipped == 3 and report.objects_skipped == 2
    assert report.num_frames == 3  # 000000, 000003 (with its van), 000005
    assert report.total_counts == {"car": 2, "pedestrian": 2, "van": 1}
    warning = json.load(open(report.warning_file))
    assert list(warning.values()) == [[20, 5, 10, 9]]
    assert "000003.txt:1" in open(report.problems_file).read()


def test_nothing_usable_fails_and_writes_no_shard(tmp_path):
    root = str(tmp_path / "d")
    cfg = _kitti(root, 2, val_split=0, num_shards=1)
    for i in range(2):
        _label(os.path.join(root, "label_2", f"{i:06d}.txt"), ["garbage"])
    prefix = str(tmp_path / "o" / "none")
    with pytest.raises(InvalidInputError, match="no usable frame"):
        dc.convert_dataset(cfg, prefix)
    # Only the problem list is left: no shard, no temporary file.
    assert os.listdir(tmp_path / "o") == ["none_problems.txt"]


def test_interrupted_run_leaves_no_finished_looking_shards(tmp_path, monkeypatch):
    cfg = _kitti(str(tmp_path / "d"), 10, num_shards=2)
    prefix = str(tmp_path / "o" / "int")
    real = dc._kitti_record
    calls = {"n": 0}

    def interrupting(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:  # partition 0 finished, partition 1 half-way
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(dc, "_kitti_record", interrupting)
    with pytest.raises(KeyboardInterrupt):
        dc.convert_dataset(cfg, prefix)
    assert os.listdir(tmp_path / "o") == []


def test_spec_errors(tmp_path):
    with pytest.raises(SpecError, match="partition_mode"):
        dc.convert_dataset(_kitti(str(tmp_path / "a"), 1, partition_mode="weird"), str(tmp_path / "o" / "x"))
    with pytest.raises(SpecError, match="val_split"):
        dc.convert_dataset(_kitti(str(tmp_path / "b"), 1, val_split=100), str(tmp_path / "o" / "x"))
    with pytest.raises(InvalidInputError, match="image folder not found"):
        dc.convert_dataset(NS(kitti_config=NS(root_directory_path=str(tmp_path / "none"), image_dir_name="i",
                                              label_dir_name="l", partition_mode="random")), str(tmp_path / "o" / "x"))
    with pytest.raises(InvalidInputError, match=r"no '\*.jpg' images"):
        dc.convert_dataset(_kitti(str(tmp_path / "c"), 1, image_extension="jpg"), str(tmp_path / "o" / "x"))


def test_coco_partitions_names_and_boxes(tmp_path):
    root = tmp_path / "coco"
    for d, names in (("val", ["a.jpg"]), ("train", ["b.jpg", "c.jpg", "d.jpg"])):
        for n in names:
            _image(str(root / d / n))
    cats = [{"id": 1, "name": "Traffic Light"}, {"id": 3, "name": "person"}]

    def ann_file(name, images, anns):
        (root / "annotations").mkdir(exist_ok=True)
        data = {"images": images, "categories": cats, "annotations": anns}
        (root / "annotations" / name).write_text(json.dumps(data))

    ann_file("val.json", [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}],
             [{"id": 10, "image_id": 1, "category_id": 1, "bbox": [2, 3, 10, 20]}])
    ann_file("train.json", [{"id": 5, "file_name": "b.jpg", "width": 64, "height": 48},
                            {"id": 6, "file_name": "c.jpg", "width": 64, "height": 48},
                            {"id": 7, "file_name": "d.jpg", "width": 64, "height": 48}],
             [{"id": 11, "image_id": 5, "category_id": 3, "bbox": [1, 1, 5, 5]},
              {"id": 12, "image_id": 6, "category_id": 3, "bbox": [1, 1, 0.2, 5]},
              {"id": 13, "image_id": 9, "category_id": 3, "bbox": [1, 1, 5, 5]}])
    cfg = NS(coco_config=NS(root_directory_path=str(root), img_dir_names=["val", "train"],
                            annotation_files=["annotations/val.json", "annotations/train.json"], num_partitions=2,
                            num_shards=[1, 2]))
    prefix = str(tmp_path / "o" / "coco")
    report = dc.convert_dataset(cfg, prefix)
    names = sorted(os.path.basename(p) for p in glob.glob(prefix + "-*"))
    assert names == ["coco-fold-000-of-002-shard-00000-of-00001", "coco-fold-001-of-002-shard-00000-of-00002",
                     "coco-fold-001-of-002-shard-00001-of-00002"]
    val = [parse_detection_example(r) for r in iterate_records([prefix + "-fold-000-of-002-shard-00000-of-00001"])]
    assert val[0].frame_id == "val/a" and val[0].objects[0].object_class == "trafficlight"
    o = val[0].objects[0]
    assert (o.x1, o.y1, o.x2, o.y2) == (2.0, 3.0, 12.0, 23.0)
    train = [parse_detection_example(r) for r in iterate_records(sorted(glob.glob(prefix + "-fold-001*")))]
    assert [f.frame_id for f in train] == ["train/b", "train/c", "train/d"]  # file order, no shuffle
    assert report.class_map == {"Traffic Light": "trafficlight", "person": "person"}
    assert report.problem_counts() == {"invalid_box": 1, "unknown_image": 1}
    assert json.load(open(report.warning_file)) == {"12": [1, 1, 1, 6]}


def test_sample_modifier_duplicates_rare_and_caps():
    from tltk.data.tfrecord import DetectionFrameRecord, DetectionObjectRecord

    cfg = NS(source_to_target_class_mapping={"car": "car", "cyclist": "cyclist"}, filter_samples_containing_only=["car"],
             dominant_target_classes=["car"], minimum_target_class_imbalance={}, num_duplicates=2, max_training_samples=0)
    mod = dc.SampleModifier(cfg, 2, validation_fold=0)

    def frame(*classes):
        return DetectionFrameRecord("f", 10, 10, [DetectionObjectRecord(c, 0, 0, 1, 1) for c in classes])

    assert mod.modify(frame("car", "car"), 1) == []  # only cars: filtered
    assert len(mod.modify(frame("car", "cyclist", "cyclist"), 1)) == 3  # 2 cyclists > 1 car: +2 copies
    assert len(mod.modify(frame("car", "car", "cyclist"), 1)) == 1
    assert len(mod.modify(frame("car", "car"), 0)) == 1  # validation fold untouched


def test_truncated_and_unreadable_images_are_skipped_at_conversion_with_file_and_reason(tmp_path):
    cfg = _kitti(str(tmp_path / "data"), 6, num_shards=1)
    images = tmp_path / "data" / "image_2"
    whole = (images / "000003.png").read_bytes()
    (images / "000003.png").write_bytes(whole[: len(whole) // 2])  # header intact, pixels cut off
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(images / "000004.png", format="BMP")  # wrong format
    report = dc.convert_dataset(cfg, str(tmp_path / "out" / "kitti"))
    bad = {os.path.basename(p.path): p for p in report.problems if p.kind == "unreadable_image"}
    assert sorted(bad) == ["000003.png", "000004.png"]
    assert "truncated" in bad["000003.png"].message and "frame skipped" in bad["000003.png"].message
    assert "a BMP image; the training loader decodes PNG, JPEG, GIF only" in bad["000004.png"].message
    assert report.num_frames == 4 and report.frames_skipped == 2


def test_converting_again_with_fewer_shards_removes_the_earlier_shards(tmp_path):
    prefix = str(tmp_path / "out" / "kitti")
    dc.convert_dataset(_kitti(str(tmp_path / "data"), 10, num_shards=3), prefix)
    assert len(glob.glob(prefix + "-fold-*")) == 6
    report = dc.convert_dataset(_kitti(str(tmp_path / "data"), 10, num_shards=1), prefix)
    names = sorted(os.path.basename(p) for p in glob.glob(prefix + "-fold-*"))
    assert names == ["kitti-fold-000-of-002-shard-00000-of-00001", "kitti-fold-001-of-002-shard-00000-of-00001"]
    assert len(report.removed_stale) == 6 and report.to_dict()["removed_stale_shards"] == report.removed_stale
    frames = [parse_detection_example(r).frame_id for r in iterate_records(sorted(glob.glob(prefix + "-fold-*")))]
    assert len(frames) == len(set(frames)) == 10
