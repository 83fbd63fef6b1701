"""DetectNet_v2 ``inference``: images -> detections in original-image pixels, KITTI files, overlays.

Also the one place where a DetectNet_v2 model file becomes a ``(cov, bbox)`` predictor for any
backend (:func:`open_detector`), used by ``evaluate`` as well.

Pipeline of :func:`run_inference` (TAO's ``inference`` command, see the inference spec in
``docs/inference.md``):

1. the model named by ``inferencer_config`` (``tlt_config.model``: any model file, backend by
   extension; ``tensorrt_config``: an existing ``trt_engine``, else an engine built from
   ``etlt_model`` where TensorRT is installed, else ONNX Runtime on ``etlt_model``);
2. each image (one file or a folder's ``.jpg .jpeg .png .ppm .bmp`` files, sorted) is read as
   RGB (grey when ``image_channels`` is 1), resized to ``image_width x image_height`` and
   scaled to [0, 1] in NCHW order (:func:`tltk.data.images.to_network_input`);
3. the outputs are clustered per class with ``bbox_handler_config`` (the class's entry, else
   ``default``) in model-input pixels, clipped to the model frame and scaled to the original
   image size (:func:`tltk.detectnet_v2.postprocess.scale_detections`);
4. ``labels/<stem>.txt`` (KITTI, 16th column = confidence) when ``kitti_dump`` and
   ``images_annotated/<file name>`` when ``disable_overlay`` is false.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tltk import console
from tltk.detectnet_v2.export import OUTPUT_NAMES
from tltk.errors import InvalidInputError, UsageError
from tltk.runtime.backends import InferenceBackend, backend_kind

log = logging.getLogger(__name__)

#: ``-f/--framework`` values -> backend kinds of :mod:`tltk.runtime.backends`.
FRAMEWORKS: dict[str, str] = {"tlt": "keras", "onnx": "onnxruntime", "tensorrt": "tensorrt"}

COV_OUTPUT = OUTPUT_NAMES["output_cov"]
"""TAO name of the coverage output (``output_cov/Sigmoid``)."""

BBOX_OUTPUT = OUTPUT_NAMES["output_bbox"]
"""TAO name of the bbox output (``output_bbox/BiasAdd``)."""

#: Output names recognised as the coverage / bbox output (TAO names, then Keras names).
_COV_NAMES = (COV_OUTPUT, "output_cov")
_BBOX_NAMES = (BBOX_OUTPUT, "output_bbox")

#: The bbox objective's scale and offset used by TAO's inference (the inference spec has no field).
INFERENCE_BBOX_SCALE = 35.0
INFERENCE_BBOX_OFFSET = 0.5

#: TensorRT precisions by ``tensorrt_config.backend_data_type`` enum value.
_TRT_DATA_TYPES = ("fp32", "fp16", "int8")


# --------------------------------------------------------------------------------------------
# Model files -> (cov, bbox) predictor


def split_outputs(outputs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Pick the coverage and bbox arrays out of a backend's outputs.

    By name first (``output_cov/Sigmoid``/``output_cov`` and ``output_bbox/BiasAdd``/
    ``output_bbox``), else by shape as TAO does: of two 4-D outputs, the one with C channels is
    the coverage and the one with 4C channels the bbox output.

    Args:
        outputs: output name -> array (N, channels, H, W).

    Returns:
        ``(cov (N, C, H, W), bbox (N, 4C, H, W))`` as float32.

    Raises:
        InvalidInputError: the outputs are not recognisable as DetectNet_v2 outputs.
    """
    cov = next((outputs[n] for n in _COV_NAMES if n in outputs), None)
    bbox = next((outputs[n] for n in _BBOX_NAMES if n in outputs), None)
    if cov is None or bbox is None:
        arrays = [np.asarray(a) for a in outputs.values()]
        if len(arrays) == 2 and all(a.ndim == 4 for a in arrays):
            small, large = sorted(arrays, key=lambda a: a.shape[1])
            if large.shape[1] == 4 * small.shape[1]:
                cov, bbox = small, large
    if cov is None or bbox is None:
        shapes = {k: tuple(np.shape(v)) for k, v in outputs.items()}
        raise InvalidInputError(f"the model's outputs {shapes} are not DetectNet_v2's coverage and bbox outputs",
                                hint="a DetectNet_v2 model has two NCHW outputs with C and 4*C channels "
                                     f"({COV_OUTPUT}, {BBOX_OUTPUT})")
    return np.asarray(cov, dtype=np.float32), np.asarray(bbox, dtype=np.float32)


