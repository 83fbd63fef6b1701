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
from dataclasses import dataclass
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
        class_names: the class names the model file records, in network output order (tltk
            ``.tlt`` containers: ``metadata.json``; ONNX: the ``class_names`` metadata property
            as a JSON list), or None when the file records none (TAO files, engines).
        kind: ``"keras"``, ``"onnxruntime"`` or ``"tensorrt"``.
    """

    kind = ""

    def __init__(self, path: str, input_name: str, input_shape_chw: tuple[int, ...], output_names: list[str],
                 class_names: Sequence[str] | None = None) -> None:
        self.path = path
        self.input_name = input_name
        self.input_shape_chw = tuple(int(d) for d in input_shape_chw)
        self.output_names = list(output_names)
        self.class_names = tuple(str(n) for n in class_names) if class_names else None

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

    @property
    def max_batch_size(self) -> int | None:
        """The largest batch the backend accepts in one call (TensorRT engines), else None."""
        runner = getattr(self, "runner", None)
        return int(runner.max_batch_size) if runner is not None else None

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
        metadata: the model file's metadata when ``model`` is given (its ``class_names`` become
            :attr:`class_names`).

    Raises:
        ModelFileError, WrongKeyError: the file cannot be loaded.
        InvalidInputError: the model does not have exactly one 4-D input.
    """

    kind = "keras"

    def __init__(self, path: str | os.PathLike[str] | None = None, key: str | None = None,
                 output_names: OutputNames | None = None, model: keras.Model | None = None,
                 custom_objects: dict[str, Any] | None = None, max_batch_size: int = 16,
                 metadata: Mapping[str, Any] | None = None) -> None:
        source = os.fspath(path) if path is not None else "<keras model>"
        if model is None:
            if path is None:
                raise InvalidInputError("KerasBackend needs a model file or a model")
            from tltk.modelfile.container import load_keras_model

            model, metadata = load_keras_model(source, key, custom_objects=custom_objects)
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
        super().__init__(source, model.inputs[0].name, chw, names, _recorded_class_names(metadata))
        import tensorflow as tf

        from tltk.export.onnx_export import keras_outputs_as_list

        self._flatten = keras_outputs_as_list
        self.model = model
        self.chunk_size = max(1, int(max_batch_size))
        # A graph reuses its activation buffers: eager calls held about twice the memory
        # (2.2 GB against 1.1 GB for a batch of 16 at 480x272).
        self._forward = tf.function(lambda images: model(images, training=False), reduce_retracing=True,
                                    autograph=False)

    def _run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        pieces: list[list[np.ndarray]] = [[] for _ in self.output_names]
        for start in range(0, batch.shape[0], self.chunk_size):
            out = self._flatten(self._forward(batch[start:start + self.chunk_size]))
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
        recorded = self.session.get_modelmeta().custom_metadata_map.get("class_names")
        super().__init__(source, inputs[0].name, chw, names, _class_names_property(recorded, source))
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
        self.workdir: str | None = None  # a temporary folder holding a built engine, removed on close

    def _run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        outs = self.runner.run({self.input_name: batch})
        return {name: np.asarray(outs[raw]) for name, raw in zip(self.output_names, self._engine_outputs, strict=True)}

    def close(self) -> None:
        self.runner.close()
        if self.workdir:
            import shutil

            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


def _recorded_class_names(metadata: Mapping[str, Any] | None) -> list[str] | None:
    names = (metadata or {}).get("class_names")
    return [str(n) for n in names] if isinstance(names, (list, tuple)) and names else None


def _class_names_property(value: str | None, source: str) -> list[str] | None:
    if not value:
        return None
    import json

    try:
        names = json.loads(value)
    except ValueError:
        log.warning("%s: the class_names metadata property is not a JSON list; ignored", source)
        return None
    return _recorded_class_names({"class_names": names})


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


#: ``-f/--framework`` values -> backend kinds.
FRAMEWORKS: dict[str, str] = {"tlt": "keras", "onnx": "onnxruntime", "tensorrt": "tensorrt"}


