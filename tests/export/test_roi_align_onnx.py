"""MaskRCNN's multilevel ROIAlign in exported graphs: the default MatMul blend
(tltk.export.onnx_passes.weighted_sums_to_matmul) and the native ONNX ``RoiAlign``
(tltk.export.roi_align_onnx, ``native_roi_align=True``).

Hand-worked: FPN maps that are linear ramps (channel 0 = row, channel 1 = column, plus a
per-image constant) make every bilinear sample equal its own position, so TAO's result is known
in closed form: bin ``i`` of a box on level ``l`` reads ``min(y1 / 2**l + (i + 0.5) * h / 2**l / S,
H_l - 1)`` (neighbours clamp to the last row).  Keras, the rewritten graph and the gather graph
must all give it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tf2onnx")
ort = pytest.importorskip("onnxruntime")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from tltk.export.onnx_export import convert_keras_to_onnx  # noqa: E402
from tltk.export.onnx_passes import FORBIDDEN_OPS, tensorrt_problems  # noqa: E402
from tltk.mask_rcnn.roi_align import MultilevelRoiAlign  # noqa: E402

HEIGHT, WIDTH, MIN_LEVEL, LEVELS, SIZE = 256, 384, 2, 3, 4
BOXES = np.array([
    [0.0, 0.0, 255.0, 383.0],        # the whole image: level 4, samples past the last row/column
    [10.3, 20.7, 150.2, 210.9],      # level 3
    [200.5, 300.25, 255.0, 383.0],   # level 2 at the bottom-right border
    [5.0, 5.0, 5.0, 5.0],            # empty box
    [0.0, 0.0, 0.0, 0.0],            # an empty detection slot
    [30.0, 40.0, 29.5, 60.0],        # y2 < y1 (the +1 coder gives such boxes)
    [100.0, 100.0, 101.0, 101.0],    # smaller than one feature pixel
    [17.0, 3.0, 130.0, 250.0],       # level 3
], np.float32)


class _Ramps(keras.layers.Layer):
    """FPN-like NHWC maps: channel 0 = row, channel 1 = column, + the image's mean (per image)."""

    def call(self, images):
        offset = tf.reduce_mean(images, axis=[1, 2, 3])[:, None, None, None]
        maps = []
        for level in range(MIN_LEVEL, MIN_LEVEL + LEVELS):
            h, w = HEIGHT // 2 ** level, WIDTH // 2 ** level
            rows, cols = tf.meshgrid(tf.range(h, dtype=tf.float32), tf.range(w, dtype=tf.float32), indexing="ij")
            maps.append(tf.stack([rows, cols], axis=-1)[None] + offset)
        return maps


class _Boxes(keras.layers.Layer):
    """The fixed :data:`BOXES` for every image of the batch."""

    def call(self, images):
        return tf.tile(tf.constant(BOXES)[None], [tf.shape(images)[0], 1, 1])


def _model() -> keras.Model:
    images = keras.Input((3, HEIGHT, WIDTH), name="Input")
    maps = _Ramps()(images)
    crops = MultilevelRoiAlign(SIZE, MIN_LEVEL, name="multilevel_crop_resize")(maps, _Boxes()(images))
    return keras.Model(images, {"crops": crops})


def _expected(offsets: np.ndarray) -> np.ndarray:
    """TAO's samples of the ramps, worked out directly: ``[B, R, S, S, 2]``."""
    out = np.zeros((len(offsets), len(BOXES), SIZE, SIZE, 2), np.float64)
    for r, (y1, x1, y2, x2) in enumerate(BOXES.astype(np.float64)):
        area = max((y2 - y1) * (x2 - x1), 1e-8)
        level = int(np.clip(np.floor(np.log2(np.sqrt(area) / 224.0)) + 4, MIN_LEVEL, MIN_LEVEL + LEVELS - 1))
        scale = 2.0 ** -level
        h_l, w_l = HEIGHT * scale, WIDTH * scale
        ys = y1 * scale + (np.arange(SIZE) + 0.5) * (y2 - y1) * scale / SIZE
        xs = x1 * scale + (np.arange(SIZE) + 0.5) * (x2 - x1) * scale / SIZE
        out[:, r, :, :, 0] = np.minimum(ys, h_l - 1)[:, None]
        out[:, r, :, :, 1] = np.minimum(xs, w_l - 1)[None, :]
    return out + offsets[:, None, None, None, None]


def _images() -> tuple[np.ndarray, np.ndarray]:
    images = np.stack([np.full((3, HEIGHT, WIDTH), v, np.float32) for v in (0.0, 7.0, 1.5)])
    return images, np.array([0.0, 7.0, 1.5])


def _run(proto, images: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"Input": images})[0]


