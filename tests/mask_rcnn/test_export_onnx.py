"""tf2onnx export of the inference model: standard ops only, TAO's names, ONNX Runtime == Keras."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tf2onnx")
ort = pytest.importorskip("onnxruntime")

from tltk.export.onnx_export import convert_keras_to_onnx, parity_check  # noqa: E402
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
