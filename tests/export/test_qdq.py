"""Q/DQ ONNX writer: node counts, scales shared with the cache, ORT runs it, error vs FP32."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from tltk.errors import UsageError  # noqa: E402
from tltk.export.calibration import calibrate_onnx  # noqa: E402
from tltk.export.calibration_cache import ActivationRanges, format_calibration_cache, scale_to_hex  # noqa: E402
from tltk.export.qdq import quantize_onnx_model, write_qdq_onnx  # noqa: E402


def _two_head_model(opset: int = 17) -> onnx.ModelProto:
    """input_1 [N,3,8,8] -> conv1 -> relu -> conv2 -> relu -> {cov head + Sigmoid, bbox head}."""
    rng = np.random.default_rng(0)

    def w(name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
        fan_in = int(np.prod(shape[1:]))
        return numpy_helper.from_array(rng.normal(0, np.sqrt(2.0 / fan_in), shape).astype(np.float32), name)

    inits = [w("w1", (8, 3, 3, 3)), w("w2", (8, 8, 3, 3)), w("wc", (2, 8, 1, 1)), w("wb", (8, 8, 1, 1)),
             numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "b1"),
             numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "bb")]
    nodes = [
        helper.make_node("Conv", ["input_1", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", "wc"], ["cov_logits"], name="output_cov"),
        helper.make_node("Sigmoid", ["cov_logits"], ["output_cov/Sigmoid"], name="output_cov/Sigmoid"),
        helper.make_node("Conv", ["r2", "wb", "bb"], ["output_bbox/BiasAdd"], name="output_bbox"),
    ]
    graph = helper.make_graph(
        nodes, "two_heads",
        [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("output_cov/Sigmoid", TensorProto.FLOAT, ["batch", 2, 8, 8]),
         helper.make_tensor_value_info("output_bbox/BiasAdd", TensorProto.FLOAT, ["batch", 8, 8, 8])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


def _data(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 3, 8, 8), dtype=np.float32)


def _run(model: onnx.ModelProto | str, x: np.ndarray) -> list[np.ndarray]:
    payload = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(payload, providers=["CPUExecutionProvider"]).run(None, {"input_1": x})


def test_node_counts_and_outputs_stay_float(tmp_path) -> None:
    fp32 = _two_head_model()
    ranges = calibrate_onnx(fp32.SerializeToString(), [_data(4, 1), _data(4, 2)], method="minmax")
    out = write_qdq_onnx(fp32.SerializeToString(), ranges, tmp_path / "int8.onnx")
    model = onnx.load(out)
    ops = [n.op_type for n in model.graph.node]
    # activations: input_1 (conv1), r1 (conv2), r2 (shared by both heads) -> 3 Q/DQ pairs;
    # weights: w1, w2, wc, wb -> 4 INT8 initializers with a DequantizeLinear each
    assert ops.count("QuantizeLinear") == 3
    assert ops.count("DequantizeLinear") == 3 + 4
    assert ops.count("Conv") == 4
    int8 = {i.name for i in model.graph.initializer if i.data_type == TensorProto.INT8 and len(i.dims) == 4}
    assert int8 == {"w1_quantized", "w2_quantized", "wc_quantized", "wb_quantized"}
    assert not {"w1", "w2", "wc", "wb"} & {i.name for i in model.graph.initializer}  # float weights gone
    # the outputs keep their names and are not produced by DequantizeLinear
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    assert producers["output_cov/Sigmoid"] == "Sigmoid" and producers["output_bbox/BiasAdd"] == "Conv"
    assert [o.name for o in model.graph.output] == ["output_cov/Sigmoid", "output_bbox/BiasAdd"]
    for output in model.graph.output:
        assert output.type.tensor_type.elem_type == TensorProto.FLOAT


def test_scales_match_the_calibration_cache() -> None:
    fp32 = _two_head_model()
    ranges = ActivationRanges({"input_1": 1.0, "r1": 6.35, "r2": 12.7}, method="qat")
    model, summary = quantize_onnx_model(fp32, ranges)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert float(inits["r1_scale"]) == pytest.approx(0.05)
    cache = format_calibration_cache(ranges, trt_version="10.3.0")
    for name in ("input_1", "r1", "r2"):
        scale = np.float32(inits[f"{name}_scale"])
        assert f"{name}: {scale_to_hex(float(scale))}" in cache.splitlines()
        assert inits[f"{name}_zero_point"].dtype == np.int8 and int(inits[f"{name}_zero_point"]) == 0
    assert summary.as_dict()["activation_qdq_pairs"] == 3


def test_per_channel_weight_scales_and_rounding() -> None:
    fp32 = _two_head_model()
    ranges = ActivationRanges({"input_1": 1.0, "r1": 4.0, "r2": 4.0})
    model, _ = quantize_onnx_model(fp32, ranges, per_channel_weights=True)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    w1 = numpy_helper.to_array(next(i for i in fp32.graph.initializer if i.name == "w1"))
    scale = inits["w1_scale"]
    assert scale.shape == (8,)
    np.testing.assert_allclose(scale, np.abs(w1).reshape(8, -1).max(axis=1) / 127.0, rtol=1e-6)
    q = inits["w1_quantized"].astype(np.float32)
    assert np.abs(q).max() == 127
    error = np.abs(q * scale.reshape(8, 1, 1, 1) - w1)
    assert np.all(error <= scale.reshape(8, 1, 1, 1) / 2 + 1e-7)
    dq = next(n for n in model.graph.node if n.output[0] == "w1_dequantized")
    assert {a.name: a.i for a in dq.attribute} == {"axis": 0}
    per_tensor, _ = quantize_onnx_model(fp32, ranges, per_channel_weights=False)
    scale_t = next(numpy_helper.to_array(i) for i in per_tensor.graph.initializer if i.name == "w1_scale")
    assert scale_t.shape == () and float(scale_t) == pytest.approx(float(np.abs(w1).max() / 127), rel=1e-6)


def test_ort_runs_it_close_to_fp32() -> None:
    fp32 = _two_head_model()
    ranges = calibrate_onnx(fp32.SerializeToString(), [_data(8, s) for s in range(4)], method="entropy")
    int8, _ = quantize_onnx_model(fp32, ranges)
    x = _data(6, 99)
    ref, got = _run(fp32, x), _run(int8, x)
    for r, g in zip(ref, got, strict=True):
        assert g.shape == r.shape and g.dtype == np.float32
        assert np.linalg.norm(g - r) / np.linalg.norm(r) < 0.03
    assert np.abs(ref[0] - got[0]).max() < 0.02  # coverage probabilities


def test_missing_ranges_leave_nodes_in_float() -> None:
    fp32 = _two_head_model()
    model, summary = quantize_onnx_model(fp32, ActivationRanges({"input_1": 1.0, "r1": 4.0}))
    assert summary.skipped == {"output_cov": "no calibration range for r2", "output_bbox": "no calibration range for r2"}
    assert [n.op_type for n in model.graph.node].count("QuantizeLinear") == 2
    x = _data(2, 3)
    np.testing.assert_allclose(_run(model, x)[0], _run(fp32, x)[0], atol=0.05)
    with pytest.raises(UsageError, match="no Conv/Gemm/MatMul node"):
        quantize_onnx_model(fp32, ActivationRanges({"other": 1.0}))


def test_extra_activation_ops_for_onnx_runtime() -> None:
    fp32 = _two_head_model()
    ranges = calibrate_onnx(fp32.SerializeToString(), [_data(4, 1)], method="minmax")
    model, summary = quantize_onnx_model(fp32, ranges, activation_ops=("Relu",))
    # the Relu inputs c1 and c2 get Q/DQ pairs too
    assert set(summary.activation_tensors) == {"input_1", "r1", "r2", "c1", "c2"}
    # The arithmetic TensorRT runs (int32 accumulation), node by node in float: ONNX Runtime's fused
    # S8S8 kernels saturate on CPUs without VNNI (int8 weights at full range; the CPU INT8 file uses
    # 7-bit weights for that reason, this file is TensorRT's).
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    quantized = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    x = _data(3, 5)
    for r, g in zip(_run(fp32, x), quantized.run(None, {"input_1": x}), strict=True):
        assert np.linalg.norm(g - r) / np.linalg.norm(r) < 0.05


def test_old_opset_is_refused() -> None:
    with pytest.raises(UsageError, match="opset >= 13"):
        quantize_onnx_model(_two_head_model(opset=12), ActivationRanges({"input_1": 1.0}))


def test_keras_exported_model_round_trip(tmp_path) -> None:
    keras = pytest.importorskip("keras")
    from tltk.export.onnx_export import export_keras_to_onnx

    keras.utils.set_random_seed(3)
    inp = keras.Input((3, 32, 32), name="input_1")
    x = keras.layers.Permute((2, 3, 1))(inp)
    for i, filters in enumerate((16, 32)):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.Activation("relu")(x)
    cov = keras.layers.Permute((3, 1, 2))(keras.layers.Conv2D(2, 1, activation="sigmoid", name="output_cov")(x))
    bbox = keras.layers.Permute((3, 1, 2))(keras.layers.Conv2D(8, 1, name="output_bbox")(x))
    model = keras.Model(inp, [cov, bbox])
    path = tmp_path / "fp32.onnx"
    export_keras_to_onnx(model, path, "input_1", {"output_cov": "output_cov/Sigmoid",
                                                  "output_bbox": "output_bbox/BiasAdd"}, check_parity=False)
    rng = np.random.default_rng(0)
    batches = [rng.random((4, 3, 32, 32), dtype=np.float32) for _ in range(3)]
    ranges = calibrate_onnx(path, batches)
    q_path = write_qdq_onnx(path, ranges, tmp_path / "int8.onnx")
    x = rng.random((2, 3, 32, 32), dtype=np.float32)
    sess = ort.InferenceSession(q_path, providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input_1": x})
    ref = [np.asarray(t) for t in model(x, training=False)]
    for r, g in zip(ref, got, strict=True):
        assert np.linalg.norm(g - r) / np.linalg.norm(r) < 0.05
