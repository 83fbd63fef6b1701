"""Export cleans up after a failure and keeps TensorFlow's native log off the console; messages that
used to be wrong (validate_spec, evaluate -f tensorrt)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import pytest
from click.testing import CliRunner

from tltk.cli.app import cli
from tltk.export.subtask import ExportOptions


def _no_tensorrt() -> None:
    from tltk.tensorrt.availability import status

    if status().problem is None:
        pytest.skip("TensorRT is installed here; this checks the machines without it")


def test_a_failed_export_removes_what_it_wrote_so_the_rerun_needs_no_force(detectnet_v2_toy, tmp_path) -> None:
    _no_tensorrt()
    out = tmp_path / "export"
    base = ["detectnet_v2", "export", "-m", str(detectnet_v2_toy["tlt"]), "-o", str(out / "model.onnx"),
            "--data_type", "int8", "--cal_image_dir", str(detectnet_v2_toy["images"]), "--batches", "1",
            "--gen_ds_config"]
    failed = CliRunner().invoke(cli, [*base, "--engine_file", str(out / "model.engine"), "--json"])
    assert failed.exit_code == 3, failed.output  # the engine needs TensorRT: after ONNX, cache and Q/DQ were written
    assert json.loads(failed.stdout)["ok"] is False
    assert sorted(os.listdir(out)) == []
    again = CliRunner().invoke(cli, [*base, "--json"])
    assert again.exit_code == 0, again.output
    report = json.loads(again.stdout)
    assert sorted(os.listdir(out)) == ["cal.bin", "labels.txt", "model.onnx", "model_int8_cpu.onnx",
                                       "model_int8_qdq.onnx", "nvinfer_config.txt", "nvinfer_config.yml"]
    assert report["calibration"]["images"] == 8 and report["calibration"]["batches"] == 1


def test_export_calibration_batch_size_defaults_to_taos_8() -> None:
    assert ExportOptions(model="m.tlt").batch_size == 8
    command = cli.commands["detectnet_v2"].get_command(None, "export")
    assert next(p for p in command.params if p.name == "batch_size").default == 8


def test_export_keeps_tensorflows_native_log_off_the_console(detectnet_v2_toy, tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    args = [sys.executable, "-m", "tltk", "detectnet_v2", "export", "-m", str(detectnet_v2_toy["tlt"]),
            "-o", str(tmp_path / "m.onnx"), "--log_file", str(tmp_path / "log.txt")]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "single_machine.cc" not in proc.stderr and "absl::InitializeLog" not in proc.stderr, proc.stderr
    assert "INFO: wrote" in proc.stderr and "tltk detectnet_v2 export: OK" in proc.stderr
    assert "TensorFlow native log" in (tmp_path / "log.txt").read_text()


def test_evaluate_with_tensorrt_prints_a_command_naming_files_that_exist(detectnet_v2_toy, tmp_path) -> None:
    _no_tensorrt()
    model = detectnet_v2_toy["onnx"]
    res = CliRunner().invoke(cli, ["detectnet_v2", "evaluate", "-e", str(detectnet_v2_toy["experiment"]), "-m",
                                   str(model), "-f", "tensorrt", "-r", str(tmp_path / "r")])
    assert res.exit_code == 3, res.output
    line = next(ln.strip() for ln in res.output.splitlines() if ln.strip().startswith("trtexec "))
    args = shlex.split(line)
    assert f"--onnx={model}" in args and f"--saveEngine={model.with_suffix('.engine')}" in args
    assert "tltk-engine-" not in res.output


def test_validate_spec_says_what_tltk_and_tao_do_with_class_case_and_late_validation(detectnet_v2_toy,
                                                                                   tmp_path) -> None:
    text = (detectnet_v2_toy["experiment"].read_text()
            .replace('target_class_mapping { key: "car" value: "car" }', 'target_class_mapping { key: "Car" value: "car" }')
            .replace("first_validation_epoch: 1", "first_validation_epoch: 5"))
    spec = tmp_path / "spec.txt"
    spec.write_text(text)
    res = CliRunner().invoke(cli, ["detectnet_v2", "validate_spec", "-e", str(spec), "--json"])
    assert res.exit_code == 0, res.output
    warnings = "\n".join(json.loads(res.stdout)["warnings"])
    assert "never matches" not in warnings and "no validation runs" not in warnings
    assert "tltk matches 'Car' to 'car' (it ignores case), TAO compares exactly" in warnings
    assert "is after the last epoch (1); validation runs once, after the last epoch" in warnings


def test_calibration_images_take_the_models_input_size_not_the_specs(detectnet_v2_toy, tmp_path) -> None:
    spec = tmp_path / "spec.txt"  # the same experiment, but the spec names another network size
    spec.write_text(detectnet_v2_toy["experiment"].read_text().replace("output_image_width: 64", "output_image_width: 96"))
    res = CliRunner().invoke(cli, ["detectnet_v2", "export", "-m", str(detectnet_v2_toy["tlt"]), "-o",
                                   str(tmp_path / "m.onnx"), "-e", str(spec), "--data_type", "int8", "--cal_image_dir",
                                   str(detectnet_v2_toy["images"]), "--batches", "1", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["calibration"]["images"] == 8


def test_deepstream_infer_dims_are_the_exported_models(detectnet_v2_toy, tmp_path) -> None:
    import configparser

    spec = tmp_path / "spec.txt"
    spec.write_text(detectnet_v2_toy["experiment"].read_text().replace("output_image_width: 64", "output_image_width: 96"))
    res = CliRunner().invoke(cli, ["detectnet_v2", "export", "-m", str(detectnet_v2_toy["tlt"]), "-o",
                                   str(tmp_path / "m.onnx"), "-e", str(spec), "--gen_ds_config"])
    assert res.exit_code == 0, res.output
    ini = configparser.ConfigParser()
    ini.read(tmp_path / "nvinfer_config.txt")
    assert ini["property"]["infer-dims"] == "3;64;64"
