"""Keras -> ONNX export with TAO's tensor names, a dynamic batch dimension and a parity check.

The converter is tf2onnx (``tf2onnx.convert.from_keras``, default opset 17).  After conversion the
graph input and outputs are renamed to the names TAO's exporters produce and DeepStream configs
refer to (DetectNet_v2: input ``input_1``, outputs ``output_cov/Sigmoid`` and
``output_bbox/BiasAdd``; MaskRCNN: ``Input``, ``generate_detections``,
``mask_fcn_logits/BiasAdd``), everything that does not depend on the input is constant-folded
(:func:`tltk.export.onnx_passes.fold_constants`: TensorRT's parser needs every ``TopK`` ``K`` and
NMS parameter as an initializer), opset imports no node uses are dropped, the batch dimension is
given the symbolic name ``batch``, the model is checked with ``onnx.checker`` and written
atomically (temporary file, fsync, rename).  Exact rewrites make the graph cheaper to run
(:func:`convert_keras_to_onnx`'s ``rewrites``): MaskRCNN's ROIAlign blend becomes a MatMul, its
box head's CHW flatten is folded into ``fc6``'s weights and the stem's zero ``Pad`` into
``MaxPool``; MaskRCNN's ROIAligns can also be written as ONNX ``RoiAlign``
(``native_roi_align``, :mod:`tltk.export.roi_align_onnx`).  What TensorRT's parser would still refuse is logged
as a warning and listed in the report (:func:`tltk.export.onnx_passes.tensorrt_problems`).

An output path ending in ``.etlt`` writes the legacy TAO container instead: the ONNX bytes
encrypted with the user's key behind a zero-length input-name header (see
:mod:`tltk.modelfile.legacy`).

Every export ends with a parity check: ONNX Runtime and Keras run the same inputs and the largest
absolute difference per output is reported (:func:`parity_check`).

TensorFlow, tf2onnx and ONNX Runtime are imported inside the functions, so importing this module
is cheap.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tltk.errors import InvalidInputError, UsageError
from tltk.fileio import atomic_write_bytes

if TYPE_CHECKING:  # pragma: no cover - typing only
    import keras
    import onnx

log = logging.getLogger(__name__)

#: Default ONNX opset (TensorRT 8.6+ and ONNX Runtime 1.14+ read it).
DEFAULT_OPSET = 17

#: Symbolic name given to the dynamic batch dimension of the graph input and outputs.
BATCH_DIM_NAME = "batch"

#: Layer types that only move data around; an output name given as a layer name may sit behind
#: any chain of these (e.g. the NCHW ``Permute`` after a head convolution).
_PASS_THROUGH_LAYERS = ("Permute", "Reshape", "Flatten", "Identity", "Cropping2D")


@dataclass
class ExportReport:
    """What :func:`export_keras_to_onnx` wrote.

    Attributes:
        output_path: the file written (``.onnx`` or ``.etlt``).
        container: ``"onnx"`` (plain ONNX file) or ``"etlt"`` (legacy encrypted container).
        input_name: ONNX name of the graph input.
        input_shape: input shape with the batch dimension as ``-1`` when dynamic, e.g.
            ``(-1, 3, 544, 960)`` (NCHW).
        output_names: ONNX output names, in the order of the Keras model's outputs.
        output_shapes: ONNX output shapes (``-1`` for dynamic dimensions), same order.
        opset: the ONNX opset written.
        dynamic_batch: whether the batch dimension is symbolic (``batch``) or fixed.
        num_nodes: number of nodes in the ONNX graph.
        size_bytes: size of the file written, in bytes.
        parity: largest absolute difference between Keras and ONNX Runtime per ONNX output name,
            or an empty dict when the parity check was switched off.
        tensorrt_problems: what TensorRT 10's ONNX parser would refuse or cap (empty: none).
    """

    output_path: str
    container: str
    input_name: str
    input_shape: tuple[int, ...]
    output_names: list[str]
    output_shapes: list[tuple[int, ...]]
    opset: int
    dynamic_batch: bool
    num_nodes: int
    size_bytes: int
    parity: dict[str, float] = field(default_factory=dict)
    tensorrt_problems: list[str] = field(default_factory=list)

    @property
    def parity_max_abs_diff(self) -> float:
        """The largest entry of :attr:`parity` (0.0 when no check ran)."""
        return max(self.parity.values(), default=0.0)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy (for ``--json`` and status files)."""
        return {
            "output_path": self.output_path,
            "container": self.container,
            "input_name": self.input_name,
            "input_shape": list(self.input_shape),
            "output_names": list(self.output_names),
            "output_shapes": [list(s) for s in self.output_shapes],
            "opset": self.opset,
            "dynamic_batch": self.dynamic_batch,
            "num_nodes": self.num_nodes,
            "size_bytes": self.size_bytes,
            "parity": dict(self.parity),
            "parity_max_abs_diff": self.parity_max_abs_diff,
            "tensorrt_problems": list(self.tensorrt_problems),
        }


