"""``tltk mask_rcnn converter`` and the engine builder on a real (tiny) MaskRCNN export.

Without TensorRT the converter stops with exit code 3 and the exact trtexec command; with the
recording stand-in of TensorRT 10 (tests/tensorrt/_fake_tensorrt.py) the builder gets MaskRCNN's
input profile, precision flags and, for the Q/DQ model, no calibrator.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tltk.cli.app import cli
from tltk.tensorrt import availability
from tltk.tensorrt import builder as builder_mod
from tltk.tensorrt.builder import build_engine, inspect_onnx
from tltk.tensorrt.converter_args import settings_from_flags

pytest.importorskip("tf2onnx")

_here = Path(__file__).resolve()
_fake_spec = importlib.util.spec_from_file_location("_fake_tensorrt", _here.with_name("_fake_tensorrt.py"))
assert _fake_spec is not None and _fake_spec.loader is not None
fake = importlib.util.module_from_spec(_fake_spec)
_fake_spec.loader.exec_module(fake)
_tiny_spec = importlib.util.spec_from_file_location("_tiny_model", _here.parents[1] / "mask_rcnn" / "_tiny_model.py")
assert _tiny_spec is not None and _tiny_spec.loader is not None
tiny = importlib.util.module_from_spec(_tiny_spec)
_tiny_spec.loader.exec_module(tiny)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """model.onnx, model_int8_qdq.onnx and cal.bin of a tiny MaskRCNN (128x128, 3 classes)."""
    from tltk.export.pipeline import export_model
    from tltk.mask_rcnn.model import INPUT_NAME, ONNX_OUTPUT_NAMES, build_mask_rcnn

    folder = tmp_path_factory.mktemp("mrcnn_trt")
    params = tiny.tiny_params()
    inference, _ = build_mask_rcnn(params)
    images, _ = tiny.synthetic_batch(params, batch=1)
    export_model(inference, folder / "model.onnx", INPUT_NAME, ONNX_OUTPUT_NAMES, data_type="int8",
                 calibration_batches=[images], cal_method="minmax")
    return folder


def test_inspect_reads_the_mask_rcnn_contract(exported: Path) -> None:
    fp32 = inspect_onnx(exported / "model.onnx")
    assert fp32.inputs == {"Input": (None, 3, 128, 128)}
    assert fp32.outputs == ("generate_detections", "mask_fcn_logits/BiasAdd")
    assert not fp32.has_qdq and inspect_onnx(exported / "model_int8_qdq.onnx").has_qdq


def test_converter_without_tensorrt_prints_the_exact_command(exported: Path, monkeypatch) -> None:
    monkeypatch.chdir(exported)
    monkeypatch.setattr(availability, "tensorrt_version", lambda: None)
    res = CliRunner().invoke(cli, ["mask_rcnn", "converter", "model.onnx", "-t", "int8", "-c", "cal.bin",
                                   "-e", "mrcnn.engine", "-o", "generate_detections,mask_fcn_logits/BiasAdd",
                                   "-p", "Input,1x3x128x128,2x3x128x128,4x3x128x128", "-w", "2147483648"])
    assert res.exit_code == 3, res.output
    expected = ("trtexec --onnx=model.onnx --saveEngine=mrcnn.engine --minShapes=Input:1x3x128x128 "
                "--optShapes=Input:2x3x128x128 --maxShapes=Input:4x3x128x128 --memPoolSize=workspace:2048M "
                "--fp16 --int8 --calib=cal.bin")
    assert f"\n    {expected}\n" in res.output
    qdq = CliRunner().invoke(cli, ["mask_rcnn", "converter", "model_int8_qdq.onnx", "-t", "int8", "-m", "2"])
    assert qdq.exit_code == 3
    assert ("trtexec --onnx=model_int8_qdq.onnx --saveEngine=saved.engine --minShapes=Input:1x3x128x128 "
            "--optShapes=Input:2x3x128x128 --maxShapes=Input:2x3x128x128 --memPoolSize=workspace:1024M "
            "--fp16 --int8\n") in qdq.output  # explicit quantization: no --calib
    # TLT 3.0's mask output name is not in a tltk model: said, and the engine keeps the graph's outputs
    old = CliRunner().invoke(cli, ["mask_rcnn", "converter", "model.onnx", "-o",
                                   "generate_detections,mask_head/mask_fcn_logits/BiasAdd"])
    assert old.exit_code == 3
    assert ("no output named mask_head/mask_fcn_logits/BiasAdd (its outputs: generate_detections, "
            "mask_fcn_logits/BiasAdd)") in old.output


@pytest.mark.parametrize("data_type,flags", [("fp32", set()), ("fp16", {"FP16"})])
def test_builder_gets_the_input_profile_and_precision(exported: Path, monkeypatch, data_type, flags) -> None:
    module = fake.make_module(inputs=["Input"])
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    monkeypatch.setattr(builder_mod, "require_tensorrt", lambda command, need_pycuda=False: module.__version__)
    settings = settings_from_flags(engine_file=str(exported / f"{data_type}.engine"), data_type=data_type,
                                   max_batch_size=4, workspace="1073741824")
    build_engine(exported / "model.onnx", settings)
    config = fake.last_config()
    assert config.flags == flags
    assert config.profiles[0].shapes == {"Input": ((1, 3, 128, 128), (4, 3, 128, 128), (4, 3, 128, 128))}
    assert config.pool == {"WORKSPACE": 1073741824}


def test_builder_int8_from_the_qdq_model_needs_no_calibrator(exported: Path, monkeypatch) -> None:
    module = fake.make_module(inputs=["Input"])
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    monkeypatch.setattr(builder_mod, "require_tensorrt", lambda command, need_pycuda=False: module.__version__)
    settings = settings_from_flags(engine_file=str(exported / "int8.engine"), data_type="int8", max_batch_size=2)
    build_engine(exported / "model_int8_qdq.onnx", settings)
    config = fake.last_config()
    assert "INT8" in config.flags and config.int8_calibrator is None
    # the implicit-quantization route reads the calibration cache export wrote
    settings = settings_from_flags(engine_file=str(exported / "int8c.engine"), data_type="int8",
                                   cache_file=str(exported / "cal.bin"))
    build_engine(exported / "model.onnx", settings)
    calibrator = fake.last_config().int8_calibrator
    assert calibrator is not None and calibrator.read_calibration_cache() == (exported / "cal.bin").read_bytes()
