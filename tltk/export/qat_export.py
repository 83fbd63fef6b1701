"""Export inputs of a quantization-aware (QAT) model: its float twin and its learned INT8 ranges.

A QAT model (:func:`tltk.core.qat.quantize_model`) carries one tracked ``amax`` per tensor that
feeds a Conv/Dense layer.  Export needs them keyed by the names the tensors get in the exported
ONNX graph, which only exist after conversion, so this is done in two steps:

1. :func:`qat_export_inputs` strips the fake quantization (the float model with the exact trained
   weights) and returns the ranges keyed ``keras-layer:<consumer layer name>``
   (:data:`LAYER_KEY_PREFIX`), ``method="qat"``.
2. After the float model is converted, :func:`resolve_qat_ranges` (called by
   :func:`tltk.export.pipeline.export_model`) finds, for every Conv / ConvTranspose / Gemm /
   MatMul node of the ONNX graph, the Keras layer it was converted from and keys that layer's
   range by the node's activation input tensor: the same names
   :func:`tltk.export.calibration.activation_tensor_names` (scope ``"quantizable"``) returns, so
   the TensorRT cache and the Q/DQ model use them directly.

Nodes are matched to layers by their weights, not by names: converter names carry scope
suffixes (``conv1_1/...``) and a Conv fused with the following BatchNormalization takes the
batch norm's name.  A node's weight initializer, brought to ``(output channels, rest)``, must
equal the layer's kernel in the same layout up to one factor per output channel (which is what
folding a batch norm into the convolution does); an exact match wins over a proportional one.
Several nodes reading the same tensor get the largest of their ranges; nodes that match no range
stay in float in the Q/DQ model and are left out of the cache.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import numpy as np

from tltk.errors import InvalidInputError
from tltk.export.calibration import QUANTIZABLE_OPS
from tltk.export.calibration_cache import ActivationRanges

if TYPE_CHECKING:  # pragma: no cover - typing only
    import keras
    import onnx

log = logging.getLogger(__name__)

#: Prefix of range keys that name the Keras layer consuming the tensor, not an ONNX tensor.
LAYER_KEY_PREFIX = "keras-layer:"

#: Smallest |cosine| between a node's and a layer's per-channel weight rows for a match.
_MATCH_COSINE = 1.0 - 1e-4


def qat_export_inputs(model: keras.Model) -> tuple[keras.Model, ActivationRanges]:
    """The float model to convert and the learned ranges of a QAT model.

    Args:
        model: a quantization-aware model (:func:`tltk.core.qat.quantize_model`, trained or not).

    Returns:
        ``(float_model, ranges)``: the model without fake quantization (original layer classes
        and names, exactly the trained float weights) and an :class:`ActivationRanges` with
        ``method="qat"`` mapping ``"keras-layer:<layer name>"`` to the ``amax`` of that layer's
        input (in the tensor's units).  :func:`tltk.export.pipeline.export_model` resolves these
        keys to ONNX tensor names after conversion (:func:`resolve_qat_ranges`).
    """
    from tltk.core.qat import strip_quantization

    float_model, by_layer = strip_quantization(model)
    ranges = ActivationRanges({LAYER_KEY_PREFIX + name: amax for name, amax in by_layer.items()}, method="qat")
    log.info("QAT model %s: %d learned input ranges", model.name, len(ranges))
    return float_model, ranges


def has_layer_keys(ranges: ActivationRanges) -> bool:
    """Whether a range table holds ``keras-layer:`` keys that still need :func:`resolve_qat_ranges`."""
    return any(name.startswith(LAYER_KEY_PREFIX) for name in ranges)


def match_onnx_nodes(model: keras.Model, onnx_model: onnx.ModelProto) -> dict[str, str]:
    """Which Keras layer each quantizable ONNX node was converted from.

    Args:
        model: the float Keras model that was converted.
        onnx_model: its ONNX graph.

    Returns:
        ONNX node name -> Keras layer name, for the Conv / ConvTranspose / Gemm / MatMul nodes
        whose constant weight matches a Conv2D / DepthwiseConv2D / Conv2DTranspose / Dense kernel
        (see the module docstring for the rule).
    """
    from onnx import numpy_helper

    layers = _keras_weight_rows(model)
    initializers = {i.name: i for i in onnx_model.graph.initializer}
    result: dict[str, str] = {}
    for index, node in enumerate(onnx_model.graph.node):
        if node.op_type not in QUANTIZABLE_OPS or len(node.input) < 2 or node.input[1] not in initializers:
            continue
        rows = _onnx_weight_rows(node, numpy_helper.to_array(initializers[node.input[1]]))
        if rows is None:
            continue
        exact, proportional = [], []
        for name, candidate in layers:
            if candidate.shape != rows.shape:
                continue
            if np.array_equal(candidate, rows):
                exact.append(name)
            elif rows.shape[1] > 1 and _proportional_rows(candidate, rows):
                proportional.append(name)
        found = exact or proportional
        label = node.name or f"{node.op_type}_{index}"
        if len(found) > 1:  # equal weights: prefer a layer whose name is a scope of the node
            scopes = set(re.split(r"[/:]", f"{node.name}/{node.input[1]}"))
            named = [n for n in found if n in scopes or any(re.fullmatch(re.escape(n) + r"_\d+", s) for s in scopes)]
            found = named or found
            log.debug("ONNX node %s matches layers %s; using %s", label, found, found[0])
        if found:
            result[label] = found[0]
    return result


def resolve_qat_ranges(model: keras.Model, onnx_model: onnx.ModelProto,
                       ranges: ActivationRanges) -> ActivationRanges:
    """Replace ``keras-layer:`` keys by the ONNX tensor names of the converted graph.

    Args:
        model: the float Keras model that was converted (from :func:`qat_export_inputs`).
        onnx_model: the converted graph (TAO tensor names already applied).
        ranges: ranges keyed by ``keras-layer:<name>``; entries keyed otherwise are taken to be
            ONNX tensor names already and are kept.

    Returns:
        A new :class:`ActivationRanges` (same method) keyed by the activation input tensor of
        each matched Conv / ConvTranspose / Gemm / MatMul node, in graph order, followed by the
        entries that were already ONNX names.

    Raises:
        InvalidInputError: the table has layer keys but none of them matches a node of the graph.
    """
    by_layer = {name[len(LAYER_KEY_PREFIX):]: ranges[name] for name in ranges if name.startswith(LAYER_KEY_PREFIX)}
    resolved = ActivationRanges(method=ranges.method)
    if by_layer:
        constants = {i.name for i in onnx_model.graph.initializer}
        matches = match_onnx_nodes(model, onnx_model)
        used: set[str] = set()
        for index, node in enumerate(onnx_model.graph.node):
            layer = matches.get(node.name or f"{node.op_type}_{index}")
            if layer is None or layer not in by_layer or not node.input or node.input[0] in constants:
                continue
            tensor, amax = node.input[0], by_layer[layer]
            if tensor in resolved and resolved[tensor] != amax:
                log.debug("QAT: tensor %s feeds several layers; keeping the largest range", tensor)
            resolved.set(tensor, max(amax, resolved[tensor]) if tensor in resolved else amax)
            used.add(layer)
        if not used:
            raise InvalidInputError(
                f"none of the {len(by_layer)} QAT ranges could be matched to a node of the exported graph",
                hint="export with --force_ptq to calibrate instead")
        unused = sorted(set(by_layer) - used)
        if unused:
            log.warning("QAT: %d learned ranges match no ONNX node and are not exported (%s%s)", len(unused),
                        ", ".join(unused[:5]), ", ..." if len(unused) > 5 else "")
    for name in ranges:
        if not name.startswith(LAYER_KEY_PREFIX) and name not in resolved:
            resolved.set(name, ranges[name])
    log.info("QAT: %d ranges keyed by ONNX tensor name", len(resolved))
    return resolved


# ---- weight layouts -----------------------------------------------------------------------------

def _keras_weight_rows(model: Any) -> list[tuple[str, np.ndarray]]:
    """(layer name, kernel in ONNX layout as ``(output channels, rest)`` float32) per weight layer."""
    import keras

    from tltk.core.qat import QUANTIZED_CLASSES

    out: list[tuple[str, np.ndarray]] = []
    stack = list(model.layers)
    while stack:
        layer = stack.pop(0)
        if isinstance(layer, keras.Model):
            stack.extend(layer.layers)
            continue
        kind = next((base for base in QUANTIZED_CLASSES if isinstance(layer, base)), None)
        if kind is None:
            continue
        variable = getattr(layer, "_kernel", None)
        if not isinstance(variable, keras.Variable):
            variable = getattr(layer, "kernel", None)
        if not isinstance(variable, keras.Variable):
            continue
        kernel = np.asarray(keras.ops.convert_to_numpy(variable), dtype=np.float32)
        if kind is keras.layers.Dense:
            rows = kernel.T
        elif kind is keras.layers.DepthwiseConv2D:  # (kh, kw, cin, m) -> (cin * m, kh * kw)
            rows = kernel.transpose(2, 3, 0, 1).reshape(kernel.shape[2] * kernel.shape[3], -1)
        elif kind is keras.layers.Conv2DTranspose:  # (kh, kw, cout, cin) -> (cout, cin * kh * kw)
            rows = kernel.transpose(2, 3, 0, 1).reshape(kernel.shape[2], -1)
        else:  # Conv2D (kh, kw, cin, cout) -> (cout, cin * kh * kw)
            rows = kernel.transpose(3, 2, 0, 1).reshape(kernel.shape[3], -1)
        out.append((layer.name, np.ascontiguousarray(rows)))
    return out


def _onnx_weight_rows(node: Any, weight: np.ndarray) -> np.ndarray | None:
    """An ONNX weight brought to ``(output channels, rest)``, or None when the layout is unknown."""
    attrs = {a.name: a for a in node.attribute}
    w = np.asarray(weight, dtype=np.float32)
    if node.op_type == "Conv" and w.ndim >= 3:
        return w.reshape(w.shape[0], -1)
    if node.op_type == "ConvTranspose" and w.ndim >= 3:
        if (attrs["group"].i if "group" in attrs else 1) != 1:
            return None
        return np.ascontiguousarray(np.moveaxis(w, 1, 0)).reshape(w.shape[1], -1)
    if node.op_type == "Gemm" and w.ndim == 2:
        return w if (attrs["transB"].i if "transB" in attrs else 0) else np.ascontiguousarray(w.T)
    if node.op_type == "MatMul" and w.ndim == 2:
        return np.ascontiguousarray(w.T)
    return None


def _proportional_rows(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether every row of ``b`` is a multiple of the same row of ``a`` (zero rows of ``b`` allowed)."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    na, nb = np.linalg.norm(a64, axis=1), np.linalg.norm(b64, axis=1)
    both = (na > 0) & (nb > 0)
    if not both.any() or np.any((na == 0) & (nb > 0)):
        return False
    cosine = np.abs(np.sum(a64[both] * b64[both], axis=1)) / (na[both] * nb[both])
    return bool(np.all(cosine >= _MATCH_COSINE))


__all__ = [
    "LAYER_KEY_PREFIX",
    "has_layer_keys",
    "match_onnx_nodes",
    "qat_export_inputs",
    "resolve_qat_ranges",
]