def resolve_framework(model_path: str | os.PathLike[str], framework: str | None = None) -> str:
    """The backend kind that runs a model file, honouring ``-f/--framework``.

    Without ``framework`` the kind comes from the extension (``.tlt/.keras/.hdf5/.h5`` Keras,
    ``.onnx/.etlt`` ONNX Runtime, ``.engine/.plan/.trt`` TensorRT).  ``tlt`` needs a Keras
    model file and ``onnx`` an ONNX/``.etlt`` file; ``tensorrt`` takes an engine, or an
    ONNX/``.etlt`` file to build one from.

    Args:
        model_path: the model file.
        framework: ``tlt``, ``onnx``, ``tensorrt`` or None.

    Returns:
        ``"keras"``, ``"onnxruntime"`` or ``"tensorrt"``.

    Raises:
        UsageError: unknown framework, or a framework that cannot run this kind of file.
        InvalidInputError: unknown extension.
    """
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
                         hint="export the model to ONNX first (tltk detectnet_v2 export)")
    if kind == "tensorrt" and file_kind == "keras":
        raise UsageError(f"-f tensorrt runs TensorRT engines (or builds one from .onnx/.etlt); {path} is a Keras model",
                         hint="export it first: tltk detectnet_v2 export -m MODEL --engine_file model.engine")
    return kind


