"""TFRecord schema tables (TAO's KITTI detection and COCO instance keys): round trips, TAO-built records, errors,
shard names, atomic shard sets."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tltk.data.tfrecord import (
    COCO_INSTANCE,
    FEATURES,
    KITTI_DETECTION,
    DetectionFrameRecord,
    DetectionObjectRecord,
    ShardSetWriter,
    build_detection_example,
    build_example,
    count_records,
    fold_substring,
    frame_ids,
    iterate_records,
    parse_detection_example,
    parse_detection_tensors,
    parse_example,
    parse_tensors,
    shard_filename,
)
from tltk.errors import InvalidInputError


def _frame() -> DetectionFrameRecord:
    return DetectionFrameRecord("image_2/000123", 1242, 375, [
        DetectionObjectRecord("car", 10.5, 20.0, 110.0, 80.25, truncation=0.3, occlusion=2, observation_angle=-1.5,
                              world_bbox_h=1.5, world_bbox_z=30.0),
        DetectionObjectRecord("dontcare", 1, 2, 3, 4),
    ], extra={"calibration/P_lidar_to_image": [1.0] * 12, "point_cloud/id": "velodyne/000123",
              "point_cloud/num_input_channels": 4})


def test_example_round_trip_and_kinds():
    example = build_detection_example(_frame())
    feats = example.features.feature
    assert feats["frame/id"].bytes_list.value == [b"image_2/000123"]
    assert feats["frame/width"].int64_list.value == [1242]
    assert list(feats["target/occlusion"].int64_list.value) == [2, 0]
    assert list(feats["target/coordinates_x1"].float_list.value) == [10.5, 1.0]
    for key, spec in FEATURES.items():
        if key in feats:
            kind = {"bytes": "bytes_list", "int64": "int64_list", "float": "float_list"}[spec.kind]
            assert feats[key].WhichOneof("kind") == kind, key
    back = parse_detection_example(example.SerializeToString())
    assert back.frame_id == "image_2/000123" and (back.width, back.height) == (1242, 375)
    assert back.objects[0].object_class == "car" and back.objects[0].y2 == 80.25 and back.objects[0].occlusion == 2
    assert back.objects[0].truncation == pytest.approx(0.3)
    assert back.extra["point_cloud/id"] == "velodyne/000123" and back.extra["point_cloud/num_input_channels"] == 4


def test_frame_without_objects_has_empty_lists():
    example = build_detection_example(DetectionFrameRecord("image_2/x", 10, 20))
    feats = example.features.feature
    assert len(feats["target/object_class"].bytes_list.value) == 0
    parsed = parse_detection_tensors(tf.constant(example.SerializeToString()))
    assert parsed["boxes"].shape == (0, 4) and parsed["classes"].shape == (0,)


def test_parse_tensors_in_graph():
    parsed = parse_detection_tensors(tf.constant(build_detection_example(_frame()).SerializeToString()))
    assert parsed["frame_id"].numpy() == b"image_2/000123"
    assert parsed["classes"].numpy().tolist() == [b"car", b"dontcare"]
    assert parsed["boxes"].numpy().tolist() == [[10.5, 20.0, 110.0, 80.25], [1, 2, 3, 4]]
    assert int(parsed["width"]) == 1242 and int(parsed["height"]) == 375


def test_shard_names_are_taos():
    assert shard_filename("/d/kitti", 1, 2, 9, 10) == "/d/kitti-fold-001-of-002-shard-00009-of-00010"
    assert shard_filename("/d/kitti", 0, 5, 0, 0) == "/d/kitti-fold-000-of-005"
    assert shard_filename("/d/kitti", 0, 0, 3, 4) == "/d/kitti-shard-00003-of-00004"
    assert fold_substring(0) == "fold-000-of-"


def test_shard_set_is_invisible_until_commit(tmp_path):
    import glob

    paths = [str(tmp_path / "out" / f"x-shard-{i:05d}-of-00002") for i in range(2)]
    shards = ShardSetWriter()
    for p in paths:
        w = shards.open(p)
        w.write(build_detection_example(_frame()).SerializeToString())
    shards.close_current()
    assert glob.glob(str(tmp_path / "out" / "*")) == []  # temporaries are hidden from globs
    assert len(os.listdir(tmp_path / "out")) == 2
    shards.commit()
    assert sorted(glob.glob(str(tmp_path / "out" / "*"))) == paths
    assert count_records(paths) == 2 and len(list(iterate_records(paths))) == 2
    with ShardSetWriter() as aborted:
        aborted.open(str(tmp_path / "out" / "y"))
    assert sorted(os.listdir(tmp_path / "out")) == ["x-shard-00000-of-00002", "x-shard-00001-of-00002"]


def test_frame_ids_in_file_order(tmp_path):
    paths = [str(tmp_path / f"f-{i}") for i in range(2)]
    shards = ShardSetWriter()
    for path, stems in zip(paths, (["a", "b"], ["c"])):
        writer = shards.open(path)
        for stem in stems:
            writer.write(build_detection_example(DetectionFrameRecord(f"image_2/{stem}", 10, 20)).SerializeToString())
    shards.commit()
    assert frame_ids(paths) == ["image_2/a", "image_2/b", "image_2/c"]
    assert frame_ids([]) == []


# --- generic schema tables -------------------------------------------------------------------

def _png(mask: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _tao_coco_example(masks: list[np.ndarray]) -> tf.train.Example:
    """A record spelled out feature by feature with TAO's COCO keys (not through build_example)."""
    def b(values):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))

    def i(values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))

    def f(values):
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))

    feats = {
        "image/height": i([8]), "image/width": i([10]),
        "image/filename": b([b"000000000139.jpg"]), "image/source_id": b([b"139"]),
        "image/key/sha256": b([b"ab" * 32]), "image/encoded": b([b"\xff\xd8 not decoded here"]),
        "image/format": b([b"jpeg"]),
        "image/object/bbox/xmin": f([0.1, 0.5]), "image/object/bbox/xmax": f([0.4, 1.0]),
        "image/object/bbox/ymin": f([0.25, 0.0]), "image/object/bbox/ymax": f([0.75, 0.5]),
        "image/object/class/text": b([b"person", b"tv"]), "image/object/class/label": i([1, 72]),
        "image/object/is_crowd": i([0, 1]), "image/object/area": f([12.0, 20.0]),
        "image/object/mask": b([_png(m) for m in masks]),
    }
    return tf.train.Example(features=tf.train.Features(feature=feats))


