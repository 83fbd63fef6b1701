"""Quantization-aware training (QAT): fake INT8 quantization inside a Keras model.

:func:`quantize_model` rebuilds a functional model so that, during training and inference, it
computes what the INT8 deployment will compute:

* **Activations**: one :class:`FakeQuant` layer (named ``<producer layer>_qdq``) on every distinct
  tensor that feeds a Conv2D, DepthwiseConv2D, Conv2DTranspose or Dense layer, the model's own
  input included; all quantized consumers of a tensor share that one layer, which is exactly how
  the Q/DQ ONNX writer (:mod:`tltk.export.qdq`) shares one QuantizeLinear/DequantizeLinear pair
  per tensor.  Quantization is symmetric INT8 over the narrow range TensorRT uses,
  ``q = clip(round(x / s), -127, 127)``, ``s = amax / 127``, and the layer returns ``q * s``.
* **Weights**: the kernels of those layers are fake-quantized per output channel on every call,
  with ``amax_c = max |w_c|`` (no clipping), the rule the Q/DQ writer applies when it stores the
  weights as INT8.  The layers become :class:`QuantizedConv2D`, :class:`QuantizedDepthwiseConv2D`,
  :class:`QuantizedConv2DTranspose` and :class:`QuantizedDense`: subclasses of the Keras layers
  with the same name, config and variables, whose ``call`` runs the parent's ``call`` with the
  kernel variable read as its fake-quantized value (a Keras ``StatelessScope`` maps the variable
  to the quantized tensor for the duration of the call).  The stored kernel stays in float32.

Ranges: each :class:`FakeQuant` holds a non-trainable scalar ``amax`` that is **tracked, not
learned**.  It starts at 0 ("not observed yet"); the first training batch sets it to that batch's
``max |x|``, every later training batch updates it with an exponential moving average,
``amax <- decay * amax + (1 - decay) * max |x|`` (default decay 0.999, TAO's value).  Inference
(``training=False``) uses ``amax`` as it is and never changes it; while ``amax`` is 0 the layer
passes values through unchanged.  Under ``tf.distribute`` the per-replica updates are averaged.

Gradients are straight-through: the rounding is invisible to back-propagation; for activations
the gradient is passed where ``|x| <= amax`` and is zero beyond the range (clipped values), and
for weights it is passed everywhere (no weight is ever clipped).  ``amax`` gets no gradient.

Rounding is ``round`` half to even, as ONNX QuantizeLinear does, so a QAT model and its exported
Q/DQ ONNX model agree value for value on the quantized tensors (see ``docs/qat.md`` for where they
can still differ: batch-norm folding by the converter, values below ``-amax``).

:func:`strip_quantization` gives back the float model (original layer classes, the exact float
weights) and the learned ranges keyed by consumer layer name; :mod:`tltk.export.qat_export`
turns them into the exported ONNX tensor names.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

import keras
from keras import ops

log = logging.getLogger(__name__)

#: Largest INT8 magnitude used: TensorRT's symmetric narrow range [-127, 127].
INT8_MAX = 127.0

#: TAO's decay of the activation-range moving average.
DEFAULT_EMA_DECAY = 0.999

#: Suffix of the :class:`FakeQuant` layer inserted after a tensor's producer.
QDQ_SUFFIX = "_qdq"


# ---- numerics -----------------------------------------------------------------------------------

def fake_quantize(x: Any, amax: Any) -> Any:
    """Symmetric INT8 fake quantization of a tensor with one range.

    ``y = clip(round(clip(x, -amax, amax) / s), -127, 127) * s`` with ``s = amax / 127``;
    rounding is half to even.  With ``amax <= 0`` the input is returned unchanged.

    Args:
        x: float tensor, any shape (computed in float32, returned in ``x``'s dtype).
        amax: scalar range (same units as ``x``), >= 0.

    Returns:
        A tensor shaped like ``x`` whose values lie on the grid ``k * amax / 127``,
        ``k`` in [-127, 127].  Gradient with respect to ``x``: 1 where ``|x| <= amax``, 0 elsewhere
        (straight-through estimator); none with respect to ``amax``.
    """
    dtype = x.dtype
    xf = ops.cast(x, "float32")
    amax = ops.stop_gradient(ops.cast(amax, "float32"))
    safe = ops.maximum(amax, 1e-12)
    scale = safe / INT8_MAX
    clipped = ops.clip(xf, -safe, safe)
    levels = ops.clip(ops.round(clipped / scale), -INT8_MAX, INT8_MAX)
    quantized = clipped + ops.stop_gradient(levels * scale - clipped)
    return ops.cast(ops.where(amax > 0, quantized, xf), dtype)


def fake_quantize_per_channel(kernel: Any, channel_axes: Iterable[int]) -> Any:
    """Symmetric INT8 fake quantization of a weight tensor, one range per output channel.

    ``amax_c = max |w|`` over all axes except ``channel_axes``; ``w_c`` becomes
    ``round(w_c / s_c) * s_c`` with ``s_c = amax_c / 127`` (channels that are all zero stay zero).

    Args:
        kernel: the float weight tensor (e.g. a Conv2D kernel ``(kh, kw, cin, cout)``).
        channel_axes: the axes that index output channels (``(3,)`` for Conv2D, ``(2, 3)`` for
            DepthwiseConv2D, ``(2,)`` for Conv2DTranspose, ``(1,)`` for Dense).

    Returns:
        The fake-quantized kernel, same shape and dtype; the gradient passes straight through.
    """
    axes = {a % len(kernel.shape) for a in channel_axes}
    reduce_axes = tuple(a for a in range(len(kernel.shape)) if a not in axes)
    wf = ops.cast(kernel, "float32")
    amax = ops.stop_gradient(ops.max(ops.abs(wf), axis=reduce_axes, keepdims=True))
    scale = ops.where(amax > 0, amax / INT8_MAX, ops.ones_like(amax))
    levels = ops.clip(ops.round(wf / scale), -INT8_MAX, INT8_MAX)
    quantized = wf + ops.stop_gradient(levels * scale - wf)
    return ops.cast(quantized, kernel.dtype)


def ema_update(amax: Any, batch_max: Any, decay: float) -> Any:
    """One update of the tracked range.

    Args:
        amax: current range (0 means "not observed yet").
        batch_max: ``max |x|`` of the current batch.
        decay: moving-average decay in [0, 1).

    Returns:
        ``batch_max`` when ``amax`` is 0, else ``decay * amax + (1 - decay) * batch_max``.
    """
    return ops.where(amax > 0, decay * amax + (1.0 - decay) * batch_max, batch_max)


# ---- layers -------------------------------------------------------------------------------------

@keras.saving.register_keras_serializable(package="tltk")
class FakeQuant(keras.layers.Layer):
    """Fake INT8 quantization of activations with a tracked range (see the module docstring).

    Args:
        ema_decay: decay of the moving average of ``max |x|`` per training batch, in [0, 1).
        **kwargs: ``keras.layers.Layer`` arguments (``name``, ``dtype``...).

    Input and output: any float tensor, same shape (e.g. NHWC ``(N, H, W, C)``).

    Attributes:
        amax: non-trainable float32 scalar variable, the range in the tensor's units (0 until the
            first training batch).
    """

    def __init__(self, ema_decay: float = DEFAULT_EMA_DECAY, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= float(ema_decay) < 1.0:
            raise ValueError(f"FakeQuant ema_decay must be in [0, 1), got {ema_decay}")
        self.ema_decay = float(ema_decay)
        self.amax = self.add_weight(name="amax", shape=(), initializer="zeros", trainable=False,
                                    autocast=False, dtype="float32", aggregation="mean")

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        amax = self.amax.value
        if training:
            batch_max = ops.max(ops.abs(ops.cast(inputs, "float32")))
            amax = ema_update(amax, batch_max, self.ema_decay)
            self.amax.assign(amax)
        return fake_quantize(inputs, amax)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["ema_decay"] = self.ema_decay
        return config


class _KernelFakeQuantMixin:
    """Runs the Keras layer's own ``call`` with its kernel fake-quantized per output channel."""

    #: kernel axes that index output channels
    channel_axes: tuple[int, ...] = ()

    def _kernel_variable(self) -> Any:
        variable = getattr(self, "_kernel", None)
        if not isinstance(variable, keras.Variable):
            variable = getattr(self, "kernel", None)
        if not isinstance(variable, keras.Variable):
            raise TypeError(f"{type(self).__name__} {getattr(self, 'name', '')!r}: no kernel variable found")
        return variable

    def call(self, inputs: Any) -> Any:
        from keras.src.backend.common.stateless_scope import get_stateless_scope

        variable = self._kernel_variable()
        quantized = fake_quantize_per_channel(variable.value, self.channel_axes)
        outer = get_stateless_scope()
        with keras.StatelessScope(state_mapping=[(variable, quantized)]) as scope:
            if outer is not None:  # keep the values an enclosing stateless call supplies
                scope.state_mapping = {**outer.state_mapping, id(variable): scope.state_mapping[id(variable)]}
            return super().call(inputs)  # type: ignore[misc]