@dataclass(frozen=True)
class EngineRequest:
    """How to build a TensorRT engine from an ONNX/``.etlt`` model (``tensorrt_config``).

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
                            input_chw: Sequence[int], workdir: str) -> str:
    """Build a TensorRT engine from an ``.onnx`` or ``.etlt`` model with :mod:`tltk.tensorrt`.

    Args:
        model_path: the ONNX model or legacy ``.etlt`` (decoded with ``key``).
        key: key of an ``.etlt`` file.
        request: precision, calibration and where to write the engine.
        input_chw: network input (C, H, W) for the optimization profile.
        workdir: folder for the decoded ONNX and, without ``request.engine_file``, the engine.

    Returns:
        The engine file path.

    Raises:
        MissingDependencyError: TensorRT or a GPU is missing (exit code 3, with the equivalent
            ``trtexec`` command).
        InvalidInputError: INT8 without a calibration cache, TensorFile or Q/DQ nodes.
    """
    from tltk.export.onnx_export import load_onnx_bytes
    from tltk.tensorrt.builder import build_engine
    from tltk.tensorrt.converter_args import settings_from_flags

    onnx_path = model_path
    if not model_path.lower().endswith(".onnx"):
        onnx_path = os.path.join(workdir, "model.onnx")
        with open(onnx_path, "wb") as fh:
            fh.write(load_onnx_bytes(model_path, key))
    engine = request.engine_file or os.path.join(workdir, "model.engine")
    cal_bs = int(request.calibration_batch_size) or None
    settings = settings_from_flags(engine_file=engine, data_type=request.data_type,
                                   cache_file=request.cache_file or os.path.join(workdir, "cal.bin"),
                                   calib_batch_size=cal_bs or 1, max_batch_size=request.max_batch_size,
                                   input_dims=",".join(str(int(d)) for d in input_chw))
    calibrator = None
    if (request.data_type == "int8" and not os.path.isfile(settings.cache_file)
            and request.calibration_tensorfile):
        from tltk.export.pipeline import calibration_batches_from_tensorfile
        from tltk.tensorrt.availability import require_tensorrt
        from tltk.tensorrt.calibrator import make_calibrator

        require_tensorrt(f"tltk detectnet_v2 export -m <model> --data_type int8 --cal_data_file "
                         f"{request.calibration_tensorfile} --engine_file {engine}")
        batches = list(calibration_batches_from_tensorfile(request.calibration_tensorfile, cal_bs,
                                                           max(int(request.calibration_batches), 1)))
        if not batches:
            raise InvalidInputError(f"{request.calibration_tensorfile}: the TensorFile holds no batch")
        calibrator = make_calibrator(settings.cache_file, batches=batches, batch_size=int(batches[0].shape[0]))
    build_engine(onnx_path, settings, calibrator=calibrator)
    return engine


class DetectNetV2Runner:
    """A DetectNet_v2 model on one backend: NCHW images in, ``(cov, bbox)`` grids out.

    Args:
        backend: the open backend.
        workdir: a temporary folder owned by the runner (built engine, decoded model), removed
            on :meth:`close`.

    Attributes:
        backend: the underlying :class:`~tltk.runtime.backends.InferenceBackend`.
        kind: ``keras``, ``onnxruntime`` or ``tensorrt``.
        input_shape_chw: the network input (C, H, W); -1 for a dimension left open.
    """

    def __init__(self, backend: InferenceBackend, workdir: str | None = None) -> None:
        self.backend = backend
        self.kind = backend.kind
        self.input_shape_chw = tuple(backend.input_shape_chw)
        self._workdir = workdir

    @property
    def max_batch_size(self) -> int | None:
        """The largest batch the backend accepts in one call (TensorRT engines), else None."""
        runner = getattr(self.backend, "runner", None)
        return int(runner.max_batch_size) if runner is not None else None

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run the network.

        Args:
            images: (N, C, H, W) float32 in [0, 1] (RGB, or one grey channel).

        Returns:
            ``(cov (N, K, H/16, W/16), bbox (N, 4K, H/16, W/16))`` float32, K classes.
        """
        return split_outputs(self.backend.run(images))

    def describe(self) -> dict[str, Any]:
        """The backend's description (kind, path, input/output names, input shape)."""
        return self.backend.describe()

    def close(self) -> None:
        """Release the backend and remove the runner's temporary files."""
        self.backend.close()
        if self._workdir:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __enter__(self) -> DetectNetV2Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _keras_at_size(model: Any, chw: tuple[int, int, int]) -> Any:
    """Rebuild a fully convolutional Keras model with a new input size, same weights (as TAO's inference)."""
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
                                hint="set image_width/image_height to the size the model was trained at") from exc
    return rebuilt