def test_native_roi_align_gives_tao_s_samples() -> None:
    model = _model()
    images, offsets = _images()
    expected = _expected(offsets)
    np.testing.assert_allclose(model.predict_on_batch(images)["crops"], expected, atol=2e-4)

    native = convert_keras_to_onnx(model, "Input", {}, native_roi_align=True)
    blend = convert_keras_to_onnx(model, "Input", {})  # the default: gathers blended by one MatMul
    converted = convert_keras_to_onnx(model, "Input", {}, rewrites=False)  # Mul + ReduceSum
    ops = [node.op_type for node in native.graph.node]
    assert ops.count("RoiAlign") == 1 and "ReduceSum" not in ops
    blend_ops = [node.op_type for node in blend.graph.node]
    assert "RoiAlign" not in blend_ops and "ReduceSum" not in blend_ops and blend_ops.count("MatMul") == 1
    assert "ReduceSum" in [node.op_type for node in converted.graph.node]
    roi_align = next(node for node in native.graph.node if node.op_type == "RoiAlign")
    attrs = {a.name: a for a in roi_align.attribute}
    assert attrs["sampling_ratio"].i == 1 and attrs["coordinate_transformation_mode"].s == b"half_pixel"
    assert attrs["mode"].s == b"avg" and (attrs["output_height"].i, attrs["output_width"].i) == (SIZE, SIZE)
    assert not {node.op_type for node in native.graph.node} & FORBIDDEN_OPS
    assert {node.domain for node in native.graph.node} <= {"", "ai.onnx"}
    assert [o.name for o in native.graph.output] == list(model.output_names)
    assert tensorrt_problems(native) == []

    got = _run(native, images)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=2e-4)
    for other in (blend, converted):
        np.testing.assert_allclose(_run(other, images), expected, atol=2e-4)
    # a batch of one through the dynamic batch
    np.testing.assert_allclose(_run(native, images[1:2]), expected[1:2], atol=2e-4)
    np.testing.assert_allclose(_run(blend, images[1:2]), expected[1:2], atol=2e-4)


def test_opset_15_keeps_the_gathers() -> None:
    proto = convert_keras_to_onnx(_model(), "Input", {}, opset=15, native_roi_align=True)
    assert "RoiAlign" not in [node.op_type for node in proto.graph.node]
    images, offsets = _images()
    np.testing.assert_allclose(_run(proto, images), _expected(offsets), atol=2e-4)


_spec = importlib.util.spec_from_file_location(
    "_tiny_model", Path(__file__).resolve().parents[1] / "mask_rcnn" / "_tiny_model.py")
assert _spec is not None and _spec.loader is not None
tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny)


def test_mask_rcnn_rewritten_graphs_equal_the_converted_graph() -> None:
    from tltk.mask_rcnn.model import INPUT_NAME, ONNX_OUTPUT_NAMES, build_mask_rcnn

    params = tiny.tiny_params()
    inference, _ = build_mask_rcnn(params)
    blend = convert_keras_to_onnx(inference, INPUT_NAME, ONNX_OUTPUT_NAMES)
    native = convert_keras_to_onnx(inference, INPUT_NAME, ONNX_OUTPUT_NAMES, native_roi_align=True)
    converted = convert_keras_to_onnx(inference, INPUT_NAME, ONNX_OUTPUT_NAMES, rewrites=False)
    ops = [node.op_type for node in native.graph.node]
    assert ops.count("RoiAlign") == 2  # box head (7x7) and mask head (14x14)
    assert "ReduceSum" not in ops and "Transpose" not in [
        n.op_type for n in native.graph.node if n.name.startswith("tltk_roi_align")]  # layouts cancel
    blend_ops = [node.op_type for node in blend.graph.node]
    assert "ReduceSum" not in blend_ops and "Pad" in [n.op_type for n in converted.graph.node]
    # the stem's Pad is folded into MaxPool; the box head's CHW transpose into fc6's rows
    assert not [n for n in blend.graph.node if n.op_type == "Pad" and "pool1_pad" in n.name]
    assert not [n for n in blend.graph.node if "box_head_chw" in n.name]
    assert [n for n in converted.graph.node if "box_head_chw" in n.name]
    for proto in (blend, native):
        assert tensorrt_problems(proto) == []
        assert [o.name for o in proto.graph.output] == ["generate_detections", "mask_fcn_logits/BiasAdd"]

    images, _ = tiny.synthetic_batch(params, batch=3)
    sessions = [ort.InferenceSession(p.SerializeToString(), providers=["CPUExecutionProvider"])
                for p in (blend, native, converted)]
    (det, masks), (det_n, masks_n), (det_ref, masks_ref) = (s.run(None, {INPUT_NAME: images}) for s in sessions)
    assert np.any(det_ref[..., 5] > 0)
    for d, m in ((det, masks), (det_n, masks_n)):
        np.testing.assert_allclose(d, det_ref, atol=1e-4)
        np.testing.assert_allclose(m, masks_ref, atol=1e-4)
    keras_out = inference.predict_on_batch(images)
    np.testing.assert_allclose(det, keras_out["generate_detections"], atol=1e-3)
