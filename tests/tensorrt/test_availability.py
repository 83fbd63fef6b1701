"""Detecting TensorRT/pycuda/GPUs and the exit-code-3 error with the command to run elsewhere."""

from __future__ import annotations

import sys
import types

import pytest

from tltk.errors import EXIT_MISSING_DEPENDENCY, MissingDependencyError
from tltk.tensorrt import availability
from tltk.tensorrt.availability import TensorRTStatus, parse_version, require_tensorrt

COMMAND = "trtexec --onnx=saved.onnx --saveEngine=saved.engine --memPoolSize=workspace:1024M --fp16"


def test_importing_the_package_does_not_import_tensorrt_or_pycuda():
    import subprocess

    code = ("import sys, tltk.tensorrt, tltk.tensorrt.availability, tltk.tensorrt.profiles, "
            "tltk.tensorrt.converter_args, tltk.tensorrt.builder, tltk.tensorrt.calibrator, tltk.tensorrt.runner\n"
            "print(sorted(m for m in ('tensorrt', 'pycuda', 'pycuda.driver') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def test_parse_version():
    assert parse_version("10.3.0.26") == (10, 3, 0)
    assert parse_version("8.6.1") == (8, 6, 1)
    assert parse_version("10.1") == (10, 1, 0)
    assert parse_version("11.0.0rc1") == (11, 0, 0)


def test_type_stubs_are_not_mistaken_for_tensorrt(monkeypatch):
    stub = types.ModuleType("tensorrt")  # what `import tensorrt` gives with only tensorrt-stubs installed
    monkeypatch.setitem(sys.modules, "tensorrt", stub)
    assert availability.tensorrt_version() is None
    real = types.ModuleType("tensorrt")
    real.Builder = object
    real.__version__ = "10.3.0.26"
    monkeypatch.setitem(sys.modules, "tensorrt", real)
    assert availability.tensorrt_version() == "10.3.0.26"


def test_cuda_device_count_is_a_count():
    assert availability.cuda_device_count() >= 0


@pytest.mark.parametrize("trt,devices,fragment", [
    (None, 0, "TensorRT is not installed here"),
    ("8.6.1", 1, "TensorRT 8.6.1 is installed, but tltk needs TensorRT 10 or newer"),
    ("10.3.0", 0, "no CUDA GPU is visible here"),
])
def test_require_tensorrt_prints_the_command(monkeypatch, trt, devices, fragment):
    monkeypatch.setattr(availability, "tensorrt_version", lambda: trt)
    monkeypatch.setattr(availability, "pycuda_version", lambda: None)
    monkeypatch.setattr(availability, "cuda_device_count", lambda: devices)
    with pytest.raises(MissingDependencyError) as info:
        require_tensorrt(COMMAND)
    assert info.value.exit_code == EXIT_MISSING_DEPENDENCY == 3
    assert fragment in info.value.message
    assert f"\n    {COMMAND}\n" in info.value.message
    assert "pip install 'tltk[tensorrt]'" in str(info.value)


def test_require_tensorrt_passes_and_pycuda_is_checked_when_needed(monkeypatch):
    monkeypatch.setattr(availability, "tensorrt_version", lambda: "10.3.0.26")
    monkeypatch.setattr(availability, "cuda_device_count", lambda: 1)
    monkeypatch.setattr(availability, "pycuda_version", lambda: None)
    assert require_tensorrt(COMMAND) == "10.3.0.26"
    with pytest.raises(MissingDependencyError, match="pycuda is not installed"):
        require_tensorrt(COMMAND, need_pycuda=True)
    monkeypatch.setattr(availability, "pycuda_version", lambda: "2024.1")
    assert require_tensorrt(COMMAND, need_pycuda=True) == "10.3.0.26"


def test_status_flags():
    ready = TensorRTStatus("10.3.0", "2024.1", 1, None)
    assert ready.can_build and ready.can_run
    no_pycuda = TensorRTStatus("10.3.0", None, 1, None)
    assert no_pycuda.can_build and not no_pycuda.can_run
    assert not TensorRTStatus(None, None, 0, "x").can_build
