"""Write the CPU-targeted INT8 ONNX model (``<output>_int8_cpu.onnx``) from the same range table.

The Q/DQ model of :mod:`tltk.export.qdq` follows TensorRT's placement (Q/DQ on the inputs of
weighted layers only).  ONNX Runtime's CPU provider turns a ``DequantizeLinear -> Conv`` into an
integer ``QLinearConv`` only when the Conv's *output* is quantized as well; with TensorRT's
placement none is, so every Conv stays a float Conv whose weights are dequantized on each run
(measured in ``docs/export.md``).  This module writes the placement ONNX Runtime's QDQ fusions
want, from the same :class:`~tltk.export.calibration_cache.ActivationRanges`:

* every ranged activation tensor that is an input of a quantized node, or an output of one that
  another quantized node reads (directly or through a ``Relu``), gets a
  ``QuantizeLinear -> DequantizeLinear`` pair (a layer read by a ``ConvTranspose``, which ONNX
  Runtime runs in float, counts as read by a quantized node: :data:`FLOAT_LAYER_OPS`); graph
  outputs and the outputs of the last layers (read only by float operators: detection heads,
  post-processing) stay float32, and a
  Conv/Gemm output whose only consumer is a ``Relu`` has no pair of its own (the Relu's output
  carries it, and ONNX Runtime folds the Relu into the quantization);
* quantized nodes: Conv/Gemm/MatMul with a constant weight (:data:`WEIGHTED_OPS`), the data
  operators of :data:`DATA_OPS` (``Add`` becomes ``QLinearAdd``; pooling, ``Concat`` and
  ``Resize`` run on integers) and the value-moving operators of :data:`MOVE_OPS` (``Reshape``,
  ``Transpose``, ``Tile``, ...) between ranged tensors that lead to a quantized node: their
  output reuses the input's scale and zero point, so ONNX Runtime drops the pair and moves
  uint8 values (MaskRCNN's FPN top-down upsampling, so its lateral convolutions and the Adds
  run on integers);
* activations are **uint8** (what the x86 U8S8 kernels, VNNI and AMX included, consume):
  a tensor known to be non-negative (a ``Relu``/``Sigmoid`` output, or pooled / concatenated /
  resized / reshaped from one) uses ``scale = amax / 255``, zero point 0; any other tensor
  ``scale = amax / 127``, zero point 128;
* weights are **int8 with 7 significant bits**, symmetric in [-64, 64], one scale per output
  channel (:data:`WEIGHT_QMAX`); Conv and Gemm biases become int32 with ``scale = activation
  scale x weight scale``.  On x86 CPUs without VNNI (AVX2 only, AVX-512 without VNNI) ONNX
  Runtime's U8S8 kernels multiply with ``vpmaddubsw``, which adds two uint8 x int8 products in a
  saturating int16: with full-range weights (255 x 127 x 2 = 64770) the sums clip and outputs
  are badly wrong (measured in ``docs/export.md``); with 7 bits they cannot (255 x 64 x 2 =
  32640 <= 32767).  VNNI and AMX kernels accumulate in int32 and run both alike.

Before placing, a zero ``Pad`` between a ReLU and a ``MaxPool`` (ResNet's stem) is folded into
the pooling (exact: :func:`tltk.export.onnx_passes.fold_pad_into_maxpool`); otherwise the stem
convolution's output reaches the pooling through an operator that is not quantized and the
stem stays float.

ONNX Runtime (CPU) fuses this into ``QLinearConv``/``QLinearAdd``/``QLinearMatMul``; TensorRT
should keep using the Q/DQ model (it wants int8 activations, zero point 0).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from tltk.errors import UsageError
from tltk.export.calibration_cache import ActivationRanges
from tltk.export.onnx_passes import fold_pad_into_maxpool, non_negative_tensors
from tltk.export.qdq import MIN_QDQ_OPSET, _quantize_weight, _safe, _slots, splice_quantization

if TYPE_CHECKING:  # pragma: no cover - typing only
    import onnx

log = logging.getLogger(__name__)

#: Largest weight magnitude in the CPU file: two uint8 x int8 products must fit ``vpmaddubsw``'s
#: saturating int16 (255 * 64 * 2 = 32640 <= 32767) on CPUs without VNNI.
WEIGHT_QMAX = 64

#: Weighted operators quantized with integer weights (when the weight is a constant initializer).
WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")

#: Data operators whose inputs and outputs are quantized, so ONNX Runtime runs them on integers.
DATA_OPS = ("Add", "MaxPool", "AveragePool", "GlobalAveragePool", "Concat", "Resize")

#: Layers ONNX Runtime's CPU provider runs in float even between Q/DQ pairs (no integer
#: ``ConvTranspose`` kernel).  A weighted layer whose output such a layer reads still quantizes
#: that output (an inner feature map, not a head output): the producer then runs as
#: ``QLinearConv`` and the float layer reads the dequantized tensor (MaskRCNN's last 3x3 mask
#: convolution, 4.6 GFLOP at the quickstart size, before the 2x2 mask deconvolution).
FLOAT_LAYER_OPS = ("ConvTranspose",)

#: Operators that only move or copy values (first input: the data; the others: shapes, axes,
#: repeats).  Between quantized tensors their output shares its input's scale and zero point, so
#: ONNX Runtime's CPU provider drops the Q/DQ pair around them and they run on the uint8 tensor.
#: MaskRCNN's FPN upsamples the top-down path with ``Unsqueeze -> Tile -> Reshape`` (Keras'
#: ``repeat``) and its output convolutions reach the RPN head, P6's pooling and ROIAlign through
#: layout ``Transpose`` nodes: without this a convolution read only through such nodes gets no
#: output pair and stays float (ONNX Runtime fuses ``DQ -> Conv -> Q`` only).
MOVE_OPS = ("Reshape", "Transpose", "Squeeze", "Unsqueeze", "Tile", "Flatten", "Expand")

@dataclass
class CpuInt8Summary:
    """What :func:`quantize_for_cpu` changed.

    Attributes:
        weighted_nodes: Conv/Gemm/MatMul nodes given integer weights and quantized inputs.
        data_nodes: data operators (Add, pooling, ...) between quantized tensors.
        move_nodes: value-moving operators (:data:`MOVE_OPS`) whose output shares its input's
            quantization (ONNX Runtime runs them on uint8).
        activation_tensors: tensors given a uint8 Q/DQ pair.
        non_negative_tensors: those among them quantized with zero point 0 (scale amax/255).
    """

    weighted_nodes: list[str] = field(default_factory=list)
    data_nodes: list[str] = field(default_factory=list)
    move_nodes: list[str] = field(default_factory=list)
    activation_tensors: list[str] = field(default_factory=list)
    non_negative_tensors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy with counts."""
        return {"weighted_nodes": len(self.weighted_nodes), "data_nodes": len(self.data_nodes),
                "move_nodes": len(self.move_nodes), "activation_qdq_pairs": len(self.activation_tensors),
                "non_negative_activations": len(self.non_negative_tensors)}


