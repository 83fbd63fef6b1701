"""The --json and exit-code contract for usage errors; TAO's spellings; fast failure on a wrong -m."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from tltk.cli.app import cli


def _failure(res, code: int = 2) -> dict:
    assert res.exit_code == code, res.output
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1, res.stdout  # one JSON document, nothing else on stdout
    doc = json.loads(lines[0])
    assert doc["ok"] is False and doc["exit_code"] == code
    summary = [line for line in res.stderr.splitlines() if f": FAILED (exit {code}) in " in line]
    assert len(summary) == 1 and summary[0].startswith("tltk"), res.stderr
    return doc


@pytest.mark.parametrize("args,fragment", [
    (["detectnet_v2", "trian", "--json"], "No such command 'trian'. Did you mean 'train'?"),
    (["detectnet_v2", "train", "-e", "x.txt", "--no_such_flag", "--json"], "No such option '--no_such_flag'"),
    (["detectnet_v2", "export", "-m", ".", "--json"], "is a directory"),
    (["detectnet_v2", "evaluate", "-e", "x.txt", "-m", ".", "--json"], "is a directory"),
    (["dataset", "synthesize", "--format", "voc", "-o", "x", "--json"], "'voc' is not one of"),
])
def test_usage_errors_print_one_json_document_and_the_summary(args, fragment) -> None:
    doc = _failure(CliRunner().invoke(cli, args))
    assert fragment in doc["error"]


def test_runtime_errors_carry_ok_false_too(tmp_path) -> None:
    doc = _failure(CliRunner().invoke(cli, ["detectnet_v2", "train", "-e", str(tmp_path / "none.txt"), "--json"]))
    assert "none.txt" in doc["error"]


def test_unknown_subtask_without_json_keeps_clicks_message() -> None:
    res = CliRunner().invoke(cli, ["detectnet_v2", "evalute"])
    assert res.exit_code == 2 and res.stdout == ""
    assert "Did you mean 'evaluate'?" in res.stderr and "tltk detectnet_v2: FAILED (exit 2)" in res.stderr


def test_tao_spellings_are_accepted() -> None:
    runner = CliRunner()
    for group, command, flags in [("detectnet_v2", "export", ["--enc_key", "--min_batch_size", "--opt_batch_size",
                                                              "--onnx_route", "--results_dir"]),
                                  ("detectnet_v2", "evaluate", ["--model_path", "-b", "--image_dir", "--label_dir"]),
                                  ("detectnet_v2", "inference", ["-m", "--model_path", "-b", "--enc_key"]),
                                  ("detectnet_v2", "prune", ["--results_dir", "--enc_key"]),
                                  ("detectnet_v2", "train", ["-np", "--num_processes", "--enc_key"]),
                                  ("detectnet_v2", "converter", ["--enc_key"])]:
        cmd = cli.commands[group].get_command(None, command)
        known = {opt for p in cmd.params for opt in getattr(p, "opts", [])}
        assert set(flags) <= known, (command, set(flags) - known)
    res = runner.invoke(cli, ["model", "inspect", "nothing.tlt", "--enc_key", "k", "--json"])
    assert "No such option" not in res.output and json.loads(res.stdout)["exit_code"] == 2


def _tiny_onnx() -> bytes:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])])
    return helper.make_model(graph, producer_name="tf2onnx").SerializeToString() if onnx else b""


@pytest.mark.parametrize("command,name,content,fragment", [
    ("export", "model.onnx", "onnx", "an ONNX model; this command needs the trained model"),
    ("prune", "model.onnx", "onnx", "an ONNX model; this command needs the trained model"),
    ("prune", "model.tlt", b"", "the file is empty"),
    ("export", "model.tlt", b"PK\x03\x04 damaged", "damaged or truncated"),
    ("evaluate", "model.onnx", b"\x00not onnx", "named .onnx but it is not an ONNX model"),
])
def test_a_wrong_model_file_fails_before_tensorflow_is_imported(tmp_path, command, name, content, fragment) -> None:
    model = tmp_path / name
    model.write_bytes(_tiny_onnx() if content == "onnx" else content)
    spec = tmp_path / "spec.txt"
    spec.write_text("random_seed: 1\n")
    extra = {"prune": ["-o", str(tmp_path / "out.tlt")], "evaluate": ["-e", str(spec)]}.get(command, [])
    code = ("import json, sys, time\n"
            "from tltk.cli.app import main\n"
            "t = time.monotonic()\n"
            "try:\n"
            f"    main({['detectnet_v2', command, '-m', str(model), *extra]!r})\n"
            "except SystemExit as e:\n"
            "    print(json.dumps({'code': e.code, 'tf': 'tensorflow' in sys.modules, 's': time.monotonic() - t}),"
            " file=sys.stderr)\n")
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    result = json.loads(proc.stderr.strip().splitlines()[-1])
    assert result["code"] == 2 and result["tf"] is False, proc.stderr
    assert result["s"] < 1.0 and time.monotonic() - started < 30
    assert fragment in proc.stderr