# ---- output paths --------------------------------------------------------------------------------

def default_output_path(model_path: str | os.PathLike[str], output_file: str | os.PathLike[str] | None = None
                        ) -> str:
    """The export file name, following TAO's rule where it makes sense.

    * No ``-o``: ``<model path without extension>.onnx`` (as TAO).
    * ``-o`` ending in ``.onnx`` or ``.etlt``: used as given (TAO would turn ``x.etlt`` into
      ``x.etlt.onnx``; tltk writes the legacy container instead).
    * Any other ``-o``: ``.onnx`` is appended unless the name already contains ``onnx`` (as TAO).

    Args:
        model_path: the trained model file being exported.
        output_file: the ``-o/--output_file`` value, or None.

    Returns:
        The output path as a string.
    """
    if output_file is None or str(output_file) == "":
        return str(Path(model_path).with_suffix(".onnx"))
    out = str(output_file)
    lower = out.lower()
    if lower.endswith(".onnx") or lower.endswith(".etlt"):
        return out
    if "onnx" in Path(out).name.lower():
        return out
    return out + ".onnx"


# ---- conversion -----------------------------------------------------------------------------------

def export_keras_to_onnx(
    model: keras.Model,
    output_path: str | os.PathLike[str],
    input_name: str,
    output_names: Mapping[str, str],
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
    static_batch_size: int = 1,
    key: str | None = None,
    overwrite: bool = True,
    check_parity: bool = True,
    parity_inputs: np.ndarray | None = None,
) -> ExportReport:
    """Convert a Keras model to ONNX with TAO's tensor names and write it.

    Args:
        model: a single-input Keras functional model; input ``[N, C, H, W]`` float32.
        output_path: ``.onnx`` for a plain ONNX file, ``.etlt`` for the legacy TAO container
            (needs ``key``).  Any other suffix is written as plain ONNX.
        input_name: ONNX name of the graph input (``input_1`` for DetectNet_v2, ``Input`` for
            MaskRCNN).
        output_names: maps each Keras output to its ONNX name.  A key may be the name of a
            model output (``model.output_names``), or the name of a layer whose output reaches a
            model output through data-movement layers only (Permute/Reshape/...), e.g.
            ``{"output_cov": "output_cov/Sigmoid", "output_bbox": "output_bbox/BiasAdd"}``.
            Outputs not mentioned keep the converter's name.
        opset: ONNX opset.
        dynamic_batch: give the batch dimension the symbolic name ``batch``; otherwise it is
            fixed to ``static_batch_size``.
        static_batch_size: batch size written when ``dynamic_batch`` is False.
        key: the key string for ``.etlt`` output (ignored for ``.onnx``).
        overwrite: replace an existing file; when False an existing file raises UsageError.
        check_parity: run :func:`parity_check` on the written model.
        parity_inputs: ``[N, C, H, W]`` float32 inputs for the parity check; by default two
            images of uniform noise in [0, 1) (seed 0).

    Returns:
        An :class:`ExportReport`.

    Raises:
        UsageError: bad ``output_names`` keys, ``.etlt`` without a key, or an existing file with
            ``overwrite=False``.
        InvalidInputError: the model has not exactly one 4-D input.
    """
    out = os.fspath(output_path)
    container = "etlt" if out.lower().endswith(".etlt") else "onnx"
    if container == "etlt" and not key:
        raise UsageError(f"{out}: writing an .etlt needs a key (-k/--key)",
                         hint="pass the key DeepStream will use as tlt-model-key, or write a plain .onnx")
    if not overwrite and os.path.exists(out):
        raise UsageError(f"{out} already exists", hint="choose another -o/--output_file or remove the file")

    from tltk.export.onnx_passes import tensorrt_problems

    proto = convert_keras_to_onnx(model, input_name, output_names, opset=opset, dynamic_batch=dynamic_batch,
                                  static_batch_size=static_batch_size)
    payload = proto.SerializeToString()
    if container == "etlt":
        from tltk.modelfile.legacy import encode_etlt

        atomic_write_bytes(out, encode_etlt(payload, str(key), input_name=""))
    else:
        atomic_write_bytes(out, payload)

    report = ExportReport(
        output_path=out,
        container=container,
        input_name=input_name,
        input_shape=_tensor_shape(proto.graph.input[0]),
        output_names=[o.name for o in proto.graph.output],
        output_shapes=[_tensor_shape(o) for o in proto.graph.output],
        opset=opset,
        dynamic_batch=dynamic_batch,
        num_nodes=len(proto.graph.node),
        size_bytes=os.path.getsize(out),
        tensorrt_problems=tensorrt_problems(proto),
    )
    for problem in report.tensorrt_problems:
        log.warning("TensorRT's ONNX parser will not take this model as it is: %s", problem)
    if check_parity:
        if parity_inputs is None:
            shape = tuple(int(d) for d in model.inputs[0].shape[1:])
            batch = 2 if dynamic_batch else static_batch_size
            parity_inputs = np.random.default_rng(0).random((batch, *shape), dtype=np.float32)
        report.parity = parity_check(model, payload, parity_inputs)
        log.info("parity Keras vs ONNX Runtime: max |diff| %s",
                 ", ".join(f"{k}={v:.3g}" for k, v in report.parity.items()))
    log.info("wrote %s (%s, %d nodes, %d bytes)", out, container, report.num_nodes, report.size_bytes)
    return report


