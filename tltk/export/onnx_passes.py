"""Graph passes on exported ONNX models: constant folding and TensorRT parser checks.

:func:`fold_constants` evaluates, once at export time, every part of the graph that does not
depend on the input images.  tf2onnx leaves some of them in the graph: the ``K`` of the
``TopK`` after each ``NonMaxSuppression`` of a ``combined_non_max_suppression`` is computed at
run time as ``Min(max_total_size, max_per_class * Shape(scores)[2])``.  ONNX Runtime does not
mind; TensorRT's ONNX parser needs ``K`` (and NMS's scalar parameters) as initializers.  The
pass:

* propagates *shape values*: ``Shape`` of a tensor whose dimensions are known from ONNX shape
  inference gives a constant; with a symbolic batch the known entries are still tracked through
  ``Slice``, ``Gather``, ``Concat``, ``Squeeze``, ``Unsqueeze``, ``Cast`` and ``Identity`` until
  only known entries remain (``Shape(x)[2:3]`` of ``[batch, 500, 1]`` is ``[1]``);
* evaluates every deterministic node whose inputs are all constants (ONNX's reference
  evaluator, at the model's opset) and stores its outputs as initializers, unless an output
  holds more than ``max_elements`` values (so large constant tensors are not materialised);
* removes the nodes, initializers and ``value_info`` entries nothing uses any more.

:func:`tensorrt_problems` walks a graph and lists what TensorRT 10's ONNX parser would refuse or
limit: operators outside the default ONNX domain, control flow and sequence operators,
``TopK`` whose ``K`` is not an initializer or is 3840 and above, ``NonMaxSuppression`` whose
``max_output_boxes_per_class``, ``iou_threshold`` or ``score_threshold`` is not an initializer,
or that receives more than 5000 candidate boxes per image (``INMSLayer``'s limit), ``RoiAlign``
without an explicit ``sampling_ratio`` (the parser's default, 1, is not ONNX's, 0).

:func:`fold_pad_into_maxpool` is an exact rewrite: a zero ``Pad`` of a non-negative tensor read
only by ``MaxPool`` becomes the pooling's own ``pads`` (ResNet's stem; it also lets the CPU INT8
model quantize the stem convolution).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover - typing only
    import onnx

log = logging.getLogger(__name__)

#: TensorRT's TopK limit: ``K`` must be below this.
TENSORRT_MAX_TOPK = 3840

#: Candidate boxes ``INMSLayer`` considers per image (2000 on SM 5.3/6.2 Jetson parts).
TENSORRT_MAX_NMS_CANDIDATES = 5000

#: Operators TensorRT's parser cannot take from a tltk export (control flow and sequences).
FORBIDDEN_OPS = frozenset({"Loop", "If", "Scan", "SequenceAt", "SequenceConstruct", "SequenceEmpty",
                           "SequenceErase", "SequenceInsert", "SequenceLength", "SequenceMap",
                           "SplitToSequence", "ConcatFromSequence"})

#: Operators never folded (their outputs change from run to run).
_NONDETERMINISTIC = frozenset({"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
                               "Multinomial", "Bernoulli", "Dropout"})

#: Operators that pass shape values through and understand partially known ones.
_SHAPE_VALUE_OPS = frozenset({"Shape", "Slice", "Gather", "Concat", "Squeeze", "Unsqueeze", "Cast", "Identity"})

#: Operators whose output is non-negative whatever their input.
NON_NEGATIVE_OPS = frozenset({"Relu", "Sigmoid"})

#: Operators whose output is non-negative when their (first / every) data input is.
SIGN_PRESERVING_OPS = frozenset({"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Concat",
                                  "Resize", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity",
                                  "Slice", "Split"})

#: Default largest constant (number of values) the folding pass materialises.
DEFAULT_MAX_FOLD_ELEMENTS = 1 << 16


@dataclass
class FoldReport:
    """What :func:`fold_constants` changed.

    Attributes:
        folded_nodes: nodes replaced by initializers, by operator type.
        removed_nodes: nodes removed because nothing used their outputs any more.
        nodes_before: node count before the pass.
        nodes_after: node count after it.
    """

    folded_nodes: dict[str, int] = field(default_factory=dict)
    removed_nodes: int = 0
    nodes_before: int = 0
    nodes_after: int = 0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy."""
        return {"folded_nodes": dict(self.folded_nodes), "removed_nodes": self.removed_nodes,
                "nodes_before": self.nodes_before, "nodes_after": self.nodes_after}


