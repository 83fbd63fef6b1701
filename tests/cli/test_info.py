"""``tltk info``: versions, backends and subtasks as one JSON document."""

from __future__ import annotations

import json

from click.testing import CliRunner

from tltk.cli.app import cli
from tltk.models import MODELS
from tltk.tensorrt.availability import tensorrt_version


def test_info_json_reports_backends_and_every_subtask() -> None:
    result = CliRunner().invoke(cli, ["info", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["tensorflow"]["version"].startswith("2.")
    assert report["onnxruntime"]["version"]
    assert report["backends"]["keras (.tlt/.keras/.hdf5)"] is True
    assert report["backends"]["onnxruntime (.onnx/.etlt)"] is True
    # The type stubs installed for mypy make `import tensorrt` succeed; info must not call that TensorRT.
    assert report["tensorrt"]["version"] == tensorrt_version()
    assert report["backends"]["tensorrt (.engine/.plan/.trt)"] is (
        report["tensorrt"]["version"] is not None and report["tensorrt"]["pycuda"] is not None)
    assert sorted(report["subtasks"]["detectnet_v2"]) == sorted(MODELS["detectnet_v2"].COMMANDS)
