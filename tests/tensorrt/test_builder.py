"""Engine builder: ONNX inspection, profile completion, and the mapping of settings to TensorRT calls.

TensorRT is not needed: ``build_engine`` runs against a recording stand-in of the TensorRT 10 API
(tests/tensorrt/_fake_tensorrt.py) to check which flags, shapes and limits reach the builder.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tltk.errors import InvalidInputError, ModelFileError, UsageError
from tltk.tensorrt import builder as builder_mod
from tltk.tensorrt.builder import build_engine, complete_profiles, inspect_onnx
from tltk.tensorrt.converter_args import settings_from_flags

_spec = importlib.util.spec_from_file_location("_fake_tensorrt", Path(__file__).with_name("_fake_tensorrt.py"))
fake = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fake)


def make_onnx(path: Path, shape=("N", 3, 8, 8), name="input_1", qdq=False) -> Path:
    x = helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))
    cov = helper.make_tensor_value_info("output_cov/Sigmoid", TensorProto.FLOAT, list(shape))
    bbox = helper.make_tensor_value_info("output_bbox/BiasAdd", TensorProto.FLOAT, list(shape))
    nodes, inits = [], []
    source = name
    if qdq:
        inits = [helper.make_tensor("s", TensorProto.FLOAT, [], [1.0 / 127]),
                 helper.make_tensor("z", TensorProto.INT8, [], [0])]
        nodes += [helper.make_node("QuantizeLinear", [name, "s", "z"], ["q"]),
                  helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"])]
        source = "dq"
    nodes += [helper.make_node("Sigmoid", [source], ["output_cov/Sigmoid"]),
              helper.make_node("Identity", [source], ["output_bbox/BiasAdd"])]
    graph = helper.make_graph(nodes, "g", [x], [cov, bbox], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


@pytest.fixture()
def fake_trt(monkeypatch):
    module = fake.make_module()
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    monkeypatch.setattr(builder_mod, "require_tensorrt", lambda command, need_pycuda=False: module.__version__)
    return module


def test_inspect_onnx_reads_dynamic_batch_outputs_and_qdq(tmp_path):
    plain = inspect_onnx(make_onnx(tmp_path / "a.onnx"))
    assert plain.inputs == {"input_1": (None, 3, 8, 8)}
    assert plain.outputs == ("output_cov/Sigmoid", "output_bbox/BiasAdd")
    assert plain.has_qdq is False
    assert inspect_onnx(make_onnx(tmp_path / "q.onnx", qdq=True)).has_qdq is True


def test_inspect_onnx_rejects_garbage(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\xff\x00not a model")
    with pytest.raises(ModelFileError):
        inspect_onnx(bad)


def test_complete_profiles_defaults_and_overrides():
    inputs = {"input_1": (None, 3, 544, 960)}
    [auto] = complete_profiles(settings_from_flags(max_batch_size=4), inputs)
    assert (auto.min, auto.opt, auto.max) == ((1, 3, 544, 960), (4, 3, 544, 960), (4, 3, 544, 960))
    [given] = complete_profiles(settings_from_flags(profiles=["input_1,2x3x544x960,4x3x544x960,8x3x544x960"]), inputs)
    assert given.max == (8, 3, 544, 960)
    # Static models need no profile at all.
    assert complete_profiles(settings_from_flags(), {"input_1": (1, 3, 544, 960)}) == []


def test_complete_profiles_errors_name_the_flag():
    inputs = {"input_1": (None, 3, 544, 960)}
    with pytest.raises(UsageError, match=r"^-p: the model has no input named 'x'"):
        complete_profiles(settings_from_flags(profiles=["x,1x3x544x960,1x3x544x960,1x3x544x960"]), inputs)
    with pytest.raises(UsageError, match=r"^-p: input 'input_1' dimension 2 is fixed to 544"):
        complete_profiles(settings_from_flags(profiles=["input_1,1x3x500x960,1x3x500x960,1x3x500x960"]), inputs)
    with pytest.raises(UsageError, match=r"^-d: input 'input_1' dimension 3 is fixed to 960"):
        complete_profiles(settings_from_flags(input_dims="3,544,961"), inputs)
    with pytest.raises(UsageError, match="dynamic dimensions besides the batch"):
        complete_profiles(settings_from_flags(), {"input_1": (None, 3, None, None)})


def test_build_fp16_sets_flag_profile_workspace_and_writes_engine(tmp_path, fake_trt):
    model = make_onnx(tmp_path / "m.onnx")
    engine = tmp_path / "out" / "m.engine"
    settings = settings_from_flags(engine_file=str(engine), data_type="fp16", max_batch_size=8,
                                   workspace="536870912")
    data = build_engine(model, settings)
    config = fake.last_config()
    assert config.flags == {"FP16"}
    assert config.pool == {"WORKSPACE": 536870912}
    assert config.profiles[0].shapes == {"input_1": ((1, 3, 8, 8), (8, 3, 8, 8), (8, 3, 8, 8))}
    assert config.int8_calibrator is None
    assert engine.read_bytes() == data == b"FAKE-PLAN:FP16"
    assert ("create_network", 0) in fake.CALLS
    assert ("plugins", "") in fake.CALLS


def test_build_int8_with_cache_uses_calibrator_and_calibration_profile(tmp_path, fake_trt):
    model = make_onnx(tmp_path / "m.onnx")
    cache = tmp_path / "cal.bin"
    cache.write_text("TRT-100300-EntropyCalibration2\ninput_1: 3c010204\n")
    settings = settings_from_flags(engine_file=str(tmp_path / "m.engine"), data_type="int8", cache_file=str(cache),
                                   calib_batch_size=4)
    build_engine(model, settings)
    config = fake.last_config()
    assert config.flags == {"INT8", "FP16"}
    calibrator = config.int8_calibrator
    assert isinstance(calibrator, fake.IInt8EntropyCalibrator2)
    assert calibrator.get_batch_size() == 4
    assert calibrator.read_calibration_cache() == cache.read_bytes()
    assert calibrator.get_batch(["input_1"]) == []  # cache-only: TensorRT never gets data
    assert config.calibration_profile is config.profiles[0]


def test_build_int8_strict_and_qdq_model(tmp_path, fake_trt):
    model = make_onnx(tmp_path / "q.onnx", qdq=True)
    settings = settings_from_flags(engine_file=str(tmp_path / "q.engine"), data_type="int8", strict_types=True,
                                   cache_file=str(tmp_path / "missing.bin"))
    build_engine(model, settings)  # explicit quantization: no cache needed
    config = fake.last_config()
    assert config.flags == {"INT8", "OBEY_PRECISION_CONSTRAINTS"}
    assert config.int8_calibrator is None


def test_build_int8_without_cache_or_qdq_is_an_input_error(tmp_path, fake_trt):
    model = make_onnx(tmp_path / "m.onnx")
    settings = settings_from_flags(engine_file=str(tmp_path / "m.engine"), data_type="int8",
                                   cache_file=str(tmp_path / "missing.bin"))
    with pytest.raises(InvalidInputError, match="calibration cache not found"):
        build_engine(model, settings)


def test_build_dla_and_timing_cache(tmp_path, monkeypatch):
    module = fake.make_module(dla_cores=2)
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    monkeypatch.setattr(builder_mod, "require_tensorrt", lambda command, need_pycuda=False: "10.3.0")
    model = make_onnx(tmp_path / "m.onnx")
    timing = tmp_path / "timing.cache"
    timing.write_bytes(b"old")
    settings = settings_from_flags(engine_file=str(tmp_path / "m.engine"), dla_core=1,
                                   timing_cache_file=str(timing))
    build_engine(model, settings)
    config = fake.last_config()
    assert config.default_device_type.name == "DLA" and config.DLA_core == 1
    assert config.flags == {"GPU_FALLBACK"}
    assert timing.read_bytes() == b"TIMING:old"
    with pytest.raises(UsageError, match="^-u: DLA core 2 requested, but this device has 2"):
        build_engine(model, settings_from_flags(engine_file=str(tmp_path / "m.engine"), dla_core=2))


def test_build_reports_parser_errors(tmp_path, fake_trt):
    model = make_onnx(tmp_path / "m.onnx")
    fake.OnnxParser.FAIL_WITH = ["In node 0: unsupported op Foo"]
    with pytest.raises(ModelFileError, match="unsupported op Foo"):
        build_engine(model, settings_from_flags(engine_file=str(tmp_path / "m.engine")))


def test_tensorrt_11_is_strongly_typed_and_refuses_caches(tmp_path, monkeypatch):
    module = fake.make_module(version="11.0.0")
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    monkeypatch.setattr(builder_mod, "require_tensorrt", lambda command, need_pycuda=False: "11.0.0")
    qdq = make_onnx(tmp_path / "q.onnx", qdq=True)
    build_engine(qdq, settings_from_flags(engine_file=str(tmp_path / "q.engine"), data_type="int8"))
    assert ("create_network", 1 << 1) in fake.CALLS
    assert fake.last_config().flags == set()
    plain = make_onnx(tmp_path / "m.onnx")
    cache = tmp_path / "cal.bin"
    cache.write_text("TRT-110000-EntropyCalibration2\n")
    with pytest.raises(UsageError, match="TensorRT 11 removed calibration caches"):
        build_engine(plain, settings_from_flags(engine_file=str(tmp_path / "m.engine"), data_type="int8",
                                                cache_file=str(cache)))


def test_calibrator_feeds_batches_through_pycuda(monkeypatch, tmp_path):
    """The data path of the calibrator: batches are copied to device buffers, then [] at the end."""
    module = fake.make_module()
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    copies: list[np.ndarray] = []

    class _Mem:
        def __init__(self, nbytes):
            self.nbytes = nbytes
            self.freed = False

        def __int__(self):
            return 4096

        def free(self):
            self.freed = True

    driver = type(sys)("pycuda.driver")
    driver.mem_alloc = _Mem
    driver.memcpy_htod = lambda dst, src: copies.append(np.array(src))
    package = type(sys)("pycuda")
    package.driver = driver
    monkeypatch.setitem(sys.modules, "pycuda", package)
    monkeypatch.setitem(sys.modules, "pycuda.driver", driver)

    from tltk.tensorrt.calibrator import make_calibrator

    batches = [np.full((2, 3, 4, 4), v, dtype=np.float64) for v in (0.25, 0.5)]
    calibrator = make_calibrator(tmp_path / "cal.bin", batches=batches, batch_size=2, algorithm="minmax")
    assert isinstance(calibrator, fake.IInt8MinMaxCalibrator)
    assert calibrator.read_calibration_cache() is None
    assert calibrator.get_batch(["input_1"]) == [4096]
    assert calibrator.get_batch(["input_1"]) == [4096]
    assert calibrator.get_batch(["input_1"]) == []
    assert [c.dtype for c in copies] == [np.float32, np.float32]
    assert [float(c.mean()) for c in copies] == [0.25, 0.5]
    calibrator.write_calibration_cache(b"TRT-100300-MinMaxCalibration\n")
    assert (tmp_path / "cal.bin").read_bytes() == b"TRT-100300-MinMaxCalibration\n"
    wrong = make_calibrator(tmp_path / "cal.bin", batches=[np.zeros((3, 3, 4, 4))], batch_size=2)
    with pytest.raises(UsageError, match="batch of 3"):
        wrong.get_batch(["input_1"])