def convert_keras_to_onnx(
    model: keras.Model,
    input_name: str,
    output_names: Mapping[str, str],
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
    static_batch_size: int = 1,
    rewrites: bool = True,
    native_roi_align: bool = False,
) -> onnx.ModelProto:
    """Convert in memory (no file written); see :func:`export_keras_to_onnx` for the arguments.

    ``rewrites`` applies the exact speed rewrites of :mod:`tltk.export.onnx_passes` after
    constant folding (False: the converter's graph, for comparisons):
    :func:`~tltk.export.onnx_passes.weighted_sums_to_matmul` (the gather ROIAlign's
    Mul/ReduceSum blend becomes one MatMul), :func:`~tltk.export.onnx_passes.fold_transpose_into_matmul`
    (the box head's CHW flatten folded into ``fc6``'s weights) and
    :func:`~tltk.export.onnx_passes.fold_pad_into_maxpool` (the stem's Pad).
    ``native_roi_align=True`` replaces MaskRCNN's multilevel ROIAligns by ONE ONNX ``RoiAlign``
    on a packed FPN canvas instead (:mod:`tltk.export.roi_align_onnx`, opset 16+): what
    TensorRT maps to its ROIAlign plugin; on ONNX Runtime's CPU (one thread) the whole quickstart
    model (256x448, 300 ROIs) took 0.98x the MatMul blend's time, but a graph of the box ROIAlign
    alone at ResNet-50's 832x1344 (1000 ROIs) 2.8x (its per-channel NCHW kernel), so it is not the
    default.

    Returns:
        The checked ``onnx.ModelProto``; its outputs are in the order of ``model.outputs``.
    """
    import onnx
    import tensorflow as tf
    import tf2onnx

    from tltk.export.onnx_passes import (
        fold_constants,
        fold_pad_into_maxpool,
        fold_transpose_into_matmul,
        weighted_sums_to_matmul,
    )
    from tltk.export.roi_align_onnx import MIN_OPSET as ROI_ALIGN_MIN_OPSET
    from tltk.export.roi_align_onnx import native_roi_align as replace_roi_align
    from tltk.export.roi_align_onnx import roi_align_taps

    if len(model.inputs) != 1 or len(model.inputs[0].shape) != 4:
        raise InvalidInputError(
            f"model {model.name!r}: export needs exactly one NCHW input, got "
            f"{[tuple(t.shape) for t in model.inputs]}")
    renames = resolve_output_names(model, output_names)
    chw = tuple(int(d) for d in model.inputs[0].shape[1:])
    batch = None if dynamic_batch else int(static_batch_size)
    signature = (tf.TensorSpec((batch, *chw), tf.float32, name=input_name),)
    for noisy in ("tf2onnx", "tensorflow"):
        logging.getLogger(noisy).setLevel(max(logging.getLogger(noisy).level, logging.WARNING))
    keras_names = list(model.output_names)
    taps, extra = roi_align_taps(model) if native_roi_align and opset >= ROI_ALIGN_MIN_OPSET else ([], {})
    if taps:  # convert a twin that also outputs the tensors around each multilevel ROIAlign
        import keras

        twin = keras.Model(model.inputs, list(model.outputs) + list(extra.values()))
        proto, _ = tf2onnx.convert.from_keras(twin, input_signature=signature, opset=opset)
        graph_outputs = [o.name for o in proto.graph.output]
        if len(graph_outputs) != len(keras_names) + len(extra):
            raise RuntimeError(f"tf2onnx returned {len(graph_outputs)} outputs, expected "
                               f"{len(keras_names) + len(extra)}")
        # the twin's outputs by position: the model's, then the taps
        rename_tensors(proto, {**dict(zip(graph_outputs, keras_names, strict=False)),
                               **dict(zip(graph_outputs[len(keras_names):], extra, strict=True))})
        replace_roi_align(proto, taps, keep_outputs=tuple(keras_names))
    else:
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=opset)

    graph_outputs = [o.name for o in proto.graph.output]
    if graph_outputs != keras_names:
        raise RuntimeError(f"tf2onnx returned outputs {graph_outputs}, expected {keras_names}")
    mapping = {proto.graph.input[0].name: input_name}
    mapping.update({keras_names[i]: new for i, new in renames.items()})
    rename_tensors(proto, mapping)
    fold_constants(proto)
    if rewrites:
        weighted_sums_to_matmul(proto)
        fold_transpose_into_matmul(proto)
        fold_pad_into_maxpool(proto.graph)
    used_domains = {node.domain for node in proto.graph.node}
    kept_opsets = [o for o in proto.opset_import if o.domain in ("", "ai.onnx") or o.domain in used_domains]
    del proto.opset_import[:]
    proto.opset_import.extend(kept_opsets)
    if dynamic_batch:
        for value in list(proto.graph.input) + list(proto.graph.output):
            dims = value.type.tensor_type.shape.dim
            if len(dims) and not dims[0].HasField("dim_value"):
                dims[0].dim_param = BATCH_DIM_NAME
    proto.producer_name = "tltk"
    onnx.checker.check_model(proto)
    return proto


