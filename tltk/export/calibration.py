"""INT8 post-training calibration: run the FP32 ONNX model and build one table of activation ranges.

Calibration runs the exported FP32 ONNX model in ONNX Runtime over calibration batches (already
preprocessed exactly as at inference time: for DetectNet_v2 RGB, resized to the network size,
divided by 255, NCHW float32).  A copy of the graph exposes every activation tensor as an extra
output; for each tensor a histogram of ``|x|`` is accumulated batch by batch (constant memory per
tensor), together with the exact running maximum.  At the end one ``amax`` per tensor is chosen:

* ``entropy`` (default): TensorRT's EntropyCalibration2 method.  The 2048-bin histogram of
  ``|x|`` is cut at every candidate bin ``i`` in 128..2048; the part above ``i`` is folded into
  bin ``i-1`` (reference distribution P), the first ``i`` bins are merged into 128 levels and
  spread back over the non-empty bins (quantized distribution Q), and the cut that minimises the
  KL divergence KL(P || Q) gives ``amax = i * bin_width``.
* ``minmax``: the exact largest ``|x|`` seen.
* ``percentile``: the ``percentile``-th percentile of ``|x|`` (default 99.99), read from the
  histogram (resolution: one bin, ``max/2048``).

Which tensors: the graph input(s) and every floating-point tensor a node produces from data
(tensors computed from weights alone are skipped).  That is every tensor TensorRT can run in INT8,
which is what its calibration cache lists; the Q/DQ writer uses the subset feeding Conv/Gemm/MatMul.
Names are the ONNX tensor names, which are also TensorRT's tensor names when it parses the model.

Differences from TensorRT's own calibrator: TensorRT calibrates on its network before fusion with
its own kernels; here ONNX Runtime runs the ONNX graph on the CPU.  The histogram is built in one
pass, so when a later batch exceeds the range seen so far the histogram range is doubled (pairs of
bins merged) instead of re-running the data; exact zeros are left out of the entropy histogram
(they quantize exactly and would otherwise dominate the first level after a ReLU).  The resulting
amax values are close to, not identical with, TensorRT's.

QAT models already carry learned ranges: build an :class:`~tltk.export.calibration_cache.ActivationRanges`
from them (``method="qat"``, tensor name -> amax, names as in the exported ONNX) and pass it to
:func:`tltk.export.qdq.write_qdq_onnx` and :func:`tltk.export.calibration_cache.write_calibration_cache`
directly; no calibration run is needed.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from tltk.errors import InvalidInputError, UsageError
from tltk.export.calibration_cache import ActivationRanges

if TYPE_CHECKING:  # pragma: no cover - typing only
    import onnx

log = logging.getLogger(__name__)

#: Calibration methods understood by :func:`calibrate_onnx`.
CALIBRATION_METHODS = ("entropy", "minmax", "percentile")

#: Histogram size, as in TensorRT's entropy calibrator.
NUM_BINS = 2048

#: Number of positive INT8 levels the entropy method quantizes into.
NUM_QUANT_LEVELS = 128

#: Default percentile for ``method="percentile"``.
DEFAULT_PERCENTILE = 99.99

#: Operators whose activation inputs the Q/DQ writer quantizes.
QUANTIZABLE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")

_FLOAT_TYPES = (1, 10, 11, 16)  # onnx.TensorProto FLOAT, FLOAT16, DOUBLE, BFLOAT16


class AbsHistogram:
    """Running histogram of ``|x|`` for one tensor, with the exact maximum and zero count.

    The range ``[0, range_max]`` is set by the first non-zero data; when later data exceeds it,
    the range is doubled as often as needed and neighbouring bins are merged, so the histogram
    always has :attr:`num_bins` bins of width ``range_max / num_bins``.

    Attributes:
        num_bins: number of bins (2048).
        counts: int64 array ``[num_bins]``: non-zero ``|x|`` counts per bin.
        range_max: upper edge of the last bin (0.0 until non-zero data arrives).
        max_abs: exact largest ``|x|`` seen.
        zeros: number of exact zeros seen.
        total: number of values seen (zeros included).
    """

    def __init__(self, num_bins: int = NUM_BINS) -> None:
        if num_bins < NUM_QUANT_LEVELS:
            raise UsageError(f"histogram needs at least {NUM_QUANT_LEVELS} bins, got {num_bins}")
        self.num_bins = int(num_bins)
        self.counts = np.zeros(self.num_bins, dtype=np.int64)
        self.range_max = 0.0
        self.max_abs = 0.0
        self.zeros = 0
        self.total = 0

    @property
    def bin_width(self) -> float:
        """Width of one bin, in the tensor's units."""
        return self.range_max / self.num_bins

    def add(self, values: np.ndarray) -> None:
        """Add a batch of values (any shape; NaN and inf are rejected).

        Args:
            values: the tensor values.

        Raises:
            InvalidInputError: the values contain NaN or infinity.
        """
        flat = np.abs(np.asarray(values, dtype=np.float32).reshape(-1))
        if flat.size == 0:
            return
        batch_max = float(flat.max())
        if not math.isfinite(batch_max):
            raise InvalidInputError("calibration data produced NaN or infinite activations; check the "
                                    "calibration inputs (preprocessing must match inference)")
        self.total += int(flat.size)
        nonzero = flat[flat > 0]
        self.zeros += int(flat.size - nonzero.size)
        self.max_abs = max(self.max_abs, batch_max)
        if nonzero.size == 0:
            return
        if self.range_max == 0.0:
            self.range_max = batch_max
        elif batch_max > self.range_max:
            self._grow(batch_max)
        idx = np.minimum((nonzero.astype(np.float64) * (self.num_bins / self.range_max)).astype(np.int64),
                         self.num_bins - 1)
        self.counts += np.bincount(idx, minlength=self.num_bins)

    def _grow(self, new_max: float) -> None:
        factor = 1
        while self.range_max * factor < new_max:
            factor *= 2
        if factor >= self.num_bins:
            merged = np.zeros(self.num_bins, dtype=np.int64)
            merged[0] = self.counts.sum()
        else:
            merged = np.zeros(self.num_bins, dtype=np.int64)
            folded = self.counts.reshape(-1, factor).sum(axis=1)
            merged[: folded.size] = folded
        self.counts = merged
        self.range_max *= factor

    def amax(self, method: str = "entropy", percentile: float = DEFAULT_PERCENTILE) -> float:
        """The calibrated range of this tensor.

        Args:
            method: ``"entropy"``, ``"minmax"`` or ``"percentile"``.
            percentile: percentile of ``|x|`` (0-100] for ``"percentile"``.

        Returns:
            amax >= 0, never above :attr:`max_abs`.

        Raises:
            UsageError: unknown method or percentile out of range.
        """
        if method == "minmax":
            return float(self.max_abs)
        if method == "percentile":
            return min(percentile_amax(self.counts, self.bin_width, percentile, zeros=self.zeros),
                       float(self.max_abs))
        if method == "entropy":
            return min(entropy_amax(self.counts, self.bin_width), float(self.max_abs))
        raise UsageError(f"unknown calibration method '{method}' (one of {', '.join(CALIBRATION_METHODS)})")


