"""TAO detection TFRecord schema: Example round trip, key/kind table, shard names, atomic shard sets."""

from __future__ import annotations

import os

import pytest
import tensorflow as tf

from tltk.data.tfrecord import (
    FEATURES,
    DetectionFrameRecord,
    DetectionObjectRecord,
    ShardSetWriter,
    build_detection_example,
    count_records,
    fold_substring,
    frame_ids,
    iterate_records,
    parse_detection_example,
    parse_detection_tensors,
    shard_filename,
)


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
