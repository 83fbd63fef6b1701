"""The CLI framework: lazy imports, aliases, flag spellings, exit codes, JSON mode."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from tltk.cli.app import GROUPS, cli
from tltk.cli.common import CommandResult, tltk_command
from tltk.errors import MissingDependencyError, SpecError, WrongKeyError


def _run_help_in_fresh_interpreter(argv: list[str]) -> tuple[int, str, list[str]]:
    code = (
        "import sys\n"
        "from tltk.cli.app import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit as e:\n"
        "    rc = e.code or 0\n"
        "heavy = sorted(m for m in ('tensorflow', 'keras', 'onnxruntime', 'tf2onnx', 'sklearn', 'matplotlib')"
        " if m in sys.modules)\n"
        "print('HEAVY=' + ','.join(heavy))\n"
        "sys.exit(rc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    heavy_line = [ln for ln in proc.stdout.splitlines() if ln.startswith("HEAVY=")]
    heavy = heavy_line[-1][len("HEAVY="):].split(",") if heavy_line and heavy_line[-1] != "HEAVY=" else []
    return proc.returncode, proc.stdout, heavy


def test_root_help_lists_models_and_imports_nothing_heavy():
    rc, out, heavy = _run_help_in_fresh_interpreter(["--help"])
    assert rc == 0
    for group in GROUPS:
        assert group in out
    assert heavy == []


def test_every_group_and_subtask_help_imports_nothing_heavy():
    argvs = []
    for group, (_, table) in GROUPS.items():
        argvs.append([group, "--help"])
        argvs.extend([group, sub, "--help"] for sub in table)
    # One interpreter per call keeps the check honest (no module cached from a previous call).
    for argv in argvs:
        rc, out, heavy = _run_help_in_fresh_interpreter(argv)
        assert rc == 0, (argv, out)
        assert heavy == [], (argv, heavy)


def test_group_and_subtask_names_accept_dashes():
    runner = CliRunner()
    res_us = runner.invoke(cli, ["detectnet_v2", "validate_spec", "--help"])
    res_dash = runner.invoke(cli, ["detectnet-v2", "validate-spec", "--help"])
    assert res_us.exit_code == 0 and res_dash.exit_code == 0
    assert res_us.output == res_dash.output


# ---- a throw-away command exercising the error boundary ----------------------------------------

@tltk_command("probe", help="Test command.")
@click.option("-e", "--experiment_spec_file", "spec", default=None)
@click.option("--raise_kind", default="none")
def _probe(spec: str | None, raise_kind: str) -> CommandResult:
    errors = {
        "spec": SpecError("spec is invalid", ["a.txt:3:5: training_config.num_epochs: must be > 0"]),
        "key": WrongKeyError("the key does not open model.tlt"),
        "dep": MissingDependencyError("TensorRT is not installed", hint="run: trtexec --onnx=m.onnx"),
        "interrupt": KeyboardInterrupt(),
        "bug": RuntimeError("boom"),
    }
    if raise_kind in errors:
        raise errors[raise_kind]
    if raise_kind == "verdict":
        return CommandResult("invalid", {"valid": False}, exit_code=2)
    return CommandResult(f"spec={spec}", {"spec": spec, "value": 1.5})


@pytest.mark.parametrize(
    "kind,code,fragment",
    [("none", 0, "OK"), ("spec", 2, "num_epochs"), ("key", 2, "key does not open"),
     ("dep", 3, "trtexec"), ("interrupt", 130, "interrupted"), ("bug", 1, "RuntimeError: boom"),
     ("verdict", 2, "FAILED (exit 2)")],
)
def test_exit_codes(kind, code, fragment):
    runner = CliRunner()
    res = runner.invoke(_probe, ["--raise_kind", kind])
    assert res.exit_code == code
    assert fragment in res.output


def test_snake_and_kebab_flags_are_equivalent_and_json_is_the_only_stdout():
    runner = CliRunner()
    a = runner.invoke(_probe, ["--experiment_spec_file", "x.txt", "--json"])
    b = runner.invoke(_probe, ["--experiment-spec-file=x.txt", "--json"])
    assert a.exit_code == b.exit_code == 0
    assert json.loads(a.stdout) == json.loads(b.stdout) == {"spec": "x.txt", "value": 1.5}
    assert "tltk probe: OK" in a.stderr


def test_json_error_document():
    res = CliRunner().invoke(_probe, ["--raise_kind", "spec", "--json"])
    assert res.exit_code == 2
    doc = json.loads(res.stdout)
    assert doc["exit_code"] == 2 and "spec is invalid" in doc["error"]


def test_log_file_receives_records(tmp_path):
    log = tmp_path / "logs" / "run.log"

    @tltk_command("logger", help="Logs one line.")
    def _logger() -> CommandResult:
        import logging

        logging.getLogger("tltk.test").info("hello from the probe")
        return CommandResult("done")

    res = CliRunner().invoke(_logger, ["--log_file", str(log)])
    assert res.exit_code == 0
    assert "hello from the probe" in log.read_text()


def test_unknown_subtask_is_a_usage_error():
    res = CliRunner().invoke(cli, ["detectnet_v2", "trian"])
    assert res.exit_code == 2
    assert "No such command" in res.output


def test_cli_reference_is_current(repo_root):
    proc = subprocess.run([sys.executable, str(repo_root / "scripts" / "gen_cli_reference.py"), "--check"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_tensorflow_start_up_noise_is_captured_unless_verbose(tmp_path):
    code = ("import sys; from tltk import console; console.configure(verbose=sys.argv[1] == 'v', "
            "log_file=sys.argv[2]); import tensorflow as tf; print(int(tf.constant(2) + 1))")
    quiet = subprocess.run([sys.executable, "-c", code, "q", str(tmp_path / "q.log")], capture_output=True,
                           text=True, timeout=300)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.strip() == "3"
    assert "cuDNN factory" not in quiet.stderr and "absl::InitializeLog" not in quiet.stderr
    loud = subprocess.run([sys.executable, "-c", code, "v", str(tmp_path / "v.log")], capture_output=True,
                          text=True, timeout=300)
    assert loud.returncode == 0 and loud.stdout.strip() == "3"
    # Whatever the quiet run hid went to the log file at DEBUG level instead of being lost.
    hidden = [line for line in loud.stderr.splitlines() if "cuda" in line.lower() or "absl" in line]
    if hidden:
        assert "TensorFlow start-up output" in (tmp_path / "q.log").read_text()