def entropy_amax(counts: np.ndarray, bin_width: float, num_levels: int = NUM_QUANT_LEVELS) -> float:
    """TensorRT-style KL-divergence threshold for a histogram of ``|x|``.

    For every candidate cut ``i`` from ``num_levels`` to the last non-empty bin, the reference
    distribution P is ``counts[:i]`` with everything above the cut added to bin ``i-1``; Q merges
    ``counts[:i]`` into ``num_levels`` groups and spreads each group's total evenly over the bins
    where P is non-zero.  The cut with the smallest KL(P || Q) wins.

    Args:
        counts: ``[num_bins]`` bin counts of ``|x|`` (bin ``k`` covers ``[k, k+1) * bin_width``).
        bin_width: width of one bin.
        num_levels: number of quantization levels (128 for INT8).

    Returns:
        ``i_best * bin_width`` (0.0 for an empty histogram).
    """
    hist = np.asarray(counts, dtype=np.float64)
    nonzero = np.nonzero(hist)[0]
    if nonzero.size == 0 or bin_width <= 0:
        return 0.0
    last = int(nonzero[-1]) + 1
    if last <= num_levels:
        return last * bin_width
    tail = np.concatenate([np.cumsum(hist[::-1])[::-1], [0.0]])  # tail[i] = sum(hist[i:])
    best_i, best_kl = last, math.inf
    for i in range(num_levels, last + 1):
        p = hist[:i].copy()
        p[i - 1] += tail[i]
        starts = (np.arange(num_levels) * i) // num_levels
        group_sum = np.add.reduceat(hist[:i], starts)
        mask = p > 0
        group_nonzero = np.add.reduceat(mask.astype(np.float64), starts)
        group_id = np.repeat(np.arange(num_levels), np.diff(np.append(starts, i)))
        with np.errstate(divide="ignore", invalid="ignore"):
            per_bin = np.where(group_nonzero > 0, group_sum / np.maximum(group_nonzero, 1), 0.0)
        q = np.where(mask, per_bin[group_id], 0.0)
        p_sum, q_sum = p.sum(), q.sum()
        if q_sum <= 0:
            continue
        pn = p[mask] / p_sum
        qn = np.maximum(q[mask] / q_sum, 1e-12)
        kl = float(np.sum(pn * np.log(pn / qn)))
        if kl < best_kl:
            best_kl, best_i = kl, i
    return best_i * bin_width


