"""Constant folding of exported graphs and the TensorRT parser checks (hand-built ONNX graphs)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tltk.export.onnx_passes import fold_constants, tensorrt_problems

ort = pytest.importorskip("onnxruntime")


def _const(name: str, values: list[int] | list[float], dtype: type = np.int64) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=dtype), name)


def _model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto],
           inits: list[onnx.TensorProto]) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _run(model: onnx.ModelProto, **feeds: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def combined_nms_like_topk() -> onnx.ModelProto:
    """tf2onnx's pattern: TopK's K = Min(max_total, per_class * Shape(scores)[2]) with a dynamic batch."""
    nodes = [
        helper.make_node("Shape", ["scores"], ["shape"]),
        helper.make_node("Slice", ["shape", "start", "end", "axis"], ["classes"]),
        helper.make_node("Mul", ["classes", "per_class"], ["candidates"]),
        helper.make_node("Min", ["max_total", "candidates"], ["k"]),
        helper.make_node("Reshape", ["scores", "flat"], ["flat_scores"]),
        helper.make_node("TopK", ["flat_scores", "k"], ["values", "indices"]),
        # the batch entry of the shape stays a run-time value: Shape[0] -> Concat -> Reshape
        helper.make_node("Shape", ["scores"], ["shape_b"]),
        helper.make_node("Gather", ["shape_b", "zero"], ["batch"]),
        helper.make_node("Unsqueeze", ["batch", "axes0"], ["batch_1d"]),
        helper.make_node("Concat", ["batch_1d", "minus_one"], ["target"], axis=0),
        helper.make_node("Reshape", ["scores", "target"], ["per_image"]),
        # a shape entry that is known (5) cast to int32 and back: folded with the right types
        helper.make_node("Shape", ["scores"], ["shape_c"], start=1, end=2),
        helper.make_node("Cast", ["shape_c"], ["n32"], to=TensorProto.INT32),
        helper.make_node("Cast", ["n32"], ["n64"], to=TensorProto.INT64),
        helper.make_node("Add", ["n64", "one"], ["n_plus_one"]),
    ]
    inits = [_const("start", [2]), _const("end", [3]), _const("axis", [0]), _const("per_class", [4]),
             _const("max_total", [3]), _const("flat", [0, -1]), _const("zero", 0), _const("axes0", [0]),
             _const("minus_one", [-1]), _const("one", [1])]
    inputs = [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 5, 1])]
    outputs = [helper.make_tensor_value_info("values", TensorProto.FLOAT, ["batch", 3]),
               helper.make_tensor_value_info("per_image", TensorProto.FLOAT, ["batch", 5]),
               helper.make_tensor_value_info("n_plus_one", TensorProto.INT64, [1])]
    return _model(nodes, inputs, outputs, inits)


def test_topk_k_from_a_shape_becomes_an_initializer_and_results_do_not_change() -> None:
    model = combined_nms_like_topk()
    problems = tensorrt_problems(model)
    assert len(problems) == 1 and "TopK" in problems[0] and "run time" in problems[0]
    before = onnx.ModelProto()
    before.CopyFrom(model)
    report = fold_constants(model)
    onnx.checker.check_model(model)

    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    topk = next(n for n in model.graph.node if n.op_type == "TopK")
    # K = min(3, 4 * 1) = 3, an int64 initializer as TensorRT wants it
    assert topk.input[1] in inits and inits[topk.input[1]].tolist() == [3]
    assert inits[topk.input[1]].dtype == np.int64
    assert tensorrt_problems(model) == []
    ops = [n.op_type for n in model.graph.node]
    assert "Min" not in ops and "Mul" not in ops and "Add" not in ops
    # the batch-dependent Reshape target is still computed at run time
    assert ops.count("Shape") == 1 and "Concat" in ops
    assert inits["n_plus_one"].tolist() == [6]  # Shape[1:2] of [batch, 5, 1], +1
    assert report.nodes_before == len(before.graph.node) and report.nodes_after == len(model.graph.node)
    assert report.folded_nodes["Min"] == 1
    for batch in (1, 3):
        scores = np.random.default_rng(batch).random((batch, 5, 1), dtype=np.float32)
        want = _run(before, scores=scores)
        got = _run(model, scores=scores)
        for w, g in zip(want, got, strict=True):
            np.testing.assert_array_equal(w, g)
        assert got[1].shape == (batch, 5)
        assert got[2].tolist() == [6]


def test_large_constants_stay_computed_at_run_time() -> None:
    nodes = [helper.make_node("ConstantOfShape", ["size"], ["big"], value=helper.make_tensor("v", TensorProto.FLOAT,
                                                                                            [1], [2.0])),
             helper.make_node("Add", ["x", "big"], ["y"])]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [300, 300])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [300, 300])]
    model = _model(nodes, inputs, outputs, [_const("size", [300, 300])])
    report = fold_constants(model, max_elements=1000)
    assert [n.op_type for n in model.graph.node] == ["ConstantOfShape", "Add"]
    assert report.folded_nodes == {}
    fold_constants(model, max_elements=300 * 300)
    assert [n.op_type for n in model.graph.node] == ["Add"]
    x = np.ones((300, 300), np.float32)
    np.testing.assert_array_equal(_run(model, x=x)[0], np.full((300, 300), 3.0, np.float32))


def _nms_model(num_boxes: int, max_output_from_input: bool) -> onnx.ModelProto:
    nodes = [helper.make_node("NonMaxSuppression", ["boxes", "scores", "max_out", "iou", "score_th"], ["selected"])]
    inputs = [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["batch", num_boxes, 4]),
              helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 1, num_boxes])]
    inits = [_const("iou", [0.5], np.float32), _const("score_th", [0.0], np.float32)]
    if max_output_from_input:
        inputs.append(helper.make_tensor_value_info("max_out", TensorProto.INT64, [1]))
    else:
        inits.append(_const("max_out", [100]))
    outputs = [helper.make_tensor_value_info("selected", TensorProto.INT64, ["selected", 3])]
    return _model(nodes, inputs, outputs, inits)


def test_tensorrt_problems_names_each_limit() -> None:
    assert tensorrt_problems(_nms_model(1000, False)) == []
    problems = tensorrt_problems(_nms_model(6000, True))
    assert any("max_output_boxes_per_class" in p for p in problems)
    assert any("6000 candidate boxes per image, above TensorRT's 5000" in p for p in problems)
    assert any("2000" in p for p in tensorrt_problems(_nms_model(3000, False), max_nms_candidates=2000))

    topk = _model([helper.make_node("TopK", ["x", "k"], ["v", "i"])],
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 5000])],
                  [helper.make_tensor_value_info("v", TensorProto.FLOAT, [1, 3840]),
                   helper.make_tensor_value_info("i", TensorProto.INT64, [1, 3840])], [_const("k", [3840])])
    assert tensorrt_problems(topk) == ["TopK node '': K = 3840 is not below TensorRT's limit 3840"]

    body = helper.make_graph([helper.make_node("Identity", ["c"], ["c_out"])], "body",
                             [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                              helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                             [helper.make_tensor_value_info("c_out", TensorProto.BOOL, [])])
    loop = helper.make_node("Loop", ["n", ""], [], body=body, name="loop")
    custom = helper.make_node("Plugin", ["x"], ["y"], domain="com.example", name="plugin")
    graph = helper.make_graph([loop, custom], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], [_const("n", 2)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    problems = tensorrt_problems(model)
    assert any("Loop node 'loop'" in p and "control-flow" in p for p in problems)
    assert any("custom domain 'com.example'" in p for p in problems)


def _stem(pad_source: str) -> onnx.ModelProto:
    """``x -> [Relu] -> Pad(1, zeros) -> MaxPool 3x3/2`` (ResNet's stem pooling, as tf2onnx writes it)."""
    nodes = [helper.make_node("Relu", ["x"], ["relu"]),
             helper.make_node("Pad", [pad_source, "pads"], ["padded"], mode="constant"),
             helper.make_node("MaxPool", ["padded"], ["y"], kernel_shape=[3, 3], strides=[2, 2])]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2, 9, 8])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2, 5, 4])],
                  [_const("pads", [0, 0, 1, 1, 0, 0, 1, 1])])


