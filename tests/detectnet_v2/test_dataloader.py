"""DetectNet_v2 loader: folds, validation source, class mapping, determinism, shapes, image cache."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format

from tltk._proto import detectnet_v2_pb2 as pb
from tltk.data.tfrecord import (
    DetectionFrameRecord,
    DetectionObjectRecord,
    ShardSetWriter,
    build_detection_example,
)
from tltk.detectnet_v2.dataloader import DetectNetV2Data
from tltk.errors import InvalidInputError, UsageError

W, H = 128, 96


def _write_dataset(root: str, prefix: str, frames_per_fold: dict[int, list[list[tuple[str, tuple]]]]) -> None:
    """Images with one white rectangle per object; TFRecords in TAO's fold naming."""
    from PIL import Image

    os.makedirs(os.path.join(root, "image_2"), exist_ok=True)
    with ShardSetWriter() as shards:
        for fold, frames in frames_per_fold.items():
            writer = shards.open(f"{prefix}-fold-{fold:03d}-of-002")
            for i, objects in enumerate(frames):
                name = f"f{fold}_{i:03d}"
                img = np.zeros((H, W, 3), np.uint8)
                for _, (x1, y1, x2, y2) in objects:
                    img[y1:y2, x1:x2] = 255
                Image.fromarray(img).save(os.path.join(root, "image_2", name + ".png"))
                rec = DetectionFrameRecord(f"image_2/{name}", W, H,
                                           [DetectionObjectRecord(c, *map(float, b)) for c, b in objects])
                writer.write(build_detection_example(rec).SerializeToString())
            shards.close_current()
        shards.commit()


SPEC = """
random_seed: 42
dataset_config {
  data_sources { tfrecords_path: "tfrecords/data-*" image_directory_path: "data" }
  image_extension: "png"
  target_class_mapping { key: "Car" value: "car" }
  target_class_mapping { key: "van" value: "car" }
  target_class_mapping { key: "pedestrian" value: "pedestrian" }
  %(split)s
}
augmentation_config {
  preprocessing { output_image_width: 128 output_image_height: 96 output_image_channel: 3 min_bbox_width: 1.0 min_bbox_height: 1.0 }
  spatial_augmentation { hflip_probability: 0.5 vflip_probability: 0.5 zoom_min: 0.8 zoom_max: 1.2
                         translate_max_x: 8 translate_max_y: 8 rotate_rad_max: 0.2 }
  color_augmentation { color_shift_stddev: 0.0 hue_rotation_max: 0.0 saturation_shift_max: 0.0 contrast_scale_max: 0.0 contrast_center: 0.5 }
}
bbox_rasterizer_config {
  target_class_config { key: "car" value { cov_center_x: 0.5 cov_center_y: 0.5 cov_radius_x: 0.4 cov_radius_y: 0.4 bbox_min_radius: 1.0 } }
  target_class_config { key: "pedestrian" value { cov_center_x: 0.5 cov_center_y: 0.5 cov_radius_x: 0.4 cov_radius_y: 0.4 bbox_min_radius: 1.0 } }
  deadzone_radius: 0.67
}
cost_function_config {
  target_classes { name: "car" class_weight: 1.0 coverage_foreground_weight: 0.05 }
  target_classes { name: "pedestrian" class_weight: 1.0 coverage_foreground_weight: 0.05 }
}
model_config { objective_set { bbox { scale: 35.0 offset: 0.5 } cov {} } }
training_config { batch_size_per_gpu: 2 }
"""


def _experiment(split: str = "validation_fold: 0") -> pb.Experiment:
    return text_format.Parse(SPEC % {"split": split}, pb.Experiment())


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("dl")
    val = [[("car", (10, 10, 50, 40))], [("pedestrian", (60, 20, 80, 80))]]
    train = [[("car", (8, 8, 40, 40)), ("van", (60, 10, 120, 50)), ("truck", (5, 60, 30, 90))],
             [("pedestrian", (30, 30, 50, 90))], [("car", (20, 20, 100, 70))], [("dontcare", (0, 0, 10, 10))],
             [("car", (70, 40, 110, 80))]]
    os.makedirs(root / "tfrecords")
    _write_dataset(str(root / "data"), str(root / "tfrecords" / "data"), {0: val, 1: train})
    return root


def _data(root, split="validation_fold: 0") -> DetectNetV2Data:
    return DetectNetV2Data(_experiment(split), spec_dir=str(root))


def test_validation_fold_splits_files_and_counts(data_dir):
    data = _data(data_dir)
    assert [os.path.basename(f) for s in data.sources("train") for f in s.tfrecords] == ["data-fold-001-of-002"]
    assert [os.path.basename(f) for s in data.sources("val") for f in s.tfrecords] == ["data-fold-000-of-002"]
    stats = data.stats("train")
    assert stats.num_examples == 5
    # Many-to-one, case-insensitive mapping: "car" and "van" -> car; truck/dontcare are dropped and counted.
    assert stats.mapped_counts == {"car": 4, "pedestrian": 1}
    assert stats.dropped_counts == {"dontcare": 1, "truck": 1}