def percentile_amax(counts: np.ndarray, bin_width: float, percentile: float, zeros: int = 0) -> float:
    """The ``percentile``-th percentile of ``|x|`` read from a histogram (upper bin edge).

    Args:
        counts: ``[num_bins]`` counts of non-zero ``|x|``.
        bin_width: width of one bin.
        percentile: in (0, 100].
        zeros: number of exact zeros, counted below the first bin.

    Returns:
        The upper edge of the first bin where the cumulative share reaches ``percentile`` %.

    Raises:
        UsageError: ``percentile`` outside (0, 100].
    """
    if not 0 < percentile <= 100:
        raise UsageError(f"calibration percentile must be in (0, 100], got {percentile}")
    hist = np.asarray(counts, dtype=np.float64)
    total = hist.sum() + zeros
    if total == 0 or hist.sum() == 0:
        return 0.0
    target = total * percentile / 100.0
    if zeros >= target:
        return 0.0
    cumulative = zeros + np.cumsum(hist)
    index = int(np.searchsorted(cumulative, target - 1e-9 * total, side="left"))
    return (min(index, hist.size - 1) + 1) * bin_width


# ---- which tensors ----------------------------------------------------------------------------------

#: Operators that carry feature maps through a network (the region INT8 may cover).
NETWORK_OPS = frozenset({
    "Relu", "LeakyRelu", "PRelu", "Clip", "Sigmoid", "HardSigmoid", "Tanh", "MaxPool", "AveragePool",
    "GlobalAveragePool", "GlobalMaxPool", "Resize", "Upsample", "Transpose", "Reshape", "Flatten", "Squeeze",
    "Unsqueeze", "Concat", "Pad", "Identity", "BatchNormalization", "Add", "Sub", "Mul", "Div", "Tile", "Slice",
    "Split", "Expand", "DepthToSpace", "SpaceToDepth",
})

