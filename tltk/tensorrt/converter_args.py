"""tao-converter's flags, turned into engine-build settings and into the equivalent ``trtexec`` command.

tao-converter (closed source) took ``-k -d -o -c -e -b -m -t -w -i -p -s -u``.  tltk keeps the
flags and their defaults (``-e saved.engine``, ``-c cal.bin``, ``-b 8``, ``-m 16``, ``-t fp32``,
``-w 1073741824``, ``-i nchw``) and maps them to TensorRT builder settings:

=========  ==========================================================================
flag       TensorRT 10 builder setting (``trtexec`` option)
=========  ==========================================================================
``-t``     ``BuilderFlag.FP16`` (``--fp16``); ``BuilderFlag.INT8`` (``--int8``), plus FP16
           unless ``-s`` so layers without an INT8 kernel fall back to FP16, not FP32
``-c``     the cache read by an ``IInt8EntropyCalibrator2`` (``--calib=``); unused for a
           Q/DQ model (explicit quantization)
``-p``     ``IOptimizationProfile.set_shape`` (``--minShapes/--optShapes/--maxShapes``)
``-m``     the max batch of the profile built when ``-p`` is not given (batch 1..m, tuned for m)
``-w``     ``MemoryPoolType.WORKSPACE`` limit (``--memPoolSize=workspace:<MiB>M``)
``-s``     ``BuilderFlag.OBEY_PRECISION_CONSTRAINTS`` (``--precisionConstraints=obey``), the
           TensorRT 10 replacement of ``STRICT_TYPES``
``-u``     ``default_device_type = DLA``, ``DLA_core``, ``GPU_FALLBACK``
           (``--useDLACore=N --allowGPUFallback``)
``-b``     ``get_batch_size`` of the calibrator (only used when TensorRT calibrates)
=========  ==========================================================================
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from tltk.errors import UsageError
from tltk.tensorrt.profiles import INPUT_ORDER_RANK, InputProfile, format_shape, parse_dims, parse_profiles

DATA_TYPES = ("fp32", "fp16", "int8")
DEFAULT_ENGINE_FILE = "saved.engine"
DEFAULT_CACHE_FILE = "cal.bin"
DEFAULT_CALIB_BATCH_SIZE = 8
DEFAULT_MAX_BATCH_SIZE = 16
DEFAULT_WORKSPACE_BYTES = 1 << 30
DEFAULT_INPUT_ORDER = "nchw"

_MIB = 1 << 20
_SAFE_ARG = re.compile(r"^[A-Za-z0-9_@%+=:,./-]+$")


@dataclass(frozen=True)
class BuildSettings:
    """Everything the engine builder needs besides the model file.

    Attributes:
        engine_file: where the serialized engine is written (``-e``).
        data_type: ``fp32``, ``fp16`` or ``int8`` (``-t``).
        cache_file: INT8 calibration cache (``-c``), TensorRT's text format.
        calib_batch_size: calibration batch size (``-b``).
        max_batch_size: max batch of the default profile (``-m``).
        workspace_bytes: builder workspace limit in bytes (``-w``).
        input_order: ``nchw``, ``nhwc`` or ``nc`` (``-i``).
        input_dims: per-sample input dims without batch (``-d``), or ``None``.
        output_names: output tensor names (``-o``); checked against ONNX models, required for UFF.
        profiles: explicit optimization-profile entries (``-p``), one per input.
        strict_types: obey layer precision constraints; no FP16 fallback in INT8 mode (``-s``).
        dla_core: DLA core index (``-u``), or ``None`` for the GPU.
        timing_cache_file: TensorRT timing cache to load and update, or ``None``.
        verbose: TensorRT logs at VERBOSE.
    """

    engine_file: str = DEFAULT_ENGINE_FILE
    data_type: str = "fp32"
    cache_file: str = DEFAULT_CACHE_FILE
    calib_batch_size: int = DEFAULT_CALIB_BATCH_SIZE
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES
    input_order: str = DEFAULT_INPUT_ORDER
    input_dims: tuple[int, ...] | None = None
    output_names: tuple[str, ...] = ()
    profiles: tuple[InputProfile, ...] = field(default_factory=tuple)
    strict_types: bool = False
    dla_core: int | None = None
    timing_cache_file: str | None = None
    verbose: bool = False

    def with_profiles(self, profiles: Sequence[InputProfile]) -> BuildSettings:
        """A copy with ``profiles`` replaced (e.g. completed from the model's input shapes)."""
        return replace(self, profiles=tuple(profiles))


@dataclass(frozen=True)
class PrecisionPlan:
    """How a data type maps to builder flags.

    Attributes:
        fp16: set ``BuilderFlag.FP16``.
        int8: set ``BuilderFlag.INT8``.
        use_calibrator: INT8 ranges come from a calibrator / cache (implicit quantization);
            ``False`` for fp32/fp16 and for Q/DQ models (explicit quantization).
        obey_precision_constraints: set ``BuilderFlag.OBEY_PRECISION_CONSTRAINTS``.
    """

    fp16: bool
    int8: bool
    use_calibrator: bool
    obey_precision_constraints: bool


def settings_from_flags(engine_file: str | None = None, data_type: str | None = None, cache_file: str | None = None,
                        calib_batch_size: int | None = None, max_batch_size: int | None = None,
                        workspace: int | str | None = None, input_order: str | None = None,
                        input_dims: str | None = None, outputs: str | None = None,
                        profiles: Sequence[str] = (), strict_types: bool = False, dla_core: int | None = None,
                        timing_cache_file: str | None = None, verbose: bool = False) -> BuildSettings:
    """Validate tao-converter flags and fill in its defaults.

    Args:
        engine_file: ``-e``; default ``saved.engine``.
        data_type: ``-t``; ``fp32`` (default), ``fp16`` or ``int8`` (case-insensitive).
        cache_file: ``-c``; default ``cal.bin``.
        calib_batch_size: ``-b``; default 8.
        max_batch_size: ``-m``; default 16.
        workspace: ``-w`` in bytes; default 1073741824 (1 GiB).
        input_order: ``-i``; ``nchw`` (default), ``nhwc`` or ``nc``.
        input_dims: ``-d`` text such as ``3,544,960``, or ``None``.
        outputs: ``-o`` text such as ``output_cov/Sigmoid,output_bbox/BiasAdd``, or ``None``.
        profiles: the ``-p`` values.
        strict_types: ``-s``.
        dla_core: ``-u``.
        timing_cache_file: TensorRT timing cache path.
        verbose: verbose TensorRT logging.

    Returns:
        The :class:`BuildSettings`.

    Raises:
        UsageError: (exit code 2) any flag value is invalid; the message names the flag.
    """
    dtype = (data_type or "fp32").lower()
    if dtype not in DATA_TYPES:
        raise UsageError(f"-t: unknown data type '{data_type}' (one of fp32, fp16, int8)")
    order = (input_order or DEFAULT_INPUT_ORDER).lower()
    if order not in INPUT_ORDER_RANK:
        raise UsageError(f"-i: unknown input order '{input_order}' (one of nchw, nhwc, nc)")
    calib = DEFAULT_CALIB_BATCH_SIZE if calib_batch_size is None else int(calib_batch_size)
    if calib < 1:
        raise UsageError(f"-b: the calibration batch size must be positive, got {calib}")
    max_batch = DEFAULT_MAX_BATCH_SIZE if max_batch_size is None else int(max_batch_size)
    if max_batch < 1:
        raise UsageError(f"-m: the maximum batch size must be positive, got {max_batch}")
    workspace_bytes = _parse_workspace(workspace)
    if dla_core is not None and dla_core < 0:
        raise UsageError(f"-u: the DLA core index must be >= 0, got {dla_core}")
    names: tuple[str, ...] = ()
    if outputs is not None:
        names = tuple(n.strip() for n in outputs.split(",") if n.strip())
        if not names:
            raise UsageError("-o: give the output tensor names separated by commas, e.g. "
                             "output_cov/Sigmoid,output_bbox/BiasAdd")
    dims = parse_dims(input_dims, order) if input_dims is not None else None
    return BuildSettings(
        engine_file=engine_file or DEFAULT_ENGINE_FILE,
        data_type=dtype,
        cache_file=cache_file or DEFAULT_CACHE_FILE,
        calib_batch_size=calib,
        max_batch_size=max_batch,
        workspace_bytes=workspace_bytes,
        input_order=order,
        input_dims=dims,
        output_names=names,
        profiles=tuple(parse_profiles(list(profiles))),
        strict_types=bool(strict_types),
        dla_core=dla_core,
        timing_cache_file=timing_cache_file,
        verbose=verbose,
    )


def _parse_workspace(value: int | str | None) -> int:
    if value is None:
        return DEFAULT_WORKSPACE_BYTES
    text = str(value).strip()
    if not text.isdigit() or int(text) <= 0:
        raise UsageError(f"-w: the workspace size is a positive number of bytes (e.g. 1073741824 for 1 GiB), "
                         f"got '{value}'")
    return int(text)


def precision_plan(settings: BuildSettings, explicit_quantization: bool = False) -> PrecisionPlan:
    """Map ``-t``/``-s`` (and whether the model carries Q/DQ nodes) to builder flags.

    Args:
        settings: the build settings.
        explicit_quantization: the ONNX model has QuantizeLinear/DequantizeLinear nodes.

    Returns:
        The :class:`PrecisionPlan`: fp16 -> FP16; int8 -> INT8 (+FP16 unless strict), with a
        calibrator unless the model is explicitly quantized; ``-s`` -> obey precision constraints.
    """
    dtype = settings.data_type
    int8 = dtype == "int8"
    fp16 = dtype == "fp16" or (int8 and not settings.strict_types)
    return PrecisionPlan(fp16=fp16, int8=int8, use_calibrator=int8 and not explicit_quantization,
                         obey_precision_constraints=settings.strict_types)


def format_mem_pool_mib(num_bytes: int, suffix: bool = True) -> str:
    """Workspace size for ``--memPoolSize=workspace:<size>``.

    Args:
        num_bytes: size in bytes.
        suffix: write the unit (``1024M``); ``False`` gives bare MiB as older trtexec expects.

    Returns:
        ``"1024M"`` for 1 GiB; sizes that are not whole MiB are written in KiB (``"1536K"``)
        when ``suffix`` is set, else rounded up to whole MiB.
    """
    if num_bytes % _MIB == 0:
        mib = str(num_bytes // _MIB)
        return mib + "M" if suffix else mib
    if suffix:
        return f"{-(-num_bytes // 1024)}K"
    return str(-(-num_bytes // _MIB))


def shell_quote(arg: str) -> str:
    """Quote one argument for a POSIX shell, readably.

    Args:
        arg: the argument.

    Returns:
        ``arg`` unchanged when it needs no quoting; wrapped in double quotes when it holds single
        quotes but nothing a double-quoted string would expand; else :func:`shlex.quote`.
    """
    if _SAFE_ARG.match(arg):
        return arg
    if "'" in arg and not any(c in arg for c in '"$`\\!'):
        return f'"{arg}"'
    return shlex.quote(arg)


def _shape_arg(profile: InputProfile, which: str) -> str:
    name = f"'{profile.name}'" if ":" in profile.name or "," in profile.name else profile.name
    shape = {"min": profile.min, "opt": profile.opt, "max": profile.max}[which]
    return f"{name}:{format_shape(shape)}"


def trtexec_command(settings: BuildSettings, model_path: str, model_kind: str = "onnx",
                    explicit_quantization: bool = False, uff_input_name: str | None = None) -> str:
    """The ``trtexec`` command line that builds the same engine on a machine with TensorRT.

    Args:
        settings: the build settings (with the profiles already completed for dynamic inputs).
        model_path: the plain ``.onnx`` (or ``.uff``) file the command reads.
        model_kind: ``"onnx"`` or ``"uff"`` (UFF needs TensorRT <= 8: ``--uff/--uffInput/--output
            /--maxBatch``).
        explicit_quantization: the ONNX model carries Q/DQ nodes: ``--int8`` without ``--calib``.
        uff_input_name: the UFF input node (from the ``.etlt`` header); required for UFF.

    Returns:
        One shell command line, arguments quoted where needed.

    Raises:
        UsageError: a UFF model without ``-d``, ``-o`` or an input name.
    """
    plan = precision_plan(settings, explicit_quantization)
    args = ["trtexec"]
    if model_kind == "uff":
        if settings.input_dims is None:
            raise UsageError("-d: a UFF model needs the input dimensions, e.g. -d 3,544,960")
        if not settings.output_names:
            raise UsageError("-o: a UFF model needs the output node names, e.g. -o output_cov/Sigmoid,output_bbox/BiasAdd")
        if not uff_input_name:
            raise UsageError("the UFF model's input node name is unknown (it is read from the .etlt header)")
        args.append(f"--uff={model_path}")
        args.append("--uffInput=" + ",".join([uff_input_name, *(str(d) for d in settings.input_dims)]))
        if settings.input_order == "nhwc":
            args.append("--uffNHWC")
        args.append("--output=" + ",".join(settings.output_names))
        args.append(f"--maxBatch={settings.max_batch_size}")
        args.append(f"--saveEngine={settings.engine_file}")
        args.append(f"--memPoolSize=workspace:{format_mem_pool_mib(settings.workspace_bytes, suffix=False)}")
    else:
        args.append(f"--onnx={model_path}")
        args.append(f"--saveEngine={settings.engine_file}")
        if settings.profiles:
            for which, flag in (("min", "--minShapes"), ("opt", "--optShapes"), ("max", "--maxShapes")):
                args.append(flag + "=" + ",".join(_shape_arg(p, which) for p in settings.profiles))
        args.append(f"--memPoolSize=workspace:{format_mem_pool_mib(settings.workspace_bytes)}")
    if plan.fp16:
        args.append("--fp16")
    if plan.int8:
        args.append("--int8")
        if plan.use_calibrator:
            args.append(f"--calib={settings.cache_file}")
    if plan.obey_precision_constraints:
        args.append("--precisionConstraints=obey")
    if settings.dla_core is not None:
        args.extend([f"--useDLACore={settings.dla_core}", "--allowGPUFallback"])
    if settings.timing_cache_file:
        args.append(f"--timingCacheFile={settings.timing_cache_file}")
    return " ".join(shell_quote(a) for a in args)
