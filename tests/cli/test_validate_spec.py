"""``tltk <model> validate_spec``: exit codes, JSON shape, flags."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from tltk.cli.app import cli


def _run(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_valid_spec_exit_0_and_json_shape(repo_root: Path) -> None:
    spec = repo_root / "specs" / "detectnet_v2" / "hybrid_inference.txt"
    result = _run("detectnet_v2", "validate_spec", "-e", str(spec), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(data) == {"kind", "valid", "errors", "warnings"}
    assert data["kind"] == "inference" and data["valid"] is True and data["errors"] == []
    assert all(isinstance(w, str) for w in data["warnings"])


def test_invalid_spec_exit_2_lists_every_error(tmp_path: Path) -> None:
    spec = tmp_path / "bad.txt"
    spec.write_text("training_config {\n  learning_rat { }\n  num_epochs: 0\n}\nmodel_confg { }\n")
    result = _run("detectnet_v2", "validate-spec", "--experiment_spec", str(spec), "--json")
    assert result.exit_code == 2
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert data["valid"] is False and data["kind"] == "experiment"
    assert len(data["errors"]) == 2
    assert data["errors"][0].startswith(f"{spec}:2:3:") and "did you mean 'learning_rate'" in data["errors"][0]
    assert data["errors"][1].startswith(f"{spec}:5:1:") and "did you mean 'model_config'" in data["errors"][1]


def test_human_output_and_check_paths(repo_root: Path) -> None:
    spec = repo_root / "specs" / "detectnet_v2" / "kitti_convert.txt"
    ok = _run("detectnet_v2", "validate_spec", "--spec", str(spec))
    assert ok.exit_code == 0 and "WARNING:" in ok.output and "valid detectnet_v2 dataset_convert spec" in ok.output
    strict = _run("detectnet_v2", "validate_spec", "-e", str(spec), "--check_paths")
    assert strict.exit_code == 2 and "ERROR:" in strict.output and "not found" in strict.output


def test_kind_and_set_options(repo_root: Path) -> None:
    spec = repo_root / "specs" / "detectnet_v2" / "nms_clustering_experiment.txt"
    wrong = _run("detectnet_v2", "validate_spec", "-e", str(spec), "--kind", "inference", "--json")
    assert wrong.exit_code == 2
    assert json.loads(wrong.stdout.strip().splitlines()[-1])["kind"] == "inference"
    bad_set = _run("detectnet_v2", "validate_spec", "-e", str(spec), "--set", "training_config.num_epochs=0")
    assert bad_set.exit_code == 2 and "--set training_config.num_epochs=0" in bad_set.output


def test_mask_rcnn_and_missing_file(repo_root: Path, tmp_path: Path) -> None:
    spec = repo_root / "specs" / "mask_rcnn" / "default_train.txt"
    assert _run("mask_rcnn", "validate_spec", "-e", str(spec)).exit_code == 0
    missing = _run("mask_rcnn", "validate_spec", "-e", str(tmp_path / "none.txt"), "--json")
    assert missing.exit_code == 2
    assert json.loads(missing.stdout.strip().splitlines()[-1]) == {
        "kind": None, "valid": False, "errors": [f"{tmp_path / 'none.txt'}: file not found"], "warnings": []}