def open_detector(model_path: str | os.PathLike[str], key: str | None = None, framework: str | None = None,
                  input_size: tuple[int, int] | None = None, engine: EngineRequest | None = None,
                  device_id: int = 0, max_batch_size: int = 16) -> DetectNetV2Runner:
    """Open a DetectNet_v2 model file on the backend its extension (or ``framework``) calls for.

    Args:
        model_path: ``.tlt/.keras/.hdf5/.h5`` (Keras), ``.onnx/.etlt`` (ONNX Runtime, or a
            TensorRT engine built from it with ``framework="tensorrt"``) or ``.engine/.plan/.trt``.
        key: key of sealed ``.tlt`` and ``.etlt`` files.
        framework: ``tlt``, ``onnx``, ``tensorrt`` or None (by extension).
        input_size: ``(width, height)`` to run a Keras model at (it is re-wrapped with a new input
            when this differs from its own); ignored for other backends, whose size is fixed.
        engine: engine build settings when a TensorRT engine is built from an ONNX/``.etlt`` file.
        device_id: CUDA device of a TensorRT engine.
        max_batch_size: largest batch a Keras model runs in one call.

    Returns:
        An open :class:`DetectNetV2Runner`; close it when done.

    Raises:
        InvalidInputError: the file is missing or not a usable model.
        UsageError: ``framework`` cannot run this file.
        MissingDependencyError: TensorRT is needed and missing (exit code 3).
    """
    from tltk.runtime.backends import KerasBackend, OnnxRuntimeBackend, TensorRTBackend

    path = os.fspath(model_path)
    kind = resolve_framework(path, framework)
    if not os.path.isfile(path):
        raise InvalidInputError(f"{path}: no such model file", hint="check -m/--model or the spec's model path")
    if kind == "keras":
        from tltk.export.onnx_export import resolve_output_names
        from tltk.modelfile.container import load_keras_model

        model, _ = load_keras_model(path, key)
        shape = tuple(model.inputs[0].shape[1:])
        if input_size is not None and len(shape) == 3 and (shape[1], shape[2]) != (input_size[1], input_size[0]):
            log.info("running %s at %dx%d (W x H) instead of its input size %sx%s", path, input_size[0],
                     input_size[1], shape[2], shape[1])
            model = _keras_at_size(model, (int(shape[0]), int(input_size[1]), int(input_size[0])))
        names: Mapping[str, str] | None = OUTPUT_NAMES
        try:
            resolve_output_names(model, OUTPUT_NAMES)
        except UsageError:
            names = None  # outputs are then told apart by name or channel count (split_outputs)
        return DetectNetV2Runner(KerasBackend(path, model=model, output_names=names, max_batch_size=max_batch_size))
    if kind == "onnxruntime":
        return DetectNetV2Runner(OnnxRuntimeBackend(path, key=key))
    if backend_kind(path) == "tensorrt":
        return DetectNetV2Runner(TensorRTBackend(path, device_id=device_id))
    workdir = tempfile.mkdtemp(prefix="tltk-engine-")
    try:
        request = engine or EngineRequest()
        chw = _onnx_input_chw(path, key, input_size)
        built = build_engine_from_model(path, key, request, chw, workdir)
        return DetectNetV2Runner(TensorRTBackend(built, device_id=device_id), workdir=workdir)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise


def _onnx_input_chw(path: str, key: str | None, input_size: tuple[int, int] | None) -> tuple[int, int, int]:
    import onnx

    from tltk.export.onnx_export import load_onnx_bytes

    proto = onnx.load_from_string(load_onnx_bytes(path, key))
    initializers = {i.name for i in proto.graph.initializer}
    inputs = [v for v in proto.graph.input if v.name not in initializers]
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in inputs[0].type.tensor_type.shape.dim]
    c, h, w = (dims + [-1, -1, -1, -1])[1:4]
    if input_size is not None:
        w, h = (w if w > 0 else input_size[0]), (h if h > 0 else input_size[1])
    if min(c, h, w) <= 0:
        raise InvalidInputError(f"{path}: the input size {dims} is not fixed; give the image size in the spec")
    return int(c), int(h), int(w)


# --------------------------------------------------------------------------------------------
# Inference spec


@dataclass(frozen=True)
class ClassOutput:
    """How one target class is written and drawn (from ``classwise_bbox_handler_config``).

    Attributes:
        class_name: the target class (network output order).
        label: name written to KITTI files and overlays: the class entry's ``output_map``, or
            the class name when the class uses the ``default`` entry or leaves it empty.
        color: overlay colour ``(R, G, B)``: the entry's ``bbox_color``, else a palette colour.
        confidence_threshold: legacy final filter; detections below it are dropped (0: none).
    """

    class_name: str
    label: str
    color: tuple[int, int, int]
    confidence_threshold: float = 0.0