#: Network operators whose inputs after the first are shapes, indices or bounds, not feature maps.
_FIRST_INPUT_ONLY = frozenset({"Reshape", "Tile", "Expand", "Slice", "Pad", "Split", "Squeeze", "Unsqueeze",
                               "Resize", "Upsample", "Clip"})

#: Tensor scopes of :func:`activation_tensor_names`.
TENSOR_SCOPES = ("all", "network", "quantizable")


def activation_tensor_names(model: onnx.ModelProto, scope: str = "all") -> list[str]:
    """ONNX tensor names that calibration measures.

    Args:
        model: the FP32 ONNX model.
        scope: ``"all"``: graph inputs and every tensor produced from data (non-float tensors
            are dropped at run time); ``"quantizable"``: only the activation inputs of
            Conv/ConvTranspose/Gemm/MatMul (what the Q/DQ writer needs), plus the graph inputs;
            ``"network"``: the quantizable tensors, the outputs of those operators, and every
            tensor of the convolutional network around them: tensors computed from the graph
            input or a Conv/Gemm/MatMul output through feature-map operators only
            (:data:`NETWORK_OPS`) that lead, through such operators, to a quantizable input or a
            graph output.  Post-processing (NMS, top-k, gathers, box decoding) is left out, so
            a TensorRT cache of this scope keeps it in float; for a plain CNN (DetectNet_v2)
            it equals ``"all"``.

    Returns:
        Names in graph order, without duplicates.

    Raises:
        UsageError: unknown scope.
    """
    if scope not in TENSOR_SCOPES:
        raise UsageError(f"unknown calibration tensor scope '{scope}' ({', '.join(TENSOR_SCOPES)})")
    graph = model.graph
    constants = {i.name for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" or (node.input and all(not t or t in constants for t in node.input)):
            constants.update(node.output)
    types = _elem_types(model)
    names: list[str] = [i.name for i in graph.input if i.name not in constants]
    seen = set(names)
    region = _network_region(model, constants) if scope == "network" else set()
    for node in graph.node:
        if scope == "all":
            candidates = list(node.output)
        elif scope == "network":
            candidates = [t for t in list(node.input) + list(node.output) if t in region]
        elif node.op_type in QUANTIZABLE_OPS:
            candidates = list(node.input[:2]) if node.op_type == "MatMul" else list(node.input[:1])
        else:
            continue
        for name in candidates:
            if not name or name in seen or name in constants:
                continue
            if name in types and types[name] not in _FLOAT_TYPES:
                continue
            seen.add(name)
            names.append(name)
    return names


def _quantized_inputs(node: onnx.NodeProto) -> list[str]:
    return list(node.input[:2]) if node.op_type == "MatMul" else list(node.input[:1])


def _network_region(model: onnx.ModelProto, constants: set[str]) -> set[str]:
    """The ``"network"`` scope of :func:`activation_tensor_names` (constants excluded)."""
    graph = model.graph
    forward = {i.name for i in graph.input if i.name not in constants}
    anchors: set[str] = set()
    producers: dict[str, onnx.NodeProto] = {}
    for node in graph.node:
        for name in node.output:
            producers[name] = node
        inputs = node.input[:1] if node.op_type in _FIRST_INPUT_ONLY else node.input
        data = [t for t in inputs if t and t not in constants]
        # a MatMul of two computed tensors neither of which comes from the network (the ROIAlign
        # blend of tltk.export.onnx_passes.weighted_sums_to_matmul) is post-processing
        blend = node.op_type == "MatMul" and not any(t in constants for t in node.input[:2]) and \
            not any(t in forward for t in node.input[:2])
        if node.op_type in QUANTIZABLE_OPS and not blend:
            anchors.update(t for t in _quantized_inputs(node) if t and t not in constants)
            anchors.update(node.output)
            forward.update(node.output)
        elif node.op_type in NETWORK_OPS and data and all(t in forward for t in data):
            forward.update(node.output)
    region: set[str] = set()
    stack = [t for t in anchors if t in forward] + [o.name for o in graph.output if o.name in forward]
    while stack:
        name = stack.pop()
        if name in region:
            continue
        region.add(name)
        producer = producers.get(name)
        if producer is not None:
            stack.extend(t for t in producer.input if t and t in forward and t not in region)
    return region | anchors


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # shape inference is best effort; run-time dtype filtering follows
        inferred = model
    g = inferred.graph
    return {v.name: v.type.tensor_type.elem_type for v in list(g.input) + list(g.output) + list(g.value_info)
            if v.type.HasField("tensor_type")}


# ---- running ------------------------------------------------------------------------------------------

def collect_histograms(
    onnx_model: str | os.PathLike[str] | bytes,
    batches: Iterable[np.ndarray],
    tensor_names: Sequence[str] | None = None,
    key: str | None = None,
    images_per_run: int = 4,
    num_bins: int = NUM_BINS,
    max_batches: int | None = None,
) -> tuple[dict[str, AbsHistogram], int]:
    """Run the FP32 model over calibration batches and accumulate ``|x|`` histograms.

    Args:
        onnx_model: ONNX path, ``.etlt`` path (with ``key``) or serialized bytes.
        batches: iterable of preprocessed ``[N, C, H, W]`` float arrays (inference preprocessing).
        tensor_names: tensors to measure; default :func:`activation_tensor_names` (scope "all").
        key: key string for an ``.etlt`` model.
        images_per_run: split each batch into runs of at most this many images, which bounds the
            memory the exposed activations take.
        num_bins: histogram size.
        max_batches: stop after this many batches (None: all).

    Returns:
        ``(histograms, num_images)``: tensor name -> :class:`AbsHistogram` (float tensors only),
        and the number of images seen.

    Raises:
        InvalidInputError: no batch was given, or a batch is not 4-D / does not match the input.
    """
    import onnx
    import onnxruntime as ort

    from tltk.console import progress
    from tltk.export.onnx_export import load_onnx_bytes

    model = onnx.load_from_string(load_onnx_bytes(onnx_model, key))
    names = list(tensor_names) if tensor_names is not None else activation_tensor_names(model, "all")
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if len(inputs) != 1:
        raise InvalidInputError(f"calibration needs a model with one input, this one has {len(inputs)}")
    input_name = inputs[0].name
    expected = [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim]
    exposed = _with_extra_outputs(model, names)

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(exposed.SerializeToString(), options, providers=["CPUExecutionProvider"])
    wanted = set(names)
    fetch = [o.name for o in session.get_outputs() if o.name in wanted and o.name != input_name]
    histograms: dict[str, AbsHistogram] = {}
    skipped: set[str] = set()
    num_images = 0
    step = max(1, int(images_per_run))
    for number, batch in enumerate(progress(batches, total=max_batches, desc="calibration", unit="batch")):
        if max_batches is not None and number >= max_batches:
            break
        array = np.asarray(batch)
        if array.ndim != 4 or any(e is not None and e != s for e, s in zip(expected[1:], array.shape[1:],
                                                                           strict=False)):
            raise InvalidInputError(
                f"calibration batch {number}: shape {array.shape} does not match the model input "
                f"{input_name} {['N' if e is None else e for e in expected]}")
        array = np.ascontiguousarray(array, dtype=np.float32)
        for start in range(0, array.shape[0], step):
            chunk = array[start:start + step]
            if expected[0] is not None and chunk.shape[0] != expected[0]:
                raise InvalidInputError(f"the model has a static batch of {expected[0]}; calibration batches "
                                        f"must hold a multiple of {expected[0]} images")
            values = session.run(fetch, {input_name: chunk})
            measured = list(zip(fetch, values, strict=True))
            if input_name in wanted:
                measured.insert(0, (input_name, chunk))
            for name, value in measured:
                if name in skipped:
                    continue
                if not np.issubdtype(value.dtype, np.floating):
                    skipped.add(name)
                    continue
                histograms.setdefault(name, AbsHistogram(num_bins)).add(value)
            num_images += chunk.shape[0]
    if num_images == 0:
        raise InvalidInputError("calibration got no data: the calibration source yielded no batches",
                                hint="check --cal_data_file / --cal_image_dir / the spec's data sources")
    ordered = {n: histograms[n] for n in names if n in histograms}
    log.info("calibration: %d images, %d tensors measured", num_images, len(ordered))
    return ordered, num_images


def _with_extra_outputs(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    present = {o.name for o in copy.graph.output} | {i.name for i in copy.graph.input}
    for name in names:
        if name not in present:
            copy.graph.output.append(onnx.ValueInfoProto(name=name))
            present.add(name)
    return copy


def ranges_from_histograms(histograms: dict[str, AbsHistogram], method: str = "entropy",
                           percentile: float = DEFAULT_PERCENTILE) -> ActivationRanges:
    """Turn accumulated histograms into one table of ranges.

    Args:
        histograms: tensor name -> histogram (from :func:`collect_histograms`).
        method: ``"entropy"``, ``"minmax"`` or ``"percentile"``.
        percentile: for ``"percentile"``.

    Returns:
        The :class:`ActivationRanges` (``method`` set to the method used).

    Raises:
        UsageError: unknown method.
    """
    if method not in CALIBRATION_METHODS:
        raise UsageError(f"unknown calibration method '{method}' (one of {', '.join(CALIBRATION_METHODS)})")
    ranges = ActivationRanges(method=method)
    for name, hist in histograms.items():
        ranges.set(name, hist.amax(method, percentile))
    return ranges


def calibrate_onnx(
    onnx_model: str | os.PathLike[str] | bytes,
    batches: Iterable[np.ndarray],
    method: str = "entropy",
    percentile: float = DEFAULT_PERCENTILE,
    tensor_names: Sequence[str] | None = None,
    key: str | None = None,
    images_per_run: int = 4,
    max_batches: int | None = None,
) -> ActivationRanges:
    """Calibrate an FP32 ONNX model: one amax per activation tensor.

    Args:
        onnx_model: ONNX path, ``.etlt`` path (with ``key``) or serialized bytes.
        batches: preprocessed ``[N, C, H, W]`` float32 batches (exactly the inference
            preprocessing; for DetectNet_v2 RGB / 255, NCHW).
        method: ``"entropy"`` (TensorRT EntropyCalibration2 style), ``"minmax"`` or
            ``"percentile"``.
        percentile: percentile of ``|x|`` for ``"percentile"`` (default 99.99).
        tensor_names: tensors to calibrate; default every activation tensor
            (:func:`activation_tensor_names` scope ``"all"``).
        key: key string for an ``.etlt`` model.
        images_per_run: images per ONNX Runtime call (memory bound).
        max_batches: stop after this many batches.

    Returns:
        :class:`ActivationRanges` keyed by ONNX tensor name, in graph order.
    """
    if method not in CALIBRATION_METHODS:
        raise UsageError(f"unknown calibration method '{method}' (one of {', '.join(CALIBRATION_METHODS)})")
    histograms, _ = collect_histograms(onnx_model, batches, tensor_names, key=key, images_per_run=images_per_run,
                                       max_batches=max_batches)
    return ranges_from_histograms(histograms, method, percentile)


__all__ = [
    "CALIBRATION_METHODS",
    "DEFAULT_PERCENTILE",
    "NUM_BINS",
    "NETWORK_OPS",
    "NUM_QUANT_LEVELS",
    "QUANTIZABLE_OPS",
    "TENSOR_SCOPES",
    "AbsHistogram",
    "activation_tensor_names",
    "calibrate_onnx",
    "collect_histograms",
    "entropy_amax",
    "percentile_amax",
    "ranges_from_histograms",
]