def resolve_framework(model_path: str | os.PathLike[str], framework: str | None = None,
                      export_hint: str = "tltk <model> export") -> str:
    """The backend kind that runs a model file, honouring ``-f/--framework``.

    Without ``framework`` the kind comes from the extension (``.tlt/.keras/.hdf5/.h5`` Keras,
    ``.onnx/.etlt`` ONNX Runtime, ``.engine/.plan/.trt`` TensorRT).  ``tlt`` needs a Keras
    model file and ``onnx`` an ONNX/``.etlt`` file; ``tensorrt`` takes an engine, or an
    ONNX/``.etlt`` file to build one from.

    Args:
        model_path: the model file.
        framework: ``tlt``, ``onnx``, ``tensorrt`` or None.
        export_hint: the export command to suggest (``tltk detectnet_v2 export``).

    Returns:
        ``"keras"``, ``"onnxruntime"`` or ``"tensorrt"``.

    Raises:
        UsageError: unknown framework, or a framework that cannot run this kind of file.
        InvalidInputError: unknown extension.
    """
    from tltk.errors import UsageError

    path = os.fspath(model_path)
    file_kind = backend_kind(path)
    if framework is None:
        return file_kind
    name = framework.strip().lower()
    if name not in FRAMEWORKS:
        raise UsageError(f"-f/--framework: unknown framework {framework!r}; use one of {', '.join(FRAMEWORKS)}")
    kind = FRAMEWORKS[name]
    if kind == "keras" and file_kind != "keras":
        raise UsageError(f"-f tlt runs Keras models (.tlt .keras .hdf5 .h5); {path} is a {file_kind} model",
                         hint="use -f onnx for .onnx/.etlt files and -f tensorrt for engines")
    if kind == "onnxruntime" and file_kind != "onnxruntime":
        raise UsageError(f"-f onnx runs ONNX models (.onnx .etlt); {path} is a {file_kind} model",
                         hint=f"export the model to ONNX first ({export_hint})")
    if kind == "tensorrt" and file_kind == "keras":
        raise UsageError(f"-f tensorrt runs TensorRT engines (or builds one from .onnx/.etlt); {path} is a Keras model",
                         hint=f"export it first: {export_hint} -m MODEL --engine_file model.engine")
    return kind


@dataclass(frozen=True)
class EngineRequest:
    """How to build a TensorRT engine from an ONNX/``.etlt`` model before running it.

    Attributes:
        engine_file: where to write the engine; None builds into a temporary folder.
        data_type: ``fp32``, ``fp16`` or ``int8``.
        cache_file: INT8 calibration cache (read when it exists, else written by calibration).
        calibration_tensorfile: TensorFile of calibration batches, used when the cache is missing.
        calibration_batches: number of TensorFile batches to calibrate on.
        calibration_batch_size: images per calibration batch (0: records as stored).
        max_batch_size: largest batch of the engine's optimization profile.
    """

    engine_file: str | None = None
    data_type: str = "fp32"
    cache_file: str | None = None
    calibration_tensorfile: str | None = None
    calibration_batches: int = 1
    calibration_batch_size: int = 0
    max_batch_size: int = 16


def build_engine_from_model(model_path: str, key: str | None, request: EngineRequest,
                            input_chw: Sequence[int], workdir: str, model: str = "<model>") -> str:
    """Build a TensorRT engine from an ``.onnx`` or ``.etlt`` model with :mod:`tltk.tensorrt`.

    Args:
        model_path: the ONNX model or legacy ``.etlt`` (decoded with ``key``).
        key: key of an ``.etlt`` file.
        request: precision, calibration and where to write the engine.
        input_chw: network input (C, H, W) for the optimization profile.
        workdir: folder for the decoded ONNX and, without ``request.engine_file``, the engine.
        model: the model name for the equivalent command printed when TensorRT is missing.

    Returns:
        The engine file path.

    Raises:
        MissingDependencyError: TensorRT or a GPU is missing (exit code 3, with the equivalent
            ``trtexec`` command).
        InvalidInputError: INT8 without a calibration cache, TensorFile or Q/DQ nodes.
    """
    from tltk.export.onnx_export import load_onnx_bytes
    from tltk.tensorrt.availability import status
    from tltk.tensorrt.builder import build_engine
    from tltk.tensorrt.converter_args import settings_from_flags

    onnx_path = model_path
    if not model_path.lower().endswith(".onnx"):
        onnx_path = os.path.join(workdir, "model.onnx")
        with open(onnx_path, "wb") as fh:
            fh.write(load_onnx_bytes(model_path, key))
    cal_bs = int(request.calibration_batch_size) or None

    def settings_for(engine: str, cache: str) -> Any:
        return settings_from_flags(engine_file=engine, data_type=request.data_type, cache_file=cache,
                                   calib_batch_size=cal_bs or 1, max_batch_size=request.max_batch_size,
                                   input_dims=",".join(str(int(d)) for d in input_chw))

    if status().problem is not None:
        _require_tensorrt_for(model_path, onnx_path, request, settings_for, model)
    engine = request.engine_file or os.path.join(workdir, "model.engine")
    settings = settings_for(engine, request.cache_file or os.path.join(workdir, "cal.bin"))
    calibrator = None
    if (request.data_type == "int8" and not os.path.isfile(settings.cache_file)
            and request.calibration_tensorfile):
        from tltk.export.pipeline import calibration_batches_from_tensorfile
        from tltk.tensorrt.availability import require_tensorrt
        from tltk.tensorrt.calibrator import make_calibrator

        require_tensorrt(f"tltk {model} export -m <model> --data_type int8 --cal_data_file "
                         f"{request.calibration_tensorfile} --engine_file {engine}")
        batches = list(calibration_batches_from_tensorfile(request.calibration_tensorfile, cal_bs,
                                                           max(int(request.calibration_batches), 1)))
        if not batches:
            raise InvalidInputError(f"{request.calibration_tensorfile}: the TensorFile holds no batch")
        calibrator = make_calibrator(settings.cache_file, batches=batches, batch_size=int(batches[0].shape[0]))
    build_engine(onnx_path, settings, calibrator=calibrator)
    return engine