@dataclass
class InferenceConfig:
    """The settings of a DetectNet_v2 inference spec that :func:`run_inference` uses.

    Attributes:
        class_names: ``inferencer_config.target_classes`` (network output order).
        input_chw: network input (C, H, W) from ``image_channels``, ``image_height``, ``image_width``.
        batch_size: images per batch.
        stride: model-input pixels per output cell (``stride``, 0 -> 16).
        params: clustering parameters per class or ``default``.
        outputs: per class, how it is written and drawn.
        postproc_classes: classes written and drawn (``postproc_classes``; default: all).
        kitti_dump: write ``labels/<stem>.txt``.
        disable_overlay: do not write ``images_annotated/``.
        overlay_linewidth: outlines per drawn box.
    """

    class_names: list[str]
    input_chw: tuple[int, int, int]
    batch_size: int
    stride: int
    params: dict[str, Any]
    outputs: dict[str, ClassOutput]
    postproc_classes: list[str]
    kitti_dump: bool
    disable_overlay: bool
    overlay_linewidth: int

    @classmethod
    def from_spec(cls, inference: Any) -> InferenceConfig:
        """Read a loaded DetectNet_v2 ``Inference`` message.

        Args:
            inference: the message (``inferencer_config``, ``bbox_handler_config``).

        Returns:
            The configuration.

        Raises:
            SpecError: invalid clustering settings, or a class with neither its own entry nor
                a ``default`` entry.
        """
        from tltk.detectnet_v2.postprocess import (
            DEFAULT_CLASS_KEY,
            params_from_bbox_handler_config,
            resolve_params,
        )
        from tltk.viz.overlay import DEFAULT_PALETTE

        ic = inference.inferencer_config
        bh = inference.bbox_handler_config
        names = [str(c) for c in ic.target_classes]
        params = params_from_bbox_handler_config(bh)
        table = bh.classwise_bbox_handler_config
        outputs: dict[str, ClassOutput] = {}
        for index, name in enumerate(names):
            resolve_params(params, name)  # raises SpecError naming the class when nothing covers it
            own = name in table
            entry = table[name] if own else table[DEFAULT_CLASS_KEY]
            label = str(entry.output_map) if own and entry.output_map else name
            color = ((int(entry.bbox_color.R), int(entry.bbox_color.G), int(entry.bbox_color.B))
                     if entry.HasField("bbox_color") else DEFAULT_PALETTE[index % len(DEFAULT_PALETTE)])
            outputs[name] = ClassOutput(name, label, color, float(entry.confidence_threshold))
        return cls(class_names=names,
                   input_chw=(int(ic.image_channels) or 3, int(ic.image_height), int(ic.image_width)),
                   batch_size=max(int(ic.batch_size), 1), stride=int(ic.stride) or 16, params=params,
                   outputs=outputs, postproc_classes=[str(c) for c in bh.postproc_classes] or list(names),
                   kitti_dump=bool(bh.kitti_dump), disable_overlay=bool(bh.disable_overlay),
                   overlay_linewidth=int(bh.overlay_linewidth))


@dataclass
class ModelChoice:
    """The model an inference spec names and how to run it.

    Attributes:
        path: the model file (resolved against the spec's folder).
        framework: ``tlt``/``onnx``/``tensorrt`` for :func:`open_detector` (None: by extension).
        engine: engine build settings when TensorRT builds from ``etlt_model``.
        notes: what was decided, for the log and the summary.
    """

    path: str
    framework: str | None = None
    engine: EngineRequest | None = None
    notes: list[str] = field(default_factory=list)


