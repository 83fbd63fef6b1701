"""MaskRCNN INT8 export: the convolutional trunk and heads are quantized, post-processing stays float."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest

from tltk.export.calibration import QUANTIZABLE_OPS, activation_tensor_names
from tltk.export.calibration_cache import read_calibration_cache
from tltk.export.pipeline import export_model
from tltk.mask_rcnn.model import INPUT_NAME, ONNX_OUTPUT_NAMES, build_mask_rcnn

ort = pytest.importorskip("onnxruntime")

_spec = importlib.util.spec_from_file_location("_tiny_model", Path(__file__).with_name("_tiny_model.py"))
assert _spec is not None and _spec.loader is not None
tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny)

#: Operators of the post-processing (proposals, ROIAlign, detections) that must never see INT8 data.
POST_PROCESSING = {"NonMaxSuppression", "TopK", "GatherND", "GatherElements", "Gather", "Softmax", "Exp", "Log",
                   "ScatterND", "Sigmoid", "Floor", "Sqrt", "CumSum"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    params = tiny.tiny_params()
    inference, _ = build_mask_rcnn(params)
    folder = tmp_path_factory.mktemp("int8")
    images = [tiny.synthetic_batch(params, batch=2, seed=seed)[0] for seed in range(2)]
    report = export_model(inference, folder / "model.onnx", INPUT_NAME, ONNX_OUTPUT_NAMES, data_type="int8",
                          calibration_batches=images, cal_method="entropy")
    return report, folder


def test_qdq_model_quantizes_every_conv_and_dense_and_nothing_after_them(exported) -> None:
    report, folder = exported
    assert report["qdq_onnx"] == str(folder / "model_int8_qdq.onnx")
    fp32 = onnx.load(folder / "model.onnx")
    qdq = onnx.load(report["qdq_onnx"])
    producers = {out: node for node in qdq.graph.node for out in node.output}
    # conv/dense layers: a weighted operator with a constant weight in the FP32 graph (the ROIAligns'
    # neighbour blends are MatMuls of two computed tensors: post-processing, left float)
    fp32_inits = {i.name for i in fp32.graph.initializer}
    layers = {n.name for n in fp32.graph.node if n.op_type in QUANTIZABLE_OPS and n.input[1] in fp32_inits}
    blends = [n for n in fp32.graph.node if n.op_type == "MatMul" and n.name not in layers]
    assert len(blends) == 2  # box and mask ROIAlign
    quantizable = [n for n in qdq.graph.node if n.name in layers]
    # ResNet-10 + FPN + RPN + box head (fc6, fc7, class, box) + mask head: all of them INT8
    assert len(quantizable) == len(layers) >= 40
    for node in quantizable:
        assert producers[node.input[0]].op_type == "DequantizeLinear", node.name
        assert producers[node.input[1]].op_type == "DequantizeLinear", node.name  # INT8 weights
    assert report["qdq"]["quantized_nodes"] == len(quantizable)
    # every Q/DQ pair feeds a conv/dense layer only
    for node in qdq.graph.node:
        if node.op_type == "DequantizeLinear":
            consumers = [c.op_type for c in qdq.graph.node if node.output[0] in c.input]
            assert set(consumers) <= set(QUANTIZABLE_OPS), (node.name, consumers)
        if node.op_type in POST_PROCESSING:
            assert all(producers[t].op_type != "DequantizeLinear" for t in node.input if t in producers)
    assert [o.name for o in qdq.graph.output] == ["generate_detections", "mask_fcn_logits/BiasAdd"]
    assert all(o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for o in qdq.graph.output)


def test_calibration_cache_covers_the_network_and_not_the_post_processing(exported) -> None:
    report, folder = exported
    fp32 = onnx.load(folder / "model.onnx")
    producers = {out: node.op_type for node in fp32.graph.node for out in node.output}
    _, ranges = read_calibration_cache(report["cal_cache_file"])
    names = set(ranges)
    assert INPUT_NAME in names
    assert names == set(activation_tensor_names(fp32, "network"))
    assert not {producers.get(name) for name in names} & POST_PROCESSING
    # the inputs of every conv/dense layer (trunk and both heads) are there; the ROIAligns' blends
    # (MatMuls of two computed tensors) are post-processing and are not
    inits = {i.name for i in fp32.graph.initializer}
    for node in fp32.graph.node:
        if node.op_type in QUANTIZABLE_OPS:
            assert (node.input[0] in names) == (node.input[1] in inits), node.name
    # far fewer than every float tensor of the graph
    assert len(names) < len(activation_tensor_names(fp32, "all")) / 3


def test_qdq_model_runs_and_keeps_the_output_contract(exported) -> None:
    report, folder = exported
    images, _ = tiny.synthetic_batch(tiny.tiny_params(), batch=3, seed=5)
    outputs = {}
    for name in ("model.onnx", "model_int8_qdq.onnx"):
        session = ort.InferenceSession(str(folder / name), providers=["CPUExecutionProvider"])
        outputs[name] = session.run(None, {INPUT_NAME: images})
    for fp32, int8 in zip(outputs["model.onnx"], outputs["model_int8_qdq.onnx"], strict=True):
        assert fp32.shape == int8.shape and int8.dtype == np.float32
    dets = outputs["model_int8_qdq.onnx"][0]
    assert dets.shape == (3, 10, 6)
    empty = dets[..., 5] == 0
    assert np.all(dets[empty][:, 4] == -1) and np.all(dets[empty][:, :4] == 0)
    assert np.all(np.diff(dets[..., 5], axis=1) <= 0)  # sorted by score