def resolve_output_names(model: keras.Model, output_names: Mapping[str, str]) -> dict[int, str]:
    """Match the keys of ``output_names`` to the model's outputs.

    Args:
        model: the Keras model.
        output_names: Keras output name or layer name -> ONNX name (see
            :func:`export_keras_to_onnx`).

    Returns:
        Output index -> ONNX name.

    Raises:
        UsageError: a key matches no output, two keys match the same output, or two outputs
            would get the same ONNX name.
    """
    chains = [_producer_chain(t) for t in model.outputs]
    result: dict[int, str] = {}
    for key, onnx_name in output_names.items():
        matches = [i for i, name in enumerate(model.output_names) if name == key]
        if not matches:
            matches = [i for i, chain in enumerate(chains) if key in chain]
        if len(matches) != 1:
            raise UsageError(
                f"export output {key!r} matches {len(matches)} outputs of model {model.name!r}; "
                f"outputs are {list(model.output_names)} (produced by layers {chains})")
        index = matches[0]
        if index in result:
            raise UsageError(f"two export names given for output {model.output_names[index]!r}")
        result[index] = onnx_name
    if len(set(result.values())) != len(result):
        raise UsageError(f"duplicate ONNX output names in {dict(output_names)}")
    return result


def _producer_chain(tensor: Any) -> list[str]:
    """Layer names from the layer producing ``tensor`` back through pass-through layers."""
    names: list[str] = []
    history = getattr(tensor, "_keras_history", None)
    while history is not None:
        layer = history.operation
        names.append(layer.name)
        if type(layer).__name__ not in _PASS_THROUGH_LAYERS:
            break
        node = layer._inbound_nodes[history.node_index]
        inputs = list(node.input_tensors)
        if len(inputs) != 1:
            break
        history = getattr(inputs[0], "_keras_history", None)
    return names