def model_from_spec(loaded: Any, batch_size: int = 16) -> ModelChoice:
    """Choose the model file and backend from ``inferencer_config``.

    ``tlt_config.model`` runs with the backend of its extension.  ``tensorrt_config`` runs an
    existing ``trt_engine`` with TensorRT; otherwise ``etlt_model`` (``.etlt`` or ``.onnx``)
    becomes a TensorRT engine where TensorRT is installed (``backend_data_type``,
    ``calibrator_config``; written to ``trt_engine`` when ``save_engine``), and runs with ONNX
    Runtime (FP32) where it is not.

    Args:
        loaded: the loaded inference spec (:class:`tltk.spec.LoadedSpec`).
        batch_size: the engine's largest batch.

    Returns:
        The :class:`ModelChoice`.

    Raises:
        UsageError: a UFF/Caffe model, or neither an engine nor an ``etlt_model``.
        InvalidInputError: the model file does not exist.
    """
    from tltk.spec import resolve_spec_path

    ic = loaded.message.inferencer_config
    which = ic.WhichOneof("model_config_type")
    if which == "tlt_config":
        path = resolve_spec_path(loaded, str(ic.tlt_config.model))
        _require_file(path, "inferencer_config.tlt_config.model")
        return ModelChoice(path)
    if which != "tensorrt_config":
        raise UsageError("the inference spec names no model: set inferencer_config.tlt_config.model or "
                         "tensorrt_config")
    trt = ic.tensorrt_config
    parser = type(trt).Parser.Name(trt.parser)
    if parser != "ETLT":
        raise UsageError(f"inferencer_config.tensorrt_config.parser: {parser} models cannot be run by tltk",
                         hint="export the model to ONNX and use parser: ETLT with etlt_model")
    engine = resolve_spec_path(loaded, str(trt.trt_engine)) if trt.trt_engine else None
    if engine and os.path.isfile(engine):
        return ModelChoice(engine, "tensorrt", notes=[f"running the existing engine {engine}"])
    if not trt.etlt_model:
        raise UsageError(f"inferencer_config.tensorrt_config: the engine {engine or '(trt_engine unset)'} does "
                         "not exist and there is no etlt_model to build it from")
    model = resolve_spec_path(loaded, str(trt.etlt_model))
    _require_file(model, "inferencer_config.tensorrt_config.etlt_model")
    data_type = _TRT_DATA_TYPES[int(trt.backend_data_type)]
    from tltk.tensorrt.availability import status

    problem = status().problem
    if problem is None:
        cal = trt.calibrator_config
        request = EngineRequest(
            engine_file=engine if trt.save_engine and engine else None, data_type=data_type,
            cache_file=resolve_spec_path(loaded, str(cal.calibration_cache)) if cal.calibration_cache else None,
            calibration_tensorfile=(resolve_spec_path(loaded, str(cal.calibration_tensorfile))
                                    if cal.calibration_tensorfile else None),
            calibration_batches=int(cal.n_batches) or 1, calibration_batch_size=int(cal.batch_size),
            max_batch_size=batch_size)
        return ModelChoice(model, "tensorrt", request, [f"building a {data_type} TensorRT engine from {model}"])
    precision = "INT8 Q/DQ" if _is_qdq_onnx(model) else "FP32"
    notes = [f"{problem}; running {model} with ONNX Runtime ({precision} as the file stores it)"]
    if data_type != "fp32":
        notes.append(f"backend_data_type {data_type.upper()} applies to TensorRT engines; ONNX Runtime runs the "
                     f"model as stored ({precision})")
    if trt.save_engine:
        notes.append("save_engine: no engine is written without TensorRT")
    return ModelChoice(model, "onnx", notes=notes)


def _is_qdq_onnx(path: str) -> bool:
    """Whether an ``.onnx`` file holds an explicitly quantized (Q/DQ) graph."""
    from tltk.errors import TltkError
    from tltk.tensorrt.builder import inspect_onnx

    if not path.lower().endswith(".onnx"):
        return False
    try:
        return inspect_onnx(path).has_qdq
    except TltkError:  # unreadable here: the backend reports it properly when it opens the file
        return False


def _require_file(path: str, field_name: str) -> None:
    if not os.path.isfile(path):
        raise InvalidInputError(f"{field_name}: model file not found: {path}",
                                hint="paths in a spec are relative to the spec file's folder")


# --------------------------------------------------------------------------------------------
# Inputs and outputs