def write_cpu_int8_onnx(
    fp32_onnx_path: str | os.PathLike[str] | bytes,
    ranges: ActivationRanges,
    output_path: str | os.PathLike[str],
    key: str | None = None,
) -> tuple[str, CpuInt8Summary]:
    """Write the ONNX Runtime CPU INT8 twin of an FP32 ONNX model (atomically).

    Args:
        fp32_onnx_path: the FP32 model: ``.onnx`` path, ``.etlt`` path (with ``key``) or bytes.
        ranges: activation ranges keyed by ONNX tensor name (calibration or QAT).
        output_path: the ``.onnx`` file to write.
        key: key string for an ``.etlt`` input.

    Returns:
        ``(output_path, summary)``.

    Raises:
        UsageError: opset below 13 or no weighted node could be quantized.
    """
    import onnx

    from tltk.export.onnx_export import load_onnx_bytes, save_onnx

    model = onnx.load_from_string(load_onnx_bytes(fp32_onnx_path, key))
    quantized, summary = quantize_for_cpu(model, ranges)
    out = save_onnx(quantized, output_path)
    log.info("wrote CPU INT8 model %s: %d weighted and %d data nodes quantized, %d uint8 Q/DQ pairs", out,
             len(summary.weighted_nodes), len(summary.data_nodes), len(summary.activation_tensors))
    return out, summary