def test_validation_data_source_and_missing_validation(data_dir):
    split = 'validation_data_source { tfrecords_path: "tfrecords/data-fold-000*" image_directory_path: "data" }'
    data = _data(data_dir, split)
    assert data.num_examples("val") == 2
    assert data.num_examples("train") == 7  # data_sources glob covers both folds
    with pytest.raises(UsageError, match="no validation data"):
        _data(data_dir, "").sources("val")
    with pytest.raises(InvalidInputError, match="fold-005-of-"):
        _data(data_dir, "validation_fold: 5").sources("val")


def test_eval_labels_are_mapped_and_unaugmented(data_dir):
    data = _data(data_dir)
    images, labels = next(iter(data.dataset("train", batch_size=5, output="labels", training=False, shuffle=False)))
    assert images.shape == (5, 3, H, W) and images.dtype == tf.float32
    assert labels["num_boxes"].numpy().tolist() == [2, 1, 1, 0, 1]
    assert labels["boxes"].shape == (5, 2, 4)
    np.testing.assert_allclose(labels["boxes"][0].numpy(), [[8, 8, 40, 40], [60, 10, 120, 50]])
    assert labels["classes"].numpy().tolist() == [[0, 0], [1, -1], [0, -1], [-1, -1], [0, -1]]
    assert labels["frame_id"][0].numpy() == b"image_2/f1_000"
    assert labels["image_size"][0].numpy().tolist() == [H, W]
    # The image is the rectangle drawing, unchanged: pixel inside the car box is 1, outside 0.
    assert float(images[0, 0, 20, 20]) == 1.0 and float(images[0, 0, 5, 5]) == 0.0


def test_training_batches_have_tao_target_shapes_and_agree_with_images(data_dir):
    data = _data(data_dir)
    ds = data.dataset("train", output="both")
    for images, targets, labels in ds.take(4):
        assert images.shape == (2, 3, H, W)
        assert targets["cov"].shape == (2, 2, 6, 8) and targets["bbox"].shape == (2, 8, 6, 8)
        for key in ("cov_norm", "cov_mask", "bbox_mask"):
            assert targets[key].shape == (2, 2, 6, 8)
        for b in range(2):
            n = int(labels["num_boxes"][b])
            img = images[b, 0].numpy()
            for box in labels["boxes"][b, :n].numpy():
                x1, y1, x2, y2 = box
                # The centre of every (augmented) box is bright: boxes follow their pixels.
                cx, cy = int((x1 + x2) / 2), int((y1 + y2) / 2)
                assert img[min(cy, H - 1), min(cx, W - 1)] > 0.75
            # Coverage exists exactly for classes that have boxes.
            for c in range(2):
                has = bool(np.any(labels["classes"][b, :n].numpy() == c))
                assert bool(targets["cov"][b, c].numpy().max() > 0) == has


def test_same_seed_same_batches_and_other_seed_differs(data_dir):
    def first_batches(seed):
        exp = _experiment()
        exp.random_seed = seed
        ds = DetectNetV2Data(exp, spec_dir=str(data_dir)).dataset("train", output="targets")
        return [b[0].numpy() for b in ds.take(3)]

    a, b, c = first_batches(7), first_batches(7), first_batches(8)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_images_output_and_missing_images_reported(data_dir, tmp_path):
    data = _data(data_dir)
    batch = next(iter(data.dataset("val", batch_size=2, output="images")))
    assert batch.shape == (2, 3, H, W)
    exp = _experiment()
    exp.dataset_config.data_sources[0].image_directory_path = str(tmp_path)
    with pytest.raises(InvalidInputError, match="image file"):
        DetectNetV2Data(exp, spec_dir=str(data_dir)).stats("train")


def test_synthetic_kitti_converts_and_loads_with_every_augmentation(tmp_path):
    from tltk.data.synthetic import synthesize_kitti
    from tltk.detectnet_v2.dataset_convert import convert_dataset
    from tltk.models import load_spec
    from tltk.spec import resolve_spec_path

    synthesize_kitti(str(tmp_path / "syn"), num_images=8, image_size=(160, 96), seed=11)
    loaded = load_spec(str(tmp_path / "syn" / "dataset_convert_spec.txt"), model="detectnet_v2", kind="dataset_convert")
    report = convert_dataset(loaded.message, str(tmp_path / "tfrecords" / "data"),
                             resolve=lambda v: resolve_spec_path(loaded, v))
    assert report.num_frames == 8 and not report.problems
    exp = _experiment()
    exp.dataset_config.data_sources[0].image_directory_path = "syn"
    exp.dataset_config.target_class_mapping["cyclist"] = "pedestrian"
    pre = exp.augmentation_config.preprocessing
    pre.output_image_width, pre.output_image_height = 160, 96
    color = exp.augmentation_config.color_augmentation
    color.color_shift_stddev, color.hue_rotation_max = 0.05, 25.0
    color.saturation_shift_max, color.contrast_scale_max = 0.2, 0.1
    data = DetectNetV2Data(exp, spec_dir=str(tmp_path))
    assert data.stats("train").dropped_counts.get("dontcare", 0) > 0
    for images, targets, labels in data.dataset("train", output="both").take(3):
        assert images.shape == (2, 3, 96, 160) and targets["bbox"].shape == (2, 8, 6, 10)
        assert float(tf.reduce_min(images)) >= 0.0 and float(tf.reduce_max(images)) <= 1.0
        boxes = labels["boxes"].numpy()
        assert np.all(boxes[..., 0] >= 0) and np.all(boxes[..., 2] <= 160) and np.all(boxes[..., 3] <= 96)
        assert np.all(np.isfinite(targets["bbox"].numpy()))


