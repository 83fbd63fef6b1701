"""Channel pruning of Keras functional models (TAO's ``min_weight`` method), shared by every model.

The pruner removes whole output filters of ``Conv2D``, ``Conv2DTranspose`` and ``Dense`` layers and
builds a **new, smaller** functional model with the same layer names, the same graph and the kept
weights copied (sliced), not a masked one.

How the filters to keep are chosen (TAO's algorithm, see ``docs/pruning.md``):

1. Per filter, the L2 norm of the kernel over every axis but the output axis (biases ignored).
2. Normalised per layer: ``max`` divides by the layer's largest norm; ``L2`` divides by the L2
   norm of the layer's norm vector and multiplies by the number of filters (``n * v / ||v||``,
   TAO's formula: a layer of ``n`` equal filters scores ``sqrt(n)`` each).
3. Channels that must stay aligned form one *group*: the inputs of an element-wise merge
   (``Add``, ``Subtract``, ``Multiply``, ``Average``, ``Maximum``, ``Minimum``; residual blocks)
   and a ``DepthwiseConv2D`` with the producer of its input (a depthwise conv's channels follow
   its input).  The members' normalised statistics are merged element-wise by the equalization
   criterion: ``union`` (max), ``intersection`` (min), ``arithmetic_mean``, ``geometric_mean``;
   one kept set is imposed on every member.
4. Kept count ``k = #(stat > pruning_threshold)``, raised to ``min(min_num_filters, n)``, rounded
   **up** to a multiple of ``pruning_granularity`` and capped at ``n`` (at least 1); the ``k``
   filters with the largest statistic are kept, in their original order.

Channel bookkeeping: the channel axis is the **last** axis (tltk models compute channels-last
after the input ``Permute``).  Every tensor's channels are described as a list of segments, each
a whole group, so ``Concatenate`` on the last axis simply concatenates the descriptions (channel
offsets) and consumers are sliced consistently:

* *prunable* (``Conv2D`` with ``groups == 1``, ``Conv2DTranspose``, ``Dense``): input channels
  sliced by the upstream kept set, filters (kernel and bias) by their own;
* *per-channel* (``BatchNormalization`` on the last axis): gamma, beta and the moving statistics
  sliced; ``DepthwiseConv2D`` (depth multiplier 1): kernel and bias sliced;
* *pass-through* (element-wise activations, ``Dropout``, pooling incl. global pooling,
  ``ZeroPadding2D``, ``Cropping2D``, ``UpSampling2D``...): forward the kept set;
* everything else is a *boundary* (``Input``, ``Permute``, ``Reshape``, ``Flatten``, ``Lambda``,
  ``Softmax``, custom and nested layers, channels-first layers): the channels entering it are all
  kept and its output starts a new, unprunable channel space.  So the NCHW<->NHWC ``Permute``
  layers at the input and outputs of tltk models need no special case, and a ``Dense`` after
  ``Flatten`` keeps its inputs.

Never pruned: the tensors the model returns (its output shapes do not change), the layers named
by the caller as protected (e.g. a detector's output heads), and the user's ``excluded_layers``:
every channel that leaves a protected or excluded layer is kept, together with all channels tied
to it.
"""

from __future__ import annotations

import copy
import difflib
import logging
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import keras
import numpy as np

from tltk.errors import InvalidInputError, UsageError

log = logging.getLogger(__name__)

NORMALIZERS: tuple[str, ...] = ("max", "L2")
EQUALIZATION_CRITERIA: tuple[str, ...] = ("union", "intersection", "arithmetic_mean", "geometric_mean")

# Layers whose filters can be removed: class -> (output axis, input axis) of the kernel.
_PRUNABLE_AXES: dict[type, tuple[int, int]] = {
    keras.layers.Conv2D: (3, 2),
    keras.layers.Conv2DTranspose: (2, 3),
    keras.layers.Dense: (1, 0),
}
# Layers whose output channels are their input channels, with no weights to slice.
_PASS_THROUGH: tuple[type, ...] = (
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.Dropout,
    keras.layers.SpatialDropout2D,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.AlphaDropout,
    keras.layers.ActivityRegularization,
    keras.layers.Identity,
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling2D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.ZeroPadding2D,
    keras.layers.Cropping2D,
    keras.layers.UpSampling2D,
)
# Element-wise merges: their inputs' channels are tied together.
_ELEMENTWISE_MERGES: tuple[type, ...] = (
    keras.layers.Add,
    keras.layers.Subtract,
    keras.layers.Multiply,
    keras.layers.Average,
    keras.layers.Maximum,
    keras.layers.Minimum,
)
# Activations that act on every value independently (an ``Activation`` layer or a conv's own
# activation); anything else (softmax...) mixes channels and stops pruning at that point.
_ELEMENTWISE_ACTIVATIONS: frozenset[str] = frozenset({
    "linear", "relu", "relu6", "leaky_relu", "elu", "selu", "celu", "gelu", "sigmoid", "hard_sigmoid",
    "tanh", "hard_tanh", "softplus", "softsign", "swish", "silu", "hard_swish", "hard_silu", "mish",
    "exponential", "log_sigmoid",
})
_BN_WEIGHTS = frozenset({"gamma", "beta", "moving_mean", "moving_variance"})
_KERNEL_WEIGHTS = frozenset({"kernel", "bias"})

