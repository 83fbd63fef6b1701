"""Write an explicitly quantized (Q/DQ) ONNX model from an FP32 model and a table of ranges.

For every Conv / ConvTranspose / Gemm / MatMul whose activation input has a range in the table:

* the activation input goes through ``QuantizeLinear -> DequantizeLinear`` with
  ``scale = float32(amax / 127)`` (the same scale the TensorRT calibration cache stores) and an
  INT8 zero point of 0 (symmetric), shared by all quantized consumers of that tensor;
* the weight initializer is quantized symmetrically to INT8 (per output channel by default:
  axis 0 for Conv and for Gemm with ``transB=1``, axis 1 for ConvTranspose, MatMul and Gemm
  without ``transB``) and stored as an INT8 initializer followed by ``DequantizeLinear``;
* biases stay in float; nothing is inserted on graph outputs (e.g. ``output_cov/Sigmoid``,
  ``output_bbox/BiasAdd``), so the model's outputs remain float32.

This is the explicit-quantization form that TensorRT 10+ builds INT8 engines from without a
calibrator (and the only INT8 form TensorRT 11 accepts), and ONNX Runtime runs it on CPU.

QAT: ranges learned during quantization-aware training are passed as an
:class:`~tltk.export.calibration_cache.ActivationRanges` (``method="qat"``) keyed by the ONNX
tensor names; no calibration run is needed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from tltk.errors import UsageError
from tltk.export.calibration import QUANTIZABLE_OPS
from tltk.export.calibration_cache import ActivationRanges

if TYPE_CHECKING:  # pragma: no cover - typing only
    import onnx

log = logging.getLogger(__name__)

#: Lowest opset with per-axis QuantizeLinear/DequantizeLinear.
MIN_QDQ_OPSET = 13


@dataclass
class QdqSummary:
    """What :func:`quantize_onnx_model` changed.

    Attributes:
        quantized_nodes: names of the nodes now running on INT8 inputs (Conv/Gemm/MatMul and any
            ``activation_ops``).
        activation_tensors: activation tensors given a Q/DQ pair.
        weight_tensors: weight initializers stored as INT8.
        skipped: node name -> reason, for quantizable nodes left in float.
    """

    quantized_nodes: list[str] = field(default_factory=list)
    activation_tensors: list[str] = field(default_factory=list)
    weight_tensors: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy with counts."""
        return {
            "quantized_nodes": len(self.quantized_nodes),
            "activation_qdq_pairs": len(self.activation_tensors),
            "int8_weights": len(self.weight_tensors),
            "skipped": dict(self.skipped),
        }


def write_qdq_onnx(
    fp32_onnx_path: str | os.PathLike[str] | bytes,
    ranges: ActivationRanges,
    output_path: str | os.PathLike[str],
    per_channel_weights: bool = True,
    activation_ops: Sequence[str] = (),
    key: str | None = None,
) -> str:
    """Write the Q/DQ (explicit INT8) twin of an FP32 ONNX model.

    Args:
        fp32_onnx_path: the FP32 model: ``.onnx`` path, ``.etlt`` path (with ``key``) or bytes.
        ranges: activation ranges keyed by ONNX tensor name (from calibration or QAT).
        output_path: the ``.onnx`` file to write (atomically).
        per_channel_weights: one weight scale per output channel (True) or one per tensor.
        activation_ops: further operator types whose data inputs all get Q/DQ (e.g.
            ``("Add", "Relu")``).  Empty by default, which is TensorRT's recommended placement
            (inputs of weighted operations only); adding ``Add``/``Relu`` lets ONNX Runtime's CPU
            provider fuse more nodes into QLinearConv/QLinearAdd (faster on CPU, a few more
            rounding points).
        key: key string for an ``.etlt`` input.

    Returns:
        ``output_path`` as a string.

    Raises:
        UsageError: the model's opset is below 13 or no node could be quantized.
    """
    import onnx

    from tltk.export.onnx_export import load_onnx_bytes, save_onnx

    model = onnx.load_from_string(load_onnx_bytes(fp32_onnx_path, key))
    quantized, summary = quantize_onnx_model(model, ranges, per_channel_weights=per_channel_weights,
                                             activation_ops=activation_ops)
    out = save_onnx(quantized, output_path)
    log.info("wrote Q/DQ model %s: %d nodes quantized, %d activation Q/DQ pairs, %d INT8 weights, %d skipped",
             out, len(summary.quantized_nodes), len(summary.activation_tensors), len(summary.weight_tensors),
             len(summary.skipped))
    return out


