"""DetectNet_v2 ``inference``: images -> detections in original-image pixels, KITTI files, overlays.

The model file runs on any backend through :func:`tltk.runtime.backends.open_backend`, and
images are preprocessed with the Task's :class:`~tltk.data.images.Preprocessing`.

Pipeline of :func:`run_inference` (TAO's ``inference`` command, see the inference spec in
``docs/inference.md``):

1. the model named by ``inferencer_config`` (``tlt_config.model``: any model file, backend by
   extension; ``tensorrt_config``: an existing ``trt_engine``, else an engine built from
   ``etlt_model`` where TensorRT is installed, else ONNX Runtime on ``etlt_model``);
2. each image (one file or a folder's ``.jpg .jpeg .png .ppm .bmp`` files, sorted) is read as
   RGB (grey when ``image_channels`` is 1), resized to ``image_width x image_height`` and
   scaled to [0, 1] in NCHW order (the Task's preprocessing);
3. the outputs are clustered per class with ``bbox_handler_config`` (the class's entry, else
   ``default``) in model-input pixels, clipped to the model frame and scaled to the original
   image size (:func:`tltk.detectnet_v2.postprocess.scale_detections`);
4. ``labels/<stem>.txt`` (KITTI, 16th column = confidence) when ``kitti_dump`` and
   ``images_annotated/<file name>`` when ``disable_overlay`` is false.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tltk import console
from tltk.detectnet_v2.model import BBOX_NAME, COV_NAME, OUTPUT_NAMES
from tltk.errors import InvalidInputError, UsageError
from tltk.runtime.backends import EngineRequest, InferenceBackend, backend_kind

log = logging.getLogger(__name__)

COV_OUTPUT = OUTPUT_NAMES[COV_NAME]
"""TAO name of the coverage output (``output_cov/Sigmoid``)."""

BBOX_OUTPUT = OUTPUT_NAMES[BBOX_NAME]
"""TAO name of the bbox output (``output_bbox/BiasAdd``)."""

#: Output names recognised as the coverage / bbox output (TAO names, then Keras names).
_COV_NAMES = (COV_OUTPUT, COV_NAME)
_BBOX_NAMES = (BBOX_OUTPUT, BBOX_NAME)

#: The bbox objective's scale and offset used by TAO's inference (the inference spec has no field).
INFERENCE_BBOX_SCALE = 35.0
INFERENCE_BBOX_OFFSET = 0.5

#: TensorRT precisions by ``tensorrt_config.backend_data_type`` enum value.
_TRT_DATA_TYPES = ("fp32", "fp16", "int8")


# --------------------------------------------------------------------------------------------
# Backend outputs -> (cov, bbox)


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
                   input_chw=(int(ic.image_channels), int(ic.image_height), int(ic.image_width)),
                   batch_size=int(ic.batch_size), stride=int(ic.stride), params=params,
                   outputs=outputs, postproc_classes=[str(c) for c in bh.postproc_classes] or list(names),
                   kitti_dump=bool(bh.kitti_dump), disable_overlay=bool(bh.disable_overlay),
                   overlay_linewidth=int(bh.overlay_linewidth))


@dataclass
class ModelChoice:
    """The model an inference spec names and how to run it.

    Attributes:
        path: the model file (resolved against the spec's folder).
        framework: ``tlt``/``onnx``/``tensorrt`` for :func:`tltk.runtime.backends.open_backend` (None: by
            extension).
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
            calibration_batches=int(cal.n_batches), calibration_batch_size=int(cal.batch_size),
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
# The spec's classes against the model's


def align_class_names(spec_classes: Sequence[str], model_classes: Sequence[str] | None, model_path: str,
                      num_channels: int | None = None) -> list[str]:
    """The spec's ``target_classes`` in the network's output order, matched by name.

    A DetectNet_v2 network's coverage channel ``i`` is class ``i`` of its training spec.  When
    the model file records its class names, the spec's classes are matched to them by name
    (case-insensitively), so a spec that lists the same classes in another order still labels
    every detection correctly; classes that differ stop the run.  Without recorded names (TAO
    files, engines) the spec's order is trusted, but the number of classes must equal the
    network's coverage channels.

    Args:
        spec_classes: ``inferencer_config.target_classes``, in the spec's order.
        model_classes: the class names the model file records (network output order), or None.
        model_path: the model file, for messages.
        num_channels: coverage channels of the network's output, when known.

    Returns:
        The spec's class names (its spelling) in network output order.

    Raises:
        InvalidInputError: the spec's classes and the model's differ (names or count).
    """
    spec = [str(c) for c in spec_classes]
    if model_classes is None:
        if num_channels is not None and num_channels != len(spec):
            raise InvalidInputError(
                f"inferencer_config.target_classes lists {len(spec)} class(es) ({', '.join(spec)}) but {model_path} "
                f"has {num_channels} coverage channel(s)",
                hint="list the classes of the model's training spec, in its cost_function_config order")
        return spec
    model = [str(c) for c in model_classes]
    by_name = {c.lower(): c for c in spec}
    missing = [c for c in model if c.lower() not in by_name]
    extra = [c for c in spec if c.lower() not in {m.lower() for m in model}]
    if missing or extra or len(by_name) != len(spec):
        parts = []
        if missing:
            parts.append(f"the model's class(es) {', '.join(repr(c) for c in missing)} are missing from the spec")
        if extra:
            parts.append(f"the spec's class(es) {', '.join(repr(c) for c in extra)} are not classes of the model")
        if len(by_name) != len(spec):
            parts.append("the spec lists a class twice")
        raise InvalidInputError(
            f"inferencer_config.target_classes ({', '.join(spec)}) do not match the classes of {model_path} "
            f"({', '.join(model)}): " + "; ".join(parts),
            hint=f"set target_classes to {', '.join(repr(c) for c in model)} (the order does not matter: classes "
                 "are matched by name)")
    ordered = [by_name[c.lower()] for c in model]
    if ordered != spec:
        log.warning("inferencer_config.target_classes are listed as %s; the model %s outputs %s: classes are "
                    "matched by name", ", ".join(spec), model_path, ", ".join(model))
    return ordered


# --------------------------------------------------------------------------------------------
# Inputs and outputs


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

    The spec's ``target_classes`` are matched by name to the classes the model file records
    (:func:`align_class_names`).  An image that cannot be read is skipped (named in the log and
    in ``skipped``); the others are processed.  Memory is bounded by the batch: one batch of
    images is decoded, run and written at a time.

    Args:
        spec: an inference spec path or a loaded one (:class:`tltk.spec.LoadedSpec`).
        input_path: one image or a folder of images.
        output_dir: results folder; ``labels/`` and ``images_annotated/`` are written under it.
        key: key of sealed/encrypted model files.
        batch_size: overrides ``inferencer_config.batch_size``.

    Returns:
        A JSON-able summary: ``images`` (images processed), ``detections`` (per class),
        ``detections_total``, ``skipped`` (``{"path", "reason"}`` per unreadable image),
        ``labels_dir``/``annotated_dir`` (None when not written), ``backend``, ``model``,
        ``class_names`` (network output order), ``input_shape_chw`` and ``notes``.

    Raises:
        SpecError, InvalidInputError, UsageError: bad spec, input or model, classes that differ
            from the model's, or no readable image at all (exit code 2).
        MissingDependencyError: the spec needs TensorRT and it is missing (exit code 3).
    """
    from tltk.data.images import list_images, load_image
    from tltk.data.kitti import write_kitti_labels
    from tltk.detectnet_v2.postprocess import postprocess, scale_detections
    from tltk.models import load_spec, make_task
    from tltk.runtime.backends import open_backend
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
    counts = {name: 0 for name in config.class_names}
    wanted = set(config.postproc_classes)
    skipped: list[dict[str, str]] = []
    processed = 0
    checked_channels = False
    preprocessing = make_task("detectnet_v2", metadata={"class_names": config.class_names,
                                                         "input_shape": list(config.input_chw)}).preprocessing()
    options: dict[str, Any] = {"max_batch_size": config.batch_size} if backend_kind(choice.path) == "keras" else {}
    with open_backend(choice.path, key, framework=choice.framework, input_chw=config.input_chw, engine=choice.engine,
                      model="detectnet_v2", **options) as runner:
        _check_runner_input(runner, config.input_chw, choice.path)
        class_names = align_class_names(config.class_names, runner.class_names, choice.path)
        for folder in (out, labels_dir, annotated_dir):
            if folder:
                os.makedirs(folder, exist_ok=True)
        for chunk in console.progress(_batches(images, config.batch_size), desc="inference", unit="batch"):
            readable: list[tuple[str, np.ndarray]] = []
            for path in chunk:
                try:
                    readable.append((path, load_image(path, c)))
                except InvalidInputError as exc:
                    log.warning("skipping %s: %s", path, exc.message)
                    skipped.append({"path": path, "reason": exc.message})
            if not readable:
                continue
            batch = np.stack([preprocessing.apply(img)[0] for _, img in readable])
            cov, bbox = split_outputs(runner.run(batch))
            if not checked_channels:
                align_class_names(class_names, None, choice.path, num_channels=int(cov.shape[1]))
                if cov.shape[-1] * config.stride != w:
                    log.warning("inferencer_config.stride is %d but the network maps %d input columns to %d cells",
                                config.stride, w, cov.shape[-1])
                checked_channels = True
            per_image = postprocess(cov, bbox, class_names, config.params, stride=config.stride,
                                    scale=INFERENCE_BBOX_SCALE, offset=INFERENCE_BBOX_OFFSET, image_size=(w, h))
            del batch, cov, bbox
            for (path, image), dets in zip(readable, per_image, strict=True):
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
                processed += 1
        backend = runner.kind
    if processed == 0:
        raise InvalidInputError(f"-i: none of the {len(images)} image(s) could be read: "
                                + "; ".join(f"{os.path.basename(s['path'])}: {s['reason']}" for s in skipped[:5]))
    return {
        "images": processed,
        "detections": counts,
        "detections_total": int(sum(counts.values())),
        "skipped": skipped,
        "labels_dir": labels_dir,
        "annotated_dir": annotated_dir,
        "backend": backend,
        "model": choice.path,
        "class_names": class_names,
        "input_shape_chw": [c, h, w],
        "notes": list(choice.notes),
    }


def _check_runner_input(runner: InferenceBackend, chw: tuple[int, int, int], path: str) -> None:
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