def _masks() -> list[np.ndarray]:
    first = np.zeros((8, 10), np.uint8)
    first[2:6, 1:4] = 1
    second = np.zeros((8, 10), np.uint8)
    second[0:4, 5:10] = 1
    return [first, second]


def test_coco_instance_table_has_taos_keys_and_kinds():
    expected = {
        "image/height": "int64", "image/width": "int64", "image/filename": "bytes", "image/source_id": "bytes",
        "image/key/sha256": "bytes", "image/encoded": "bytes", "image/format": "bytes",
        "image/object/bbox/xmin": "float", "image/object/bbox/xmax": "float", "image/object/bbox/ymin": "float",
        "image/object/bbox/ymax": "float", "image/object/class/text": "bytes", "image/object/class/label": "int64",
        "image/object/is_crowd": "int64", "image/object/area": "float", "image/object/mask": "bytes",
    }
    assert {k: s.kind for k, s in COCO_INSTANCE.features.items()} == expected
    assert COCO_INSTANCE.frame_keys == ["image/height", "image/width", "image/filename", "image/source_id",
                                        "image/key/sha256", "image/encoded", "image/format"]
    assert KITTI_DETECTION.features is FEATURES


def test_hand_built_tao_coco_example_parses():
    masks = _masks()
    serialized = _tao_coco_example(masks).SerializeToString()
    values = parse_example(COCO_INSTANCE, serialized)
    assert values["image/source_id"] == b"139" and int(values["image/height"]) == 8 and int(values["image/width"]) == 10
    assert values["image/object/class/label"].tolist() == [1, 72]
    assert values["image/object/class/label"].dtype == np.int64
    assert values["image/object/bbox/xmin"].dtype == np.float32
    np.testing.assert_allclose(values["image/object/bbox/ymax"], [0.75, 0.5])
    assert values["image/object/is_crowd"].tolist() == [0, 1]
    for png, mask in zip(values["image/object/mask"], masks):
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), mask)

    tensors = parse_tensors(COCO_INSTANCE, tf.constant(serialized))
    assert tensors["image/source_id"].numpy() == b"139" and tensors["image/height"].dtype == tf.int64
    assert tensors["image/object/class/label"].numpy().tolist() == [1, 72]
    assert tensors["image/object/area"].numpy().tolist() == [12.0, 20.0]
    decoded = tf.io.decode_png(tensors["image/object/mask"][1]).numpy()[..., 0]
    np.testing.assert_array_equal(decoded, masks[1])