# Layer roles found by the graph analysis.
_PRUNABLE, _DEPTHWISE, _PER_CHANNEL, _PASS, _MERGE, _CONCAT, _BOUNDARY, _INPUT = (
    "prunable", "depthwise", "per_channel", "pass_through", "merge", "concatenate", "boundary", "input")

Segment = tuple[int, int]  # (group id, number of channels)


@dataclass(frozen=True)
class PruningOptions:
    """TAO's prune options (defaults are TAO's).

    Attributes:
        normalizer: ``"max"`` or ``"L2"`` (see the module docstring).
        equalization_criterion: ``"union"``, ``"intersection"``, ``"arithmetic_mean"`` or
            ``"geometric_mean"``: how tied layers' statistics are merged.
        pruning_granularity: kept filter counts are multiples of this (unless every filter is
            kept), >= 1.
        pruning_threshold: normalised statistic a filter must exceed to be kept, in [0, 1].
        min_num_filters: every pruned layer keeps at least ``min(min_num_filters, n)`` filters, >= 0.
        excluded_layers: names of layers whose output channels are all kept (each must exist in
            the model).
    """

    normalizer: str = "max"
    equalization_criterion: str = "union"
    pruning_granularity: int = 8
    pruning_threshold: float = 0.1
    min_num_filters: int = 16
    excluded_layers: tuple[str, ...] = ()

    def check(self) -> None:
        """Validate the option values.

        Raises:
            UsageError: an unknown normalizer or criterion, a granularity below 1, a negative
                ``min_num_filters``, or a threshold outside [0, 1].
        """
        if self.normalizer not in NORMALIZERS:
            raise UsageError(f"normalizer: unknown value {self.normalizer!r}",
                             hint=f"use one of: {', '.join(NORMALIZERS)}")
        if self.equalization_criterion not in EQUALIZATION_CRITERIA:
            close = difflib.get_close_matches(str(self.equalization_criterion), EQUALIZATION_CRITERIA, n=1)
            mean = f"did you mean '{close[0]}'? " if close else ""
            raise UsageError(f"equalization_criterion: unknown value {self.equalization_criterion!r}",
                             hint=f"{mean}use one of: {', '.join(EQUALIZATION_CRITERIA)}")
        if int(self.pruning_granularity) < 1:
            raise UsageError(f"pruning_granularity: {self.pruning_granularity} is below 1")
        if int(self.min_num_filters) < 0:
            raise UsageError(f"min_num_filters: {self.min_num_filters} is negative")
        threshold = float(self.pruning_threshold)
        if not (0.0 <= threshold <= 1.0):
            raise UsageError(f"pruning_threshold: {self.pruning_threshold} is outside [0, 1]",
                             hint="TAO's default is 0.1; larger values prune more")


@dataclass(frozen=True)
class LayerPruning:
    """Filter counts of one convolution/dense layer before and after pruning.

    Attributes:
        name: layer name.
        class_name: Keras class (``Conv2D``, ``Conv2DTranspose``, ``Dense``, ``DepthwiseConv2D``).
        filters_before: output channels (filters/units) of the original layer.
        filters_after: output channels of the pruned layer.
    """

    name: str
    class_name: str
    filters_before: int
    filters_after: int