def rename_tensors(proto: onnx.ModelProto, mapping: Mapping[str, str]) -> None:
    """Rename tensors everywhere in a graph (inputs, outputs, node edges, value_info).

    Args:
        proto: the model, edited in place.
        mapping: old tensor name -> new tensor name.

    Raises:
        UsageError: a new name is already used by another tensor of the graph.
    """
    mapping = {old: new for old, new in mapping.items() if old != new}
    if not mapping:
        return
    graph = proto.graph
    existing = {t for n in graph.node for t in list(n.input) + list(n.output)}
    existing |= {v.name for v in graph.input} | {i.name for i in graph.initializer}
    clashes = (set(mapping.values()) & existing) - set(mapping)
    if clashes:
        raise UsageError(f"cannot rename outputs: names {sorted(clashes)} are already used in the graph")
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in mapping:
                node.input[i] = mapping[name]
        for i, name in enumerate(node.output):
            if name in mapping:
                node.output[i] = mapping[name]
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        if value.name in mapping:
            value.name = mapping[value.name]


def _tensor_shape(value: Any) -> tuple[int, ...]:
    dims = value.type.tensor_type.shape.dim
    return tuple(int(d.dim_value) if d.HasField("dim_value") else -1 for d in dims)


# ---- parity ----------------------------------------------------------------------------------------

def parity_check(
    model: keras.Model,
    onnx_model: str | os.PathLike[str] | bytes,
    inputs: np.ndarray,
    key: str | None = None,
) -> dict[str, float]:
    """Run Keras and ONNX Runtime (CPU) on the same inputs and compare every output.

    The ONNX outputs are matched to the Keras outputs by position (the exporter keeps the order
    of ``model.outputs``).

    Args:
        model: the Keras model that was exported.
        onnx_model: ONNX file path, ``.etlt`` path (with ``key``) or serialized ONNX bytes.
        inputs: ``[N, C, H, W]`` float32 batch.
        key: key string for an ``.etlt`` path.

    Returns:
        ONNX output name -> largest absolute difference over all elements.

    Raises:
        InvalidInputError: the number or shapes of the outputs differ.
    """
    import onnxruntime as ort

    payload = load_onnx_bytes(onnx_model, key)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(payload, options, providers=["CPUExecutionProvider"])
    batch = np.ascontiguousarray(inputs, dtype=np.float32)
    onnx_out = session.run(None, {session.get_inputs()[0].name: batch})
    # compiled (graph) prediction: an eager call of a large detector keeps every intermediate alive
    # (MaskRCNN ResNet-50 at 832x1344: 5.5 GB eager, 2 GB compiled for two images)
    keras_out = keras_outputs_as_list(model.predict_on_batch(batch))
    names = [o.name for o in session.get_outputs()]
    if len(keras_out) != len(onnx_out):
        raise InvalidInputError(f"Keras model has {len(keras_out)} outputs, ONNX model has {len(onnx_out)}")
    diffs: dict[str, float] = {}
    for name, ref, got in zip(names, keras_out, onnx_out, strict=True):
        ref_np = np.asarray(ref)
        if ref_np.shape != got.shape:
            raise InvalidInputError(f"output {name}: Keras shape {ref_np.shape} != ONNX shape {got.shape}")
        diffs[name] = float(np.max(np.abs(ref_np.astype(np.float64) - got.astype(np.float64)))) if got.size else 0.0
    return diffs