# ---- in-memory image cache -------------------------------------------------------------------------


def _dataset_dir(tmp_path):
    train = [[("car", (8, 8, 40, 40)), ("van", (60, 10, 120, 50)), ("truck", (5, 60, 30, 90))],
             [("pedestrian", (30, 30, 50, 90))], [("car", (20, 20, 100, 70))], [("dontcare", (0, 0, 10, 10))],
             [("car", (70, 40, 110, 80))]]
    os.makedirs(tmp_path / "tfrecords")
    _write_dataset(str(tmp_path / "data"), str(tmp_path / "tfrecords" / "data"),
                   {0: [[("car", (10, 10, 50, 40))]], 1: train})
    return tmp_path


def _cache_data(root, cache_mb: int) -> DetectNetV2Data:
    exp = _experiment()
    exp.dataset_config.image_cache_mb = cache_mb
    color = exp.augmentation_config.color_augmentation
    color.color_shift_stddev, color.hue_rotation_max, color.saturation_shift_max = 0.05, 20.0, 0.2
    return DetectNetV2Data(exp, spec_dir=str(root))


def _batches(data: DetectNetV2Data, n: int) -> list:
    return [tf.nest.map_structure(lambda t: t.numpy(), b) for b in data.dataset("train", output="both").take(n)]


def test_cache_gives_the_same_batches_as_the_files_over_several_epochs(tmp_path):
    root = _dataset_dir(tmp_path)
    cached, plain = _cache_data(root, 64), _cache_data(root, 0)
    # 5 training frames, batch 2: 6 batches cover more than two epochs (new augmentation each epoch).
    a, b = _batches(cached, 6), _batches(plain, 6)
    assert cached.image_cache("train") is not None and plain.image_cache("train") is None
    for x, y in zip(a, b, strict=True):
        tf.nest.map_structure(np.testing.assert_array_equal, x, y)
    # Two epochs of the same frames are augmented differently.
    assert not np.array_equal(a[0][0], a[3][0])


def test_cache_holds_every_decoded_image_under_its_path(tmp_path):
    from PIL import Image

    root = _dataset_dir(tmp_path)
    data = _cache_data(root, 64)
    table = data.image_cache("train")
    assert data.image_cache("train") is table  # built once
    keys, values = table.export()
    assert len(keys) == 5
    for key, value in zip(keys.numpy(), values.numpy(), strict=True):
        expected = np.asarray(Image.open(key.decode()).convert("RGB"))
        np.testing.assert_array_equal(tf.io.parse_tensor(value, tf.uint8).numpy(), expected)
    # An image the cache does not hold reads as the empty string (the pipeline decodes the file).
    assert table.lookup(tf.constant("nowhere.png")).numpy() == b""


def test_cache_is_left_out_when_the_images_exceed_the_bound(tmp_path, caplog):
    root = _dataset_dir(tmp_path)
    # 5 images of 96 x 128 x 3 bytes = 180 KiB decoded; a 0 MiB bound turns the cache off and
    # 1 MiB holds them.
    assert _cache_data(root, 1).image_cache("train") is not None
    data = _cache_data(root, 0)
    with caplog.at_level(logging.INFO, logger="tltk.detectnet_v2.dataloader"):
        assert data.image_cache("train") is None
    assert next(iter(data.dataset("train", output="targets")))[0].shape == (2, 3, 96, 128)


def test_cache_bound_is_checked_against_the_decoded_size(tmp_path, monkeypatch, caplog):
    import tltk.data.memory as memory

    root = _dataset_dir(tmp_path)
    # A quarter of 400 KiB of "available memory" is 100 KiB < 180 KiB decoded: no cache.
    monkeypatch.setattr(memory, "available_memory", lambda: 400 * 1024)
    data = _cache_data(root, 64)
    with caplog.at_level(logging.INFO, logger="tltk.detectnet_v2.dataloader"):
        assert data.image_cache("train") is None
    assert "not cached" in caplog.text