def quantize_for_cpu(model: onnx.ModelProto, ranges: ActivationRanges, fold_pads: bool = True,
                     quantize_moves: bool = True) -> tuple[onnx.ModelProto, CpuInt8Summary]:
    """Insert ONNX Runtime-placed uint8/int8 Q/DQ nodes in a copy of ``model`` (rules: module docstring).

    Args:
        model: FP32 model (not modified).
        ranges: activation ranges keyed by ONNX tensor name.
        fold_pads: first fold zero ``Pad`` nodes before ``MaxPool`` into the pooling
            (:func:`tltk.export.onnx_passes.fold_pad_into_maxpool`, exact), so ResNet's stem
            convolution runs on integers; False keeps them (for comparisons).
        quantize_moves: quantize the value-moving nodes of :data:`MOVE_OPS` between quantized
            tensors; False leaves them float (the placement before, for comparisons).

    Returns:
        ``(quantized_model, summary)``.

    Raises:
        UsageError: opset below 13, or no Conv/Gemm/MatMul could be quantized.
    """
    import onnx
    from onnx import helper, numpy_helper

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_QDQ_OPSET:
        raise UsageError(f"INT8 export needs ONNX opset >= {MIN_QDQ_OPSET}, the model has opset {opset}",
                         hint="re-export the model with opset 13 or later (default 17)")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    if fold_pads:  # exports since the pass already come folded; older FP32 files are folded here
        fold_pad_into_maxpool(graph)
    initializers = {i.name: i for i in graph.initializer}
    graph_outputs = {o.name for o in graph.output}
    graph_inputs = {i.name for i in graph.input}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    summary = CpuInt8Summary()

    def usable(tensor: str) -> bool:
        return bool(tensor) and tensor in ranges and ranges[tensor] > 0 and tensor not in graph_outputs

    # 1. which nodes run on integers
    weighted: dict[int, tuple[list[int], int]] = {}  # id(node) -> (activation slots, weight slot)
    data_nodes: set[int] = set()  # id(node)
    for node in graph.node:
        label = node.name or f"{node.op_type}:{node.output[0]}"
        if node.op_type in WEIGHTED_OPS:
            act_slots, weight_slot, _ = _slots(node, initializers)
            if weight_slot is None or not act_slots or not all(usable(node.input[s]) for s in act_slots):
                continue
            weighted[id(node)] = (act_slots, weight_slot)
            summary.weighted_nodes.append(label)
        elif node.op_type in DATA_OPS:
            data = [t for t in (node.input[:1] if node.op_type == "Resize" else node.input)
                    if t and t not in initializers]
            if data and all(usable(t) for t in data) and usable(node.output[0]):
                data_nodes.add(id(node))
                summary.data_nodes.append(label)
    if not weighted:
        raise UsageError("no Conv/Gemm/MatMul node could be quantized for CPU",
                         hint="the range table must use the ONNX tensor names of this model")
    # value-moving nodes between ranged tensors that lead to a quantized node (graph order is
    # topological, so walking it backwards sees every consumer before its producer)
    moves: set[int] = set()
    for node in reversed(graph.node):
        if quantize_moves and node.op_type in MOVE_OPS and usable(node.input[0]) and usable(node.output[0]) and any(
                id(u) in weighted or id(u) in data_nodes or id(u) in moves for u in consumers.get(node.output[0], [])):
            moves.add(id(node))
    for node in graph.node:
        if id(node) in moves:
            summary.move_nodes.append(node.name or f"{node.op_type}:{node.output[0]}")

    # 2. which tensors get a Q/DQ pair
    quantized_ids = set(weighted) | data_nodes | moves

    def reads_integers(user: onnx.NodeProto) -> bool:
        return id(user) in quantized_ids or user.op_type in FLOAT_LAYER_OPS

    def feeds_quantized(tensor: str) -> bool:
        for user in consumers.get(tensor, []):
            if reads_integers(user):
                return True
            if user.op_type == "Relu" and any(reads_integers(u) for u in consumers.get(user.output[0], [])):
                return True
        return False

    wanted: list[str] = []
    tied: dict[str, str] = {}  # output of a MOVE_OPS node -> its input (same scale and zero point)
    for node in graph.node:
        if id(node) in weighted:
            acts = [node.input[s] for s in weighted[id(node)][0]]
            # an output read by float operators only (heads, post-processing) stays float32
            outs = [node.output[0]] if usable(node.output[0]) and feeds_quantized(node.output[0]) else []
        elif id(node) in data_nodes:
            acts = [t for t in (node.input[:1] if node.op_type == "Resize" else node.input)
                    if t and t not in initializers]
            outs = [node.output[0]]
        elif id(node) in moves:
            acts, outs = [node.input[0]], [node.output[0]]
            tied[node.output[0]] = node.input[0]
        else:
            continue
        for tensor in acts + outs:
            if tensor not in wanted:
                wanted.append(tensor)
    relu_fed: dict[str, str] = {}  # Conv/Gemm output consumed only by Relu -> the Relu output
    for tensor in list(wanted):
        if tensor in tied:
            continue
        users = consumers.get(tensor, [])
        if users and all(u.op_type == "Relu" for u in users) and len(users) == 1 and usable(users[0].output[0]):
            relu_fed[tensor] = users[0].output[0]
            wanted.remove(tensor)
            if users[0].output[0] not in wanted:
                wanted.append(users[0].output[0])

    # 3. signs
    non_negative = non_negative_tensors(graph)

    params: dict[str, tuple[float, int]] = {}
    new_inits: list[onnx.TensorProto] = []
    pair_nodes: dict[str, list[onnx.NodeProto]] = {}
    for tensor in wanted:
        if tensor in tied:  # graph order: the input's parameters are already set
            scale, zero = params[tied[tensor]]
        else:
            amax = float(ranges[tensor])
            if tensor in non_negative:
                scale, zero = float(np.float32(amax / 255.0)), 0
            else:
                scale, zero = float(np.float32(amax / 127.0)), 128
        if zero == 0:
            summary.non_negative_tensors.append(tensor)
        params[tensor] = (scale, zero)
        base = _safe(tensor) + "_u8"
        s_name, z_name = f"{base}_scale", f"{base}_zero_point"
        new_inits.append(numpy_helper.from_array(np.array(scale, dtype=np.float32), s_name))
        new_inits.append(numpy_helper.from_array(np.array(zero, dtype=np.uint8), z_name))
        q_out, dq_out = f"{base}_QuantizeLinear_Output", f"{base}_DequantizeLinear_Output"
        pair_nodes[tensor] = [
            helper.make_node("QuantizeLinear", [tensor, s_name, z_name], [q_out], name=f"{base}_QuantizeLinear"),
            helper.make_node("DequantizeLinear", [q_out, s_name, z_name], [dq_out], name=f"{base}_DequantizeLinear"),
        ]
        summary.activation_tensors.append(tensor)
    dequantized = {t: nodes[1].output[0] for t, nodes in pair_nodes.items()}

    # 4. weights and biases of the weighted nodes; rewire every consumer of a quantized tensor
    weight_nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if id(node) not in weighted:
            continue
        act_slots, weight_slot = weighted[id(node)]
        _, _, axis = _slots(node, initializers)
        weight = initializers[node.input[weight_slot]]
        deq, inits, dq_node = _quantize_weight(weight, axis, helper, numpy_helper, qmax=WEIGHT_QMAX)
        # unique names per consumer: a weight shared by two nodes is quantized for each
        suffix = "_" + _safe(node.name or node.output[0])
        renamed = {i.name: i.name + suffix for i in inits}
        for init in inits:
            init.name = renamed[init.name]
        for i, name in enumerate(dq_node.input):
            dq_node.input[i] = renamed.get(name, name)
        dq_node.output[0] = deq + suffix
        dq_node.name = dq_node.name + suffix
        new_inits.extend(inits)
        weight_nodes.append(dq_node)
        if len(node.input) > 2 and node.input[2] in initializers and len(act_slots) == 1 and \
                node.op_type in ("Conv", "Gemm"):
            x_scale = params[node.input[act_slots[0]]][0]
            w_scale = numpy_helper.to_array(next(i for i in inits if i.name.endswith("_scale" + suffix)))
            bias = numpy_helper.to_array(initializers[node.input[2]]).astype(np.float64)
            b_scale = (np.float64(x_scale) * w_scale.astype(np.float64)).astype(np.float32)
            if b_scale.ndim == 0:
                b_scale = np.full(bias.shape, b_scale, np.float32)
            q_bias = np.clip(np.rint(bias / b_scale), -2 ** 31, 2 ** 31 - 1).astype(np.int32)
            b_base = _safe(node.input[2]) + suffix
            new_inits += [numpy_helper.from_array(q_bias, f"{b_base}_int32"),
                          numpy_helper.from_array(b_scale.astype(np.float32), f"{b_base}_bias_scale"),
                          numpy_helper.from_array(np.zeros(bias.shape, np.int32), f"{b_base}_bias_zero_point")]
            weight_nodes.append(helper.make_node(
                "DequantizeLinear", [f"{b_base}_int32", f"{b_base}_bias_scale", f"{b_base}_bias_zero_point"],
                [f"{b_base}_dequantized"], name=f"{b_base}_DequantizeLinear", axis=0))
            node.input[2] = f"{b_base}_dequantized"
        node.input[weight_slot] = deq + suffix
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in dequantized:
                node.input[i] = dequantized[name]

    # 5. order: weight DQs, pairs of graph inputs, then each node followed by its outputs' pairs
    splice_quantization(graph, weight_nodes, pair_nodes, [t for t in pair_nodes if t in graph_inputs], new_inits)
    out.producer_name = "tltk"
    return out, summary


