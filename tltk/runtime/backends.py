"""Inference backends behind one interface, chosen by the model file's extension.

=============================  ===============================================================
extension                      backend
=============================  ===============================================================
``.tlt .keras .hdf5 .h5``      :class:`KerasBackend` (TensorFlow; tltk containers, Keras files,
                               legacy TAO ``.tlt`` with the key)
``.onnx .etlt``                :class:`OnnxRuntimeBackend` (CUDA provider when available, else
                               CPU; ``.etlt`` decrypted with the key)
``.engine .plan .trt``         :class:`TensorRTBackend` (needs TensorRT, pycuda and a GPU; exit
                               code 3 otherwise)
=============================  ===============================================================

Every backend takes a preprocessed NCHW float32 batch and returns a dict keyed by the TAO
output names (``output_cov/Sigmoid``, ``output_bbox/BiasAdd`` for DetectNet_v2;
``generate_detections``, ``mask_fcn_logits/BiasAdd`` for MaskRCNN).  ONNX/TensorRT tensor names
with TAO 5's ``:0`` suffix are reported without it, so models exported by TAO and by tltk look
the same to the caller.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from tltk.errors import InvalidInputError

if TYPE_CHECKING:  # pragma: no cover - typing only
    import keras

log = logging.getLogger(__name__)

#: Extension -> backend kind (the DESIGN section 5 table).
BACKEND_BY_EXTENSION: dict[str, str] = {
    ".tlt": "keras",
    ".keras": "keras",
    ".hdf5": "keras",
    ".h5": "keras",
    ".onnx": "onnxruntime",
    ".etlt": "onnxruntime",
    ".engine": "tensorrt",
    ".plan": "tensorrt",
    ".trt": "tensorrt",
}

#: Output name mapping accepted by the backends: Keras output/layer name -> TAO name (the same
#: mapping the exporter takes), or the TAO names in the order of the model's outputs.
OutputNames = Mapping[str, str] | Sequence[str]


def tao_name(name: str) -> str:
    """Strip the ``:0`` suffix TensorFlow-made ONNX tensor names carry (``input_1:0`` -> ``input_1``).

    Args:
        name: an ONNX/TensorRT tensor name.

    Returns:
        The name without a trailing ``:0``.
    """
    return name[:-2] if name.endswith(":0") else name


class InferenceBackend:
    """Common interface of the inference backends.

    Attributes:
        path: the model file.
        input_name: name of the (single) network input, as the model file spells it.
        input_shape_chw: ``(C, H, W)`` of the input; ``-1`` for a dimension the model leaves open.
        output_names: TAO output names, in the model's output order (the keys of :meth:`run`).
        kind: ``"keras"``, ``"onnxruntime"`` or ``"tensorrt"``.
    """

    kind = ""

    def __init__(self, path: str, input_name: str, input_shape_chw: tuple[int, ...], output_names: list[str]) -> None:
        self.path = path
        self.input_name = input_name
        self.input_shape_chw = tuple(int(d) for d in input_shape_chw)
        self.output_names = list(output_names)

    def run(self, batch_nchw: np.ndarray) -> dict[str, np.ndarray]:
        """Run the network on one batch.

        Args:
            batch_nchw: ``[N, C, H, W]`` float32, preprocessed as at training time (DetectNet_v2:
                RGB / 255; MaskRCNN: normalized RGB).

        Returns:
            TAO output name -> float32 array with a leading batch dimension ``N``.

        Raises:
            InvalidInputError: the batch is not 4-D or its C/H/W differ from the model's.
        """
        batch = self._check(batch_nchw)
        return self._run(batch)

    def _run(self, batch: np.ndarray) -> dict[str, np.ndarray]:  # pragma: no cover - overridden
        raise TypeError(f"{type(self).__name__} does not implement _run")

    def close(self) -> None:
        """Release the model and any device memory; the backend cannot run afterwards."""

    def describe(self) -> dict[str, Any]:
        """A JSON-serialisable description (kind, path, input and output names, input shape)."""
        return {"kind": self.kind, "path": self.path, "input_name": self.input_name,
                "input_shape_chw": list(self.input_shape_chw), "output_names": list(self.output_names)}

    def __enter__(self) -> InferenceBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check(self, batch_nchw: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch_nchw)
        if batch.ndim != 4:
            raise InvalidInputError(f"{self.path}: expected an [N, C, H, W] batch, got shape {batch.shape}")
        for axis, (want, got) in enumerate(zip(self.input_shape_chw, batch.shape[1:], strict=True)):
            if want > 0 and want != got:
                raise InvalidInputError(
                    f"{self.path}: input {self.input_name} expects {'CHW'[axis]}={want}, the batch has {got} "
                    f"(batch shape {batch.shape}, model input {self.input_shape_chw})",
                    hint="preprocess images to the network size in NCHW order")
        return np.ascontiguousarray(batch, dtype=np.float32)


class KerasBackend(InferenceBackend):
    """Run a Keras model (tltk ``.tlt`` container, ``.keras``, Keras HDF5, legacy TAO ``.tlt``).

    Args:
        path: the model file (loaded with :func:`tltk.modelfile.container.load_keras_model`), or None
            when ``model`` is given.
        key: key for sealed/legacy files.
        output_names: Keras output name or layer name -> TAO name (as for the exporter), or the
            TAO names in output order; default: the Keras output names.
        model: an already built Keras model to wrap instead of loading ``path``.
        custom_objects: custom layers for deserialisation.
        max_batch_size: largest batch run in one call (bigger batches are split).

    Raises:
        ModelFileError, WrongKeyError: the file cannot be loaded.
        InvalidInputError: the model does not have exactly one 4-D input.
    """

    kind = "keras"

    def __init__(self, path: str | os.PathLike[str] | None = None, key: str | None = None,
                 output_names: OutputNames | None = None, model: keras.Model | None = None,
                 custom_objects: dict[str, Any] | None = None, max_batch_size: int = 16) -> None:
        source = os.fspath(path) if path is not None else "<keras model>"
        if model is None:
            if path is None:
                raise InvalidInputError("KerasBackend needs a model file or a model")
            from tltk.modelfile.container import load_keras_model

            model, _ = load_keras_model(source, key, custom_objects=custom_objects)
        if len(model.inputs) != 1 or len(model.inputs[0].shape) != 4:
            raise InvalidInputError(f"{source}: expected one NCHW input, the model has "
                                    f"{[tuple(t.shape) for t in model.inputs]}")
        keras_names = list(model.output_names)
        if output_names is None:
            names = keras_names
        elif isinstance(output_names, Mapping):
            from tltk.export.onnx_export import resolve_output_names

            resolved = resolve_output_names(model, output_names)
            names = [resolved.get(i, n) for i, n in enumerate(keras_names)]
        else:
            names = [str(n) for n in output_names]
            if len(names) != len(keras_names):
                raise InvalidInputError(f"{source}: {len(names)} output names given for {len(keras_names)} outputs")
        chw = tuple(-1 if d is None else int(d) for d in model.inputs[0].shape[1:])
        super().__init__(source, model.inputs[0].name, chw, names)
        from tltk.export.onnx_export import keras_outputs_as_list

        self._flatten = keras_outputs_as_list
        self.model = model
        self.max_batch_size = max(1, int(max_batch_size))

    def _run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        pieces: list[list[np.ndarray]] = [[] for _ in self.output_names]
        for start in range(0, batch.shape[0], self.max_batch_size):
            out = self._flatten(self.model(batch[start:start + self.max_batch_size], training=False))
            for i, value in enumerate(out):
                pieces[i].append(np.asarray(value, dtype=np.float32))
        return {name: np.concatenate(parts, axis=0) for name, parts in zip(self.output_names, pieces, strict=True)}

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]


class OnnxRuntimeBackend(InferenceBackend):
    """Run an ONNX model (``.onnx`` or ONNX-payload ``.etlt``) with ONNX Runtime.

    Args:
        path: the model file.
        key: key for ``.etlt`` files.
        providers: ONNX Runtime execution providers; default CUDA when available, then CPU.
        output_names: optional TAO names in output order (renames the graph outputs); by default
            the graph's output names without a ``:0`` suffix.  A mapping (as given to the exporter)
            is accepted and checked: each of its TAO names must be an output of the model.
        intra_op_threads: CPU threads per operator (0: ONNX Runtime's default).

    Raises:
        ModelFileError, WrongKeyError, InvalidInputError: the file cannot be read or decoded, or the
            model has not exactly one input.
    """

    kind = "onnxruntime"

    def __init__(self, path: str | os.PathLike[str], key: str | None = None,
                 providers: Sequence[str] | None = None, output_names: OutputNames | None = None,
                 intra_op_threads: int = 0) -> None:
        import onnxruntime as ort

        from tltk.export.onnx_export import load_onnx_bytes

        source = os.fspath(path)
        payload = load_onnx_bytes(source, key)
        if providers is None:
            available = ort.get_available_providers()
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if intra_op_threads:
            options.intra_op_num_threads = int(intra_op_threads)
        try:
            self.session = ort.InferenceSession(payload, options, providers=list(providers))
        except Exception as exc:  # onnxruntime raises its own exception types
            from tltk.errors import ModelFileError

            raise ModelFileError(f"{source}: ONNX Runtime cannot load this model ({exc})") from exc
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise InvalidInputError(f"{source}: expected one NCHW input, the model has "
                                    f"{[(i.name, i.shape) for i in inputs]}")
        graph_outputs = [o.name for o in self.session.get_outputs()]
        names = [tao_name(n) for n in graph_outputs]
        if isinstance(output_names, Mapping):
            missing = [n for n in output_names.values() if n not in names]
            if missing:
                raise InvalidInputError(f"{source}: the model has no output(s) {missing}; its outputs are {names}",
                                        hint="export the model with tltk to get TAO's output names")
        elif output_names is not None:
            names = [str(n) for n in output_names]
            if len(names) != len(graph_outputs):
                raise InvalidInputError(f"{source}: {len(names)} output names given for {len(graph_outputs)} outputs")
        shape = inputs[0].shape
        self._static_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        chw = tuple(d if isinstance(d, int) and d > 0 else -1 for d in shape[1:])
        super().__init__(source, inputs[0].name, chw, names)
        self._graph_outputs = graph_outputs
        self.providers = self.session.get_providers()

    def _run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        step = self._static_batch
        if step is None or batch.shape[0] == step:
            outs = self.session.run(self._graph_outputs, {self.input_name: batch})
            return {n: np.asarray(v) for n, v in zip(self.output_names, outs, strict=True)}
        pieces: list[list[np.ndarray]] = [[] for _ in self.output_names]
        for start in range(0, batch.shape[0], step):
            chunk = batch[start:start + step]
            real = chunk.shape[0]
            if real < step:
                chunk = np.concatenate([chunk, np.zeros((step - real, *chunk.shape[1:]), np.float32)])
            for i, value in enumerate(self.session.run(self._graph_outputs, {self.input_name: chunk})):
                pieces[i].append(np.asarray(value)[:real])
        return {n: np.concatenate(p, axis=0) for n, p in zip(self.output_names, pieces, strict=True)}

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]


class TensorRTBackend(InferenceBackend):
    """Run a serialized TensorRT engine (``.engine``/``.plan``/``.trt``).

    Args:
        path: the engine file.
        output_names: optional TAO names in output order; default the engine's output names
            without a ``:0`` suffix.  A mapping is accepted and checked as for ONNX Runtime.
        device_id: CUDA device index.

    Raises:
        MissingDependencyError: TensorRT, pycuda or a GPU is missing (exit code 3).
        ModelFileError: the engine was built for another TensorRT version or GPU.
    """

    kind = "tensorrt"

    def __init__(self, path: str | os.PathLike[str], output_names: OutputNames | None = None,
                 device_id: int = 0) -> None:
        from tltk.tensorrt.runner import TensorRTRunner

        source = os.fspath(path)
        self.runner = TensorRTRunner(source, device_id=device_id)
        inputs = [self.runner.tensors[n] for n in self.runner.input_names]
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            self.runner.close()
            raise InvalidInputError(f"{source}: expected one NCHW input, the engine has "
                                    f"{[(i.name, i.shape) for i in inputs]}")
        engine_outputs = list(self.runner.output_names)
        names = [tao_name(n) for n in engine_outputs]
        if isinstance(output_names, Mapping):
            missing = [n for n in output_names.values() if n not in names]
            if missing:
                self.runner.close()
                raise InvalidInputError(f"{source}: the engine has no output(s) {missing}; its outputs are {names}")
        elif output_names is not None:
            names = [str(n) for n in output_names]
        chw = tuple(d if d > 0 else -1 for d in inputs[0].shape[1:])
        super().__init__(source, inputs[0].name, chw, names)
        self._engine_outputs = engine_outputs

    def _run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        outs = self.runner.run({self.input_name: batch})
        return {name: np.asarray(outs[raw]) for name, raw in zip(self.output_names, self._engine_outputs, strict=True)}

    def close(self) -> None:
        self.runner.close()


def backend_kind(path: str | os.PathLike[str]) -> str:
    """The backend kind for a model file, from its extension.

    Args:
        path: the model file name.

    Returns:
        ``"keras"``, ``"onnxruntime"`` or ``"tensorrt"``.

    Raises:
        InvalidInputError: the extension is not one of :data:`BACKEND_BY_EXTENSION`.
    """
    source = os.fspath(path)
    ext = os.path.splitext(source)[1].lower()
    if ext in BACKEND_BY_EXTENSION:
        return BACKEND_BY_EXTENSION[ext]
    if ext == ".uff":
        raise InvalidInputError(f"{source}: UFF models are not supported (UFF needs TensorRT < 9)",
                                hint="export the trained model to ONNX with tltk, or build an engine from the "
                                     "UFF with tao-converter on a TensorRT 8 machine")
    known = " ".join(sorted(BACKEND_BY_EXTENSION))
    raise InvalidInputError(f"{source}: unknown model file extension '{ext or '(none)'}'",
                            hint=f"supported extensions: {known}")


def open_backend(path: str | os.PathLike[str], key: str | None = None, output_names: OutputNames | None = None,
                 **options: Any) -> InferenceBackend:
    """Open a model file with the backend its extension calls for.

    Args:
        path: model file (see the module table).
        key: key for sealed ``.tlt`` and legacy ``.tlt``/``.etlt`` files.
        output_names: Keras output/layer name -> TAO name mapping (as given to the exporter), or
            TAO names in output order; see each backend.
        **options: passed to the backend (``custom_objects``/``max_batch_size`` for Keras,
            ``providers``/``intra_op_threads`` for ONNX Runtime, ``device_id`` for TensorRT).

    Returns:
        An open :class:`InferenceBackend`; close it (or use it as a context manager) when done.

    Raises:
        InvalidInputError: unknown extension or missing file.
        MissingDependencyError: a TensorRT engine on a machine without TensorRT (exit code 3).
    """
    kind = backend_kind(path)
    source = os.fspath(path)
    if not os.path.isfile(source):
        raise InvalidInputError(f"{source}: no such model file")
    if kind == "keras":
        return KerasBackend(source, key=key, output_names=output_names, **options)
    if kind == "onnxruntime":
        return OnnxRuntimeBackend(source, key=key, output_names=output_names, **options)
    return TensorRTBackend(source, output_names=output_names, **options)


__all__ = [
    "BACKEND_BY_EXTENSION",
    "InferenceBackend",
    "KerasBackend",
    "OnnxRuntimeBackend",
    "TensorRTBackend",
    "backend_kind",
    "open_backend",
    "tao_name",
]