def quantize_onnx_model(
    model: onnx.ModelProto,
    ranges: ActivationRanges,
    per_channel_weights: bool = True,
    activation_ops: Sequence[str] = (),
) -> tuple[onnx.ModelProto, QdqSummary]:
    """Insert Q/DQ nodes in a copy of ``model`` (see the module docstring for the rules).

    Args:
        model: FP32 model (not modified).
        ranges: activation ranges keyed by ONNX tensor name.
        per_channel_weights: per-output-channel weight scales.
        activation_ops: further operator types whose data inputs all get Q/DQ (see
            :func:`write_qdq_onnx`).

    Returns:
        ``(quantized_model, summary)``.

    Raises:
        UsageError: opset below 13, or nothing could be quantized.
    """
    import onnx
    from onnx import helper, numpy_helper

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_QDQ_OPSET:
        raise UsageError(f"Q/DQ export needs ONNX opset >= {MIN_QDQ_OPSET}, the model has opset {opset}",
                         hint="re-export the model with opset 13 or later (default 17)")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    initializers = {i.name: i for i in graph.initializer}
    summary = QdqSummary()
    ops = tuple(QUANTIZABLE_OPS) + tuple(op for op in activation_ops if op not in QUANTIZABLE_OPS)

    act_plan: dict[str, str] = {}  # activation tensor -> dequantized name
    weight_plan: dict[tuple[str, int], str] = {}  # (weight, axis) -> dequantized name
    new_inits: list[onnx.TensorProto] = []
    weight_nodes: list[onnx.NodeProto] = []
    edits: list[tuple[onnx.NodeProto, int, str]] = []
    weighted = 0

    for node in graph.node:
        if node.op_type not in ops:
            continue
        label = node.name or f"{node.op_type}:{node.output[0]}"
        act_slots, weight_slot, axis = _slots(node, initializers)
        if weight_slot is None and node.op_type in QUANTIZABLE_OPS and node.op_type != "MatMul":
            summary.skipped[label] = "weights are not a constant initializer"
            continue
        if not act_slots:
            summary.skipped[label] = "no activation input"
            continue
        missing = [node.input[s] for s in act_slots if node.input[s] not in ranges]
        if missing:
            summary.skipped[label] = f"no calibration range for {', '.join(missing)}"
            continue
        if weight_slot is not None:
            weight_name = node.input[weight_slot]
            w_axis = axis if per_channel_weights else None
            plan_key = (weight_name, -1 if w_axis is None else w_axis)
            if plan_key not in weight_plan:
                deq, inits, dq_node = _quantize_weight(initializers[weight_name], w_axis, helper, numpy_helper)
                new_inits.extend(inits)
                weight_nodes.append(dq_node)
                weight_plan[plan_key] = deq
                summary.weight_tensors.append(weight_name)
            edits.append((node, weight_slot, weight_plan[plan_key]))
        for slot in act_slots:
            tensor = node.input[slot]
            if tensor not in act_plan:
                act_plan[tensor] = f"{tensor}_DequantizeLinear_Output"
                summary.activation_tensors.append(tensor)
            edits.append((node, slot, act_plan[tensor]))
        summary.quantized_nodes.append(label)
        weighted += int(node.op_type in QUANTIZABLE_OPS)

    if weighted == 0:
        raise UsageError("no Conv/Gemm/MatMul node could be quantized: " +
                         ("; ".join(f"{k}: {v}" for k, v in list(summary.skipped.items())[:5]) or "none in the graph"),
                         hint="the range table must use the ONNX tensor names of this model")

    act_nodes: dict[str, list[onnx.NodeProto]] = {}
    for tensor, deq in act_plan.items():
        scale = float(ranges.scale(tensor)) if ranges[tensor] > 0 else 1.0
        base = _safe(tensor)
        s_name, z_name = f"{base}_scale", f"{base}_zero_point"
        new_inits.append(numpy_helper.from_array(np.array(scale, dtype=np.float32), s_name))
        new_inits.append(numpy_helper.from_array(np.array(0, dtype=np.int8), z_name))
        q_out = f"{tensor}_QuantizeLinear_Output"
        act_nodes[tensor] = [
            helper.make_node("QuantizeLinear", [tensor, s_name, z_name], [q_out], name=f"{base}_QuantizeLinear"),
            helper.make_node("DequantizeLinear", [q_out, s_name, z_name], [deq], name=f"{base}_DequantizeLinear"),
        ]
    for node, slot, name in edits:
        node.input[slot] = name

    graph_inputs = {i.name for i in graph.input}
    first = [t for t in act_plan if t in graph_inputs or t in initializers]
    splice_quantization(graph, weight_nodes, act_nodes, first, new_inits)
    out.producer_name = "tltk"
    return out, summary


