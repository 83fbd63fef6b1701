"""CPU INT8 writer: ONNX Runtime runs it on integer kernels, and its outputs stay close to FP32's."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from tltk.errors import UsageError  # noqa: E402
from tltk.export.calibration import calibrate_onnx  # noqa: E402
from tltk.export.cpu_int8 import (  # noqa: E402
    WEIGHT_QMAX,
    optimized_node_counts,
    quantize_for_cpu,
    write_cpu_int8_onnx,
)
from tltk.export.qdq import quantize_onnx_model  # noqa: E402

SIZE = 32


def _he_weight(rng: np.random.Generator, name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
    """A He-initialised float32 weight initializer (std sqrt(2 / fan_in))."""
    fan_in = int(np.prod(shape[1:]))
    return numpy_helper.from_array(rng.normal(0, np.sqrt(2.0 / fan_in), shape).astype(np.float32), name)


def _bias(rng: np.random.Generator, name: str, n: int) -> onnx.TensorProto:
    """A float32 bias initializer of ``n`` values, std 0.1."""
    return numpy_helper.from_array(rng.normal(0, 0.1, n).astype(np.float32), name)


def _resnet_block_model() -> onnx.ModelProto:
    """input_1 [N,3,32,32] -> conv+relu -> maxpool -> residual block (conv+relu, conv, add, relu) ->
    {cov conv + Sigmoid, bbox conv}: the structure of DetectNet_v2's ResNet in miniature."""
    rng = np.random.default_rng(0)

    def w(name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
        return _he_weight(rng, name, shape)

    def b(name: str, n: int) -> onnx.TensorProto:
        return _bias(rng, name, n)

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


def _run(model: onnx.ModelProto | str, x: np.ndarray, fuse: bool = True) -> list[np.ndarray]:
    """ONNX Runtime CPU outputs; ``fuse=False`` runs each Q/DQ node on its own in float (no
    integer kernels): the quantized arithmetic without the CPU's kernels."""
    payload = model if isinstance(model, str) else model.SerializeToString()
    options = ort.SessionOptions()
    if not fuse:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(payload, options, providers=["CPUExecutionProvider"]).run(None, {"input_1": x})


@pytest.fixture(scope="module")
def calibrated() -> tuple[onnx.ModelProto, object]:
    fp32 = _resnet_block_model()
    ranges = calibrate_onnx(fp32.SerializeToString(), [_data(8, 1), _data(8, 2)], method="minmax")
    return fp32, ranges


def test_onnx_runtime_runs_the_cpu_model_on_integer_kernels(calibrated) -> None:
    fp32, ranges = calibrated
    cpu, summary = quantize_for_cpu(fp32, ranges)
    assert summary.as_dict() == {"weighted_nodes": 5, "data_nodes": 2, "move_nodes": 0, "activation_qdq_pairs": 6,
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
    assert w_q.dtype == np.int8 and w_scale.shape == (16,) and np.abs(w_q).max() == WEIGHT_QMAX == 64  # per channel
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


def _fpn_model() -> onnx.ModelProto:
    """MaskRCNN's FPN top-down step in miniature, as tf2onnx writes it from Keras:

    input_1 [N,3,32,32] -> conv+relu (C3, 16x32x32) -> conv/2+relu (C4, 16x16x16);
    lateral 1x1 convs l3, l4; l4 upsampled 2x by ``Unsqueeze -> Tile -> Reshape`` per axis
    (Keras ``repeat``) inside an NHWC ``Transpose`` round trip; ``Add(l3, up)`` -> 3x3 output
    conv ``p3``, read by a float consumer (``Sigmoid``, standing in for ROIAlign) and by the
    RPN head (3x3 conv+relu, 1x1 class conv: a graph output)."""
    rng = np.random.default_rng(3)

    def w(name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
        return _he_weight(rng, name, shape)

    def b(name: str, n: int) -> onnx.TensorProto:
        return _bias(rng, name, n)

    def ints(name: str, values: list[int]) -> onnx.TensorProto:
        return numpy_helper.from_array(np.array(values, np.int64), name)

    c = 16
    inits = [w("w_c3", (c, 3, 3, 3)), b("b_c3", c), w("w_c4", (c, c, 3, 3)), b("b_c4", c),
             w("w_l3", (c, c, 1, 1)), b("b_l3", c), w("w_l4", (c, c, 1, 1)), b("b_l4", c),
             w("w_p3", (c, c, 3, 3)), b("b_p3", c), w("w_rpn", (c, c, 3, 3)), b("b_rpn", c),
             w("w_cls", (3, c, 1, 1)), b("b_cls", 3),
             ints("axis_h", [2]), ints("axis_w", [3]), ints("rep_h", [1, 1, 2, 1, 1]), ints("rep_w", [1, 1, 1, 2, 1]),
             ints("shape_h", [0, 32, 16, c]), ints("shape_w", [0, 32, 32, c])]
    nodes = [
        helper.make_node("Conv", ["input_1", "w_c3", "b_c3"], ["c3"], pads=[1, 1, 1, 1], name="conv_c3"),
        helper.make_node("Relu", ["c3"], ["r3"], name="relu_c3"),
        helper.make_node("Conv", ["r3", "w_c4", "b_c4"], ["c4"], pads=[1, 1, 1, 1], strides=[2, 2], name="conv_c4"),
        helper.make_node("Relu", ["c4"], ["r4"], name="relu_c4"),
        helper.make_node("Conv", ["r3", "w_l3", "b_l3"], ["l3"], name="l3"),
        helper.make_node("Conv", ["r4", "w_l4", "b_l4"], ["l4"], name="l4"),
        helper.make_node("Transpose", ["l4"], ["l4_nhwc"], perm=[0, 2, 3, 1], name="to_nhwc"),  # [N,16,16,C]
        helper.make_node("Unsqueeze", ["l4_nhwc", "axis_h"], ["up_h0"], name="up/ExpandDims"),
        helper.make_node("Tile", ["up_h0", "rep_h"], ["up_h1"], name="up/Tile"),
        helper.make_node("Reshape", ["up_h1", "shape_h"], ["up_h"], name="up/Reshape"),  # [N,32,16,C]
        helper.make_node("Unsqueeze", ["up_h", "axis_w"], ["up_w0"], name="up_1/ExpandDims"),
        helper.make_node("Tile", ["up_w0", "rep_w"], ["up_w1"], name="up_1/Tile"),
        helper.make_node("Reshape", ["up_w1", "shape_w"], ["up_w"], name="up_1/Reshape"),  # [N,32,32,C]
        helper.make_node("Transpose", ["up_w"], ["up"], perm=[0, 3, 1, 2], name="to_nchw"),
        helper.make_node("Add", ["l3", "up"], ["p3_in"], name="fpn_add"),
        helper.make_node("Conv", ["p3_in", "w_p3", "b_p3"], ["p3"], pads=[1, 1, 1, 1], name="post_hoc_p3"),
        helper.make_node("Sigmoid", ["p3"], ["p3_sigmoid"], name="float_reader"),
        helper.make_node("Conv", ["p3", "w_rpn", "b_rpn"], ["rpn"], pads=[1, 1, 1, 1], name="rpn"),
        helper.make_node("Relu", ["rpn"], ["rpn_relu"], name="rpn_relu"),
        helper.make_node("Conv", ["rpn_relu", "w_cls", "b_cls"], ["rpn_class"], name="rpn_class"),
    ]
    graph = helper.make_graph(
        nodes, "fpn_top_down",
        [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("p3_sigmoid", TensorProto.FLOAT, ["batch", c, SIZE, SIZE]),
         helper.make_tensor_value_info("rpn_class", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def test_fpn_top_down_path_runs_on_integers() -> None:
    """The lateral conv feeding the upsampling (Unsqueeze/Tile/Reshape/Transpose) becomes QLinearConv
    once those value-moving nodes share their input's uint8 quantization; the FPN Add is a QLinearAdd
    and the output conv, read by a float operator as well, is integer too."""
    fp32 = _fpn_model()
    ranges = calibrate_onnx(fp32.SerializeToString(), [_data(8, 1), _data(8, 2)], method="minmax")
    cpu, summary = quantize_for_cpu(fp32, ranges)
    assert summary.move_nodes == ["to_nhwc", "up/ExpandDims", "up/Tile", "up/Reshape", "up_1/ExpandDims",
                                  "up_1/Tile", "up_1/Reshape", "to_nchw"]
    # every moved tensor carries the lateral conv's scale and zero point (l4 is signed: zero point 128)
    inits = {i.name: numpy_helper.to_array(i) for i in cpu.graph.initializer}
    quant = {n.input[0]: n for n in cpu.graph.node if n.op_type == "QuantizeLinear"}
    for tensor in ("l4_nhwc", "up_h0", "up_h1", "up_h", "up_w0", "up_w1", "up_w", "up"):
        assert float(inits[quant[tensor].input[1]]) == pytest.approx(ranges["l4"] / 127.0, rel=1e-6), tensor
        assert int(inits[quant[tensor].input[2]]) == 128, tensor
    counts = optimized_node_counts(cpu.SerializeToString())
    # conv_c3, conv_c4, l3, l4, post_hoc_p3, rpn: integer; the 1x1 class conv (a graph output) float
    assert counts.get("QLinearConv", 0) == 6, counts
    assert counts.get("Conv", 0) + counts.get("FusedConv", 0) == 1, counts
    assert counts.get("QLinearAdd", 0) == 1, counts
    # before: the same ranges without the value-moving nodes quantized leave l4 float
    before_model = quantize_for_cpu(fp32, ranges, quantize_moves=False)[0]
    before = optimized_node_counts(before_model.SerializeToString())
    assert before.get("QLinearConv", 0) == 5, before
    # moving uint8 values is exact: the outputs equal the previous placement's (measured: max error
    # 5.5% of the sigmoid's range, 4.5% of the class logits' largest value, on images calibration
    # did not see, both placements; 4.2% and 2.7% with 8-bit weights, which saturate without VNNI)
    x = _data(4, 9)
    reference, quantized, previous = _run(fp32, x), _run(cpu, x), _run(before_model, x)
    for ref, out, prev in zip(reference, quantized, previous, strict=True):
        err = float(np.abs(out - ref).max()) / float(np.abs(ref).max())
        assert err < 0.07, err
        np.testing.assert_allclose(out, prev, atol=1e-5 * float(np.abs(ref).max()))


def test_integer_kernels_compute_what_the_quantized_graph_says(calibrated) -> None:
    """On every x86 CPU, VNNI or not: ONNX Runtime's fused integer kernels give the outputs of the
    same Q/DQ graph run node by node in float (measured: 0.3% / 0.4% of each output's largest value,
    requantization rounding).  8-bit weights broke this on CPUs without VNNI: ``vpmaddubsw`` adds two
    uint8 x int8 products in a saturating int16 (measured on an AVX2 machine: 27% and 55% off on the
    FPN model), hence WEIGHT_QMAX = 64."""
    fp32, ranges = calibrated
    fpn = _fpn_model()
    fpn_ranges = calibrate_onnx(fpn.SerializeToString(), [_data(8, 1), _data(8, 2)], method="minmax")
    for model in (quantize_for_cpu(fp32, ranges)[0], quantize_for_cpu(fpn, fpn_ranges)[0]):
        x = _data(4, 11)
        fused, simulated = _run(model, x), _run(model, x, fuse=False)
        for out, sim in zip(fused, simulated, strict=True):
            assert float(np.abs(out - sim).max()) < 0.01 * float(np.abs(sim).max())


def test_a_layer_read_by_a_conv_transpose_still_runs_on_integers() -> None:
    """MaskRCNN's mask head: conv+relu -> 2x2/2 ConvTranspose (which ONNX Runtime's CPU provider runs
    in float): the conv's Relu output is quantized (uint8, zero point 0) so the conv fuses to
    QLinearConv and the deconvolution reads the dequantized tensor."""
    rng = np.random.default_rng(5)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "b1"),
             numpy_helper.from_array(rng.normal(0, 0.3, (8, 4, 2, 2)).astype(np.float32), "wt"),
             numpy_helper.from_array(rng.normal(0, 0.1, 4).astype(np.float32), "bt")]
    nodes = [helper.make_node("Conv", ["input_1", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="mask_conv"),
             helper.make_node("Relu", ["c1"], ["r1"], name="mask_relu"),
             helper.make_node("ConvTranspose", ["r1", "wt", "bt"], ["up"], strides=[2, 2], name="mask_deconv")]
    graph = helper.make_graph(nodes, "mask_head",
                              [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
                              [helper.make_tensor_value_info("up", TensorProto.FLOAT, ["batch", 4, 2 * SIZE, 2 * SIZE])],
                              inits)
    fp32 = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    ranges = calibrate_onnx(fp32.SerializeToString(), [_data(4, 1)], method="minmax")
    cpu, summary = quantize_for_cpu(fp32, ranges)
    assert summary.activation_tensors == ["input_1", "r1"] and summary.non_negative_tensors == ["r1"]
    counts = optimized_node_counts(cpu.SerializeToString())
    assert counts.get("QLinearConv", 0) == 1 and counts.get("ConvTranspose", 0) == 1, counts
    x = _data(2, 3)
    ref, out = _run(fp32, x)[0], _run(cpu, x)[0]
    err = float(np.abs(out - ref).max()) / float(np.abs(ref).max())
    assert err < 0.03, err
