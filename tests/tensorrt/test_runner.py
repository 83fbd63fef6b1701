"""TensorRTRunner: buffer sizing, dynamic batch, batch splitting, I/O checks.

Runs against a simulated engine (output = 2 * input, batch-dynamic, max batch 4) and a simulated
pycuda whose "device memory" is a dict, so the runner's bookkeeping is checked without a GPU.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from tltk.errors import InvalidInputError, MissingDependencyError, ModelFileError
from tltk.tensorrt import availability
from tltk.tensorrt import runner as runner_mod

MEMORY: dict[int, bytearray] = {}


class _Alloc:
    next_address = 4096

    def __init__(self, nbytes):
        self.address = _Alloc.next_address
        _Alloc.next_address += nbytes + 256
        MEMORY[self.address] = bytearray(nbytes)
        self.freed = False

    def __int__(self):
        return self.address

    def free(self):
        self.freed = True
        MEMORY.pop(self.address, None)


def _fake_pycuda():
    driver = types.ModuleType("pycuda.driver")
    driver.init = lambda: None

    class _Ctx:
        def push(self):
            pass

        def pop(self):
            pass

        def detach(self):
            pass

    class _Device:
        def __init__(self, index):
            self.index = index

        def retain_primary_context(self):
            return _Ctx()

    class _Stream:
        handle = 77

        def synchronize(self):
            pass

    def htod(dst, host, stream=None):
        data = np.ascontiguousarray(host).tobytes()
        MEMORY[int(dst)][:len(data)] = data

    def dtoh(host, src, stream=None):
        flat = host.reshape(-1).view(np.uint8)
        flat[:] = np.frombuffer(bytes(MEMORY[int(src)][:flat.size]), dtype=np.uint8)

    driver.Device = _Device
    driver.Stream = _Stream
    driver.mem_alloc = _Alloc
    driver.pagelocked_empty = lambda shape, dtype: np.empty(shape, dtype)
    driver.memcpy_htod_async = htod
    driver.memcpy_dtoh_async = dtoh
    package = types.ModuleType("pycuda")
    package.driver = driver
    return package, driver


def _fake_tensorrt():
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.3.0.26"
    trt.Builder = object

    class TensorIOMode:
        INPUT, OUTPUT = "in", "out"

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    class Context:
        def __init__(self):
            self.shape = (4, 3, 2, 2)
            self.addresses = {}
            self.runs = []

        def set_input_shape(self, name, shape):
            if not 1 <= shape[0] <= 4:
                return False
            self.shape = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            return list(self.shape)

        def set_tensor_address(self, name, address):
            self.addresses[name] = address

        def execute_async_v3(self, stream):
            count = int(np.prod(self.shape))
            x = np.frombuffer(bytes(MEMORY[self.addresses["input_1"]][:count * 4]), dtype=np.float32)
            MEMORY[self.addresses["out"]][:count * 4] = (2 * x).astype(np.float32).tobytes()
            self.runs.append(self.shape[0])
            return True

    class Engine:
        num_io_tensors = 2

        def __init__(self):
            self.context = Context()

        def get_tensor_name(self, index):
            return ["input_1", "out"][index]

        def get_tensor_mode(self, name):
            return TensorIOMode.INPUT if name == "input_1" else TensorIOMode.OUTPUT

        def get_tensor_shape(self, name):
            return [-1, 3, 2, 2]

        def get_tensor_profile_shape(self, name, profile):
            return [[1, 3, 2, 2], [4, 3, 2, 2], [4, 3, 2, 2]]

        def get_tensor_dtype(self, name):
            return "float32"

        def create_execution_context(self):
            return self.context

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return Engine() if data == b"PLAN" else None

    trt.TensorIOMode = TensorIOMode
    trt.Logger = Logger
    trt.Runtime = Runtime
    trt.Dims = lambda shape: tuple(shape)
    trt.nptype = lambda dtype: np.float32
    trt.init_libnvinfer_plugins = lambda logger, namespace: True
    return trt


@pytest.fixture()
def fake_stack(monkeypatch):
    package, driver = _fake_pycuda()
    monkeypatch.setitem(sys.modules, "pycuda", package)
    monkeypatch.setitem(sys.modules, "pycuda.driver", driver)
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt())
    monkeypatch.setattr(availability, "cuda_device_count", lambda: 1)
    monkeypatch.setattr(availability, "pycuda_version", lambda: "2024.1")


def test_runs_splits_large_batches_and_frees(tmp_path, fake_stack):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"PLAN")
    with runner_mod.TensorRTRunner(engine) as runner:
        assert runner.input_names == ["input_1"] and runner.output_names == ["out"]
        assert runner.max_batch_size == 4
        assert runner.tensors["out"].max_shape == (4, 3, 2, 2)
        x = np.arange(6 * 12, dtype=np.float64).reshape(6, 3, 2, 2)
        out = runner.run({"input_1": x})["out"]
        assert out.dtype == np.float32 and out.shape == (6, 3, 2, 2)
        np.testing.assert_array_equal(out, 2 * x.astype(np.float32))
        assert runner._execution.runs == [4, 2]
        with pytest.raises(InvalidInputError, match="missing \\['input_1'\\], unknown \\['image'\\]"):
            runner.run({"image": x})
        with pytest.raises(InvalidInputError, match="has shape"):
            runner.run({"input_1": np.zeros((2, 3, 4, 4))})
        buffers = list(runner._device.values())
    assert all(b.freed for b in buffers)


def test_engine_errors(tmp_path, fake_stack):
    with pytest.raises(InvalidInputError, match="no such engine file"):
        runner_mod.TensorRTRunner(tmp_path / "missing.engine")
    bad = tmp_path / "bad.engine"
    bad.write_bytes(b"other TensorRT version")
    with pytest.raises(ModelFileError, match="cannot load this engine"):
        runner_mod.TensorRTRunner(bad)


def test_missing_tensorrt_is_exit_code_3(tmp_path, monkeypatch):
    monkeypatch.setattr(availability, "tensorrt_version", lambda: None)
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"PLAN")
    with pytest.raises(MissingDependencyError) as info:
        runner_mod.TensorRTRunner(engine)
    assert info.value.exit_code == 3