@dataclass
class PruningReport:
    """What ``prune_model`` did.

    Attributes:
        options: the options used.
        layers: every Conv2D/Conv2DTranspose/DepthwiseConv2D/Dense layer, in graph order.
        params_before: parameter count of the original model (all weights, BN statistics included).
        params_after: parameter count of the pruned model.
        flops_before: multiply-adds of the convolution and dense layers for one image at the
            model's input size; None when the input size is not fixed.
        flops_after: the same for the pruned model.
        protected_layers: caller-protected layer names found in the model (never pruned).
    """

    options: PruningOptions
    layers: list[LayerPruning] = field(default_factory=list)
    params_before: int = 0
    params_after: int = 0
    flops_before: int | None = None
    flops_after: int | None = None
    protected_layers: list[str] = field(default_factory=list)

    @property
    def pruning_ratio(self) -> float:
        """TAO's "pruning ratio": parameters after / parameters before (1.0 = nothing removed)."""
        return self.params_after / self.params_before if self.params_before else 1.0

    def pruned_layers(self) -> list[LayerPruning]:
        """The layers that lost filters.

        Returns:
            The ``layers`` entries with ``filters_after < filters_before``.
        """
        return [layer for layer in self.layers if layer.filters_after < layer.filters_before]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form (``--json`` output, container metadata).

        Returns:
            dict with ``options``, ``params_before``, ``params_after``, ``flops_before``,
            ``flops_after`` (ints or None), ``pruning_ratio``, ``protected_layers`` and ``layers``
            (list of ``{name, class_name, filters_before, filters_after}``).
        """
        options = asdict(self.options)
        options["excluded_layers"] = list(self.options.excluded_layers)
        return {
            "options": options,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "flops_before": self.flops_before,
            "flops_after": self.flops_after,
            "pruning_ratio": self.pruning_ratio,
            "protected_layers": list(self.protected_layers),
            "layers": [asdict(layer) for layer in self.layers],
        }

    def summary_lines(self) -> list[str]:
        """Human-readable lines: parameters, FLOPs and one line per convolution/dense layer.

        Returns:
            Lines without trailing newlines.
        """
        lines = [f"parameters: {self.params_before:,} -> {self.params_after:,} "
                 f"(pruning ratio {self.pruning_ratio:.4f})"]
        if self.flops_before is not None and self.flops_after is not None:
            ratio = self.flops_after / self.flops_before if self.flops_before else 1.0
            lines.append(f"FLOPs (multiply-adds per image): {self.flops_before:,} -> {self.flops_after:,} "
                         f"({ratio:.4f})")
        width = max((len(layer.name) for layer in self.layers), default=10)
        lines.append(f"{'layer':<{width}}  {'class':<16} {'before':>7} {'after':>7}")
        for layer in self.layers:
            mark = "" if layer.filters_after == layer.filters_before else "  pruned"
            lines.append(f"{layer.name:<{width}}  {layer.class_name:<16} {layer.filters_before:>7} "
                         f"{layer.filters_after:>7}{mark}")
        return lines


# ---- statistics ---------------------------------------------------------------------------------

def filter_norms(kernel: np.ndarray, output_axis: int) -> np.ndarray:
    """L2 norm of each output filter of a kernel.

    Args:
        kernel: the kernel array, e.g. Conv2D (kh, kw, in, out), Conv2DTranspose (kh, kw, out, in),
            Dense (in, out), DepthwiseConv2D (kh, kw, channels, 1).
        output_axis: the axis indexing the filters (3, 2, 1 and 2 for the examples above).

    Returns:
        float64 vector of length ``kernel.shape[output_axis]``.
    """
    moved = np.moveaxis(np.asarray(kernel, dtype=np.float64), output_axis, 0)
    return np.sqrt(np.sum(moved.reshape(moved.shape[0], -1) ** 2, axis=1))


def normalize_norms(norms: np.ndarray, normalizer: str) -> np.ndarray:
    """Normalise a layer's filter norms so that layers of any scale compare with one threshold.

    Args:
        norms: per-filter L2 norms of one layer, shape (n,).
        normalizer: ``"max"`` (divide by the largest norm) or ``"L2"`` (``n * v / ||v||_2``, TAO's
            formula; ``n`` equal filters score ``sqrt(n)`` each).

    Returns:
        float64 vector (n,); all zeros when every norm is zero.

    Raises:
        UsageError: unknown normalizer.
    """
    values = np.asarray(norms, dtype=np.float64)
    if normalizer == "max":
        scale = float(np.max(values)) if values.size else 0.0
        return values / scale if scale > 0 else np.zeros_like(values)
    if normalizer == "L2":
        scale = float(np.linalg.norm(values, ord=2))
        return values * values.size / scale if scale > 0 else np.zeros_like(values)
    raise UsageError(f"normalizer: unknown value {normalizer!r}", hint=f"use one of: {', '.join(NORMALIZERS)}")


def equalize(stats: Sequence[np.ndarray], criterion: str) -> np.ndarray:
    """Merge the normalised statistics of tied layers into one vector.

    Args:
        stats: one vector (n,) per member, all the same length.
        criterion: ``union`` (element-wise max: a channel survives if any member keeps it),
            ``intersection`` (min: only if every member keeps it), ``arithmetic_mean`` or
            ``geometric_mean``.

    Returns:
        float64 vector (n,).

    Raises:
        UsageError: unknown criterion.
        ValueError: no statistics, or vectors of different lengths.
    """
    if not stats:
        raise ValueError("equalize needs at least one statistics vector")
    stacked = np.stack([np.asarray(s, dtype=np.float64) for s in stats])
    if criterion == "union":
        return np.max(stacked, axis=0)
    if criterion == "intersection":
        return np.min(stacked, axis=0)
    if criterion == "arithmetic_mean":
        return np.mean(stacked, axis=0)
    if criterion == "geometric_mean":
        return np.prod(stacked, axis=0) ** (1.0 / stacked.shape[0])
    raise UsageError(f"equalization_criterion: unknown value {criterion!r}",
                     hint=f"use one of: {', '.join(EQUALIZATION_CRITERIA)}")


def kept_filter_count(stat: np.ndarray, threshold: float, granularity: int, min_num_filters: int) -> int:
    """How many filters TAO's rule keeps.

    Args:
        stat: normalised (and equalised) statistic per filter, shape (n,).
        threshold: filters with ``stat > threshold`` are candidates to keep.
        granularity: the count is rounded up to a multiple of this.
        min_num_filters: lower bound (capped at n).

    Returns:
        ``k`` in [1, n]: ``max(#(stat > threshold), min(min_num_filters, n))`` rounded up to a
        multiple of ``granularity``, capped at ``n``.
    """
    n = int(np.asarray(stat).size)
    k = int(np.count_nonzero(np.asarray(stat) > threshold))
    k = max(k, min(int(min_num_filters), n))
    k = int(math.ceil(k / granularity)) * int(granularity)
    return max(1, min(k, n))


def select_filters(stat: np.ndarray, options: PruningOptions) -> np.ndarray:
    """The indices of the filters to keep.

    Args:
        stat: normalised (and equalised) statistic per filter, shape (n,).
        options: threshold, granularity and minimum count.

    Returns:
        Sorted int64 indices of the ``kept_filter_count`` filters with the largest statistic
        (ties go to the lower index).
    """
    values = np.asarray(stat, dtype=np.float64)
    k = kept_filter_count(values, float(options.pruning_threshold), int(options.pruning_granularity),
                          int(options.min_num_filters))
    order = np.argsort(-values, kind="stable")
    return np.sort(order[:k]).astype(np.int64)


# ---- FLOPs and parameters -----------------------------------------------------------------------

def _static(shape: Sequence[int | None]) -> bool:
    return all(d is not None for d in shape)


def count_flops(model: keras.Model) -> int | None:
    """Multiply-adds of the convolution and dense layers of a model, for one input sample.

    Counted: ``Conv2D`` (output positions x kernel size), ``Conv2DTranspose`` (input positions x
    kernel size), ``DepthwiseConv2D`` (output positions x kernel size) and ``Dense`` (leading
    positions x kernel size), once per call of the layer in the model (a head shared by the
    levels of a feature pyramid counts at every level).  Biases, normalisation, activations and
    pooling are not counted.

    Args:
        model: a built Keras model with fixed input sizes.

    Returns:
        The count, or None when some layer's spatial size is not fixed.
    """
    total = 0
    for owner, layer in _walk_layers(model):
        kernel = getattr(layer, "kernel", None)
        if kernel is None or type(layer) not in (*_PRUNABLE_AXES, keras.layers.DepthwiseConv2D):
            continue
        for call in _model_calls(owner, layer):
            tensors = call.input_tensors if isinstance(layer, keras.layers.Conv2DTranspose) else call.outputs
            shape = tuple(keras.tree.flatten(tensors)[0].shape)[1:]
            if isinstance(layer, keras.layers.Dense):
                positions_shape = shape[:-1]
            elif getattr(layer, "data_format", "channels_last") == "channels_first":
                positions_shape = shape[1:]
            else:
                positions_shape = shape[:-1]
            if not _static(positions_shape):
                return None
            total += int(np.prod(positions_shape, dtype=np.int64)) * int(np.prod(kernel.shape, dtype=np.int64))
    return total


def _walk_layers(model: keras.Model) -> Iterator[tuple[keras.Model, Any]]:
    """(innermost model, layer) for every non-model layer, nested models included."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _walk_layers(layer)
        else:
            yield model, layer


# ---- graph analysis -----------------------------------------------------------------------------

class _Groups:
    """Union-find over channel groups; a group is one producer's whole output channel space."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.length: list[int] = []
        self.fixed: list[bool] = []

    def new(self, length: int, fixed: bool) -> int:
        self.parent.append(len(self.parent))
        self.length.append(int(length))
        self.fixed.append(bool(fixed))
        return len(self.parent) - 1

    def find(self, gid: int) -> int:
        root = gid
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[gid] != root:
            self.parent[gid], gid = root, self.parent[gid]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        self.parent[rb] = ra
        self.fixed[ra] = self.fixed[ra] or self.fixed[rb]

    def fix(self, gid: int) -> None:
        self.fixed[self.find(gid)] = True


@dataclass
class _Node:
    """One call of a layer: its inputs are ``(layer, call, tensor)`` references."""

    name: str
    call: int
    layer: Any
    role: str
    inputs: list[tuple[str, int, int]]
    output_widths: list[int]
    first: bool = True  # the layer's first call in the model (its weights are handled there)


def _history_refs(value: Any) -> list[tuple[str, int, int]]:
    """Every ``keras_history`` reference in a serialised node argument, in order."""
    refs: list[tuple[str, int, int]] = []
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            name, node_index, tensor_index = value["config"]["keras_history"]
            refs.append((str(name), int(node_index), int(tensor_index)))
        else:
            for item in value.values():
                refs.extend(_history_refs(item))
    elif isinstance(value, list | tuple):
        if len(value) == 3 and isinstance(value[0], str) and all(isinstance(v, int) for v in value[1:]):
            refs.append((value[0], int(value[1]), int(value[2])))
        else:
            for item in value:
                refs.extend(_history_refs(item))
    return refs


def _is_last_axis(axis: Any, rank: int) -> bool:
    if isinstance(axis, list | tuple):
        if len(axis) != 1:
            return False
        axis = axis[0]
    return int(axis) in (-1, rank - 1)


def _activation_name(layer: Any) -> str:
    activation = layer.get_config().get("activation", "linear")
    if isinstance(activation, dict):
        activation = activation.get("config", activation.get("class_name", ""))
    return str(activation or "linear")


def _weight_names(layer: Any) -> set[str]:
    return {str(w.name).split("/")[-1].split(":")[0] for w in layer.weights}


def _role(layer: Any, num_inputs: int, rank: int) -> str:
    """Classify a layer (exact Keras classes only, subclasses may carry other weights; a
    BatchNormalization subclass with BN's four weights, e.g. a frozen-statistics BN, is per-channel)."""
    kind = type(layer)
    if kind is keras.layers.InputLayer:
        return _INPUT
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        return _BOUNDARY
    if kind in _PRUNABLE_AXES:
        if num_inputs != 1 or not _weight_names(layer) <= _KERNEL_WEIGHTS or getattr(layer, "groups", 1) != 1:
            return _BOUNDARY
        return _PRUNABLE
    if kind is keras.layers.DepthwiseConv2D:
        ok = num_inputs == 1 and int(layer.depth_multiplier) == 1 and _weight_names(layer) <= _KERNEL_WEIGHTS
        return _DEPTHWISE if ok else _BOUNDARY
    if isinstance(layer, keras.layers.BatchNormalization):  # incl. subclasses with BN's weights only
        ok = num_inputs == 1 and _is_last_axis(layer.axis, rank) and _weight_names(layer) <= _BN_WEIGHTS
        return _PER_CHANNEL if ok else _BOUNDARY
    if kind in _PASS_THROUGH:
        return _PASS if num_inputs == 1 and rank >= 2 else _BOUNDARY
    if kind is keras.layers.Activation:
        ok = num_inputs == 1 and _activation_name(layer) in _ELEMENTWISE_ACTIVATIONS
        return _PASS if ok else _BOUNDARY
    if kind in _ELEMENTWISE_MERGES:
        return _MERGE if num_inputs >= 2 and rank >= 2 else _BOUNDARY
    if kind is keras.layers.Concatenate:
        return _CONCAT if num_inputs >= 1 and _is_last_axis(layer.axis, rank) else _BOUNDARY
    return _BOUNDARY


def _model_calls(model: keras.Model, layer: Any) -> list[Any]:
    """The calls (Keras nodes) of ``layer`` that belong to ``model``, in the config's node order."""
    from keras.src.ops.function import make_node_key

    own = getattr(model, "_nodes", None)
    nodes = list(getattr(layer, "_inbound_nodes", []))
    if own is None:
        return nodes
    return [node for index, node in enumerate(nodes) if make_node_key(layer, index) in own]


def _output_widths(node: Any) -> tuple[list[int], int]:
    """Channel count (last axis) of each output tensor of one call of a layer, and its rank."""
    widths, rank = [], 0
    for tensor in keras.tree.flatten(node.outputs):
        shape = tuple(tensor.shape)
        rank = len(shape)
        widths.append(int(shape[-1]) if len(shape) >= 2 and shape[-1] is not None else 0)
    return widths, rank


def _graph(model: keras.Model, config: dict[str, Any]) -> list[_Node]:
    """Every call of every layer as a node, in topological order, read from the functional config.

    A layer called more than once (a head shared by the levels of a feature pyramid) gives one
    node per call, keyed ``(layer name, call index)`` as the config's ``keras_history`` refers to
    them.
    """
    nodes: dict[tuple[str, int], _Node] = {}
    for layer_config in config["layers"]:
        name = str(layer_config.get("name") or layer_config["config"]["name"])
        layer = model.get_layer(name)
        calls = _model_calls(model, layer)
        inbound = layer_config.get("inbound_nodes") or []
        if not inbound:  # an input layer
            widths, rank = _output_widths(calls[0]) if calls else ([0], 0)
            nodes[(name, 0)] = _Node(name, 0, layer, _role(layer, 0, rank), [], widths)
            continue
        if len(calls) != len(inbound):
            raise InvalidInputError(f"layer {name!r}: the model config lists {len(inbound)} calls but the layer "
                                    f"has {len(calls)} in the model; tltk cannot prune this model")
        # Keras numbers a nested model's calls from 1 (its call 0 links its own inputs and outputs).
        offset = 1 if isinstance(layer, keras.Model) else 0
        for index, (entry, keras_node) in enumerate(zip(inbound, calls, strict=True)):
            refs = _history_refs(entry["args"] if isinstance(entry, dict) else entry)
            extra = _history_refs(entry.get("kwargs", {})) if isinstance(entry, dict) else []
            widths, rank = _output_widths(keras_node)
            role = _role(layer, len(refs) if not extra else -1, rank)
            nodes[(name, index + offset)] = _Node(name, index + offset, layer, role, refs + extra, widths,
                                                  first=index == 0)
    ordered: list[_Node] = []
    done: set[tuple[str, int]] = set()
    pending = list(nodes)
    while pending:
        progressed = []
        for key in pending:
            if all((src, call) in done for src, call, _ in nodes[key].inputs):
                ordered.append(nodes[key])
                done.add(key)
                progressed.append(key)
        if not progressed:
            raise InvalidInputError(f"the model graph has a cycle or refers to unknown layers near {pending[0][0]!r}")
        pending = [key for key in pending if key not in done]
    return ordered


@dataclass
class _Plan:
    """The analysis result: channel descriptions, groups and who contributes statistics."""

    groups: _Groups
    nodes: list[_Node]
    desc: dict[tuple[str, int, int], list[Segment]]  # (layer, call, tensor) -> its channels
    owned: dict[str, int]  # prunable layer -> its output group (shared by every call)
    input_desc: dict[str, list[Segment]]  # prunable/depthwise/per-channel layer -> its input channels


def _width(desc: list[Segment]) -> int:
    return sum(length for _, length in desc)


def _analyse(model: keras.Model, config: dict[str, Any]) -> _Plan:
    groups = _Groups()
    nodes = _graph(model, config)
    desc: dict[tuple[str, int, int], list[Segment]] = {}
    owned: dict[str, int] = {}
    input_desc: dict[str, list[Segment]] = {}

    def fix_all(segments: Iterable[Segment]) -> None:
        for gid, _ in segments:
            groups.fix(gid)

    def fresh(node: _Node, fixed: bool) -> None:
        for index, width in enumerate(node.output_widths):
            desc[(node.name, node.call, index)] = [(groups.new(width, fixed), width)]

    def weights_input(node: _Node, in_desc: list[Segment]) -> None:
        """Record a weighted layer's input channels; a later call of a shared layer is tied to the first."""
        first = input_desc.setdefault(node.name, in_desc)
        if first is not in_desc:
            _tie(groups, [first, in_desc], _width(first))

    for node in nodes:
        in_descs = [desc[ref] for ref in node.inputs]
        out_key = (node.name, node.call, 0)
        if node.role == _INPUT:
            fresh(node, fixed=True)
        elif node.role == _PRUNABLE:
            weights_input(node, in_descs[0])
            if node.name not in owned:
                owned[node.name] = groups.new(node.output_widths[0], fixed=False)
                if _activation_name(node.layer) not in _ELEMENTWISE_ACTIVATIONS:
                    groups.fix(owned[node.name])
            desc[out_key] = [(owned[node.name], node.output_widths[0])]
        elif node.role in (_DEPTHWISE, _PER_CHANNEL, _PASS):
            if node.role != _PASS:
                weights_input(node, in_descs[0])
            if node.role == _DEPTHWISE and _activation_name(node.layer) not in _ELEMENTWISE_ACTIVATIONS:
                fix_all(in_descs[0])
            desc[out_key] = list(in_descs[0])
        elif node.role == _CONCAT:
            desc[out_key] = [segment for d in in_descs for segment in d]
        elif node.role == _MERGE:
            desc[out_key] = _tie(groups, in_descs, node.output_widths[0])
        else:
            for d in in_descs:
                fix_all(d)
            fresh(node, fixed=True)
        if node.role != _BOUNDARY and node.role != _INPUT and _width(desc[out_key]) != node.output_widths[0]:
            # The layer does not keep channels where this analysis expects them: do not prune across it.
            for d in in_descs:
                fix_all(d)
            fix_all(desc[out_key])
    return _Plan(groups, nodes, desc, owned, input_desc)


def _tie(groups: _Groups, in_descs: list[list[Segment]], out_width: int) -> list[Segment]:
    """Tie the inputs of an element-wise merge; broadcast inputs (one channel) are left out."""
    full = [d for d in in_descs if _width(d) == out_width]
    if not full:
        for d in in_descs:
            for gid, _ in d:
                groups.fix(gid)
        return [(groups.new(out_width, fixed=True), out_width)]
    for d in in_descs:
        if _width(d) != out_width and _width(d) != 1:
            for gid, _ in d:
                groups.fix(gid)
    first = full[0]
    same_layout = all([length for _, length in d] == [length for _, length in first] for d in full)
    if same_layout:
        for d in full[1:]:
            for (a, _), (b, _) in zip(first, d):
                groups.union(a, b)
    else:
        for d in full:
            for gid, _ in d:
                groups.fix(gid)
    return list(first)


# ---- kept sets ----------------------------------------------------------------------------------

def _kernel(layer: Any) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(layer.kernel))


def _kept_sets(plan: _Plan, options: PruningOptions, keep_names: set[str]) -> dict[int, np.ndarray]:
    """Kept channel indices per group root."""
    groups = plan.groups
    for node in plan.nodes:
        if node.name in keep_names:
            for index in range(len(node.output_widths)):
                for gid, _ in plan.desc.get((node.name, node.call, index), []):
                    groups.fix(gid)
    stats: dict[int, list[np.ndarray]] = {}
    layers = {node.name: node.layer for node in plan.nodes}
    for name, gid in plan.owned.items():
        layer = layers[name]
        out_axis = _PRUNABLE_AXES[type(layer)][0]
        stat = normalize_norms(filter_norms(_kernel(layer), out_axis), options.normalizer)
        stats.setdefault(groups.find(gid), []).append(stat)
    for node in plan.nodes:
        if node.role != _DEPTHWISE or not node.first:
            continue
        stat = normalize_norms(filter_norms(_kernel(node.layer), 2), options.normalizer)
        offset = 0
        for gid, length in plan.input_desc[node.name]:
            stats.setdefault(groups.find(gid), []).append(stat[offset:offset + length])
            offset += length
    kept: dict[int, np.ndarray] = {}
    for gid in range(len(groups.parent)):
        root = groups.find(gid)
        if root in kept:
            continue
        length = groups.length[root]
        if groups.fixed[root] or root not in stats:
            kept[root] = np.arange(length, dtype=np.int64)
        else:
            merged = equalize(stats[root], options.equalization_criterion)
            kept[root] = select_filters(merged, options)
    return kept


def _indices(desc: list[Segment], groups: _Groups, kept: dict[int, np.ndarray]) -> np.ndarray:
    parts, offset = [], 0
    for gid, length in desc:
        parts.append(kept[groups.find(gid)] + offset)
        offset += length
    return np.concatenate(parts) if parts else np.zeros((0,), dtype=np.int64)


# ---- rebuild ------------------------------------------------------------------------------------

def _sliced_weights(node: _Node, new_layer: Any, in_idx: np.ndarray, out_idx: np.ndarray) -> list[np.ndarray]:
    arrays = {str(w.name).split("/")[-1].split(":")[0]: np.asarray(w.numpy()) for w in node.layer.weights}
    result = []
    for variable in new_layer.weights:
        short = str(variable.name).split("/")[-1].split(":")[0]
        array = arrays[short]
        if node.role == _PRUNABLE:
            out_axis, in_axis = _PRUNABLE_AXES[type(node.layer)]
            if short == "kernel":
                array = np.take(np.take(array, in_idx, axis=in_axis), out_idx, axis=out_axis)
            else:
                array = np.take(array, out_idx, axis=0)
        elif node.role == _DEPTHWISE:
            array = np.take(array, in_idx, axis=2) if short == "kernel" else np.take(array, in_idx, axis=0)
        else:
            array = np.take(array, in_idx, axis=0)
        result.append(array)
    return result


def _output_width(layer: Any) -> int:
    return int(tuple(keras.tree.flatten(layer.output)[0].shape)[-1])


def prune_model(model: keras.Model, options: PruningOptions | None = None,
                protected_layers: Iterable[str] = ()) -> tuple[keras.Model, PruningReport]:
    """Prune the filters of a Keras functional model and rebuild it smaller.

    Args:
        model: a built Keras functional model, channels-last inside (any input layout: the input
            ``Permute`` of tltk models is a boundary).  It is not modified.
        options: TAO's prune options (``PruningOptions()`` = TAO defaults); checked here.
        protected_layers: layer names that must keep every output channel, e.g. a detector's
            output heads (``("output_cov", "output_bbox")``); names absent from the model are
            ignored.  The tensors the model returns are always kept whole.

    Returns:
        ``(pruned, report)``: a new functional model with the same layer names, inputs and output
        structure, fewer filters, and the kept weights copied; and the :class:`PruningReport`.

    Raises:
        UsageError: invalid option values.
        InvalidInputError: an excluded layer name is not in the model, the model is not a
            functional model, or it uses a layer more than once.
    """
    options = options or PruningOptions()
    options.check()
    config = copy.deepcopy(model.get_config())
    if not isinstance(config, dict) or not all(k in config for k in ("layers", "input_layers", "output_layers")):
        raise InvalidInputError(f"model {model.name!r} is not a Keras functional model; only functional models "
                                "(built with keras.Input and keras.Model(inputs, outputs)) can be pruned")
    names = [layer.name for layer in model.layers]
    unknown = [name for name in options.excluded_layers if name not in names]
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, names, n=1)
            if close:
                hints.append(f"'{name}': did you mean '{close[0]}'?")
        raise InvalidInputError(f"excluded_layers: no layer named {', '.join(repr(u) for u in unknown)} in model "
                                f"{model.name!r}", hint="; ".join(hints) or "list the model's layers with "
                                "`tltk model inspect`")
    protected = [name for name in protected_layers if name in names]
    plan = _analyse(model, config)
    channels_first = [n.name for n in plan.nodes if getattr(n.layer, "data_format", None) == "channels_first"]
    if channels_first:
        log.warning("%d layers compute channels-first (%s...); tltk prunes channels-last layers only, so the "
                    "channels through them are kept", len(channels_first), ", ".join(channels_first[:3]))
    log.debug("boundary layers (their input channels are kept): %s",
              ", ".join(n.name for n in plan.nodes if n.role == _BOUNDARY))
    for ref in _history_refs(config["output_layers"]):
        for gid, _ in plan.desc.get(ref, []):
            plan.groups.fix(gid)
    kept = _kept_sets(plan, options, set(options.excluded_layers) | set(protected))

    new_sizes: dict[str, int] = {}
    slices: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # layer -> (input channels, own filters) kept
    for node in plan.nodes:
        if not node.first:  # a shared layer's weights are sliced once
            continue
        if node.role == _PRUNABLE:
            out_idx = kept[plan.groups.find(plan.owned[node.name])]
            in_idx = _indices(plan.input_desc[node.name], plan.groups, kept)
            slices[node.name] = (in_idx, out_idx)
            new_sizes[node.name] = int(out_idx.size)
        elif node.role in (_DEPTHWISE, _PER_CHANNEL):  # channels follow the input
            channels = _indices(plan.input_desc[node.name], plan.groups, kept)
            slices[node.name] = (channels, channels)

    for layer_config in config["layers"]:
        name = str(layer_config.get("name") or layer_config["config"]["name"])
        if layer_config.get("class_name") not in ("Functional", "Model", "Sequential"):
            # A recorded build shape would rebuild the layer for its old channel count.
            layer_config.pop("build_config", None)
        if name in new_sizes:
            key = "units" if layer_config["class_name"] == "Dense" else "filters"
            layer_config["config"][key] = new_sizes[name]
    pruned = keras.Model.from_config(config)

    by_name = {node.name: node for node in plan.nodes if node.first}
    for new_layer in pruned.layers:
        source = by_name.get(new_layer.name)
        if source is None or not source.layer.weights:
            continue
        if new_layer.name in slices:
            in_idx, out_idx = slices[new_layer.name]
            arrays = _sliced_weights(source, new_layer, in_idx, out_idx)
        else:
            arrays = source.layer.get_weights()
        new_layer.set_weights(arrays)

    report = PruningReport(options=options, protected_layers=protected)
    for node in plan.nodes:
        if node.first and type(node.layer) in (*_PRUNABLE_AXES, keras.layers.DepthwiseConv2D):
            report.layers.append(LayerPruning(node.name, type(node.layer).__name__, _output_width(node.layer),
                                              _output_width(pruned.get_layer(node.name))))
    report.params_before, report.params_after = int(model.count_params()), int(pruned.count_params())
    report.flops_before, report.flops_after = count_flops(model), count_flops(pruned)
    log.info("Pruning ratio (pruned model / original model): %.4f (%d -> %d parameters, %d of %d layers pruned)",
             report.pruning_ratio, report.params_before, report.params_after, len(report.pruned_layers()),
             len(report.layers))
    return pruned, report