def _require_tensorrt_for(model_path: str, onnx_path: str, request: EngineRequest, settings_for: Any,
                          model: str) -> None:
    """Stop with exit code 3 and the commands that build the engine elsewhere, naming the user's files.

    The engine would be built in a temporary folder that is removed when the command ends, so
    the printed commands name files next to the model instead: ``<model>.engine``, and for an
    ``.etlt`` the ``tltk model decode`` step that writes ``<model>.onnx`` first.
    """
    from tltk.tensorrt.availability import require_tensorrt
    from tltk.tensorrt.builder import complete_profiles, inspect_onnx
    from tltk.tensorrt.converter_args import trtexec_command

    stem = os.path.splitext(model_path)[0]
    user_onnx = model_path if model_path.lower().endswith(".onnx") else stem + ".onnx"
    engine = request.engine_file or stem + ".engine"
    cache = request.cache_file or os.path.join(os.path.dirname(model_path), "cal.bin")
    settings = settings_for(engine, cache)
    summary = inspect_onnx(onnx_path)
    settings = settings.with_profiles(complete_profiles(settings, summary.inputs))
    command = trtexec_command(settings, user_onnx, "onnx", summary.has_qdq)
    if user_onnx != model_path:
        command = f"tltk model decode {model_path} -k $KEY -o {user_onnx}\n    {command}"
    require_tensorrt(command)


def keras_at_size(model: keras.Model, chw: tuple[int, int, int]) -> keras.Model:
    """Rebuild a fully convolutional Keras model with a new input size, same weights (as TAO's inference).

    Raises:
        InvalidInputError: the model has several inputs or cannot run at that size.
    """
    config = model.get_config()
    inputs = [layer for layer in config.get("layers", []) if layer.get("class_name") == "InputLayer"]
    if len(inputs) != 1:
        raise InvalidInputError(f"cannot change the input size of model {model.name!r}: it has {len(inputs)} inputs")
    inputs[0]["config"]["batch_shape"] = [None, *chw]
    inputs[0]["config"].pop("shape", None)
    try:
        rebuilt = type(model).from_config(config)
        rebuilt.set_weights(model.get_weights())
    except Exception as exc:  # Keras raises several types for incompatible shapes
        raise InvalidInputError(f"the Keras model cannot run at input size {chw} ({type(exc).__name__}: {exc})",
                                hint="set the image size to the size the model was trained at") from exc
    return rebuilt