def test_zero_pad_of_a_relu_output_folds_into_maxpool_exactly() -> None:
    from tltk.export.onnx_passes import fold_pad_into_maxpool

    x = np.random.default_rng(0).normal(size=(2, 2, 9, 8)).astype(np.float32)
    model = _stem("relu")
    before = _run(model, x=x)[0]
    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    assert len(fold_pad_into_maxpool(folded.graph)) == 1
    onnx.checker.check_model(folded)
    assert [n.op_type for n in folded.graph.node] == ["Relu", "MaxPool"]
    pool = folded.graph.node[1]
    assert list(next(a for a in pool.attribute if a.name == "pads").ints) == [1, 1, 1, 1]
    np.testing.assert_array_equal(_run(folded, x=x)[0], before)
    # hand-worked corner: window rows/cols {-1, 0, 1} of the zero-padded map = max of the 2x2 real cells
    np.testing.assert_array_equal(before[:, :, 0, 0], np.maximum(x, 0)[:, :, :2, :2].max(axis=(2, 3)))

    # a tensor that may be negative: zeros would win over negative cells, MaxPool's padding would not
    signed = _stem("x")
    assert fold_pad_into_maxpool(signed.graph) == []
    assert [n.op_type for n in signed.graph.node] == ["Relu", "Pad", "MaxPool"]


