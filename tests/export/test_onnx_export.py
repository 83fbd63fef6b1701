"""Keras -> ONNX export: TAO names, dynamic batch, parity, .etlt container, atomic writes."""

from __future__ import annotations

import os

import numpy as np
import pytest

keras = pytest.importorskip("keras")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from tltk.errors import UsageError  # noqa: E402
from tltk.export import onnx_export  # noqa: E402
from tltk.export.onnx_export import (  # noqa: E402
    BATCH_DIM_NAME,
    default_output_path,
    export_keras_to_onnx,
    parity_check,
    resolve_output_names,
)

NAMES = {"output_cov": "output_cov/Sigmoid", "output_bbox": "output_bbox/BiasAdd"}
CHW = (3, 32, 48)


def _small_detector(seed: int = 0) -> keras.Model:
    """NCHW in, NCHW out, with BatchNorm carrying non-trivial statistics."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input(CHW, name="input_1")
    x = keras.layers.Permute((2, 3, 1), name="to_nhwc")(inp)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="conv1")(x)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.Activation("relu", name="relu1")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv2")(x)
    x = keras.layers.Activation("relu", name="relu2")(x)
    cov = keras.layers.Conv2D(2, 1, activation="sigmoid", name="output_cov")(x)
    bbox = keras.layers.Conv2D(8, 1, name="output_bbox")(x)
    cov = keras.layers.Permute((3, 1, 2), name="output_cov_nchw")(cov)
    bbox = keras.layers.Permute((3, 1, 2), name="output_bbox_nchw")(bbox)
    model = keras.Model(inp, [cov, bbox], name="tiny_detectnet")
    rng = np.random.default_rng(seed)
    bn = model.get_layer("bn1")
    gamma, beta, mean, var = bn.get_weights()
    bn.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.2, beta.shape),
                    rng.normal(0, 0.3, mean.shape), rng.uniform(0.5, 2.0, var.shape)])
    return model


@pytest.fixture(scope="module")
def model() -> keras.Model:
    return _small_detector()


@pytest.fixture(scope="module")
def exported(model: keras.Model, tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("export") / "model.onnx"
    report = export_keras_to_onnx(model, path, "input_1", NAMES)
    return path, report


def test_names_and_dynamic_batch_dim(exported) -> None:
    path, report = exported
    proto = onnx.load(str(path))
    assert [i.name for i in proto.graph.input] == ["input_1"]
    assert [o.name for o in proto.graph.output] == ["output_cov/Sigmoid", "output_bbox/BiasAdd"]
    for value in list(proto.graph.input) + list(proto.graph.output):
        assert value.type.tensor_type.shape.dim[0].dim_param == BATCH_DIM_NAME
    # the TAO names are real tensor names in the graph: the sigmoid and the bbox conv produce them
    producers = {out: node.op_type for node in proto.graph.node for out in node.output}
    assert producers["output_cov/Sigmoid"] == "Sigmoid"
    assert producers["output_bbox/BiasAdd"] == "Conv"
    assert report.input_shape == (-1, 3, 32, 48)
    assert report.output_shapes == [(-1, 2, 16, 24), (-1, 8, 16, 24)]
    assert report.size_bytes == os.path.getsize(path)


@pytest.mark.parametrize("batch", [1, 3])
def test_dynamic_batch_runs(exported, model: keras.Model, batch: int) -> None:
    path, _ = exported
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(batch).random((batch, *CHW), dtype=np.float32)
    cov, bbox = session.run(None, {"input_1": x})
    assert cov.shape == (batch, 2, 16, 24) and bbox.shape == (batch, 8, 16, 24)
    ref_cov, ref_bbox = (np.asarray(t) for t in model(x, training=False))
    assert np.max(np.abs(cov - ref_cov)) < 1e-4
    assert np.max(np.abs(bbox - ref_bbox)) < 1e-4


def test_parity_reported_below_1e4(exported, model: keras.Model) -> None:
    path, report = exported
    assert set(report.parity) == {"output_cov/Sigmoid", "output_bbox/BiasAdd"}
    assert 0.0 <= report.parity_max_abs_diff < 1e-4
    x = np.random.default_rng(7).random((2, *CHW), dtype=np.float32)
    diffs = parity_check(model, path, x)
    assert max(diffs.values()) < 1e-4
    # a different model must fail the parity check: the check can detect a mismatch
    other = _small_detector(seed=1)
    assert max(parity_check(other, path, x).values()) > 1e-3


def test_static_batch(model: keras.Model, tmp_path) -> None:
    report = export_keras_to_onnx(model, tmp_path / "static.onnx", "input_1", NAMES, dynamic_batch=False,
                                  static_batch_size=2)
    assert report.input_shape == (2, 3, 32, 48)
    proto = onnx.load(str(tmp_path / "static.onnx"))
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2


def test_etlt_output_decodes_to_the_same_onnx(model: keras.Model, exported, tmp_path) -> None:
    from tltk.modelfile.legacy import decode_legacy_file

    onnx_path, _ = exported
    etlt = tmp_path / "model.etlt"
    report = export_keras_to_onnx(model, etlt, "input_1", NAMES, key="tlt_encode")
    assert report.container == "etlt"
    data = etlt.read_bytes()
    assert data[:4] == b"\x00\x00\x00\x00"  # zero-length input name: ONNX payload
    decoded = decode_legacy_file(etlt, "tlt_encode")
    assert decoded.kind == "onnx"
    assert len(data) == 4 + 16 + len(decoded.payload)
    from_etlt = onnx.load_from_string(decoded.payload)
    onnx.checker.check_model(from_etlt)
    plain = onnx.load(str(onnx_path))
    # tf2onnx numbers its internal names per conversion, so compare structure and results
    assert [n.op_type for n in from_etlt.graph.node] == [n.op_type for n in plain.graph.node]
    assert [o.name for o in from_etlt.graph.output] == [o.name for o in plain.graph.output]
    x = np.random.default_rng(3).random((1, *CHW), dtype=np.float32)
    a = ort.InferenceSession(decoded.payload, providers=["CPUExecutionProvider"]).run(None, {"input_1": x})
    b = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"input_1": x})
    assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))
    assert report.parity_max_abs_diff < 1e-4
    assert max(parity_check(model, etlt, x, key="tlt_encode").values()) < 1e-4


def test_etlt_needs_a_key(model: keras.Model, tmp_path) -> None:
    with pytest.raises(UsageError, match="key"):
        export_keras_to_onnx(model, tmp_path / "m.etlt", "input_1", NAMES)
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_leaves_nothing_on_failure(model: keras.Model, tmp_path, monkeypatch) -> None:
    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space"):
        export_keras_to_onnx(model, tmp_path / "m.onnx", "input_1", NAMES, check_parity=False)
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_overwrite_when_asked(model: keras.Model, tmp_path) -> None:
    target = tmp_path / "m.onnx"
    target.write_bytes(b"keep me")
    with pytest.raises(UsageError, match="already exists"):
        export_keras_to_onnx(model, target, "input_1", NAMES, overwrite=False)
    assert target.read_bytes() == b"keep me"


def test_output_name_resolution(model: keras.Model) -> None:
    # by head layer name (behind the NCHW Permute) and by Keras output name
    assert resolve_output_names(model, NAMES) == {0: "output_cov/Sigmoid", 1: "output_bbox/BiasAdd"}
    assert resolve_output_names(model, {"output_bbox_nchw": "b"}) == {1: "b"}
    with pytest.raises(UsageError, match="matches 0 outputs"):
        resolve_output_names(model, {"conv9": "x"})
    with pytest.raises(UsageError, match="matches 0 outputs"):
        resolve_output_names(model, {"relu2": "x"})  # feeds both heads, but through convolutions
    with pytest.raises(UsageError, match="duplicate"):
        resolve_output_names(model, {"output_cov": "same", "output_bbox": "same"})


def test_mask_rcnn_style_names(tmp_path) -> None:
    keras.utils.set_random_seed(0)
    inp = keras.Input((3, 16, 16), name="image")
    x = keras.layers.Permute((2, 3, 1))(inp)
    det = keras.layers.Conv2D(6, 1, name="generate_detections")(x)
    mask = keras.layers.Conv2D(4, 1, name="mask_fcn_logits")(x)
    model = keras.Model(inp, [det, mask])
    report = export_keras_to_onnx(model, tmp_path / "mrcnn.onnx", "Input",
                                  {"generate_detections": "generate_detections",
                                   "mask_fcn_logits": "mask_fcn_logits/BiasAdd"})
    assert report.input_name == "Input"
    assert report.output_names == ["generate_detections", "mask_fcn_logits/BiasAdd"]


def test_dict_outputs(tmp_path) -> None:
    # models returning a dict (as tltk's DetectNet_v2 builder does) export and pass the parity check
    keras.utils.set_random_seed(0)
    inp = keras.Input((3, 16, 16), name="input_1")
    x = keras.layers.Permute((2, 3, 1))(inp)
    cov = keras.layers.Permute((3, 1, 2), name="cov_t")(keras.layers.Conv2D(2, 1, activation="sigmoid",
                                                                            name="output_cov")(x))
    bbox = keras.layers.Permute((3, 1, 2), name="bbox_t")(keras.layers.Conv2D(8, 1, name="output_bbox")(x))
    model = keras.Model(inp, {"output_cov": cov, "output_bbox": bbox})
    report = export_keras_to_onnx(model, tmp_path / "dict.onnx", "input_1", NAMES)
    assert sorted(report.output_names) == ["output_bbox/BiasAdd", "output_cov/Sigmoid"]
    shapes = dict(zip(report.output_names, report.output_shapes, strict=True))
    assert shapes == {"output_cov/Sigmoid": (-1, 2, 16, 16), "output_bbox/BiasAdd": (-1, 8, 16, 16)}
    assert report.parity_max_abs_diff < 1e-4


def test_default_output_path() -> None:
    assert default_output_path("results/weights/model.hdf5") == os.path.join("results", "weights", "model.onnx")
    assert default_output_path("m.tlt", "out/x.etlt") == "out/x.etlt"
    assert default_output_path("m.tlt", "out/x.onnx") == "out/x.onnx"
    assert default_output_path("m.tlt", "out/x") == "out/x.onnx"
    assert default_output_path("m.tlt", "out/x_onnx_v2") == "out/x_onnx_v2"


def test_module_import_is_light() -> None:
    # the module must not import TensorFlow at import time (CLI start-up)
    assert "tensorflow" not in onnx_export.__dict__