def splice_quantization(graph: Any, weight_nodes: list[Any], pairs: dict[str, list[Any]], first: list[str],
                        new_inits: list[Any]) -> None:
    """Put the Q/DQ nodes into ``graph`` in topological order and drop unused initializers.

    Order: ``weight_nodes``, the pairs of the tensors in ``first`` (graph inputs, initializers),
    then every node followed by the pairs of its outputs.  ``pairs`` (tensor -> its Q/DQ nodes)
    is emptied.

    Raises:
        UsageError: a tensor in ``pairs`` has no producer in the graph.
    """
    ordered = list(weight_nodes)
    for tensor in first:
        ordered.extend(pairs.pop(tensor))
    for node in graph.node:
        ordered.append(node)
        for output in node.output:
            if output in pairs:
                ordered.extend(pairs.pop(output))
    if pairs:  # produced by nothing we saw (should not happen in a valid graph)
        raise UsageError(f"cannot place Q/DQ for tensors without a producer: {sorted(pairs)}")
    graph_inputs = {i.name for i in graph.input}
    del graph.node[:]
    graph.node.extend(ordered)
    graph.initializer.extend(new_inits)
    used = {t for n in graph.node for t in n.input}
    keep = [i for i in graph.initializer if i.name in used or i.name in graph_inputs]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def _slots(node: Any, initializers: dict[str, Any]) -> tuple[list[int], int | None, int | None]:
    """(activation input slots, weight slot, per-channel axis) for a quantizable node."""
    op = node.op_type
    if op not in QUANTIZABLE_OPS:  # data-only op (e.g. Add, Relu): quantize every non-constant input
        return [i for i, t in enumerate(node.input) if t and t not in initializers], None, None
    attrs = {a.name: a for a in node.attribute}
    if op == "Conv":
        return [0], (1 if node.input[1] in initializers else None), 0
    if op == "ConvTranspose":
        group = attrs["group"].i if "group" in attrs else 1
        return [0], (1 if node.input[1] in initializers else None), (1 if group == 1 else None)
    if op == "Gemm":
        trans_b = attrs["transB"].i if "transB" in attrs else 0
        trans_a = attrs["transA"].i if "transA" in attrs else 0
        if trans_a:
            return [], None, None
        return [0], (1 if node.input[1] in initializers else None), (0 if trans_b else 1)
    # MatMul: a constant 2-D right operand is a weight (per column); otherwise both are activations.
    if node.input[1] in initializers and len(initializers[node.input[1]].dims) == 2:
        return [0], 1, 1
    return [0, 1], None, None


def _quantize_weight(init: Any, axis: int | None, helper: Any, numpy_helper: Any,
                     qmax: int = 127) -> tuple[str, list[Any], Any]:
    """Symmetric int8 weights in [-qmax, qmax], one scale per ``axis`` entry (or one in all)."""
    w = numpy_helper.to_array(init).astype(np.float32)
    if axis is None:
        amax = np.array(np.max(np.abs(w)) if w.size else 0.0, dtype=np.float32)
        scale = np.where(amax > 0, amax / np.float32(qmax), 1.0).astype(np.float32)
        q = np.clip(np.rint(w / scale), -qmax, qmax).astype(np.int8)
    else:
        reduce_axes = tuple(a for a in range(w.ndim) if a != axis)
        amax = np.max(np.abs(w), axis=reduce_axes).astype(np.float32)
        scale = np.where(amax > 0, amax / np.float32(qmax), np.float32(1.0)).astype(np.float32)
        shape = [1] * w.ndim
        shape[axis] = -1
        q = np.clip(np.rint(w / scale.reshape(shape)), -qmax, qmax).astype(np.int8)
    base = _safe(init.name)
    q_name, s_name, z_name, deq = f"{base}_quantized", f"{base}_scale", f"{base}_zero_point", f"{base}_dequantized"
    inits = [
        numpy_helper.from_array(q, q_name),
        numpy_helper.from_array(scale, s_name),
        numpy_helper.from_array(np.zeros_like(scale, dtype=np.int8), z_name),
    ]
    kwargs = {} if axis is None else {"axis": axis}
    node = helper.make_node("DequantizeLinear", [q_name, s_name, z_name], [deq], name=f"{base}_DequantizeLinear",
                            **kwargs)
    return deq, inits, node


def _safe(name: str) -> str:
    return name.replace(":", "_")


__all__ = ["MIN_QDQ_OPSET", "QdqSummary", "quantize_onnx_model", "write_qdq_onnx"]
