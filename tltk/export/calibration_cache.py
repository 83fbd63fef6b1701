"""INT8 activation ranges and TensorRT's calibration-cache text format.

INT8 calibration in tltk produces one table of activation ranges: for every network tensor the
largest absolute value it takes (``amax``).  From that table tltk writes the TensorRT
calibration cache (this module) and the Q/DQ ONNX model.

The cache is the text file TensorRT's calibrators write and read back, which DeepStream also
takes as ``int8-calib-file``::

    TRT-100300-EntropyCalibration2
    input_1: 3c010204
    output_cov/Sigmoid: 3c010204

* line 1 is ``TRT-<V>-<algorithm>``; ``<V>`` is TensorRT's ``NV_TENSORRT_VERSION`` integer:
  ``major*1000 + minor*100 + patch`` up to TensorRT 8 (8.6.1 -> ``8601``) and
  ``major*10000 + minor*100 + patch`` from TensorRT 10 on (10.3.0 -> ``100300``);
* every other line is ``<tensor name>: <hex>`` where ``<hex>`` is the IEEE-754 bit pattern of the
  float32 *scale* ``amax / 127`` as a lowercase hexadecimal integer (big-endian digit order,
  no ``0x``, no zero padding);
* lines end with ``\\n``, the last one included.

TensorRT ties a cache to its version and to the tensor names, so tltk writes the header for the
TensorRT that will read it (the installed one, ``--trt_version``, or :data:`DEFAULT_TRT_VERSION`)
and the names of the exported ONNX tensors.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from tltk.errors import InvalidInputError, UsageError
from tltk.fileio import atomic_write_bytes

log = logging.getLogger(__name__)

#: Version written in the header when TensorRT is not installed and no version is given: TensorRT
#: 10.3, the release shipped with DeepStream 7.1 and JetPack 6.1/6.2.
DEFAULT_TRT_VERSION = "10.3.0"

#: Header words of TensorRT's calibrators.  ``EntropyCalibration2`` (IInt8EntropyCalibrator2) is
#: the one TAO, DeepStream and tltk use; the others are accepted when reading.
ALGORITHMS = ("EntropyCalibration2", "EntropyCalibration", "MinMaxCalibration", "LegacyCalibration")

#: INT8 quantization uses the symmetric range [-127 * scale, 127 * scale].
INT8_MAX = 127.0

_HEADER_RE = re.compile(r"^TRT-(\d+)-([A-Za-z0-9]+)$")
_HEX_RE = re.compile(r"^[0-9a-fA-F]{1,8}$")


@dataclass
class ActivationRanges:
    """The table of INT8 activation ranges produced by one calibration run.

    Attributes:
        amax: tensor name -> largest absolute activation value (float, >= 0, finite), in the
            tensor's own units.  Order is kept and is the order written to a cache file.
        method: how the ranges were obtained, e.g. ``"entropy"``, ``"minmax"``, ``"percentile"``,
            ``"qat"`` or ``"trt-cache"`` (read back from a TensorRT cache).
    """

    amax: dict[str, float] = field(default_factory=dict)
    method: str = "entropy"

    def __post_init__(self) -> None:
        for name, value in self.amax.items():
            _check_amax(name, value)

    def __len__(self) -> int:
        return len(self.amax)

    def __iter__(self) -> Iterator[str]:
        return iter(self.amax)

    def __contains__(self, name: object) -> bool:
        return name in self.amax

    def __getitem__(self, name: str) -> float:
        return self.amax[name]

    def set(self, name: str, amax: float) -> None:
        """Record (or replace) the range of one tensor.

        Args:
            name: the network tensor name (the exported ONNX name).
            amax: the largest absolute value of the tensor; finite and >= 0.
        """
        _check_amax(name, amax)
        self.amax[name] = float(amax)

    def scale(self, name: str) -> float:
        """The INT8 scale of one tensor, ``float32(amax / 127)`` as a Python float.

        Args:
            name: the tensor name.

        Returns:
            The scale TensorRT uses for the tensor (one INT8 step, in the tensor's units).
        """
        return amax_to_scale(self.amax[name])

    def renamed(self, mapping: Mapping[str, str]) -> ActivationRanges:
        """A copy whose tensor names are replaced through ``mapping`` (names not in it are kept).

        Useful when calibration ran on a graph whose tensor names differ from the exported
        ONNX names, e.g. ``input_1`` -> ``input_1:0``.

        Args:
            mapping: old name -> new name.

        Returns:
            A new :class:`ActivationRanges` with the same method and order.
        """
        return ActivationRanges({mapping.get(k, k): v for k, v in self.amax.items()}, method=self.method)

    def to_tensor_scales_json(self, path: str | os.PathLike[str]) -> None:
        """Write TAO's QAT side-file ``{"tensor_scales": {name: amax}}`` (``--cal_json_file``).

        Args:
            path: the JSON file to write.
        """
        text = json.dumps({"tensor_scales": self.amax}, indent=2) + "\n"
        atomic_write_bytes(path, text.encode("utf-8"))

    @classmethod
    def from_tensor_scales_json(cls, path: str | os.PathLike[str]) -> ActivationRanges:
        """Read TAO's QAT side-file ``{"tensor_scales": {name: amax}}``.

        Args:
            path: the JSON file.

        Returns:
            The ranges, with ``method="qat"``.

        Raises:
            InvalidInputError: the file is missing, is not JSON or has no ``tensor_scales`` map
                of numbers.
        """
        source = os.fspath(path)
        try:
            with open(source, encoding="utf-8") as fh:
                doc = json.load(fh)
        except OSError as exc:
            raise InvalidInputError(f"{source}: cannot read the tensor-scales file ({exc.strerror})") from exc
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"{source}:{exc.lineno}:{exc.colno}: not valid JSON ({exc.msg})") from exc
        scales = doc.get("tensor_scales") if isinstance(doc, dict) else None
        if not isinstance(scales, dict):
            raise InvalidInputError(f"{source}: expected a JSON object with a 'tensor_scales' map of "
                                    "tensor name -> dynamic range")
        table = cls(method="qat")
        for name, value in scales.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise InvalidInputError(f"{source}: tensor_scales.{name}: expected a number, got {value!r}")
            try:
                table.set(str(name), float(value))
            except UsageError as exc:
                raise InvalidInputError(f"{source}: {exc.message}") from exc
        return table


@dataclass(frozen=True)
class CacheHeader:
    """The first line of a calibration cache.

    Attributes:
        version: TensorRT's ``NV_TENSORRT_VERSION`` integer, e.g. ``8601`` or ``100300``.
        algorithm: the calibrator word, e.g. ``"EntropyCalibration2"``.
    """

    version: int
    algorithm: str

    @property
    def line(self) -> str:
        """The header line without its newline, e.g. ``TRT-8601-EntropyCalibration2``."""
        return f"TRT-{self.version}-{self.algorithm}"

    @property
    def trt_version(self) -> str:
        """The TensorRT release the header names, as ``major.minor.patch`` (e.g. ``"10.3.0"``)."""
        return version_from_header_number(self.version)


def _check_amax(name: str, amax: float) -> None:
    if not isinstance(name, str) or not name or "\n" in name or ": " in name:
        raise UsageError(f"calibration range: invalid tensor name {name!r} (must be non-empty, one line, "
                         "without ': ')")
    try:
        value = float(amax)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"calibration range of tensor '{name}': not a number: {amax!r}") from exc
    if not math.isfinite(value) or value < 0:
        raise UsageError(f"calibration range of tensor '{name}': amax must be finite and >= 0, got {value!r}")


# ---- scales <-> hex ---------------------------------------------------------------------------

def amax_to_scale(amax: float) -> float:
    """``float32(amax / 127)``: the INT8 scale TensorRT stores for a dynamic range.

    Args:
        amax: the largest absolute value of the tensor (>= 0).

    Returns:
        The scale, rounded to float32 and returned as a Python float.
    """
    return float(struct.unpack(">f", struct.pack(">f", float(amax) / INT8_MAX))[0])


def scale_to_hex(scale: float) -> str:
    """The cache spelling of a float32 scale: its IEEE-754 bits as lowercase hex, no padding.

    Args:
        scale: the scale (rounded to float32 first).

    Returns:
        e.g. ``"3c010204"`` for 1/127.
    """
    bits = struct.unpack(">I", struct.pack(">f", float(scale)))[0]
    return format(bits, "x")


def hex_to_scale(text: str) -> float:
    """Decode a cache value: left-pad to 8 hex digits, read as big-endian float32.

    Args:
        text: 1 to 8 hexadecimal digits.

    Returns:
        The scale as a Python float.

    Raises:
        ValueError: ``text`` is not 1-8 hex digits.
    """
    if not _HEX_RE.match(text):
        raise ValueError(f"not a hexadecimal float32 bit pattern: {text!r}")
    return float(struct.unpack(">f", bytes.fromhex(text.rjust(8, "0")))[0])


# ---- version numbers --------------------------------------------------------------------------

def header_version_number(trt_version: str | int | None = None) -> int:
    """TensorRT's ``NV_TENSORRT_VERSION`` integer for the cache header.

    Args:
        trt_version: ``"8.6.1"``, ``"10.3.0.26"``, ``"10.3"`` (patch 0), a bare header number
            (``8601``, ``"100300"``), or ``None`` for the installed TensorRT, else
            :data:`DEFAULT_TRT_VERSION`.

    Returns:
        ``major*1000 + minor*100 + patch`` for TensorRT <= 9 and ``major*10000 + minor*100 + patch``
        for TensorRT >= 10 (8.6.1 -> 8601, 10.0.0 -> 100000, 10.3.0 -> 100300).

    Raises:
        UsageError: the version is not of one of these forms.
    """
    if trt_version is None:
        trt_version = installed_trt_version() or DEFAULT_TRT_VERSION
    if isinstance(trt_version, bool):
        raise UsageError(f"--trt_version: not a TensorRT version: {trt_version!r}")
    if isinstance(trt_version, int):
        return _check_header_number(trt_version, str(trt_version))
    text = str(trt_version).strip()
    if text.isdigit():
        return _check_header_number(int(text), text)
    parts = text.split(".")
    if not 2 <= len(parts) <= 4 or not all(p.isdigit() for p in parts):
        raise UsageError(f"--trt_version: not a TensorRT version: '{text}' (expected e.g. 8.6.1 or 10.3.0)")
    major, minor = int(parts[0]), int(parts[1])
    patch = int(parts[2]) if len(parts) > 2 else 0
    if minor > 99 or patch > 99 or major < 1:
        raise UsageError(f"--trt_version: '{text}' is out of range (minor and patch must be 0-99)")
    if major >= 10:
        return major * 10000 + minor * 100 + patch
    if minor > 9:
        raise UsageError(f"--trt_version: '{text}': TensorRT {major} has single-digit minor versions")
    return major * 1000 + minor * 100 + patch


def _check_header_number(number: int, text: str) -> int:
    if number < 1000:
        raise UsageError(f"--trt_version: '{text}' is not a TensorRT header number (e.g. 8601, 100300)")
    return number


def version_from_header_number(number: int) -> str:
    """Invert :func:`header_version_number`: ``8601`` -> ``"8.6.1"``, ``100300`` -> ``"10.3.0"``.

    Args:
        number: the integer from a cache header.

    Returns:
        ``"major.minor.patch"``.
    """
    if number >= 100000:
        major, rest = divmod(number, 10000)
    else:
        major, rest = divmod(number, 1000)
    minor, patch = divmod(rest, 100)
    return f"{major}.{minor}.{patch}"


def installed_trt_version() -> str | None:
    """The version of the importable ``tensorrt`` package, or ``None`` when there is none."""
    try:
        import tensorrt
    except Exception:  # ImportError, or OSError when its shared libraries are missing
        return None
    version = getattr(tensorrt, "__version__", None)
    if not hasattr(tensorrt, "Builder") or not version:
        return None  # type stubs only (tensorrt-stubs), not the real library
    return str(version)


# ---- reading and writing ----------------------------------------------------------------------

def format_calibration_cache(ranges: ActivationRanges, algorithm: str = "EntropyCalibration2",
                             trt_version: str | int | None = None) -> str:
    """The cache text for a table of ranges (see the module docstring for the format).

    Args:
        ranges: tensor name -> amax.
        algorithm: header word; one of :data:`ALGORITHMS`.
        trt_version: see :func:`header_version_number`.

    Returns:
        The full file content, ending with a newline.

    Raises:
        UsageError: unknown algorithm or version.
    """
    if algorithm not in ALGORITHMS:
        raise UsageError(f"calibration cache: unknown algorithm '{algorithm}' (one of {', '.join(ALGORITHMS)})")
    header = CacheHeader(header_version_number(trt_version), algorithm)
    lines = [header.line]
    lines.extend(f"{name}: {scale_to_hex(amax_to_scale(amax))}" for name, amax in ranges.amax.items())
    return "\n".join(lines) + "\n"


def write_calibration_cache(path: str | os.PathLike[str], ranges: ActivationRanges,
                            algorithm: str = "EntropyCalibration2",
                            trt_version: str | int | None = None) -> CacheHeader:
    """Write a TensorRT calibration cache atomically.

    Args:
        path: the cache file (e.g. ``cal.bin``); its folder is created if needed.
        ranges: tensor name -> amax, names as in the exported ONNX model.
        algorithm: header word; ``"EntropyCalibration2"`` is what TAO and DeepStream use.
        trt_version: the TensorRT that will read the cache; see :func:`header_version_number`.

    Returns:
        The header that was written.
    """
    text = format_calibration_cache(ranges, algorithm, trt_version)
    atomic_write_bytes(path, text.encode("ascii"))
    header = parse_header(text.split("\n", 1)[0], os.fspath(path))
    log.info("wrote calibration cache %s (%s, %d tensors)", os.fspath(path), header.line, len(ranges))
    return header


def parse_header(line: str, source: str = "<cache>") -> CacheHeader:
    """Parse ``TRT-<V>-<algorithm>``.

    Args:
        line: the first line, without newline.
        source: file name for messages.

    Returns:
        The :class:`CacheHeader`.

    Raises:
        InvalidInputError: the line is not a TensorRT cache header.
    """
    match = _HEADER_RE.match(line.strip())
    if match is None:
        raise InvalidInputError(f"{source}:1: not a TensorRT calibration cache header: {line[:80]!r} "
                                "(expected e.g. TRT-8601-EntropyCalibration2)")
    return CacheHeader(int(match.group(1)), match.group(2))


def parse_calibration_cache(text: str, source: str = "<cache>") -> tuple[CacheHeader, ActivationRanges]:
    """Parse the text of a calibration cache.

    Args:
        text: the file content.
        source: file name for messages.

    Returns:
        ``(header, ranges)``; ``ranges.amax[name] = scale * 127`` (exact in float64), method
        ``"trt-cache"``.

    Raises:
        InvalidInputError: a line is malformed (the message names the line number).
    """
    lines = text.splitlines()
    if not lines:
        raise InvalidInputError(f"{source}: the calibration cache is empty")
    header = parse_header(lines[0], source)
    ranges = ActivationRanges(method="trt-cache")
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        name, sep, value = line.rpartition(": ")
        if not sep or not name:
            raise InvalidInputError(f"{source}:{number}: expected '<tensor name>: <hex>', got {line[:80]!r}")
        try:
            scale = hex_to_scale(value.strip())
        except ValueError as exc:
            raise InvalidInputError(f"{source}:{number}: {exc}") from exc
        if not math.isfinite(scale) or scale < 0:
            raise InvalidInputError(f"{source}:{number}: tensor '{name}' has an invalid scale {scale!r}")
        ranges.amax[name] = scale * INT8_MAX
    return header, ranges


def read_calibration_cache(path: str | os.PathLike[str]) -> tuple[CacheHeader, ActivationRanges]:
    """Read a TensorRT calibration cache written by TensorRT, TAO or tltk.

    Args:
        path: the cache file.

    Returns:
        ``(header, ranges)`` as in :func:`parse_calibration_cache`.

    Raises:
        InvalidInputError: the file is missing, not ASCII text or malformed.
    """
    source = os.fspath(path)
    try:
        with open(source, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise InvalidInputError(f"{source}: cannot read the calibration cache ({exc.strerror})") from exc
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{source}: not a text calibration cache (byte {exc.start} is not ASCII)") from exc
    return parse_calibration_cache(text, source)