# ---- shape values -------------------------------------------------------------------------------

@dataclass
class _ShapeValue:
    """A small int tensor of rank 0 or 1 whose entries may be unknown (None)."""

    values: list[int | None]
    scalar: bool = False
    dtype: Any = np.int64

    def known(self) -> np.ndarray | None:
        if any(v is None for v in self.values):
            return None
        array = np.asarray(self.values, dtype=self.dtype)
        return array.reshape(()) if self.scalar else array


def _static_dims(value_info: Any) -> list[int | None] | None:
    tensor_type = value_info.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    return [int(d.dim_value) if d.HasField("dim_value") else None for d in tensor_type.shape.dim]


def _inferred_dims(proto: onnx.ModelProto) -> dict[str, list[int | None] | None]:
    """Each tensor's dimensions after ONNX shape inference (None where unknown)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=False, data_prop=True)
    return {value.name: _static_dims(value) for value in
            list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}


def _attribute(node: Any, name: str, default: Any = None) -> Any:
    import onnx

    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default


def _shape_value(node: Any, known: dict[str, np.ndarray], partial: dict[str, _ShapeValue],
                 dims: dict[str, list[int | None]]) -> _ShapeValue | None:
    """The shape value a node produces from (partially) known shape values, or None."""

    def value_of(name: str) -> _ShapeValue | None:
        if name in partial:
            return partial[name]
        array = known.get(name)
        if array is not None and array.ndim <= 1 and np.issubdtype(array.dtype, np.integer) and array.size <= 64:
            return _ShapeValue([int(v) for v in array.reshape(-1)], scalar=array.ndim == 0, dtype=array.dtype)
        return None

    op = node.op_type
    if op == "Shape":
        shape = dims.get(node.input[0])
        if shape is None:
            return None
        start, end = _attribute(node, "start", 0), _attribute(node, "end", None)
        return _ShapeValue(list(shape[slice(start, end)]))
    if op in ("Identity", "Cast"):
        source = value_of(node.input[0])
        if source is None:
            return None
        if op == "Identity":
            return _ShapeValue(list(source.values), source.scalar, source.dtype)
        to = {6: np.int32, 7: np.int64}.get(_attribute(node, "to"))  # INT32, INT64
        return _ShapeValue(list(source.values), source.scalar, to) if to is not None else None
    if op == "Slice":
        data = value_of(node.input[0])
        params = [known.get(name) if name else None for name in list(node.input[1:]) + [""] * (5 - len(node.input))]
        if data is None or data.scalar or params[0] is None or params[1] is None:
            return None
        if (len(node.input) > 3 and node.input[3] and params[2] is None) or \
                (len(node.input) > 4 and node.input[4] and params[3] is None):
            return None
        if params[2] is not None and [int(a) for a in params[2].reshape(-1)] not in ([0], [-1]):
            return None
        step = int(params[3].reshape(-1)[0]) if params[3] is not None else 1
        start, end = int(params[0].reshape(-1)[0]), int(params[1].reshape(-1)[0])
        return _ShapeValue(list(data.values[slice(start, end, step)]), dtype=data.dtype)
    if op == "Gather":
        data, indices = value_of(node.input[0]), known.get(node.input[1])
        if data is None or data.scalar or indices is None or int(_attribute(node, "axis", 0)) != 0:
            return None
        picked = [data.values[int(i)] for i in indices.reshape(-1)]
        return _ShapeValue(picked, scalar=indices.ndim == 0, dtype=data.dtype)
    if op == "Concat":
        found = [value_of(name) for name in node.input]
        parts = [p for p in found if p is not None and not p.scalar]
        if len(parts) != len(found) or not parts or any(p.dtype != parts[0].dtype for p in parts):
            return None
        return _ShapeValue([v for p in parts for v in p.values], dtype=parts[0].dtype)
    if op == "Unsqueeze":
        source = value_of(node.input[0])
        return _ShapeValue(list(source.values), dtype=source.dtype) if source is not None and source.scalar else None
    if op == "Squeeze":
        source = value_of(node.input[0])
        if source is None or source.scalar or len(source.values) != 1:
            return None
        return _ShapeValue(list(source.values), scalar=True, dtype=source.dtype)
    return None


# ---- evaluation ---------------------------------------------------------------------------------

def _evaluate(node: Any, inputs: list[np.ndarray | None], opsets: list[Any]) -> list[np.ndarray]:
    """Run one node with ONNX's reference evaluator at the model's opsets."""
    import onnx
    from onnx.reference import ReferenceEvaluator

    feeds: dict[str, np.ndarray] = {}
    graph_inputs = []
    for name, value in zip(node.input, inputs, strict=True):
        if not name or value is None or name in feeds:
            continue
        feeds[name] = value
        elem = onnx.helper.np_dtype_to_tensor_dtype(value.dtype)
        graph_inputs.append(onnx.helper.make_tensor_value_info(name, elem, list(value.shape)))
    outputs = [onnx.helper.make_empty_tensor_value_info(name) for name in node.output if name]
    graph = onnx.helper.make_graph([node], "fold", graph_inputs, outputs)
    model = onnx.helper.make_model(graph, opset_imports=opsets)
    results = ReferenceEvaluator(model).run(None, feeds)
    return [np.asarray(r) for r in results]


def fold_constants(proto: onnx.ModelProto, max_elements: int = DEFAULT_MAX_FOLD_ELEMENTS) -> FoldReport:
    """Fold the parts of a graph that do not depend on its inputs (see the module docstring).

    Args:
        proto: the model, edited in place (its nodes must be in topological order, as ONNX
            requires).
        max_elements: outputs with more values than this stay computed at run time.

    Returns:
        A :class:`FoldReport`.
    """
    report = FoldReport(nodes_before=len(proto.graph.node))
    for _ in range(8):  # folding can make more shapes static: repeat until nothing changes
        before = sum(report.folded_nodes.values()) + report.removed_nodes
        _fold_once(proto, max_elements, report)
        if sum(report.folded_nodes.values()) + report.removed_nodes == before:
            break
    report.nodes_after = len(proto.graph.node)
    log.debug("constant folding: %d -> %d nodes (%s folded, %d unused removed)", report.nodes_before,
              report.nodes_after, sum(report.folded_nodes.values()), report.removed_nodes)
    return report


def _fold_once(proto: onnx.ModelProto, max_elements: int, report: FoldReport) -> None:
    import onnx
    from onnx import numpy_helper

    graph = proto.graph
    inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=False, data_prop=True)
    dims: dict[str, list[int | None]] = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        shape = _static_dims(value)
        if shape is not None:
            dims[value.name] = shape
    known: dict[str, np.ndarray] = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    initial = set(known)
    graph_inputs = {value.name for value in graph.input} - initial
    partial: dict[str, _ShapeValue] = {}
    opsets = list(proto.opset_import)
    folded: list[Any] = []
    for node in graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type in _NONDETERMINISTIC or \
                any(attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for attr in node.attribute):
            continue
        if node.op_type in _SHAPE_VALUE_OPS and not all(not name or name in known for name in node.input):
            value = _shape_value(node, known, partial, dims)
            if value is None:
                continue
            array = value.known()
            if array is None:
                partial[node.output[0]] = value
                continue
            known[node.output[0]] = array
            folded.append(node)
            continue
        if any(name in graph_inputs for name in node.input) or not all(not name or name in known for name in node.input):
            continue
        try:
            results = _evaluate(node, [known[name] if name else None for name in node.input], opsets)
        except Exception as exc:  # noqa: BLE001 - an op the reference evaluator lacks stays in the graph
            log.debug("constant folding: %s (%s) left in the graph: %s", node.name, node.op_type, exc)
            continue
        if any(r.size > max_elements for r in results):
            continue
        for name, result in zip(node.output, results, strict=False):
            if name:
                known[name] = result
        folded.append(node)

    folded_ids = {id(node) for node in folded}
    outputs_needed = {value.name for value in graph.output}
    remaining = [node for node in graph.node if id(node) not in folded_ids]
    used = _used_tensors(remaining, outputs_needed)
    for node in folded:
        report.folded_nodes[node.op_type] = report.folded_nodes.get(node.op_type, 0) + 1
    new_inits = [numpy_helper.from_array(np.ascontiguousarray(known[name]), name)
                 for node in folded for name in node.output if name and name in used]
    remaining, removed = _prune_dead(remaining, outputs_needed)
    report.removed_nodes += removed
    used = _used_tensors(remaining, outputs_needed)
    keep_inits = [init for init in graph.initializer if init.name in used]
    keep_inits += [init for init in new_inits if init.name in used]
    del graph.node[:]
    graph.node.extend(remaining)
    del graph.initializer[:]
    graph.initializer.extend(keep_inits)
    produced = {name for node in remaining for name in node.output}
    kept_info = [value for value in graph.value_info if value.name in produced]
    del graph.value_info[:]
    graph.value_info.extend(kept_info)


def _used_tensors(nodes: list[Any], outputs: set[str]) -> set[str]:
    used = set(outputs)
    for node in nodes:
        used.update(name for name in node.input if name)
    return used


def _prune_dead(nodes: list[Any], outputs: set[str]) -> tuple[list[Any], int]:
    """Drop nodes none of whose outputs is used (repeatedly); returns (kept nodes, removed count)."""
    alive = list(nodes)
    removed = 0
    while True:
        used = _used_tensors(alive, outputs)
        kept = [node for node in alive if any(name in used for name in node.output if name)]
        if len(kept) == len(alive):
            return kept, removed
        removed += len(alive) - len(kept)
        alive = kept


# ---- exact rewrites ---------------------------------------------------------------------------------

def non_negative_tensors(graph: onnx.GraphProto) -> set[str]:
    """Tensors known to be >= 0: outputs of :data:`NON_NEGATIVE_OPS`, and of
    :data:`SIGN_PRESERVING_OPS` whose data inputs are (graph order: producers come first)."""
    initializers = {i.name for i in graph.initializer}
    non_negative: set[str] = set()
    for node in graph.node:
        data_in = [t for t in node.input if t and t not in initializers]
        if node.op_type in NON_NEGATIVE_OPS or (
                node.op_type in SIGN_PRESERVING_OPS and data_in
                and all(t in non_negative for t in (data_in[:1] if node.op_type != "Concat" else data_in))):
            non_negative.update(node.output)
    return non_negative


def fold_pad_into_maxpool(graph: onnx.GraphProto) -> list[str]:
    """Fold a zero ``Pad`` of a non-negative tensor into the ``MaxPool`` reading it (exact).

    ResNet's stem pads its ReLU output with zeros before the 3x3/2 max pooling (Keras
    ``ZeroPadding2D`` + ``MaxPool2D``).  The Pad keeps the stem convolution float in the CPU INT8
    model (its output reaches the pooling through an operator that is not quantized).  Since the
    padded tensor is >= 0, ``max`` over a window with zeros equals ``max`` over the window with
    MaxPool's own padding (padded cells ignored), as long as every window keeps a real cell (pads
    smaller than the kernel): the Pad becomes MaxPool ``pads`` and the stem's Conv -> Relu ->
    MaxPool runs on integers.

    Folded when: ``Pad`` mode ``constant`` with value 0 (or none), only on the two spatial axes of
    a 4-D NCHW tensor, no ``axes`` input, every pad below the kernel size; its only consumers are
    ``MaxPool`` nodes with ``auto_pad`` NOTSET; its input is non-negative (``Relu``/``Sigmoid``
    output, possibly through pooling/reshaping) and not a graph output.

    Args:
        graph: edited in place.

    Returns:
        Names of the Pad nodes folded.
    """
    import onnx
    from onnx import numpy_helper

    initializers = {i.name: i for i in graph.initializer}
    non_negative = non_negative_tensors(graph)
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    folded: list[str] = []
    removed: set[int] = set()
    for index, node in enumerate(graph.node):  # (by index: protobuf wrappers' id() can be reused)
        if node.op_type != "Pad" or node.input[0] not in non_negative or node.output[0] in outputs:
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        mode = attrs.get("mode", b"constant")
        if (mode.decode() if isinstance(mode, bytes) else mode) != "constant" or len(node.input) > 3:
            continue
        if len(node.input) < 2 or node.input[1] not in initializers:
            continue
        if len(node.input) > 2 and node.input[2]:
            value = initializers.get(node.input[2])
            if value is None or float(numpy_helper.to_array(value).reshape(-1)[0]) != 0.0:
                continue
        pads = [int(v) for v in numpy_helper.to_array(initializers[node.input[1]]).reshape(-1)]
        if len(pads) != 8 or any(pads[i] for i in (0, 1, 4, 5)) or min(pads) < 0:
            continue
        users = consumers.get(node.output[0], [])
        pools = [u for u in users if u.op_type == "MaxPool"]
        if not users or len(pools) != len(users):
            continue
        spatial = [pads[2], pads[3], pads[6], pads[7]]  # (top, left, bottom, right)
        ok = True
        for pool in pools:
            pool_attrs = {a.name: onnx.helper.get_attribute_value(a) for a in pool.attribute}
            auto = pool_attrs.get("auto_pad", b"NOTSET")
            kernel = list(pool_attrs.get("kernel_shape", []))
            total = [a + b for a, b in zip(pool_pads(pool_attrs), spatial, strict=True)]
            if (auto.decode() if isinstance(auto, bytes) else auto) != "NOTSET" or len(kernel) != 2 or \
                    len(pool.output) != 1 or max(total[0], total[2]) >= kernel[0] or \
                    max(total[1], total[3]) >= kernel[1]:
                ok = False
        if not ok:
            continue
        for pool in pools:
            pool_attrs = {a.name: onnx.helper.get_attribute_value(a) for a in pool.attribute}
            total = [a + b for a, b in zip(pool_pads(pool_attrs), spatial, strict=True)]
            kept = [a for a in pool.attribute if a.name != "pads"]
            del pool.attribute[:]
            pool.attribute.extend(kept)
            pool.attribute.append(onnx.helper.make_attribute("pads", total))
            pool.input[0] = node.input[0]
        removed.add(index)
        folded.append(node.name or node.output[0])
    if removed:
        kept_nodes = [n for i, n in enumerate(graph.node) if i not in removed]
        del graph.node[:]
        graph.node.extend(kept_nodes)
        used = _used_tensors(kept_nodes, outputs)
        kept_inits = [i for i in graph.initializer if i.name in used]
        del graph.initializer[:]
        graph.initializer.extend(kept_inits)
        log.debug("folded %d Pad node(s) into MaxPool: %s", len(folded), folded)
    return folded


def pool_pads(attrs: dict[str, Any]) -> list[int]:
    """A 2-D pooling node's ``pads`` attribute as (top, left, bottom, right) (zeros when absent)."""
    pads = list(attrs.get("pads", [])) or [0, 0, 0, 0]
    return [int(p) for p in pads]