def list_images(input_path: str | os.PathLike[str]) -> list[str]:
    """The images to run on: one file, or a folder's image files sorted by name.

    Files in a folder are kept when their lower-cased extension is one of
    :data:`tltk.data.images.IMAGE_EXTENSIONS` (``.jpg .jpeg .png .ppm .bmp``); sub-folders are
    not searched.

    Args:
        input_path: an image file or a folder.

    Returns:
        Absolute image paths.

    Raises:
        InvalidInputError: the path does not exist, a folder holds no image, or two images
            share a file stem (their label files would collide).
    """
    from tltk.data.images import IMAGE_EXTENSIONS

    path = os.fspath(input_path)
    if os.path.isfile(path):
        return [os.path.abspath(path)]
    if not os.path.isdir(path):
        raise InvalidInputError(f"-i: {path}: no such image file or folder")
    files = sorted(os.path.join(path, f) for f in os.listdir(path)
                   if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS and os.path.isfile(os.path.join(path, f)))
    if not files:
        raise InvalidInputError(f"-i: {path} holds no image ({' '.join(IMAGE_EXTENSIONS)})")
    stems: dict[str, str] = {}
    clashes = []
    for f in files:
        stem = os.path.splitext(os.path.basename(f))[0]
        if stem in stems:
            clashes.append(f"{os.path.basename(stems[stem])} and {os.path.basename(f)}")
        stems[stem] = f
    if clashes:
        raise InvalidInputError(f"-i: images with the same name would write the same label file: {'; '.join(clashes)}",
                                hint="rename one of each pair")
    return [os.path.abspath(f) for f in files]


def kitti_objects(detections: Sequence[Any], outputs: Mapping[str, ClassOutput]) -> list[Any]:
    """Detections as KITTI prediction rows (class label, box, 16th column = confidence).

    Args:
        detections: :class:`~tltk.detectnet_v2.postprocess.Detection` records, original-image
            pixels.
        outputs: per class, its label (``output_map``).

    Returns:
        :class:`tltk.data.kitti.KittiObject` rows with ``score`` set.
    """
    from tltk.data.kitti import KittiObject

    return [KittiObject(type=outputs[d.class_name].label, bbox=(d.x1, d.y1, d.x2, d.y2), score=float(d.confidence))
            for d in detections]


