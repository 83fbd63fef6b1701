"""Is TensorRT usable here?  Detect TensorRT, pycuda and CUDA GPUs without importing them eagerly.

tltk runs on machines without a GPU.  Commands that need TensorRT call :func:`require_tensorrt`
with the equivalent ``trtexec`` command line; where TensorRT is missing they stop with exit code 3
and print that command, to be run on the target machine (engines are tied to the GPU and the
TensorRT version they were built with, so the target machine is the right place anyway).
"""

from __future__ import annotations

import ctypes
import importlib
import logging
from dataclasses import dataclass

from tltk.errors import MissingDependencyError

log = logging.getLogger(__name__)

INSTALL_HINT = ("install TensorRT >= 10 and pycuda on a machine with an NVIDIA GPU (pip install 'tltk[tensorrt]') "
                "and run the same tltk command there")


@dataclass(frozen=True)
class TensorRTStatus:
    """What of the TensorRT stack is usable in this process.

    Attributes:
        tensorrt_version: ``tensorrt.__version__`` (e.g. ``"10.3.0.26"``), or ``None`` when the
            package cannot be imported.
        pycuda_version: pycuda's version string, or ``None`` when it cannot be imported.
        cuda_devices: number of CUDA devices the driver reports (0 without a driver or GPU).
        problem: why TensorRT is unusable (one sentence), or ``None`` when everything is there.
    """

    tensorrt_version: str | None
    pycuda_version: str | None
    cuda_devices: int
    problem: str | None

    @property
    def can_build(self) -> bool:
        """Engines can be built here (TensorRT and a GPU)."""
        return self.tensorrt_version is not None and self.cuda_devices > 0

    @property
    def can_run(self) -> bool:
        """Engines can be run here (TensorRT, pycuda and a GPU)."""
        return self.can_build and self.pycuda_version is not None


def tensorrt_version() -> str | None:
    """The installed TensorRT version, or ``None`` when ``import tensorrt`` fails.

    Returns:
        e.g. ``"10.3.0.26"``.
    """
    try:
        module = importlib.import_module("tensorrt")
    except Exception as exc:  # ImportError, or OSError when libnvinfer cannot be loaded
        log.debug("tensorrt is not importable: %s", exc)
        return None
    if not hasattr(module, "Builder"):
        # Only type stubs (tensorrt-stubs) or an empty namespace package: not the real library.
        return None
    version = getattr(module, "__version__", None)
    return str(version) if version else "unknown"


def pycuda_version() -> str | None:
    """The installed pycuda version, or ``None`` when ``import pycuda.driver`` fails."""
    try:
        module = importlib.import_module("pycuda")
        importlib.import_module("pycuda.driver")
    except Exception as exc:  # ImportError, or a driver-library load failure
        log.debug("pycuda is not importable: %s", exc)
        return None
    version = getattr(module, "VERSION_TEXT", None) or getattr(module, "__version__", None)
    return str(version) if version else "unknown"


def cuda_device_count() -> int:
    """Number of CUDA devices, asked from the driver library (``libcuda``) through ctypes.

    Returns:
        0 when there is no driver, no GPU or the driver fails to initialise.
    """
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        try:
            if lib.cuInit(0) != 0:
                return 0
            count = ctypes.c_int(0)
            if lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
                return 0
            return int(count.value)
        except AttributeError:
            return 0
    return 0


def parse_version(text: str) -> tuple[int, int, int]:
    """``"10.3.0.26"`` -> ``(10, 3, 0)``; missing parts are 0, non-numeric suffixes ignored.

    Args:
        text: a version string.

    Returns:
        ``(major, minor, patch)``.
    """
    numbers: list[int] = []
    for part in text.split(".")[:3]:
        digits = ""
        for char in part:
            if not char.isdigit():
                break
            digits += char
        numbers.append(int(digits) if digits else 0)
    while len(numbers) < 3:
        numbers.append(0)
    return numbers[0], numbers[1], numbers[2]


def status() -> TensorRTStatus:
    """Probe TensorRT, pycuda and the GPUs (imports them if present; cheap when absent).

    Returns:
        A :class:`TensorRTStatus`.
    """
    trt = tensorrt_version()
    cuda = pycuda_version()
    devices = cuda_device_count()
    problem = None
    if trt is None:
        problem = "TensorRT is not installed here (the Python package 'tensorrt' cannot be imported)"
    elif trt != "unknown" and parse_version(trt)[0] < 10:
        problem = f"TensorRT {trt} is installed, but tltk needs TensorRT 10 or newer"
    elif devices == 0:
        problem = "TensorRT is installed, but no CUDA GPU is visible here"
    return TensorRTStatus(trt, cuda, devices, problem)


def require_tensorrt(equivalent_command: str, need_pycuda: bool = False) -> str:
    """Make sure TensorRT (and a GPU) can be used, else stop with the command to run elsewhere.

    Args:
        equivalent_command: the exact shell command (usually ``trtexec ...``) that does the same
            job on a machine with TensorRT; printed in the error message.
        need_pycuda: also require pycuda (running engines needs it; building does not).

    Returns:
        The installed TensorRT version string.

    Raises:
        MissingDependencyError: (exit code 3) TensorRT, a GPU or pycuda is missing; the message
            contains ``equivalent_command`` on a line of its own.
    """
    current = status()
    problem = current.problem
    if problem is None and need_pycuda and current.pycuda_version is None:
        problem = "pycuda is not installed here (needed to run TensorRT engines)"
    if problem is not None:
        message = (f"{problem}.\nRun this on the target machine (the one that will run the engine, with "
                   f"TensorRT installed):\n\n    {equivalent_command}\n")
        raise MissingDependencyError(message, hint=INSTALL_HINT)
    assert current.tensorrt_version is not None
    return current.tensorrt_version
