"""INT8 export of a quantization-aware model: learned ranges -> ONNX names, cache, Q/DQ model."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from tltk.core.qat import FakeQuant, quantize_model  # noqa: E402
from tltk.errors import InvalidInputError  # noqa: E402
from tltk.export.calibration import activation_tensor_names  # noqa: E402
from tltk.export.calibration_cache import ActivationRanges, amax_to_scale, read_calibration_cache  # noqa: E402
from tltk.export.onnx_export import convert_keras_to_onnx  # noqa: E402
from tltk.export.pipeline import export_model  # noqa: E402
from tltk.export.qat_export import (  # noqa: E402
    LAYER_KEY_PREFIX,
    has_layer_keys,
    match_onnx_nodes,
    qat_export_inputs,
    resolve_qat_ranges,
)

CHW = (3, 32, 32)
NAMES = {"output_map": "output_map/BiasAdd"}


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((n, *CHW), dtype=np.float32)


@pytest.fixture(scope="module")
def qat_model() -> keras.Model:
    """A tiny NCHW conv net (conv + BN + ReLU, depthwise, 1x1 head) after a few QAT steps."""
    keras.utils.set_random_seed(3)
    inp = keras.Input(CHW, name="input_1")
    x = keras.layers.Permute((2, 3, 1), name="input_nhwc")(inp)
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv1")(x)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.Activation("relu", name="relu1")(x)
    x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same", activation="relu", name="dw")(x)
    x = keras.layers.Conv2D(8, 1, activation="relu", name="conv2")(x)
    x = keras.layers.Conv2D(2, 1, name="output_map")(x)
    model = keras.Model(inp, keras.layers.Permute((3, 1, 2), name="output_map_nchw")(x), name="tiny")
    quantized = quantize_model(model)
    quantized.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    targets = np.random.default_rng(1).normal(size=(12, 2, 16, 16)).astype(np.float32)
    quantized.fit(_images(12, 0), targets, batch_size=4, epochs=1, verbose=0)
    return quantized


def _amax(model: keras.Model, name: str) -> float:
    return float(model.get_layer(name).amax.numpy())


def test_qat_export_inputs_strips_and_keys_ranges_by_layer(qat_model: keras.Model) -> None:
    float_model, ranges = qat_export_inputs(qat_model)
    assert not any(isinstance(layer, FakeQuant) for layer in float_model.layers)
    assert ranges.method == "qat" and has_layer_keys(ranges)
    assert dict(ranges.amax) == {LAYER_KEY_PREFIX + "conv1": _amax(qat_model, "input_nhwc_qdq"),
                                 LAYER_KEY_PREFIX + "dw": _amax(qat_model, "relu1_qdq"),
                                 LAYER_KEY_PREFIX + "conv2": _amax(qat_model, "dw_qdq"),
                                 LAYER_KEY_PREFIX + "output_map": _amax(qat_model, "conv2_qdq")}


def test_ranges_resolve_to_the_quantizable_onnx_tensors(qat_model: keras.Model) -> None:
    float_model, ranges = qat_export_inputs(qat_model)
    proto = convert_keras_to_onnx(float_model, "input_1", NAMES)
    matches = match_onnx_nodes(float_model, proto)
    # conv1 is fused with bn1 by the converter (its weights change and its node takes bn1's name)
    # and still matches, by its weights up to a per-channel factor.
    assert sorted(matches.values()) == ["conv1", "conv2", "dw", "output_map"]
    resolved = resolve_qat_ranges(float_model, proto, ranges)
    assert not has_layer_keys(resolved) and resolved.method == "qat"
    assert list(resolved) == activation_tensor_names(proto, scope="quantizable")
    assert resolved["input_1"] == _amax(qat_model, "input_nhwc_qdq")
    by_node = {node.input[0]: matches[node.name] for node in proto.graph.node if node.name in matches}
    layer_amax = {"conv1": "input_nhwc_qdq", "dw": "relu1_qdq", "conv2": "dw_qdq", "output_map": "conv2_qdq"}
    for tensor, layer in by_node.items():
        assert resolved[tensor] == _amax(qat_model, layer_amax[layer])


def test_resolution_keeps_onnx_names_and_rejects_unmatched_layer_keys(qat_model: keras.Model) -> None:
    float_model, _ = qat_export_inputs(qat_model)
    proto = convert_keras_to_onnx(float_model, "input_1", NAMES)
    plain = ActivationRanges({"input_1": 2.0}, method="qat")
    assert dict(resolve_qat_ranges(float_model, proto, plain).amax) == {"input_1": 2.0}
    with pytest.raises(InvalidInputError, match="could be matched"):
        resolve_qat_ranges(float_model, proto, ActivationRanges({LAYER_KEY_PREFIX + "nope": 1.0}, method="qat"))


def test_int8_export_uses_the_learned_ranges(qat_model: keras.Model, tmp_path) -> None:
    float_model, ranges = qat_export_inputs(qat_model)
    out = tmp_path / "model.onnx"
    report = export_model(float_model, out, "input_1", NAMES, data_type="int8", qat_ranges=ranges,
                          cal_cache_file=tmp_path / "cal.bin", trt_version="10.3.0",
                          cal_json_file=tmp_path / "scales.json")
    assert report["calibration"] == {"method": "qat", "tensors": 4, "images": 0, "source": "qat"}
    assert report["qdq"]["quantized_nodes"] == 4 and report["qdq"]["skipped"] == {}

    input_amax = _amax(qat_model, "input_nhwc_qdq")
    _, cache = read_calibration_cache(tmp_path / "cal.bin")
    assert cache.scale("input_1") == amax_to_scale(input_amax)
    assert cache.scale("input_1") == pytest.approx(input_amax / 127, rel=1e-6)
    assert ActivationRanges.from_tensor_scales_json(tmp_path / "scales.json")["input_1"] == input_amax

    qdq = onnx.load(report["qdq_onnx"])
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in qdq.graph.initializer}
    quant = next(n for n in qdq.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "input_1")
    assert float(inits[quant.input[1]]) == pytest.approx(input_amax / 127, rel=1e-6)

    x = _images(4, 7)
    session = ort.InferenceSession(report["qdq_onnx"], providers=["CPUExecutionProvider"])
    got = session.run(None, {"input_1": x})[0]
    want = np.asarray(qat_model(x, training=False))
    fp32 = np.asarray(float_model(x, training=False))
    # The Q/DQ model computes what the QAT model computes: far closer to it than the float model
    # is (folding bn1 into conv1 and float summation order only flip the rounding of a few values).
    assert np.abs(got - want).max() < 0.1 * np.abs(want).max()
    assert np.abs(got - want).mean() < 0.1 * np.abs(fp32 - want).mean()


def test_pipeline_exports_a_qat_model_as_its_float_twin(qat_model: keras.Model, tmp_path) -> None:
    report = export_model(qat_model, tmp_path / "m.onnx", "input_1", NAMES, data_type="int8",
                          cal_cache_file=tmp_path / "cal.bin")
    assert report["calibration"]["source"] == "qat"
    ops = {node.op_type for node in onnx.load(str(tmp_path / "m.onnx")).graph.node}
    assert "Round" not in ops and "Clip" not in ops  # no fake quantization in the float graph
    _, cache = read_calibration_cache(tmp_path / "cal.bin")
    assert cache["input_1"] == pytest.approx(_amax(qat_model, "input_nhwc_qdq"), rel=1e-6)


def test_force_ptq_calibrates_instead(qat_model: keras.Model, tmp_path) -> None:
    float_model, ranges = qat_export_inputs(qat_model)
    batches = [_images(2, 20 + i) * 3.0 for i in range(2)]
    report = export_model(float_model, tmp_path / "m.onnx", "input_1", NAMES, data_type="int8",
                          qat_ranges=ranges, force_ptq=True, calibration_batches=batches, cal_method="minmax",
                          cal_cache_file=tmp_path / "cal.bin")
    assert report["calibration"]["source"] == "calibration" and report["calibration"]["images"] == 4
    _, cache = read_calibration_cache(tmp_path / "cal.bin")
    assert cache["input_1"] == pytest.approx(float(np.max(batches)), rel=1e-6)
    assert cache["input_1"] != pytest.approx(_amax(qat_model, "input_nhwc_qdq"), rel=1e-2)
