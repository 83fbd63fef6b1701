"""Build TensorRT engines from ONNX models with the TensorRT 10 Python API.

TensorRT is imported inside the functions that need it, so this module imports on machines
without TensorRT (and :func:`inspect_onnx` works everywhere).

INT8 has two paths:

* **explicit quantization**: the ONNX model carries QuantizeLinear/DequantizeLinear nodes (tltk's
  Q/DQ export).  TensorRT takes the scales from the graph; no calibrator.  This is the only INT8
  path on TensorRT 11 and the recommended one from TensorRT 10.1 on.
* **implicit quantization**: a plain ONNX model plus a calibration cache (``-c``) read by an
  ``IInt8EntropyCalibrator2``.  Deprecated since TensorRT 10.1 and removed in TensorRT 11, but what
  DeepStream's ``int8-calib-file`` and TensorRT <= 10 use.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tltk.errors import InvalidInputError, ModelFileError, TltkError, UsageError
from tltk.fileio import atomic_write_bytes
from tltk.tensorrt.availability import parse_version, require_tensorrt
from tltk.tensorrt.converter_args import BuildSettings, PrecisionPlan, precision_plan, trtexec_command
from tltk.tensorrt.profiles import InputProfile, batch_profile, check_profile_matches

if TYPE_CHECKING:
    import tensorrt as trt

log = logging.getLogger(__name__)

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


@dataclass(frozen=True)
class OnnxSummary:
    """The parts of an ONNX model the engine builder cares about.

    Attributes:
        inputs: graph input name -> shape; ``None`` marks a dynamic (symbolic or unknown) dim.
            Initializers listed as inputs are excluded.
        outputs: graph output names, in order.
        has_qdq: the graph (or one of its functions) holds QuantizeLinear/DequantizeLinear nodes.
    """

    inputs: dict[str, tuple[int | None, ...]]
    outputs: tuple[str, ...]
    has_qdq: bool


def inspect_onnx(path: str | os.PathLike[str]) -> OnnxSummary:
    """Read input shapes, output names and whether the model is Q/DQ-quantized (no TensorRT needed).

    Args:
        path: the ``.onnx`` file.

    Returns:
        An :class:`OnnxSummary`.

    Raises:
        ModelFileError: the file is not a readable ONNX model.
    """
    import onnx

    source = os.fspath(path)
    try:
        model = onnx.load(source, load_external_data=False)
    except FileNotFoundError as exc:
        raise InvalidInputError(f"{source}: no such file") from exc
    except Exception as exc:  # onnx raises DecodeError and others for damaged files
        raise ModelFileError(f"{source}: not a readable ONNX model ({type(exc).__name__}: {exc})") from exc
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    inputs: dict[str, tuple[int | None, ...]] = {}
    for value in graph.input:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        inputs[value.name] = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims)
    ops = {node.op_type for node in graph.node}
    for function in model.functions:
        ops.update(node.op_type for node in function.node)
    return OnnxSummary(inputs=inputs, outputs=tuple(o.name for o in graph.output),
                       has_qdq=any(op in ops for op in QDQ_OPS))


def complete_profiles(settings: BuildSettings, inputs: dict[str, tuple[int | None, ...]]) -> list[InputProfile]:
    """One profile entry per dynamic input: from ``-p``, else from ``-d``/``-m`` or the model's dims.

    Args:
        settings: the build settings (``profiles``, ``input_dims``, ``max_batch_size``).
        inputs: model input name -> shape (``None`` = dynamic), as from :func:`inspect_onnx`.

    Returns:
        Profiles for every input that has a dynamic dimension, in model input order; static
        inputs need none.

    Raises:
        UsageError: a ``-p`` names an input the model does not have, a profile disagrees with a
            fixed dimension, or a dynamic non-batch dimension has no ``-p`` nor ``-d``.
    """
    given = {p.name: p for p in settings.profiles}
    unknown = [name for name in given if name not in inputs]
    if unknown:
        raise UsageError(f"-p: the model has no input named {', '.join(repr(n) for n in unknown)} "
                         f"(its inputs: {', '.join(inputs) or 'none'})")
    result: list[InputProfile] = []
    for name, shape in inputs.items():
        dynamic = any(d is None for d in shape)
        if name in given:
            check_profile_matches(given[name], shape, "-p")
            result.append(given[name])
            continue
        if not dynamic:
            continue
        sample: Sequence[int | None] = shape[1:]
        if settings.input_dims is not None and len(inputs) == 1:
            profile = batch_profile(name, settings.input_dims, settings.max_batch_size)
            check_profile_matches(profile, shape, "-d")
            result.append(profile)
            continue
        if any(d is None for d in sample):
            raise UsageError(f"-p: input '{name}' has dynamic dimensions besides the batch "
                             f"({'x'.join('?' if d is None else str(d) for d in shape)}); give its shapes "
                             f"with -p {name},<min>,<opt>,<max>")
        result.append(batch_profile(name, [int(d) for d in sample if d is not None], settings.max_batch_size))
    return result


def build_engine(onnx_path: str | os.PathLike[str], settings: BuildSettings, calibrator: Any | None = None,
                 engine_path: str | os.PathLike[str] | None = None) -> bytes:
    """Build and serialize a TensorRT engine from an ONNX model.

    Args:
        onnx_path: the plain ``.onnx`` model (decoded already if it came from an ``.etlt``).
        settings: builder settings (see :class:`~tltk.tensorrt.converter_args.BuildSettings`).
        calibrator: an ``IInt8Calibrator`` for implicit INT8 quantization; when ``None`` and the
            model has no Q/DQ nodes, one is made from ``settings.cache_file`` (cache-only).
        engine_path: where to write the engine (atomically); defaults to ``settings.engine_file``.
            Pass ``""`` to only return the bytes.

    Returns:
        The serialized engine (plan) bytes.

    Raises:
        MissingDependencyError: TensorRT or a GPU is missing (exit code 3, with the ``trtexec``
            command to run elsewhere).
        ModelFileError: TensorRT's ONNX parser rejects the model.
        UsageError: settings that do not fit the model or the installed TensorRT.
        InvalidInputError: INT8 without Q/DQ nodes and without a calibration cache.
        TltkError: TensorRT fails to build the engine.
    """
    source = os.fspath(onnx_path)
    summary = inspect_onnx(source)
    settings = settings.with_profiles(complete_profiles(settings, summary.inputs))
    version_text = require_tensorrt(trtexec_command(settings, source, "onnx", summary.has_qdq))
    import tensorrt as trt

    version = parse_version(version_text)
    plan = precision_plan(settings, summary.has_qdq)
    if plan.int8 and plan.use_calibrator and calibrator is None:
        if not os.path.isfile(settings.cache_file):
            raise InvalidInputError(
                f"-c: INT8 calibration cache not found: {settings.cache_file}",
                hint="write one with `tltk <model> export --data_type int8 --cal_cache_file ...`, or build from "
                     "the Q/DQ ONNX model export writes (explicit quantization needs no cache)")
        from tltk.tensorrt.calibrator import make_calibrator

        calibrator = make_calibrator(settings.cache_file, batches=None, batch_size=settings.calib_batch_size)

    logger = trt.Logger(trt.Logger.VERBOSE if settings.verbose else trt.Logger.INFO)
    trt.init_libnvinfer_plugins(logger, "")
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(version))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(os.path.realpath(source)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ModelFileError(f"{source}: TensorRT's ONNX parser rejected the model:\n  " + "\n  ".join(errors))

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_bytes)
    profile = _add_profile(builder, config, network, settings.profiles)
    _set_precision(config, version, plan, summary.has_qdq, calibrator, profile)
    if settings.dla_core is not None:
        _set_dla(builder, config, settings.dla_core)
    timing_cache = _load_timing_cache(config, settings.timing_cache_file)

    log.info("building the TensorRT %s engine (%s%s); this can take minutes", version_text, settings.data_type,
             ", explicit quantization" if summary.has_qdq and plan.int8 else "")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise TltkError("TensorRT could not build the engine; the TensorRT log above says why",
                        hint="run again with --verbose for TensorRT's detailed log")
    data = bytes(serialized)
    if timing_cache is not None and settings.timing_cache_file:
        atomic_write_bytes(settings.timing_cache_file, bytes(config.get_timing_cache().serialize()))
    target = settings.engine_file if engine_path is None else os.fspath(engine_path)
    if target:
        atomic_write_bytes(target, data)
        log.info("wrote engine %s (%.1f MB)", target, len(data) / 1e6)
    return data


def _network_flags(version: tuple[int, int, int]) -> int:
    import tensorrt as trt

    if version[0] >= 11:
        # TensorRT 11 networks are strongly typed: precision comes from the model itself.
        return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return 0  # TensorRT 10: always explicit batch, EXPLICIT_BATCH is ignored


def _add_profile(builder: trt.Builder, config: trt.IBuilderConfig, network: trt.INetworkDefinition,
                 profiles: Sequence[InputProfile]) -> trt.IOptimizationProfile | None:
    import tensorrt as trt

    names = [network.get_input(i).name for i in range(network.num_inputs)]
    by_name = {p.name: p for p in profiles}
    missing = [n for n in by_name if n not in names]
    if missing:
        raise UsageError(f"-p: TensorRT's network has no input named {', '.join(missing)} (inputs: {', '.join(names)})")
    if not by_name:
        return None
    profile = builder.create_optimization_profile()
    for name in names:
        entry = by_name.get(name)
        if entry is None:
            continue
        profile.set_shape(name, trt.Dims(list(entry.min)), trt.Dims(list(entry.opt)), trt.Dims(list(entry.max)))
    if config.add_optimization_profile(profile) < 0:
        raise UsageError("-p: TensorRT rejected the optimization profile " +
                         "; ".join(by_name[n].spec() for n in names if n in by_name))
    return profile


def _set_precision(config: trt.IBuilderConfig, version: tuple[int, int, int], plan: PrecisionPlan,
                   explicit: bool, calibrator: Any | None, profile: trt.IOptimizationProfile | None) -> None:
    import tensorrt as trt

    if version[0] >= 11:
        if plan.fp16 and not plan.int8:
            raise UsageError("-t fp16: TensorRT 11 has no FP16 builder flag; networks take their precision from "
                             "the model. Build fp32, or convert the ONNX model to FP16 first")
        if plan.int8 and not explicit:
            raise UsageError("-t int8: TensorRT 11 removed calibration caches; build from the Q/DQ ONNX model "
                             "that `tltk <model> export --data_type int8` writes")
        if plan.int8:
            log.info("INT8: explicit quantization from the model's Q/DQ nodes (strongly typed network)")
        return
    if plan.fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if plan.int8:
        config.set_flag(trt.BuilderFlag.INT8)
        if explicit:
            log.info("INT8: explicit quantization from the model's Q/DQ nodes; the calibration cache is not used")
        else:
            if version >= (10, 1, 0):
                log.warning("INT8: implicit quantization with a calibration cache is deprecated since TensorRT "
                            "10.1 and removed in 11; prefer the Q/DQ ONNX model tltk export writes")
            else:
                log.info("INT8: implicit quantization with a calibration cache")
            if calibrator is None:
                raise UsageError("-t int8: a calibrator or a calibration cache (-c) is needed for a model without Q/DQ nodes")
            config.int8_calibrator = calibrator
            if profile is not None:
                config.set_calibration_profile(profile)
    if plan.obey_precision_constraints:
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)


def _set_dla(builder: trt.Builder, config: trt.IBuilderConfig, core: int) -> None:
    import tensorrt as trt

    available = builder.num_DLA_cores
    if core >= available:
        raise UsageError(f"-u: DLA core {core} requested, but this device has {available} DLA core(s)"
                         + (" (DLA exists on Jetson AGX/NX devices only)" if available == 0 else ""))
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = core
    config.set_flag(trt.BuilderFlag.GPU_FALLBACK)


def _load_timing_cache(config: trt.IBuilderConfig, path: str | None) -> trt.ITimingCache | None:
    if not path:
        return None
    data = b""
    if os.path.isfile(path):
        with open(path, "rb") as fh:
            data = fh.read()
        log.info("using the timing cache %s (%d bytes)", path, len(data))
    cache = config.create_timing_cache(data)
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        log.warning("the timing cache %s does not match this TensorRT/GPU; starting a new one", path)
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
    return cache



def build_onnx_engine(model_path: str, settings: BuildSettings, model: str = "detectnet_v2") -> dict[str, Any]:
    """Build an engine from an ONNX file the way ``converter`` and ``export --engine_file`` do.

    Completes the optimization profiles from the model's dynamic inputs, uses explicit
    quantization when the model has Q/DQ nodes (else the INT8 cache of ``settings``), and stops
    with exit code 3 and the equivalent ``trtexec`` command where TensorRT is missing.

    Args:
        model_path: the ONNX model.
        settings: the build settings (see :func:`tltk.tensorrt.converter_args.settings_from_flags`).
        model: model name used in hints (``detectnet_v2`` or ``mask_rcnn``).

    Returns:
        A JSON-able report: engine file and size, data type, INT8 mode, profiles, TensorRT
        version and the equivalent ``trtexec`` command.

    Raises:
        InvalidInputError: INT8 without a cache for a model without Q/DQ nodes.
        MissingDependencyError: TensorRT (or a GPU) is not available (exit code 3).
    """
    summary = inspect_onnx(model_path)
    missing = [n for n in settings.output_names if n not in summary.outputs]
    if missing:
        log.warning("-o: the ONNX model has no output named %s (its outputs: %s); ONNX engines take their "
                    "outputs from the graph", ", ".join(missing), ", ".join(summary.outputs))
    settings = settings.with_profiles(complete_profiles(settings, summary.inputs))
    explicit = summary.has_qdq
    if settings.data_type == "int8" and not explicit and not os.path.isfile(settings.cache_file):
        raise InvalidInputError(
            f"-c: INT8 calibration cache not found: {settings.cache_file}",
            hint=f"write one with `tltk {model} export --data_type int8 --cal_cache_file ...`, or convert the Q/DQ "
                 "ONNX model export writes (explicit quantization needs no cache)")
    command = trtexec_command(settings, model_path, "onnx", explicit)
    version = require_tensorrt(command)
    data = build_engine(model_path, settings)
    return {
        "engine_file": os.path.abspath(settings.engine_file),
        "engine_bytes": len(data),
        "model_file": os.path.abspath(model_path),
        "data_type": settings.data_type,
        "int8_quantization": ("explicit (Q/DQ)" if explicit else "calibration cache") if settings.data_type == "int8"
        else None,
        "profiles": [p.spec() for p in settings.profiles],
        "tensorrt_version": version,
        "trtexec_equivalent": command,
    }
