"""MaskRCNN input pipeline: TAO records load, targets at the documented shapes, geometry stays aligned."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tltk.data.synthetic import synthesize_coco
from tltk.errors import InvalidInputError, SpecError
from tltk.mask_rcnn.calibration import calibration_batches, loader_batches, preprocess_file
from tltk.mask_rcnn.dataloader import NORM_MEAN, NORM_STD, MaskRCNNData, preprocess_image
from tltk.mask_rcnn.dataset_convert import convert_coco
from tltk.models import load_spec

SPEC = """
seed: %(seed)d
train_batch_size: %(batch)d
eval_batch_size: %(batch)d
num_steps_per_eval: 10
total_steps: 20
init_learning_rate: 0.01
data_config {
  image_size: "%(size)s"
  augment_input_data: %(augment)s
  num_classes: %(num_classes)d
  skip_crowd_during_training: true
  training_file_pattern: "%(train)s"
  validation_file_pattern: "%(val)s"
  val_json_file: "%(json)s"
  max_num_instances: %(max_inst)d
  shuffle_buffer_size: 8
  n_workers: 2
  eval_samples: %(eval_samples)d
}
maskrcnn_config {
  gt_mask_size: %(mask)d
}
"""


def _spec(tmp_path, **kw):
    values = {"seed": 5, "batch": 1, "size": "(128, 128)", "augment": "false", "num_classes": 3, "train": "",
              "val": "", "json": "", "max_inst": 4, "mask": 8, "eval_samples": 0}
    values.update(kw)
    values["val"] = values["val"] or values["train"]
    path = tmp_path / f"spec_{len(list(tmp_path.glob('spec_*')))}.txt"
    path.write_text(SPEC % values)
    return load_spec(path, model="mask_rcnn", kind="experiment").message


def _png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def _feature(kind: str, values: list) -> tf.train.Feature:
    if kind == "bytes":
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
    if kind == "int64":
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def _tao_record(image: np.ndarray, boxes_px, labels, crowd, masks, source_id=b"42", encoding="PNG") -> bytes:
    """A record with TAO's keys, written with the raw protobuf API (not tltk's writer)."""
    h, w = image.shape[:2]
    out = io.BytesIO()
    Image.fromarray(image).save(out, format=encoding, quality=100)
    boxes = np.asarray(boxes_px, np.float64).reshape(-1, 4)  # x, y, w, h
    feats = {
        "image/height": _feature("int64", [h]), "image/width": _feature("int64", [w]),
        "image/filename": _feature("bytes", [b"hand.jpg"]), "image/source_id": _feature("bytes", [source_id]),
        "image/key/sha256": _feature("bytes", [b"0" * 64]), "image/encoded": _feature("bytes", [out.getvalue()]),
        "image/format": _feature("bytes", [b"jpeg"]),
        "image/object/bbox/xmin": _feature("float", list(boxes[:, 0] / w)),
        "image/object/bbox/xmax": _feature("float", list((boxes[:, 0] + boxes[:, 2]) / w)),
        "image/object/bbox/ymin": _feature("float", list(boxes[:, 1] / h)),
        "image/object/bbox/ymax": _feature("float", list((boxes[:, 1] + boxes[:, 3]) / h)),
        "image/object/class/text": _feature("bytes", [f"c{v}".encode() for v in labels]),
        "image/object/class/label": _feature("int64", list(labels)),
        "image/object/is_crowd": _feature("int64", list(crowd)),
        "image/object/area": _feature("float", list(boxes[:, 2] * boxes[:, 3])),
        "image/object/mask": _feature("bytes", [_png(m) for m in masks]),
    }
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


def _write(tmp_path, name: str, records: list[bytes], categories: dict[int, str]) -> tuple[str, str]:
    path = tmp_path / f"{name}-00000-of-00001.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for rec in records:
            writer.write(rec)
    ann = tmp_path / f"{name}.json"
    ann.write_text(json.dumps({"images": [{"id": 1, "file_name": "x", "width": 1, "height": 1}], "annotations": [],
                               "categories": [{"id": k, "name": v} for k, v in categories.items()]}))
    return str(tmp_path / f"{name}-*.tfrecord"), str(ann)


def _box_mask(h: int, w: int, box) -> np.ndarray:
    x, y, bw, bh = box
    m = np.zeros((h, w), np.uint8)
    m[y:y + bh, x:x + bw] = 1
    return m


def test_hand_built_tao_record_loads_with_every_target(tmp_path):
    image = np.full((32, 64, 3), 90, np.uint8)
    boxes = [(4, 2, 20, 10), (30, 8, 30, 20)]
    masks = [_box_mask(32, 64, b) for b in boxes]
    pattern, ann = _write(tmp_path, "hand", [_tao_record(image, boxes, [9, 5], [0, 0], masks, encoding="JPEG")],
                          {5: "five", 9: "nine"})
    exp = _spec(tmp_path, train=pattern, json=ann)
    data = MaskRCNNData(exp)
    assert data.num_examples("train") == 1
    (images, targets), = list(data.dataset("train", training=False, repeat=False, shuffle=False))
    assert images.shape == (1, 3, 128, 128) and images.dtype == tf.float32
    # scale = min(128/32, 128/64) = 2 -> 64 x 128 image, rows 64..127 padded with zeros.
    np.testing.assert_allclose(targets["image_info"].numpy(), [[64, 128, 2, 32, 64]])
    assert np.all(images.numpy()[0, :, 64:, :] == 0.0)
    expected_grey = (90 / 255 - np.asarray(NORM_MEAN)) / np.asarray(NORM_STD)
    np.testing.assert_allclose(images.numpy()[0, :, 30, 60], expected_grey, atol=0.05)
    assert targets["source_ids"].numpy().tolist() == [42]
    np.testing.assert_allclose(targets["gt_boxes"].numpy()[0], [[4, 8, 24, 48], [16, 60, 56, 120],
                                                                [-1] * 4, [-1] * 4], atol=1e-4)
    assert targets["gt_classes"].numpy().tolist() == [[2, 1, -1, -1]]  # category 9 -> 2, 5 -> 1
    crops = targets["cropped_gt_masks"].numpy()[0]
    assert crops.shape == (4, 12, 12)
    np.testing.assert_allclose(crops[:2, 2:10, 2:10], 1.0)
    assert np.all(crops[:2, :2] == 0) and np.all(crops[:2, 10:] == 0) and np.all(crops[:2, :, :2] == 0)
    assert np.all(crops[2:] == -1.0)
    shapes = {k: tuple(v.shape) for k, v in targets.items()}
    assert shapes == {k: (1, *v) for k, v in data.target_shapes().items()}
    for level in range(2, 7):
        n = 128 // 2**level
        assert shapes[f"score_targets_{level}"] == (1, n, n, 3)
        assert shapes[f"box_targets_{level}"] == (1, n, n, 12)
    scores = np.concatenate([targets[f"score_targets_{lvl}"].numpy().ravel() for lvl in range(2, 7)])
    assert 2 <= (scores == 1).sum() <= 128 and (scores >= 0).sum() == 256
    assert targets["score_targets_2"].dtype == tf.int32 and targets["gt_classes"].dtype == tf.int32
    assert targets["source_ids"].dtype == tf.int64


def _l_shape_image():
    """64 x 32 grey image with a red L (the mask) whose mirror image differs from it."""
    image = np.full((32, 64, 3), 128, np.uint8)
    mask = np.zeros((32, 64), np.uint8)
    mask[4:28, 8:16] = 1
    mask[20:28, 16:40] = 1
    image[mask == 1] = (255, 0, 0)
    return image, mask


def _paste(crop: np.ndarray, box, shape) -> np.ndarray:
    """The crop (S+4 with a 2-px border) painted back on an image grid by bin centres."""
    size = crop.shape[0] - 4
    y1, x1, y2, x2 = box
    out = np.zeros(shape, np.float32)
    ys = np.arange(shape[0]) + 0.5
    xs = np.arange(shape[1]) + 0.5
    iy = np.floor((ys - y1) / (y2 - y1) * size).astype(int)
    ix = np.floor((xs - x1) / (x2 - x1) * size).astype(int)
    in_y = (iy >= 0) & (iy < size)
    in_x = (ix >= 0) & (ix < size)
    out[np.ix_(in_y, in_x)] = crop[2 + iy[in_y]][:, 2 + ix[in_x]]
    return out


def test_masks_and_boxes_stay_aligned_after_flip_resize_and_padding(tmp_path):
    image, mask = _l_shape_image()
    pattern, ann = _write(tmp_path, "l", [_tao_record(image, [(8, 4, 32, 24)], [1], [0], [mask])], {1: "l"})
    exp = _spec(tmp_path, train=pattern, json=ann, size="(128, 192)", augment="true", num_classes=2, mask=24)
    data = MaskRCNNData(exp)
    flips = set()
    for images, targets in data.dataset("train", batch_size=1).take(8):
        # scale = min(128/32, 192/64) = 3 -> 96 x 192, padded to 128 rows.
        np.testing.assert_allclose(targets["image_info"].numpy()[0], [96, 192, 3, 32, 64])
        red = images.numpy()[0, 0, :96] > 1.2
        assert np.all(images.numpy()[0, :, 96:] == 0.0)
        box = targets["gt_boxes"].numpy()[0, 0]
        flipped = bool(box[1] > 60)
        flips.add(flipped)
        np.testing.assert_allclose(box, [12, 72, 84, 168] if flipped else [12, 24, 84, 120], atol=1e-3)
        crop = targets["cropped_gt_masks"].numpy()[0, 0]
        pasted = _paste(crop, box, (96, 192)) >= 0.5
        assert np.mean(pasted == red) > 0.995
        mirrored = _paste(crop[:, ::-1], box, (96, 192)) >= 0.5
        assert np.mean(mirrored == red) < 0.95
    assert flips == {True, False}


def test_crowd_skipping_and_max_num_instances(tmp_path, caplog):
    image = np.zeros((40, 40, 3), np.uint8)
    # Areas: 4, 100, 36, 400 (crowd), 16.
    boxes = [(0, 0, 2, 2), (5, 5, 10, 10), (20, 20, 6, 6), (0, 20, 20, 20), (30, 0, 4, 4)]
    masks = [_box_mask(40, 40, b) for b in boxes]
    pattern, ann = _write(tmp_path, "crowd", [_tao_record(image, boxes, [1, 2, 3, 1, 2], [0, 0, 0, 1, 0], masks)],
                          {1: "a", 2: "b", 3: "c"})
    exp = _spec(tmp_path, train=pattern, json=ann, max_inst=3, num_classes=4)
    data = MaskRCNNData(exp)
    stats = data.stats("train")
    assert stats.crowd == 1 and stats.num_over_limit == 1 and stats.over_limit == [("hand.jpg", 4)]
    assert "more than data_config.max_num_instances = 3" in caplog.text
    _, train = next(iter(data.dataset("train", training=True, repeat=False)))
    # Training drops the crowd box, then keeps the 3 largest of the 4 left in their order: 1, 2, 4.
    assert train["gt_classes"].numpy().tolist() == [[2, 3, 2]]
    _, evaluation = next(iter(data.dataset("train", training=False, repeat=False)))
    # Without crowd skipping the crowd box (area 400) is the largest: 1, 2, 3.
    assert evaluation["gt_classes"].numpy().tolist() == [[2, 3, 1]]
    np.testing.assert_allclose(evaluation["gt_boxes"].numpy()[0, 2], [64, 0, 128, 64], atol=1e-4)


def test_unknown_category_is_named(tmp_path):
    image = np.zeros((16, 16, 3), np.uint8)
    rec = _tao_record(image, [(0, 0, 8, 8)], [7], [0], [_box_mask(16, 16, (0, 0, 8, 8))])
    pattern, ann = _write(tmp_path, "unk", [rec], {1: "a", 2: "b"})
    data = MaskRCNNData(_spec(tmp_path, train=pattern, json=ann))
    with pytest.raises(InvalidInputError, match="category id 7 \\('c7'\\) is not in the category map"):
        data.check_categories("train")
    # The spec rules check num_classes against val_json_file's categories when the spec loads.
    with pytest.raises(SpecError, match="category id 2 \\('b'\\) does not fit"):
        _spec(tmp_path, train=pattern, json=ann, num_classes=2)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("mrcnn")
    syn = synthesize_coco(root / "data", num_images=10, image_size=(160, 96), seed=11, val_fraction=0.3, workers=1)
    out = root / "tfrecords"
    for split in ("train", "val"):
        convert_coco(syn.files[f"images_{split}"], syn.files[f"annotations_{split}"], out, num_shards=2, workers=1)
    return root, syn


def _synthetic_spec(tmp_path, synthetic, **kw):
    root, syn = synthetic
    return _spec(tmp_path, train=str(root / "tfrecords" / "instances_train-*"),
                 val=str(root / "tfrecords" / "instances_val-*"), json=syn.files["annotations_val"],
                 num_classes=4, size="(128, 192)", max_inst=12, mask=16, **kw)


def test_synthetic_data_end_to_end(tmp_path, synthetic):
    data = MaskRCNNData(_synthetic_spec(tmp_path, synthetic, batch=2, augment="true", eval_samples=2))
    assert data.num_examples("train") == 7 and data.num_examples("val") == 3
    images, targets = next(iter(data.dataset("train")))
    assert images.shape == (2, 3, 128, 192)
    assert {k: tuple(v.shape) for k, v in targets.items()} == {k: (2, *v) for k, v in data.target_shapes().items()}
    classes = targets["gt_classes"].numpy()
    assert set(classes.ravel()) <= {-1, 1, 2, 3} and (classes > 0).any()
    val = list(data.dataset("val", output="inference"))
    assert [b[0].shape[0] for b in val] == [2]  # eval_samples = 2
    assert set(val[0][1]) == {"image_info", "source_ids"}
    # Shards are read block by block (TAO's interleave): shard 0 holds images 1 and 3.
    assert val[0][1]["source_ids"].numpy().tolist() == [1, 3]


def test_stream_is_deterministic_and_skip_continues_it(tmp_path, synthetic):
    exp = _synthetic_spec(tmp_path, synthetic, augment="true")
    first = [(i.numpy(), t["score_targets_3"].numpy(), t["gt_boxes"].numpy())
             for i, t in MaskRCNNData(exp).dataset("train").take(4)]
    again = [(i.numpy(), t["score_targets_3"].numpy(), t["gt_boxes"].numpy())
             for i, t in MaskRCNNData(exp).dataset("train").take(4)]
    for a, b in zip(first, again, strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
    skipped = [(i.numpy(), t["score_targets_3"].numpy(), t["gt_boxes"].numpy())
               for i, t in MaskRCNNData(exp).dataset("train", skip=2).take(2)]
    for a, b in zip(first[2:], skipped, strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)



def _cached_and_plain(tmp_path, synthetic, **kw):
    cached, plain = MaskRCNNData(_synthetic_spec(tmp_path, synthetic, **kw)), MaskRCNNData(_synthetic_spec(
        tmp_path, synthetic, **kw))
    plain.decoded_cache_mb = 0
    return cached, plain


def test_decoded_cache_gives_the_same_batches_as_decoding_every_epoch(tmp_path, synthetic):
    cached, plain = _cached_and_plain(tmp_path, synthetic, augment="true", batch=2)
    # 7 training images, batch 2: 8 batches are more than two epochs (new flips and anchor samples each).
    a = [tf.nest.map_structure(lambda t: t.numpy(), b) for b in cached.dataset("train").take(8)]
    b = [tf.nest.map_structure(lambda t: t.numpy(), b) for b in plain.dataset("train").take(8)]
    assert cached.decoded_cache("train") is not None and plain.decoded_cache("train") is None
    for x, y in zip(a, b, strict=True):
        tf.nest.map_structure(np.testing.assert_array_equal, x, y)
    # Resuming (skip) reads the cache too and continues the same stream.
    resumed = [tf.nest.map_structure(lambda t: t.numpy(), b) for b in cached.dataset("train", skip=6).take(5)]
    for x, y in zip(a[3:], resumed, strict=True):
        tf.nest.map_structure(np.testing.assert_array_equal, x, y)


def test_decoded_cache_holds_each_record_once_and_respects_its_bound(tmp_path, synthetic, monkeypatch):
    import tltk.data.memory as memory

    cached, _ = _cached_and_plain(tmp_path, synthetic)
    table = cached.decoded_cache("train")
    assert cached.decoded_cache("train") is table and int(table.size()) == 7
    assert cached.decoded_cache("val") is None  # validation is read once per evaluation
    # An unknown record reads as the empty string (the pipeline then decodes it).
    assert table.lookup(tf.constant(12345, tf.int64)).numpy() == b""
    # Seven 96x160 RGB images alone are 7 x 46080 bytes = 315 KiB: a quarter of 1 MiB is too little.
    monkeypatch.setattr(memory, "available_memory", lambda: 2**20)
    assert MaskRCNNData(_synthetic_spec(tmp_path, synthetic)).decoded_cache("train") is None


def test_one_preprocessing_for_pipeline_inference_and_calibration(tmp_path, synthetic):
    _, syn = synthetic
    data = MaskRCNNData(_synthetic_spec(tmp_path, synthetic))
    images = next(iter(data.dataset("val", training=False, shuffle=False, output="images", batch_size=1)))
    first = syn.files["images_val"] + "/000000.png"
    pixels = np.asarray(Image.open(first).convert("RGB"))
    chw, info = preprocess_image(pixels, (128, 192))
    np.testing.assert_allclose(chw, images.numpy()[0], atol=1e-5)
    # 160 x 96 -> scale min(128/96, 192/160) = 1.2 -> 115 x 192; rows 115.. are padding.
    np.testing.assert_allclose(info, [115, 192, 1.2, 96, 160], rtol=1e-6)
    assert np.all(chw[:, 115:] == 0.0) and np.any(chw[:, 114] != 0.0)
    np.testing.assert_allclose(preprocess_file(first, (128, 192)), chw)

    cal_file = tmp_path / "cal.tensorfile"
    from_dir = list(calibration_batches(data, cal_file, syn.files["images_val"], batch_size=1, batches=3))
    assert cal_file.exists() and len(from_dir) == 3
    again = list(calibration_batches(data, cal_file, None, batch_size=1, batches=3))
    for a, b in zip(from_dir, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(np.allclose(b[0], chw) for b in from_dir)
    loader = list(loader_batches(data, batch_size=2, batches=2))
    assert [b.shape for b in loader] == [(2, 3, 128, 192)] * 2
    loader_file = tmp_path / "loader.tensorfile"
    written = list(calibration_batches(data, loader_file, None, batch_size=2, batches=2))
    assert loader_file.exists()
    for a, b in zip(loader, written, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(("shape", "size", "scaled"), [((480, 640), (256, 384), (256, 341)),
                                                        ((60, 100), (128, 192), (115, 192))])
def test_letterbox_matches_a_pil_resize_within_one_grey_level(shape, size, scaled):
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    chw, info = preprocess_image(image, size)
    sh, sw = scaled
    np.testing.assert_allclose(info, [sh, sw, min(size[0] / shape[0], size[1] / shape[1]), *shape], rtol=1e-6)
    resized = np.asarray(Image.fromarray(image).resize((sw, sh), Image.BILINEAR), np.float32) / 255.0
    expected = ((resized - np.asarray(NORM_MEAN)) / np.asarray(NORM_STD)).transpose(2, 0, 1)
    assert np.abs(chw[:, :sh, :sw] - expected).max() <= 1.0 / 255.0 / 0.224 + 1e-4
    assert np.all(chw[:, sh:] == 0.0) and np.all(chw[:, :, sw:] == 0.0)