def test_weighted_sum_of_gathered_neighbours_becomes_one_matmul() -> None:
    from tltk.export.onnx_passes import weighted_sums_to_matmul

    nodes = [helper.make_node("Mul", ["values", "weights"], ["products"]),
             helper.make_node("ReduceSum", ["products", "axis"], ["y"], keepdims=0)]
    model = _model(nodes, [helper.make_tensor_value_info("values", TensorProto.FLOAT, ["batch", 3, 4, 5]),
                           helper.make_tensor_value_info("weights", TensorProto.FLOAT, ["batch", 3, 4, 1])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3, 5])], [_const("axis", [2])])
    rng = np.random.default_rng(1)
    values = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
    weights = rng.random((2, 3, 4, 1)).astype(np.float32)
    assert len(weighted_sums_to_matmul(model)) == 1
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node] == ["Transpose", "MatMul", "Squeeze"]
    got = _run(model, values=values, weights=weights)[0]
    # sum over the 4 neighbours of weight x value, per channel
    np.testing.assert_allclose(got, (values * weights).sum(axis=2), rtol=1e-6, atol=1e-6)


def test_transpose_before_a_flatten_and_matmul_folds_into_the_weight_rows() -> None:
    from tltk.export.onnx_passes import fold_transpose_into_matmul

    rng = np.random.default_rng(2)
    weight = rng.normal(size=(5 * 3 * 4, 7)).astype(np.float32)  # rows in (C=5, H=3, W=4) order
    nodes = [helper.make_node("Transpose", ["x"], ["chw"], perm=[0, 3, 1, 2]),  # [B, H, W, C] -> [B, C, H, W]
             helper.make_node("Reshape", ["chw", "flat"], ["flat_x"]),
             helper.make_node("MatMul", ["flat_x", "w"], ["y"])]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4, 5])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 7])],
                   [_const("flat", [2, 60]), numpy_helper.from_array(weight, "w")])
    x = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
    want = x.transpose(0, 3, 1, 2).reshape(2, 60) @ weight
    assert len(fold_transpose_into_matmul(model)) == 1
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node] == ["Reshape", "MatMul"]
    rows = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name.startswith("w/")))
    # row (h, w, c) of the new weight is row (c, h, w) of the old one
    np.testing.assert_array_equal(rows[(1 * 4 + 2) * 5 + 3], weight[(3 * 3 + 1) * 4 + 2])
    np.testing.assert_allclose(_run(model, x=x)[0], want, rtol=1e-5, atol=1e-5)