def optimized_node_counts(model: str | os.PathLike[str] | bytes,
                          optimized_path: str | os.PathLike[str] | None = None) -> dict[str, int]:
    """Operator counts of the graph ONNX Runtime's CPU provider actually runs (after its fusions).

    This is how to tell whether an INT8 model runs on integer kernels: ``QLinearConv`` /
    ``QLinearMatMul`` / ``QLinearAdd`` nodes do, a ``Conv`` fed by ``DequantizeLinear`` does not.

    Args:
        model: an ``.onnx`` path or the model's bytes.
        optimized_path: where to keep the optimized model (default: a temporary file, removed).

    Returns:
        Operator type -> number of nodes, most frequent first.
    """
    import collections
    import tempfile

    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="tltk-ort-opt-") as tmp:
        target = os.fspath(optimized_path) if optimized_path else os.path.join(tmp, "optimized.onnx")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.optimized_model_filepath = target
        source = model if isinstance(model, bytes) else os.fspath(model)
        ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        graph = onnx.load(target, load_external_data=False).graph
        counts = collections.Counter(node.op_type for node in graph.node)
    return dict(counts.most_common())


__all__ = ["DATA_OPS", "FLOAT_LAYER_OPS", "MOVE_OPS", "WEIGHTED_OPS", "CpuInt8Summary", "optimized_node_counts", "quantize_for_cpu",
           "write_cpu_int8_onnx"]