def keras_outputs_as_list(outputs: Any) -> list[Any]:
    """Flatten what calling a Keras model returns (tensor, list or dict) into ``model.outputs`` order.

    Keras flattens dict outputs by sorted key, which is also the order of ``model.outputs`` and
    ``model.output_names`` (and so of the exported ONNX outputs).

    Args:
        outputs: the result of ``model(x)``.

    Returns:
        The output tensors as a list.
    """
    import keras

    return list(keras.tree.flatten(outputs))


def load_onnx_bytes(source: str | os.PathLike[str] | bytes, key: str | None = None) -> bytes:
    """Serialized ONNX bytes from a path (``.onnx`` or ``.etlt``) or bytes.

    Args:
        source: a file path or the bytes themselves.
        key: key string, needed for ``.etlt`` files.

    Returns:
        The plain ONNX model bytes.

    Raises:
        InvalidInputError: the file is missing, or is an ``.etlt`` without a key or not holding
            ONNX.
        WrongKeyError: the key does not decrypt the ``.etlt``.
    """
    if isinstance(source, (bytes, bytearray)):
        return bytes(source)
    from tltk.modelfile.container import load_any_model_file

    path = os.fspath(source)
    if path.lower().endswith(".etlt") and not key:
        raise InvalidInputError(f"{path}: an .etlt model needs its key (-k/--key)")
    kind, content, _ = load_any_model_file(path, key)
    if kind != "onnx" or not isinstance(content, bytes):
        hint = ("UFF .etlt files need TensorRT < 9 (tao-converter); re-export the model to ONNX"
                if kind == "uff" else "export the model to ONNX first (tltk <model> export)")
        raise InvalidInputError(f"{path}: holds a {kind.upper()} model, not ONNX", hint=hint)
    return content


# ---- files ------------------------------------------------------------------------------------------

def save_onnx(proto: onnx.ModelProto, path: str | os.PathLike[str]) -> str:
    """Check and write an ONNX model atomically.

    Args:
        proto: the model.
        path: destination ``.onnx`` path.

    Returns:
        The path written.
    """
    import onnx

    onnx.checker.check_model(proto)
    atomic_write_bytes(path, proto.SerializeToString())
    return os.fspath(path)


def onnx_io_names(source: str | os.PathLike[str] | bytes | onnx.ModelProto) -> tuple[list[str], list[str]]:
    """Graph input names (initializers excluded) and output names of an ONNX model.

    Args:
        source: a path, serialized bytes or a ModelProto.

    Returns:
        ``(input_names, output_names)``.
    """
    import onnx

    proto = source if isinstance(source, onnx.ModelProto) else onnx.load_from_string(load_onnx_bytes(source))
    inits = {i.name for i in proto.graph.initializer}
    return [i.name for i in proto.graph.input if i.name not in inits], [o.name for o in proto.graph.output]


__all__: Sequence[str] = (
    "BATCH_DIM_NAME",
    "DEFAULT_OPSET",
    "ExportReport",
    "convert_keras_to_onnx",
    "default_output_path",
    "export_keras_to_onnx",
    "keras_outputs_as_list",
    "load_onnx_bytes",
    "onnx_io_names",
    "parity_check",
    "rename_tensors",
    "resolve_output_names",
    "save_onnx",
)