@keras.saving.register_keras_serializable(package="tltk")
class QuantizedConv2D(_KernelFakeQuantMixin, keras.layers.Conv2D):
    """``keras.layers.Conv2D`` with its kernel ``(kh, kw, cin/groups, cout)`` fake-quantized per
    output channel (axis 3) on every call; same arguments, config and variables as Conv2D."""

    channel_axes = (3,)


@keras.saving.register_keras_serializable(package="tltk")
class QuantizedDepthwiseConv2D(_KernelFakeQuantMixin, keras.layers.DepthwiseConv2D):
    """``keras.layers.DepthwiseConv2D`` with its kernel ``(kh, kw, cin, multiplier)`` fake-quantized
    per output channel (every ``(cin, multiplier)`` pair) on every call."""

    channel_axes = (2, 3)


@keras.saving.register_keras_serializable(package="tltk")
class QuantizedConv2DTranspose(_KernelFakeQuantMixin, keras.layers.Conv2DTranspose):
    """``keras.layers.Conv2DTranspose`` with its kernel ``(kh, kw, cout, cin)`` fake-quantized per
    output channel (axis 2) on every call."""

    channel_axes = (2,)


@keras.saving.register_keras_serializable(package="tltk")
class QuantizedDense(_KernelFakeQuantMixin, keras.layers.Dense):
    """``keras.layers.Dense`` with its kernel ``(in, units)`` fake-quantized per unit (axis 1) on
    every call."""

    channel_axes = (1,)