def weighted_sums_to_matmul(proto: onnx.ModelProto) -> list[str]:
    """Turn ``ReduceSum(Mul(V, W), axis=-2)`` with ``W[..., K, 1]`` into ``MatMul(W^T, V)`` (exact).

    The gather ROIAlign (:func:`tltk.mask_rcnn.roi_align.bilinear_gather`) blends the four
    gathered neighbours ``V [..., 4, C]`` with weights ``W [..., 4, 1]``: ``Mul`` broadcasts the
    weights over the channels (a second tensor as large as ``V``) and ``ReduceSum`` reads it back.
    ``MatMul([..., 1, 4], [..., 4, C])`` computes the same sums of the same products in one pass
    (ONNX Runtime: about 0.6x the time of the pair on one core, ResNet-50 sizes).

    Rewritten when ``V`` and ``W`` have the same rank, ``W``'s last dimension is 1, the reduced
    axis is the second last, and both have a static size there (equal).  ``keepdims=0`` adds a
    ``Squeeze`` of that axis.

    Args:
        proto: edited in place (nodes stay in topological order).

    Returns:
        Names of the ReduceSum nodes rewritten.
    """
    import onnx
    from onnx import numpy_helper

    graph = proto.graph
    dims = _inferred_dims(proto)
    inits = {i.name: i for i in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    rewritten: list[str] = []
    replacement: dict[int, list[Any]] = {}
    for index, node in enumerate(graph.node):  # (by index: protobuf wrappers' id() can be reused)
        if node.op_type != "ReduceSum" or len(node.input) < 2 or node.input[1] not in inits:
            continue
        mul = producers.get(node.input[0])
        if mul is None or mul.op_type != "Mul" or consumers.get(mul.output[0], 0) != 1:
            continue
        axes = [int(a) for a in numpy_helper.to_array(inits[node.input[1]]).reshape(-1)]
        keepdims = int(_attribute(node, "keepdims", 1))
        for values, weights in ((mul.input[0], mul.input[1]), (mul.input[1], mul.input[0])):
            v, w = dims.get(values), dims.get(weights)
            if v is None or w is None or len(v) != len(w) or len(v) < 3:
                continue
            rank = len(v)
            if [a % rank for a in axes] != [rank - 2] or w[-1] != 1 or v[-2] is None or v[-2] != w[-2] or v[-1] == 1:
                continue
            base = node.name or node.output[0]
            perm = list(range(rank - 2)) + [rank - 1, rank - 2]
            nodes = [onnx.helper.make_node("Transpose", [weights], [f"{base}/tltk_weights_t"],
                                           name=f"{base}/tltk_weights_t", perm=perm)]
            product = node.output[0] if keepdims else f"{base}/tltk_matmul"
            nodes.append(onnx.helper.make_node("MatMul", [f"{base}/tltk_weights_t", values], [product],
                                               name=f"{base}/tltk_matmul"))
            if not keepdims:
                axis_name = f"{base}/tltk_squeeze_axis"
                graph.initializer.append(numpy_helper.from_array(np.array([rank - 2], np.int64), axis_name))
                nodes.append(onnx.helper.make_node("Squeeze", [product, axis_name], [node.output[0]],
                                                   name=f"{base}/tltk_squeeze"))
            replacement[index] = nodes
            rewritten.append(base)
            break
    if replacement:
        new_nodes: list[Any] = []
        for index, node in enumerate(graph.node):
            new_nodes.extend(replacement.get(index, [node]))
        outputs = {o.name for o in graph.output}
        new_nodes, _ = _prune_dead(new_nodes, outputs)
        del graph.node[:]
        graph.node.extend(new_nodes)
        log.debug("weighted sums to MatMul: %s", rewritten)
    return rewritten


def fold_transpose_into_matmul(proto: onnx.ModelProto) -> list[str]:
    """Fold ``Transpose -> Reshape (flatten) -> MatMul(x, W)`` into ``W``'s rows (exact).

    MaskRCNN's box head flattens its ROI features ``[B, R, S, S, C]`` in (C, H, W) order, as TAO
    does (``Permute`` then ``Reshape``), before ``fc6``.  The transpose copies the whole tensor
    (ResNet-50: 1000 x 12544 floats per image).  Permuting ``fc6``'s weight rows instead gives the
    same products and sums: ``x_chw @ W == x_hwc @ W[perm]``.

    Folded when the Transpose keeps its leading axes in place and permutes the trailing ones, its
    only consumer is a ``Reshape`` that flattens exactly those trailing axes into the last one,
    and everything reading that (through further ``Reshape`` nodes that keep the last axis, or
    ``Shape``) is a ``MatMul`` with a constant 2-D weight ``[K, D]`` as second input.

    Args:
        proto: edited in place.

    Returns:
        Names of the Transpose nodes folded.
    """
    from onnx import numpy_helper

    graph = proto.graph
    dims = _inferred_dims(proto)
    inits = {i.name: i for i in graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    folded: list[str] = []
    for node in list(graph.node):
        perm = _attribute(node, "perm")
        users = consumers.get(node.output[0], [])
        if node.op_type != "Transpose" or perm is None or len(users) != 1 or users[0].op_type != "Reshape" or \
                node.output[0] in outputs:
            continue
        perm = [int(p) for p in perm]
        lead = next((i for i, p in enumerate(perm) if p != i), len(perm))
        in_dims, flat_dims = dims.get(node.input[0]), dims.get(users[0].output[0])
        if lead == len(perm) or in_dims is None or flat_dims is None or None in in_dims[lead:]:
            continue
        trailing = [int(in_dims[p]) for p in perm[lead:]]  # the transposed trailing dims (output order)
        if len(flat_dims) != lead + 1 or flat_dims[-1] != int(np.prod(trailing)):
            continue
        # everything downstream: Reshape keeping the last axis, Shape, or MatMul(x, constant [K, D])
        matmuls, frontier, ok = [], [users[0].output[0]], True
        while frontier and ok:
            tensor = frontier.pop()
            if tensor in outputs:
                ok = False
            for user in consumers.get(tensor, []):
                if user.op_type == "Shape":
                    continue
                if user.op_type == "Reshape" and user.input[0] == tensor and \
                        (dims.get(user.output[0]) or [None])[-1] == flat_dims[-1]:
                    frontier.append(user.output[0])
                elif user.op_type == "MatMul" and user.input[0] == tensor and user.input[1] in inits and \
                        len(inits[user.input[1]].dims) == 2 and inits[user.input[1]].dims[0] == flat_dims[-1]:
                    matmuls.append(user)
                else:
                    ok = False
        if not ok or not matmuls:
            continue
        relative = [p - lead for p in perm[lead:]]  # output trailing axis j reads input trailing axis relative[j]
        inverse = [relative.index(i) for i in range(len(relative))]
        for matmul in matmuls:
            weight = numpy_helper.to_array(inits[matmul.input[1]])
            rows = weight.reshape(*trailing, weight.shape[1]).transpose(*inverse, len(trailing))
            name = f"{matmul.input[1]}/tltk_rows_{_safe_name(node.name or node.output[0])}"
            graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(rows.reshape(weight.shape)), name))
            matmul.input[1] = name
        users[0].input[0] = node.input[0]
        folded.append(node.name or node.output[0])
    if folded:
        nodes, _ = _prune_dead(list(graph.node), outputs)
        used = _used_tensors(nodes, outputs)
        kept = [i for i in graph.initializer if i.name in used]
        del graph.node[:]
        graph.node.extend(nodes)
        del graph.initializer[:]
        graph.initializer.extend(kept)
        log.debug("transposes folded into MatMul weights: %s", folded)
    return folded


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


