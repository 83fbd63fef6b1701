"""``tltk <model> converter``: tao-converter's flags, exit code 3 with the trtexec command, .etlt decoding."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shlex
import sys
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from tltk.cli.app import cli
from tltk.tensorrt import availability

_spec = importlib.util.spec_from_file_location(
    "_fake_tensorrt", Path(__file__).resolve().parents[1] / "tensorrt" / "_fake_tensorrt.py")
fake = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fake)

HEARTRATE = "05_raokost__NvidiaFramework__heartrate.etlt"
FACEMASK = "03_ppi-ai__edgepipes__resnet18_detector.etlt"


def make_detectnet_onnx(path: Path, batch="N") -> Path:
    x = helper.make_tensor_value_info("input_1", TensorProto.FLOAT, [batch, 3, 16, 32])
    cov = helper.make_tensor_value_info("output_cov/Sigmoid", TensorProto.FLOAT, [batch, 3, 16, 32])
    bbox = helper.make_tensor_value_info("output_bbox/BiasAdd", TensorProto.FLOAT, [batch, 3, 16, 32])
    graph = helper.make_graph([helper.make_node("Sigmoid", ["input_1"], ["output_cov/Sigmoid"]),
                               helper.make_node("Identity", ["input_1"], ["output_bbox/BiasAdd"])],
                              "g", [x], [cov, bbox])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.fixture()
def no_tensorrt(monkeypatch):
    monkeypatch.setattr(availability, "tensorrt_version", lambda: None)


def test_onnx_without_tensorrt_exits_3_with_the_exact_command(tmp_path, no_tensorrt, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_detectnet_onnx(tmp_path / "model.onnx")
    (tmp_path / "cal.bin").write_text("TRT-100300-EntropyCalibration2\ninput_1: 3c010204\n")
    res = CliRunner().invoke(cli, ["detectnet_v2", "converter", "model.onnx", "-k", "ignored", "-t", "int8",
                                   "-c", "cal.bin", "-e", "out/model.engine", "-m", "8", "-b", "4",
                                   "-o", "output_cov/Sigmoid,output_bbox/BiasAdd"])
    assert res.exit_code == 3, res.output
    expected = ("trtexec --onnx=model.onnx --saveEngine=out/model.engine --minShapes=input_1:1x3x16x32 "
                "--optShapes=input_1:8x3x16x32 --maxShapes=input_1:8x3x16x32 --memPoolSize=workspace:1024M "
                "--fp16 --int8 --calib=cal.bin")
    assert f"\n    {expected}\n" in res.output
    assert "TensorRT is not installed here" in res.output
    assert "FAILED (exit 3)" in res.output


def test_profile_flag_and_static_models(tmp_path, no_tensorrt, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_detectnet_onnx(tmp_path / "model.onnx")
    make_detectnet_onnx(tmp_path / "static.onnx", batch=2)
    res = CliRunner().invoke(cli, ["detectnet_v2", "converter", "model.onnx", "-t", "fp16", "-p",
                                   "input_1,1x3x16x32,2x3x16x32,4x3x16x32", "-s", "-u", "0", "--json"])
    assert res.exit_code == 3
    doc = json.loads(res.stdout)
    assert doc["exit_code"] == 3
    assert ("trtexec --onnx=model.onnx --saveEngine=saved.engine --minShapes=input_1:1x3x16x32 "
            "--optShapes=input_1:2x3x16x32 --maxShapes=input_1:4x3x16x32 --memPoolSize=workspace:1024M --fp16 "
            "--precisionConstraints=obey --useDLACore=0 --allowGPUFallback") in doc["error"]
    res = CliRunner().invoke(cli, ["detectnet_v2", "converter", "static.onnx"])
    assert res.exit_code == 3
    assert "trtexec --onnx=static.onnx --saveEngine=saved.engine --memPoolSize=workspace:1024M\n" in res.output


@pytest.mark.parametrize("args,fragment", [
    (["-p", "input_1,1x3x16x32,8x3x16x32"], "-p: 'input_1,1x3x16x32,8x3x16x32' must be <input name>"),
    (["-p", "input_1,1x3x16x32,8x3x16x32,4x3x16x32"], "-p: 'input_1,1x3x16x32,8x3x16x32,4x3x16x32': dimension 0"),
    (["-p", "image,1x3x16x32,1x3x16x32,1x3x16x32"], "-p: the model has no input named 'image'"),
    (["-p", "input_1,1x3x17x32,1x3x17x32,1x3x17x32"], "-p: input 'input_1' dimension 2 is fixed to 16"),
    (["-d", "3,17,32"], "-d: input 'input_1' dimension 2 is fixed to 16"),
    (["-t", "int4"], "-t: unknown data type 'int4'"),
    (["-t", "int8", "-c", "missing.bin"], "-c: INT8 calibration cache not found: missing.bin"),
    (["-w", "1GB"], "-w: the workspace size is a positive number of bytes"),
])
def test_bad_flags_exit_2_before_looking_for_tensorrt(tmp_path, no_tensorrt, monkeypatch, args, fragment):
    monkeypatch.chdir(tmp_path)
    make_detectnet_onnx(tmp_path / "model.onnx")
    res = CliRunner().invoke(cli, ["detectnet_v2", "converter", "model.onnx", *args])
    assert res.exit_code == 2, res.output
    assert fragment in res.output
    assert "trtexec" not in res.output


def test_input_file_errors(tmp_path, no_tensorrt, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(cli, ["detectnet_v2", "converter", "nothing.onnx"])
    assert res.exit_code == 2 and "nothing.onnx: no such model file" in res.output
    (tmp_path / "m.uff").write_bytes(b"x")
    res = CliRunner().invoke(cli, ["detectnet_v2", "converter", "m.uff"])
    assert res.exit_code == 2 and "takes an .etlt or .onnx model" in res.output


def test_etlt_onnx_payload_is_decoded_next_to_the_engine(corpus_dir, tmp_path, no_tensorrt, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = corpus_dir / "etlt" / HEARTRATE
    res = CliRunner().invoke(cli, ["detectnet_v2", "converter", str(source), "-k", "nvidia_tlt", "-e",
                                   "engines/heartrate.engine", "-m", "4"])
    assert res.exit_code == 3, res.output
    decoded = tmp_path / "engines" / "heartrate.onnx"
    # Plaintext size and SHA-256 from corpus/etlt/MANIFEST.tsv.
    assert decoded.stat().st_size == 588657
    assert hashlib.sha256(decoded.read_bytes()).hexdigest() == \
        "d7bbc77902082dce03456c588f29c70d9b4736afee8def4f59c8034d6f8dc44d"
    line = [ln.strip() for ln in res.output.splitlines() if ln.strip().startswith("trtexec ")][0]
    args = shlex.split(line)
    assert args[1:3] == ["--onnx=engines/heartrate.onnx", "--saveEngine=engines/heartrate.engine"]
    assert "--minShapes='motion_input:0':1x3x72x72,'appearance_input:0':1x3x72x72" in args
    assert "--maxShapes='motion_input:0':4x3x72x72,'appearance_input:0':4x3x72x72" in args


def test_etlt_uff_payload_prints_a_tensorrt_8_command(corpus_dir, tmp_path, no_tensorrt, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = corpus_dir / "etlt" / FACEMASK
    cache = corpus_dir / "etlt" / "03_ppi-ai__edgepipes__calibration.bin"
    res = CliRunner().invoke(cli, ["detectnet_v2", "converter", str(source), "-k", "tlt_encode", "-d", "3,544,960",
                                   "-o", "output_cov/Sigmoid,output_bbox/BiasAdd", "-t", "int8", "-c", str(cache),
                                   "-m", "1", "-b", "1", "-e", "facemask.engine"])
    # TensorRT 10 has no UFF parser: installing it would not help, so this is no missing dependency (3).
    assert res.exit_code == 2, res.output
    assert "TensorRT >= 10" not in res.output and "install" not in res.output.lower()
    assert "TensorRT 8.x" in res.output and "tltk detectnet_v2 export" in res.output
    assert (f"trtexec --uff=facemask.uff --uffInput=input_1,3,544,960 --output=output_cov/Sigmoid,output_bbox/BiasAdd "
            f"--maxBatch=1 --saveEngine=facemask.engine --memPoolSize=workspace:1024 --fp16 --int8 --calib={cache}"
            ) in res.output
    assert (tmp_path / "facemask.uff").stat().st_size == 1213693
    missing_dims = CliRunner().invoke(cli, ["detectnet_v2", "converter", str(source), "-k", "tlt_encode",
                                            "-o", "output_cov/Sigmoid"])
    assert missing_dims.exit_code == 2 and "-d: a UFF model needs the input dimensions" in missing_dims.output


def test_etlt_key_errors(corpus_dir, tmp_path, no_tensorrt, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TLTK_KEY", raising=False)
    source = str(corpus_dir / "etlt" / HEARTRATE)
    res = CliRunner().invoke(cli, ["detectnet_v2", "converter", source])
    assert res.exit_code == 2 and "-k:" in res.output
    res = CliRunner().invoke(cli, ["detectnet_v2", "converter", source, "-k", "tlt_encode"])
    assert res.exit_code == 2 and "the key does not open this file" in res.output


def test_builds_the_engine_where_tensorrt_is_present(tmp_path, monkeypatch):
    """With TensorRT (here the recording stand-in) the converter builds and writes the engine."""
    monkeypatch.chdir(tmp_path)
    module = fake.make_module()
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    monkeypatch.setattr(availability, "cuda_device_count", lambda: 1)
    make_detectnet_onnx(tmp_path / "model.onnx")
    res = CliRunner().invoke(cli, ["mask_rcnn", "converter", "model.onnx", "-t", "fp16", "-e", "m.engine",
                                   "-m", "2", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert (tmp_path / "m.engine").read_bytes() == b"FAKE-PLAN:FP16"
    assert doc["engine_bytes"] == len(b"FAKE-PLAN:FP16")
    assert doc["profiles"] == ["input_1,1x3x16x32,2x3x16x32,2x3x16x32"]
    assert doc["tensorrt_version"] == "10.3.0.26"
    assert doc["trtexec_equivalent"].startswith("trtexec --onnx=model.onnx --saveEngine=m.engine")
    assert fake.last_config().profiles[0].shapes["input_1"][2] == (2, 3, 16, 32)