#: Float layer class -> its quantization-aware twin (explicit table; subclasses of these Keras
#: layers that are not listed are left in float).
QUANTIZED_CLASSES: dict[type[Any], type[Any]] = {
    keras.layers.Conv2D: QuantizedConv2D,
    keras.layers.DepthwiseConv2D: QuantizedDepthwiseConv2D,
    keras.layers.Conv2DTranspose: QuantizedConv2DTranspose,
    keras.layers.Dense: QuantizedDense,
}
_FLOAT_CLASSES: dict[type[Any], type[Any]] = {q: f for f, q in QUANTIZED_CLASSES.items()}


# ---- model rewriting ----------------------------------------------------------------------------

def is_quantized(model: keras.Model) -> bool:
    """Whether a model (or any model nested in it) contains QAT layers.

    Args:
        model: a Keras model.

    Returns:
        True when it holds a :class:`FakeQuant` or a quantized weight layer.
    """
    return any(isinstance(layer, (FakeQuant, *_FLOAT_CLASSES)) for layer in _all_layers(model))


def quantize_model(model: keras.Model, excluded: Iterable[str] = (),
                   ema_decay: float = DEFAULT_EMA_DECAY) -> keras.Model:
    """Rebuild a functional model for quantization-aware training.

    Every Conv2D / DepthwiseConv2D / Conv2DTranspose / Dense layer (exact class, nested functional
    models included) not named in ``excluded`` becomes its quantized twin (same name, config and
    weights, kernel fake-quantized per output channel), and each distinct tensor feeding such
    layers goes through one shared :class:`FakeQuant` named ``<producer>_qdq`` (``amax`` 0, set by
    the first training batch).  All other layers are cloned with their weights; the input and
    output names and structure are unchanged.

    Args:
        model: a functional float model (not already quantized).
        excluded: names of layers to leave in float (neither their input nor their kernel is
            quantized).
        ema_decay: decay of the range moving average (see :class:`FakeQuant`).

    Returns:
        A new ``keras.Model``; ``model`` is left untouched.

    Raises:
        ValueError: the model is already quantized, or is not a functional model.
    """
    if is_quantized(model):
        raise ValueError(f"model {model.name!r} is already quantization-aware")
    skip = set(excluded)
    unknown = skip - {layer.name for layer in _all_layers(model)}
    if unknown:
        raise ValueError(f"quantize_model: excluded layers {sorted(unknown)} are not in model {model.name!r}")
    taken = {layer.name for layer in _all_layers(model)}
    quantizers: dict[int, tuple[Any, Any]] = {}  # id(input tensor) -> (tensor, quantized tensor)

    def clone(layer: Any) -> Any:
        target = QUANTIZED_CLASSES.get(type(layer))
        cls: Any = target if target is not None and layer.name not in skip else type(layer)
        return cls.from_config(layer.get_config())

    def call(layer: Any, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(layer, _KernelFakeQuantMixin):
            return layer(*args, **kwargs)
        positional, named = list(args), dict(kwargs)
        tensor = positional[0] if positional else named["inputs"]
        if id(tensor) not in quantizers:
            fq = FakeQuant(ema_decay=ema_decay, name=_unique(_qdq_name(tensor), taken))
            quantizers[id(tensor)] = (tensor, fq(tensor))
        quantized = quantizers[id(tensor)][1]
        if positional:
            positional[0] = quantized
        else:
            named["inputs"] = quantized
        return layer(*positional, **named)  # type: ignore[operator]

    rebuilt = keras.models.clone_model(model, clone_function=clone, call_function=call, recursive=True)
    _copy_weights(model, rebuilt)
    count = sum(isinstance(layer, _KernelFakeQuantMixin) for layer in _all_layers(rebuilt))
    log.info("QAT: %d layers quantized (weights per channel), %d activation fake-quant layers, %d excluded",
             count, len(quantizers), len(skip))
    return rebuilt


def strip_quantization(model: keras.Model) -> tuple[keras.Model, dict[str, float]]:
    """Remove fake quantization: the float model and the learned activation ranges.

    Args:
        model: a model made by :func:`quantize_model` (possibly trained, saved and loaded).

    Returns:
        ``(float_model, ranges)``: the model with the original Keras layer classes, the same
        layer names and exactly the stored float weights (no :class:`FakeQuant` layers), and
        ``{consumer layer name: amax}`` for every quantized layer whose input has a range
        (``amax`` in the input tensor's units; layers whose range was never observed, amax 0,
        are left out).
    """
    ranges: dict[str, float] = {}
    for layer, inputs in _layer_calls(model):
        for tensor in inputs:
            producer = getattr(getattr(tensor, "_keras_history", None), "operation", None)
            if isinstance(producer, FakeQuant):
                value = float(keras.ops.convert_to_numpy(producer.amax))
                if value > 0:
                    ranges[layer.name] = value
                else:
                    log.warning("QAT range of the input of %s was never observed (amax 0)", layer.name)

    def clone(layer: Any) -> Any:
        cls: Any = _FLOAT_CLASSES.get(type(layer), type(layer))
        return cls.from_config(layer.get_config())

    def call(layer: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(layer, FakeQuant):
            return args[0] if args else kwargs["inputs"]
        return layer(*args, **kwargs)

    stripped = keras.models.clone_model(model, clone_function=clone, call_function=call, recursive=True)
    _copy_weights(model, stripped)
    return stripped, ranges


# ---- helpers ------------------------------------------------------------------------------------

def _all_layers(model: Any) -> Iterator[Any]:
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def _layer_calls(model: Any) -> Iterator[tuple[Any, list[Any]]]:
    """(layer, input tensors) for every call of a layer inside ``model`` (nested models too)."""
    nodes = [node for depth_nodes in model._nodes_by_depth.values() for node in depth_nodes]
    for node in nodes:
        layer = node.operation
        if layer is None or isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.Model):
            yield from _layer_calls(layer)
            continue
        yield layer, list(node.input_tensors)


def _qdq_name(tensor: Any) -> str:
    history = getattr(tensor, "_keras_history", None)
    if history is None:
        return "input" + QDQ_SUFFIX
    base = history.operation.name
    if history.tensor_index:
        base = f"{base}_{history.tensor_index}"
    return base + QDQ_SUFFIX


def _unique(name: str, taken: set[str]) -> str:
    candidate, number = name, 1
    while candidate in taken:
        candidate = f"{name}_{number}"
        number += 1
    taken.add(candidate)
    return candidate


def _copy_weights(source: Any, target: Any) -> None:
    """Copy weights layer by layer, matched by name (layers only in ``target`` keep theirs)."""
    by_name = {layer.name: layer for layer in _all_layers(source) if not isinstance(layer, keras.Model)}
    for layer in _all_layers(target):
        if isinstance(layer, keras.Model) or not layer.weights:
            continue
        old = by_name.get(layer.name)
        if old is None:
            continue
        if len(old.weights) != len(layer.weights):
            raise ValueError(f"layer {layer.name!r}: {len(old.weights)} weights in the source model, "
                             f"{len(layer.weights)} after rebuilding")
        for new_var, old_var in zip(layer.weights, old.weights):
            new_var.assign(old_var.value)
            regularizer = getattr(old_var, "regularizer", None)
            if regularizer is not None:
                new_var.regularizer = regularizer


__all__ = [
    "DEFAULT_EMA_DECAY",
    "INT8_MAX",
    "QDQ_SUFFIX",
    "QUANTIZED_CLASSES",
    "FakeQuant",
    "QuantizedConv2D",
    "QuantizedConv2DTranspose",
    "QuantizedDense",
    "QuantizedDepthwiseConv2D",
    "ema_update",
    "fake_quantize",
    "fake_quantize_per_channel",
    "is_quantized",
    "quantize_model",
    "strip_quantization",
]