def onnx_input_chw(path: str, key: str | None, fallback_hw: tuple[int, int] | None = None) -> tuple[int, int, int]:
    """``(C, H, W)`` of an ONNX/``.etlt`` model's input; open H/W taken from ``fallback_hw``.

    Raises:
        InvalidInputError: a dimension is open and no fallback is given.
    """
    import onnx

    from tltk.export.onnx_export import load_onnx_bytes

    proto = onnx.load_from_string(load_onnx_bytes(path, key))
    initializers = {i.name for i in proto.graph.initializer}
    inputs = [v for v in proto.graph.input if v.name not in initializers]
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in inputs[0].type.tensor_type.shape.dim]
    c, h, w = (dims + [-1, -1, -1, -1])[1:4]
    if fallback_hw is not None:
        h, w = (h if h > 0 else fallback_hw[0]), (w if w > 0 else fallback_hw[1])
    if min(c, h, w) <= 0:
        raise InvalidInputError(f"{path}: the input size {dims} is not fixed; give the image size in the spec")
    return int(c), int(h), int(w)


def open_backend(path: str | os.PathLike[str], key: str | None = None, output_names: OutputNames | None = None,
                 framework: str | None = None, input_chw: tuple[int, int, int] | None = None,
                 engine: EngineRequest | None = None, model: str = "<model>", **options: Any) -> InferenceBackend:
    """Open a model file with the backend its extension (or ``framework``) calls for.

    The one function that turns a model file into a runnable network for every subtask.

    Args:
        path: model file (see the module table).
        key: key for sealed ``.tlt`` and legacy ``.tlt``/``.etlt`` files.
        output_names: Keras output/layer name -> TAO name mapping (as given to the exporter), or
            TAO names in output order; see each backend.
        framework: ``tlt``, ``onnx``, ``tensorrt`` or None (by extension); ``tensorrt`` on an
            ONNX/``.etlt`` file builds an engine first (``engine`` settings).
        input_chw: the size to run a Keras model at (rebuilt with a new input when its own
            differs; fully convolutional models only); the optimization profile of a built engine.
        engine: engine build settings for ``framework="tensorrt"`` on an ONNX/``.etlt`` file.
        model: the model name (``detectnet_v2``), used in hints.
        **options: passed to the backend (``custom_objects``/``max_batch_size`` for Keras,
            ``providers``/``intra_op_threads`` for ONNX Runtime, ``device_id`` for TensorRT).

    Returns:
        An open :class:`InferenceBackend`; close it (or use it as a context manager) when done.

    Raises:
        InvalidInputError: unknown extension or missing file.
        UsageError: ``framework`` cannot run this file.
        MissingDependencyError: TensorRT is needed and missing (exit code 3).
    """
    source = os.fspath(path)
    kind = resolve_framework(source, framework, f"tltk {model} export")
    if not os.path.isfile(source):
        raise InvalidInputError(f"{source}: no such model file", hint="check -m/--model or the spec's model path")
    if kind == "keras":
        from tltk.modelfile.container import check_model_kind, load_keras_model

        net, metadata = load_keras_model(source, key, custom_objects=options.pop("custom_objects", None))
        if model != "<model>":
            check_model_kind(metadata, model, source)
        shape = tuple(net.inputs[0].shape[1:])
        if input_chw is not None and len(shape) == 3 and (shape[1], shape[2]) != tuple(input_chw[1:]):
            log.info("running %s at %dx%d (W x H) instead of its input size %sx%s", source, input_chw[2],
                     input_chw[1], shape[2], shape[1])
            net = keras_at_size(net, (int(shape[0]), int(input_chw[1]), int(input_chw[2])))
        return KerasBackend(source, output_names=output_names, model=net, metadata=metadata, **options)
    if kind == "onnxruntime":
        return OnnxRuntimeBackend(source, key=key, output_names=output_names, **options)
    if backend_kind(source) == "tensorrt":
        return TensorRTBackend(source, output_names=output_names, **options)
    import shutil
    import tempfile

    workdir = tempfile.mkdtemp(prefix="tltk-engine-")
    try:
        fallback = (int(input_chw[1]), int(input_chw[2])) if input_chw is not None else None
        chw = onnx_input_chw(source, key, fallback)
        built = build_engine_from_model(source, key, engine or EngineRequest(), chw, workdir, model)
        backend = TensorRTBackend(built, output_names=output_names, **options)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    backend.workdir = workdir
    return backend


__all__ = [
    "BACKEND_BY_EXTENSION",
    "InferenceBackend",
    "KerasBackend",
    "OnnxRuntimeBackend",
    "TensorRTBackend",
    "EngineRequest",
    "FRAMEWORKS",
    "backend_kind",
    "build_engine_from_model",
    "keras_at_size",
    "onnx_input_chw",
    "open_backend",
    "resolve_framework",
    "tao_name",
]
