"""tf2onnx export of the inference model: standard ops only, TAO's names, ONNX Runtime == Keras."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tf2onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import numpy_helper  # noqa: E402

from tltk.export.onnx_export import convert_keras_to_onnx, parity_check  # noqa: E402
from tltk.export.onnx_passes import (  # noqa: E402
    TENSORRT_MAX_NMS_CANDIDATES,
    TENSORRT_MAX_TOPK,
    tensorrt_problems,
)
from tltk.mask_rcnn.model import INPUT_NAME, ONNX_OUTPUT_NAMES, build_mask_rcnn  # noqa: E402

_spec = importlib.util.spec_from_file_location("_tiny_model", Path(__file__).with_name("_tiny_model.py"))
assert _spec is not None and _spec.loader is not None
tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny)

FORBIDDEN = {"Loop", "If", "Scan", "SequenceConstruct", "SequenceAt", "SplitToSequence", "ConcatFromSequence"}


def test_onnx_export_runs_in_onnxruntime_and_matches_keras() -> None:
    params = tiny.tiny_params()
    inference, _ = build_mask_rcnn(params)
    proto = convert_keras_to_onnx(inference, INPUT_NAME, ONNX_OUTPUT_NAMES, opset=17)

    ops = {node.op_type for node in proto.graph.node}
    assert not ops & FORBIDDEN
    assert {node.domain for node in proto.graph.node} <= {"", "ai.onnx"}
    assert "NonMaxSuppression" in ops
    assert [i.name for i in proto.graph.input] == ["Input"]
    assert [o.name for o in proto.graph.output] == ["generate_detections", "mask_fcn_logits/BiasAdd"]
    dims = [[d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in proto.graph.output]
    assert dims == [["batch", 10, 6], ["batch", 10, 3, 28, 28]]
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", 17)]

    # TensorRT's parser: every TopK K and NMS parameter is an initializer, within its limits
    assert tensorrt_problems(proto) == []
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    topk = [n for n in proto.graph.node if n.op_type == "TopK"]
    nms = [n for n in proto.graph.node if n.op_type == "NonMaxSuppression"]
    assert len(nms) == 6  # one per FPN level (2..6) and the detections
    assert len(topk) >= 2 * len(nms)  # a top-k before and after each NMS
    assert all(n.input[1] in inits and 0 < int(inits[n.input[1]].reshape(-1)[0]) < TENSORRT_MAX_TOPK for n in topk)
    assert all(all(name in inits for name in n.input[2:5]) for n in nms)
    # per level (anchors 3072, 768, 192, 48, 12): min(anchors, 200) scored, min(that, 64) kept by NMS; then
    # the best 64 proposals; 64 ROIs x 2 classes = 128 detection candidates, 10 detections
    ks = sorted(int(inits[n.input[1]].reshape(-1)[0]) for n in topk)
    assert ks == sorted([200, 200, 192, 48, 12] + [64, 64, 64, 48, 12] + [64] + [128, 10])
    assert sorted(int(inits[n.input[2]].reshape(-1)[0]) for n in nms) == sorted([64, 64, 64, 48, 12, 10])

    images, _ = tiny.synthetic_batch(params, batch=3)
    diffs = parity_check(inference, proto.SerializeToString(), images)
    assert max(diffs.values()) < 1e-3, diffs
    # a batch of one through the same dynamic-batch graph
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    det, masks = session.run(None, {"Input": images[:1]})
    assert det.shape == (1, 10, 6) and masks.shape == (1, 10, 3, 28, 28)
    keras_det = inference(images[:1])["generate_detections"].numpy()
    np.testing.assert_allclose(det, keras_det, atol=1e-3)
    assert np.any(det[0, :, 5] > 0)


def test_inference_graph_keeps_topk_and_nms_counts_under_tensorrt_limits() -> None:
    from tltk.mask_rcnn.postprocess import MAX_CANDIDATES
    from tltk.mask_rcnn.proposals import proposal_counts

    params = tiny.tiny_params(test_rpn_pre_nms_topn=5000, test_rpn_post_nms_topn=5000)
    inference, training = build_mask_rcnn(params)
    layer = inference.get_layer("multilevel_propose_rois")
    assert (layer.pre_nms_topn, layer.post_nms_topn) == (MAX_CANDIDATES, MAX_CANDIDATES) == (3000, 3000)
    ks, ms, total = proposal_counts(layer.anchor_config, layer.pre_nms_topn, layer.post_nms_topn)
    # 32x32x3 = 3072 anchors at P2 are cut to 3000; the final top-k over the levels keeps 3000, not 4092
    assert ks == [3000, 768, 192, 48, 12] and total == 3000 < TENSORRT_MAX_TOPK
    assert max(ks) <= TENSORRT_MAX_NMS_CANDIDATES
    # training keeps the spec's counts
    assert training.get_layer("multilevel_propose_rois_train").pre_nms_topn == params.train_rpn_pre_nms_topn