# ---- TensorRT parser checks ---------------------------------------------------------------------

def tensorrt_problems(proto: onnx.ModelProto, max_nms_candidates: int = TENSORRT_MAX_NMS_CANDIDATES) -> list[str]:
    """What TensorRT 10's ONNX parser would refuse or cap in a graph (empty list: none).

    Args:
        proto: the model (not changed).
        max_nms_candidates: candidate boxes per image ``NonMaxSuppression`` may receive (5000;
            2000 on Jetson Nano/TX1/TX2-class parts).

    Returns:
        One line per problem, naming the node.
    """
    from onnx import numpy_helper

    graph = proto.graph
    inits = {init.name: init for init in graph.initializer}
    dims = _inferred_dims(proto)
    problems = []
    for node in graph.node:
        where = f"{node.op_type} node {node.name!r}"
        if node.domain not in ("", "ai.onnx"):
            problems.append(f"{where} is in the custom domain {node.domain!r}")
        if node.op_type in FORBIDDEN_OPS:
            problems.append(f"{where}: control-flow and sequence operators are not allowed")
        if node.op_type == "TopK":
            if node.input[1] not in inits:
                problems.append(f"{where}: K ({node.input[1]!r}) is computed at run time, not an initializer")
            else:
                k = int(numpy_helper.to_array(inits[node.input[1]]).reshape(-1)[0])
                if k >= TENSORRT_MAX_TOPK:
                    problems.append(f"{where}: K = {k} is not below TensorRT's limit {TENSORRT_MAX_TOPK}")
        if node.op_type == "RoiAlign" and "sampling_ratio" not in {a.name for a in node.attribute}:
            problems.append(f"{where}: no explicit sampling_ratio (TensorRT's importer uses 1, ONNX's default is 0)")
        if node.op_type == "NonMaxSuppression":
            for index, role in ((2, "max_output_boxes_per_class"), (3, "iou_threshold"), (4, "score_threshold")):
                if len(node.input) > index and node.input[index] and node.input[index] not in inits:
                    problems.append(f"{where}: {role} ({node.input[index]!r}) is not an initializer")
            boxes = dims.get(node.input[0])
            if boxes is None or len(boxes) != 3 or boxes[1] is None:
                problems.append(f"{where}: the number of candidate boxes is not static")
            elif boxes[1] > max_nms_candidates:
                problems.append(f"{where}: {boxes[1]} candidate boxes per image, above TensorRT's "
                                f"{max_nms_candidates}")
    return problems


__all__ = ["DEFAULT_MAX_FOLD_ELEMENTS", "FORBIDDEN_OPS", "NON_NEGATIVE_OPS", "SIGN_PRESERVING_OPS", "FoldReport",
           "TENSORRT_MAX_NMS_CANDIDATES", "TENSORRT_MAX_TOPK", "fold_constants", "fold_pad_into_maxpool",
           "fold_transpose_into_matmul", "non_negative_tensors", "pool_pads", "tensorrt_problems",
           "weighted_sums_to_matmul"]