def test_coco_round_trip_through_build_example():
    masks = _masks()
    values = {
        "image/height": 8, "image/width": 10, "image/filename": "a.png", "image/source_id": "7",
        "image/key/sha256": "00" * 32, "image/encoded": b"\x89PNG raw", "image/format": "jpeg",
        "image/object/bbox/xmin": [0.1, 0.5], "image/object/bbox/xmax": np.array([0.4, 1.0]),
        "image/object/bbox/ymin": [0.25, 0.0], "image/object/bbox/ymax": [0.75, 0.5],
        "image/object/class/text": ["person", "tv"], "image/object/class/label": [1, 72],
        "image/object/is_crowd": [0, 0], "image/object/area": [12.0, 20.0],
        "image/object/mask": [_png(m) for m in masks],
    }
    example = build_example(COCO_INSTANCE, values)
    assert set(example.features.feature) == set(COCO_INSTANCE.features)  # every key written
    back = parse_example(COCO_INSTANCE, example.SerializeToString())
    assert back["image/filename"] == b"a.png" and back["image/encoded"] == b"\x89PNG raw"
    assert back["image/object/class/text"].tolist() == [b"person", b"tv"]
    np.testing.assert_allclose(back["image/object/bbox/xmax"], [0.4, 1.0])
    assert [bytes(m) for m in back["image/object/mask"]] == values["image/object/mask"]
    empty = dict(values, **{k: [] for k in COCO_INSTANCE.object_keys})
    parsed = parse_tensors(COCO_INSTANCE, tf.constant(build_example(COCO_INSTANCE, empty).SerializeToString()))
    assert parsed["image/object/mask"].shape == (0,) and parsed["image/object/bbox/xmin"].shape == (0,)


def test_kitti_round_trip_through_generic_functions():
    values = parse_example(KITTI_DETECTION, build_detection_example(_frame()).SerializeToString())
    assert values["frame/id"] == b"image_2/000123"
    assert values["target/object_class"].tolist() == [b"car", b"dontcare"]
    assert values["calibration/P_lidar_to_image"].shape == (12,)
    assert "calibration/T_lidar_to_camera" not in values  # optional and not written
    again = build_example(KITTI_DETECTION, values)
    assert parse_detection_example(again.SerializeToString()) == parse_detection_example(
        build_detection_example(_frame()).SerializeToString())


def test_schema_errors_name_the_key():
    with pytest.raises(ValueError, match=r"required feature key\(s\) \['image/object/mask'\]"):
        build_example(COCO_INSTANCE, {k: [] if COCO_INSTANCE.features[k].per == "object" else "1"
                                      for k in COCO_INSTANCE.features if k != "image/object/mask"})
    with pytest.raises(ValueError, match="'target/truncation' has 1 values but 'target/object_class' has 2"):
        build_example(KITTI_DETECTION, {"frame/id": "a", "frame/height": 1, "frame/width": 1,
                                        **{k: [0, 0] for k in KITTI_DETECTION.object_keys},
                                        "target/truncation": [0.5]})
    with pytest.raises(ValueError, match="takes 16 value"):
        build_detection_example(DetectionFrameRecord("image_2/x", 1, 1, extra={"calibration/T_lidar_to_camera": [1.0]}))
    with pytest.raises(ValueError, match="unknown feature"):
        build_example(COCO_INSTANCE, {"image/label": 1})
    wrong = _tao_coco_example(_masks())
    wrong.features.feature["image/object/class/label"].CopyFrom(
        tf.train.Feature(float_list=tf.train.FloatList(value=[1.0, 2.0])))
    with pytest.raises(InvalidInputError, match="'image/object/class/label' is stored as float_list, expected int64_list"):
        parse_example(COCO_INSTANCE, wrong.SerializeToString())
    short = _tao_coco_example(_masks())
    short.features.feature["image/object/area"].CopyFrom(tf.train.Feature(float_list=tf.train.FloatList(value=[1.0])))
    with pytest.raises(InvalidInputError, match="different lengths"):
        parse_example(COCO_INSTANCE, short.SerializeToString())
    with pytest.raises(InvalidInputError, match="no 'image/height', 'image/width', 'image/filename', 'image/source_id', 'image/key/sha256', "
                       "'image/encoded', 'image/format' feature\\(s\\); not a coco_instance TFRecord"):
        parse_example(COCO_INSTANCE, build_detection_example(_frame()).SerializeToString())
    with pytest.raises(InvalidInputError, match="no 'frame/id', 'frame/height', 'frame/width' feature"):
        parse_detection_example(_tao_coco_example(_masks()).SerializeToString())
