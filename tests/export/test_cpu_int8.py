"""CPU INT8 writer: ONNX Runtime runs it on integer kernels, and its outputs stay close to FP32's."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from tltk.errors import UsageError  # noqa: E402
from tltk.export.calibration import calibrate_onnx  # noqa: E402
from tltk.export.cpu_int8 import optimized_node_counts, quantize_for_cpu, write_cpu_int8_onnx  # noqa: E402
from tltk.export.qdq import quantize_onnx_model  # noqa: E402

SIZE = 32


def _resnet_block_model() -> onnx.ModelProto:
    """input_1 [N,3,32,32] -> conv+relu -> maxpool -> residual block (conv+relu, conv, add, relu) ->
    {cov conv + Sigmoid, bbox conv}: the structure of DetectNet_v2's ResNet in miniature."""
    rng = np.random.default_rng(0)

    def w(name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
        fan_in = int(np.prod(shape[1:]))
        return numpy_helper.from_array(rng.normal(0, np.sqrt(2.0 / fan_in), shape).astype(np.float32), name)

    def b(name: str, n: int) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.normal(0, 0.1, n).astype(np.float32), name)

    inits = [w("w1", (16, 3, 3, 3)), b("b1", 16), w("w2", (16, 16, 3, 3)), b("b2", 16), w("w3", (16, 16, 3, 3)),
             b("b3", 16), w("wc", (2, 16, 1, 1)), b("bc", 2), w("wb", (8, 16, 1, 1)), b("bb", 8)]
    nodes = [
        helper.make_node("Conv", ["input_1", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2], name="pool1"),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="block_conv1"),
        helper.make_node("Relu", ["c2"], ["r2"], name="block_relu1"),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"], pads=[1, 1, 1, 1], name="block_conv2"),
        helper.make_node("Add", ["c3", "p1"], ["a1"], name="block_add"),
        helper.make_node("Relu", ["a1"], ["r3"], name="block_relu2"),
        helper.make_node("Conv", ["r3", "wc", "bc"], ["cov_logits"], name="output_cov"),
        helper.make_node("Sigmoid", ["cov_logits"], ["output_cov/Sigmoid"], name="output_cov/Sigmoid"),
        helper.make_node("Conv", ["r3", "wb", "bb"], ["output_bbox/BiasAdd"], name="output_bbox"),
    ]
    half = SIZE // 2
    graph = helper.make_graph(
        nodes, "resnet_block",
        [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("output_cov/Sigmoid", TensorProto.FLOAT, ["batch", 2, half, half]),
         helper.make_tensor_value_info("output_bbox/BiasAdd", TensorProto.FLOAT, ["batch", 8, half, half])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def _data(n: int, seed: int) -> np.ndarray:
    """Smooth images in [0, 1] (4x4 blocks), like the preprocessed inputs calibration sees."""
    coarse = np.random.default_rng(seed).random((n, 3, SIZE // 4, SIZE // 4), dtype=np.float32)
    return np.repeat(np.repeat(coarse, 4, axis=2), 4, axis=3)


def _run(model: onnx.ModelProto | str, x: np.ndarray) -> list[np.ndarray]:
    payload = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(payload, providers=["CPUExecutionProvider"]).run(None, {"input_1": x})


@pytest.fixture(scope="module")
def calibrated() -> tuple[onnx.ModelProto, object]:
    fp32 = _resnet_block_model()
    ranges = calibrate_onnx(fp32.SerializeToString(), [_data(8, 1), _data(8, 2)], method="minmax")
    return fp32, ranges


def test_onnx_runtime_runs_the_cpu_model_on_integer_kernels(calibrated) -> None:
    fp32, ranges = calibrated
    cpu, summary = quantize_for_cpu(fp32, ranges)
    assert summary.as_dict() == {"weighted_nodes": 5, "data_nodes": 2, "activation_qdq_pairs": 6,
                                 "non_negative_activations": 4}
    counts = optimized_node_counts(cpu.SerializeToString())
    # the three trunk convs become QLinearConv, the residual Add QLinearAdd
    assert counts.get("QLinearConv", 0) == 3, counts
    assert counts.get("QLinearAdd", 0) == 1, counts
    assert counts.get("Relu", 0) == 0, counts  # folded into the uint8 quantization (zero point 0)
    # the two heads (read by Sigmoid / a graph output) keep float32 outputs: integer inputs and
    # weights dequantized, float Conv
    assert counts.get("Conv", 0) + counts.get("FusedConv", 0) == 2, counts


def test_tensorrt_placement_gets_no_integer_conv_on_cpu(calibrated) -> None:
    # The finding that motivates the CPU model: with Q/DQ on weighted-layer inputs only, ONNX
    # Runtime's CPU provider keeps every Conv in float (and dequantizes its weights on each run).
    fp32, ranges = calibrated
    qdq, _ = quantize_onnx_model(fp32, ranges)
    counts = optimized_node_counts(qdq.SerializeToString())
    assert counts.get("QLinearConv", 0) == 0, counts
    assert counts.get("Conv", 0) + counts.get("FusedConv", 0) == 5, counts
    assert counts.get("DequantizeLinear", 0) >= 5, counts


def test_outputs_match_fp32_within_the_measured_tolerance(calibrated, tmp_path) -> None:
    fp32, ranges = calibrated
    path, _ = write_cpu_int8_onnx(fp32.SerializeToString(), ranges, tmp_path / "model_int8_cpu.onnx")
    x = _data(6, 7)  # images calibration did not see
    reference, quantized = _run(fp32, x), _run(path, x)
    for ref, out in zip(reference, quantized, strict=True):
        assert out.dtype == np.float32 and out.shape == ref.shape
    cov_err = float(np.abs(quantized[0] - reference[0]).max())
    bbox = reference[1]
    bbox_err = float(np.abs(quantized[1] - bbox).max()) / float(np.abs(bbox).max())
    # measured: cov 0.013, bbox 1.5% of its largest value (the TensorRT-placement Q/DQ model of the
    # same ranges: 0.015 and 1.9%)
    assert cov_err < 0.03, cov_err
    assert bbox_err < 0.04, bbox_err
    qdq = _run(quantize_onnx_model(fp32, ranges)[0], x)
    assert bbox_err <= 1.5 * float(np.abs(qdq[1] - bbox).max()) / float(np.abs(bbox).max())
    assert np.corrcoef(quantized[1].ravel(), bbox.ravel())[0, 1] > 0.999


def test_scales_zero_points_weights_and_biases(calibrated) -> None:
    fp32, ranges = calibrated
    cpu, _ = quantize_for_cpu(fp32, ranges)
    inits = {i.name: numpy_helper.to_array(i) for i in cpu.graph.initializer}
    quant = {n.input[0]: n for n in cpu.graph.node if n.op_type == "QuantizeLinear"}
    # a Relu output: uint8, zero point 0, scale amax/255
    relu = quant["r1"]
    assert inits[relu.input[2]].dtype == np.uint8 and int(inits[relu.input[2]]) == 0
    assert float(inits[relu.input[1]]) == pytest.approx(ranges["r1"] / 255.0, rel=1e-6)
    # a signed tensor (the residual branch before the Add): zero point 128, scale amax/127
    signed = quant["c3"]
    assert int(inits[signed.input[2]]) == 128
    assert float(inits[signed.input[1]]) == pytest.approx(ranges["c3"] / 127.0, rel=1e-6)
    # the conv output that only feeds a Relu has no pair of its own
    assert "c1" not in quant and "c2" not in quant
    conv1 = next(n for n in cpu.graph.node if n.name == "conv1")
    producers = {o: n for n in cpu.graph.node for o in n.output}
    w_dq, b_dq = producers[conv1.input[1]], producers[conv1.input[2]]
    w_q, w_scale = inits[w_dq.input[0]], inits[w_dq.input[1]]
    assert w_q.dtype == np.int8 and w_scale.shape == (16,) and np.abs(w_q).max() == 127  # per output channel
    w = numpy_helper.to_array(next(i for i in fp32.graph.initializer if i.name == "w1"))
    np.testing.assert_allclose(w_q * w_scale[:, None, None, None], w, atol=float(w_scale.max()) / 2 + 1e-7)
    x_scale = float(inits[quant["input_1"].input[1]])
    b_q, b_scale = inits[b_dq.input[0]], inits[b_dq.input[1]]
    assert b_q.dtype == np.int32
    np.testing.assert_allclose(b_scale, x_scale * w_scale, rtol=1e-6)
    b1 = numpy_helper.to_array(next(i for i in fp32.graph.initializer if i.name == "b1"))
    np.testing.assert_allclose(b_q * b_scale, b1, atol=float(b_scale.max()))


def test_a_table_without_the_model_s_tensors_is_refused() -> None:
    from tltk.export.calibration_cache import ActivationRanges

    with pytest.raises(UsageError, match="no Conv/Gemm/MatMul"):
        quantize_for_cpu(_resnet_block_model(), ActivationRanges({"other": 1.0}))