def _batches(items: Sequence[str], size: int) -> list[Sequence[str]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def run_inference(spec: Any, input_path: str | os.PathLike[str], output_dir: str | os.PathLike[str],
                  key: str | None = None, batch_size: int | None = None) -> dict[str, Any]:
    """Run a DetectNet_v2 inference spec on images (TAO's ``inference`` command).

    Args:
        spec: an inference spec path or a loaded one (:class:`tltk.spec.LoadedSpec`).
        input_path: one image or a folder of images.
        output_dir: results folder; ``labels/`` and ``images_annotated/`` are written under it.
        key: key of sealed/encrypted model files.
        batch_size: overrides ``inferencer_config.batch_size``.

    Returns:
        A JSON-able summary: ``images``, ``detections`` (per class), ``detections_total``,
        ``labels_dir``/``annotated_dir`` (None when not written), ``backend``, ``model``,
        ``input_shape_chw`` and ``notes``.

    Raises:
        SpecError, InvalidInputError, UsageError: bad spec, input or model (exit code 2).
        MissingDependencyError: the spec needs TensorRT and it is missing (exit code 3).
    """
    from tltk.data.images import load_image, to_network_input
    from tltk.data.kitti import write_kitti_labels
    from tltk.detectnet_v2.postprocess import postprocess, scale_detections
    from tltk.spec import load_spec
    from tltk.viz.overlay import OverlayBox, save_overlay

    loaded = load_spec(spec, model="detectnet_v2", kind="inference") if isinstance(spec, (str, os.PathLike)) else spec
    config = InferenceConfig.from_spec(loaded.message)
    if batch_size is not None:
        if batch_size < 1:
            raise UsageError(f"--batch_size must be positive, got {batch_size}")
        config.batch_size = int(batch_size)
    images = list_images(input_path)
    choice = model_from_spec(loaded, config.batch_size)
    for note in choice.notes:
        log.info("%s", note)
    c, h, w = config.input_chw
    out = os.path.abspath(os.fspath(output_dir))
    labels_dir = os.path.join(out, "labels") if config.kitti_dump else None
    annotated_dir = os.path.join(out, "images_annotated") if not config.disable_overlay else None
    for folder in (out, labels_dir, annotated_dir):
        if folder:
            os.makedirs(folder, exist_ok=True)
    counts = {name: 0 for name in config.class_names}
    wanted = set(config.postproc_classes)
    warned_stride = False
    with open_detector(choice.path, key, choice.framework, input_size=(w, h), engine=choice.engine,
                       max_batch_size=config.batch_size) as runner:
        _check_runner_input(runner, config.input_chw, choice.path)
        for chunk in console.progress(_batches(images, config.batch_size), desc="inference", unit="batch"):
            originals = [load_image(p, c) for p in chunk]
            batch = np.stack([to_network_input(img, config.input_chw) for img in originals])
            cov, bbox = runner(batch)
            if not warned_stride and cov.shape[-1] * config.stride != w:
                log.warning("inferencer_config.stride is %d but the network maps %d input columns to %d cells",
                            config.stride, w, cov.shape[-1])
                warned_stride = True
            per_image = postprocess(cov, bbox, config.class_names, config.params, stride=config.stride,
                                    scale=INFERENCE_BBOX_SCALE, offset=INFERENCE_BBOX_OFFSET, image_size=(w, h))
            for path, image, dets in zip(chunk, originals, per_image, strict=True):
                kept = [d for d in dets if d.class_name in wanted
                        and d.confidence >= config.outputs[d.class_name].confidence_threshold]
                scaled = scale_detections(kept, (w, h), (image.shape[1], image.shape[0]))
                for d in scaled:
                    counts[d.class_name] += 1
                name = os.path.basename(path)
                if labels_dir:
                    write_kitti_labels(os.path.join(labels_dir, os.path.splitext(name)[0] + ".txt"),
                                       kitti_objects(scaled, config.outputs), bbox_digits=3)
                if annotated_dir:
                    rgb = image if c == 3 else load_image(path, 3)
                    boxes = [OverlayBox(config.outputs[d.class_name].label, d.x1, d.y1, d.x2, d.y2, d.confidence,
                                        config.outputs[d.class_name].color) for d in scaled]
                    save_overlay(rgb, boxes, os.path.join(annotated_dir, name), config.overlay_linewidth)
        backend = runner.kind
    return {
        "images": len(images),
        "detections": counts,
        "detections_total": int(sum(counts.values())),
        "labels_dir": labels_dir,
        "annotated_dir": annotated_dir,
        "backend": backend,
        "model": choice.path,
        "input_shape_chw": [c, h, w],
        "notes": list(choice.notes),
    }


def _check_runner_input(runner: DetectNetV2Runner, chw: tuple[int, int, int], path: str) -> None:
    model = runner.input_shape_chw
    if model[0] > 0 and model[0] != chw[0]:
        raise InvalidInputError(f"{path}: the model takes {model[0]} channel(s) but inferencer_config.image_channels "
                                f"is {chw[0]}")
    if (model[1] > 0 and model[1] != chw[1]) or (model[2] > 0 and model[2] != chw[2]):
        raise InvalidInputError(
            f"{path}: the model's input is {model[2]}x{model[1]} (W x H) but the spec asks for "
            f"image_width {chw[2]}, image_height {chw[1]}",
            hint="ONNX models and engines run at the size they were exported with: set image_width/image_height "
                 "to it, or use the .tlt model (Keras runs at any multiple of 16)")
