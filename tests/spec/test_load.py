"""load_spec / check_spec: defaults, zero-means-default, paths, unreadable files, specs/."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tltk.errors import SpecError
from tltk.models import MODELS, check_spec, load_spec, spec_catalog
from tltk.spec import resolve_spec_path, spec_files
from tltk.spec.kinds import detect_kind
from tltk.spec.textformat import parse_tree

INFER = """inferencer_config {
  target_classes: "car"
  image_width: 320
  image_height: 192
  tlt_config { model: "models/m.tlt" }
}
bbox_handler_config {
  classwise_bbox_handler_config {
    key: "default"
    value { clustering_config { dbscan_eps: 0.3 nms_iou_threshold: 0 } }
  }
}
"""


def test_defaults_and_zero_means_default(tmp_path: Path) -> None:
    path = tmp_path / "infer.txt"
    path.write_text(INFER.replace("image_height: 192", "image_height: 192\n  stride: 0"))
    loaded = load_spec(path, model="detectnet_v2")
    ic = loaded.message.inferencer_config
    assert loaded.kind == "inference"
    assert (ic.batch_size, ic.image_channels, ic.stride) == (1, 3, 16)  # documented defaults, 0 -> 16
    assert not ic.HasField("stride")
    cfg = loaded.message.bbox_handler_config.classwise_bbox_handler_config["default"]
    assert cfg.confidence_model == "aggregate_cov"
    assert cfg.clustering_config.nms_iou_threshold == pytest.approx(0.3)  # explicit 0 -> TAO's 0.3
    assert cfg.clustering_config.dbscan_min_samples == pytest.approx(0.05)


def test_missing_paths_warn_and_check_paths_makes_them_errors(tmp_path: Path) -> None:
    path = tmp_path / "infer.txt"
    path.write_text(INFER)
    report = check_spec(path, model="detectnet_v2")
    assert report.valid
    (warning,) = [w for w in report.warnings if "models/m.tlt" in w]
    assert warning.startswith(f"{path}:5:") and "inferencer_config.tlt_config.model" in warning
    strict = check_spec(path, model="detectnet_v2", check_paths=True)
    assert not strict.valid and any("file 'models/m.tlt' not found" in e for e in strict.errors)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m.tlt").write_bytes(b"x")
    assert check_spec(path, model="detectnet_v2", check_paths=True).valid


def test_resolve_spec_path_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec_dir, cwd, base = tmp_path / "specs", tmp_path / "cwd", tmp_path / "base"
    for d in (spec_dir, cwd, base):
        d.mkdir()
    path = spec_dir / "infer.txt"
    path.write_text(INFER)
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("DATA_BASE_PATH", str(base))
    loaded = load_spec(path, model="detectnet_v2")
    assert resolve_spec_path(loaded, "/abs/x") == "/abs/x"
    assert resolve_spec_path(loaded, "") == ""
    assert resolve_spec_path(loaded, "a.txt") == str(cwd / "a.txt")  # exists nowhere: relative to CWD
    (base / "a.txt").write_text("")
    assert resolve_spec_path(loaded, "a.txt") == str(base / "a.txt")
    (cwd / "a.txt").write_text("")
    assert resolve_spec_path(loaded, "a.txt") == str(cwd / "a.txt")
    (spec_dir / "a.txt").write_text("")
    assert resolve_spec_path(loaded, "a.txt") == str(spec_dir / "a.txt")
    (spec_dir / "shards").mkdir()
    (spec_dir / "shards" / "t-0").write_text("")
    assert resolve_spec_path(loaded, "shards/t-*") == str(spec_dir / "shards" / "t-*")
    monkeypatch.setenv("MY_ROOT", str(base))
    assert resolve_spec_path(loaded, "$MY_ROOT/a.txt") == str(base / "a.txt")


def test_unreadable_files(tmp_path: Path) -> None:
    missing = check_spec(tmp_path / "nope.txt", model="detectnet_v2")
    assert missing.kind is None and missing.errors == [f"{tmp_path / 'nope.txt'}: file not found"]
    binary = tmp_path / "model.tlt"
    binary.write_bytes(b"PK\x03\x04\x00\x00")
    assert "binary file" in check_spec(binary, model="detectnet_v2").errors[0]
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b'dataset_config { image_extension: "p\xe9ng" }')
    assert "not UTF-8" in check_spec(latin, model="detectnet_v2").errors[0]
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path / "nope.txt", model="detectnet_v2")
    assert "file not found" in str(info.value)


def test_usage_errors_for_unknown_model_or_kind(tmp_path: Path) -> None:
    path = tmp_path / "infer.txt"
    path.write_text(INFER)
    with pytest.raises(SpecError, match="mask_rcnn has no inference spec"):
        check_spec(path, model="mask_rcnn", kind="inference")
    with pytest.raises(SpecError, match="unknown model"):
        check_spec(path, model="yolo")


def test_load_spec_error_lists_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(INFER.replace('target_classes: "car"', 'target_classes: "car"\n  image_channels: 2')
                    .replace("dbscan_eps: 0.3", "dbscan_eps: 1.5 coverage_threshold: 2"))
    with pytest.raises(SpecError) as info:
        load_spec(path, model="detectnet_v2")
    errors = [p for p in info.value.problems if not p.startswith("warning:")]
    assert len(errors) == 3
    assert any(":3:3: inferencer_config.image_channels: 2 is invalid: must be one of 1, 3" in e for e in errors)
    assert any('classwise_bbox_handler_config["default"].clustering_config.dbscan_eps: 1.5 is invalid' in e
               for e in errors)


def _all_specs(repo_root: Path) -> list[Path]:
    return spec_files(repo_root / "specs")


def test_every_spec_under_specs_is_valid(repo_root: Path) -> None:
    files = _all_specs(repo_root)
    assert len(files) >= 8
    for path in files:
        model = path.relative_to(repo_root / "specs").parts[0]
        assert model in MODELS, path
        nodes, _ = parse_tree(path.read_text(encoding="utf-8"))
        detection = detect_kind(spec_catalog(), model, nodes)
        assert detection.confident, path
        report = check_spec(path, model=model)
        assert report.valid, f"{path}:\n" + "\n".join(report.errors)


def test_specs_parse_from_any_working_directory(repo_root: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    src = repo_root / "specs" / "detectnet_v2" / "kitti_convert.txt"
    shutil.copy(src, tmp_path / "convert.txt")
    for sub in ("data/kitti/image_2", "data/kitti/label_2"):
        (tmp_path / sub).mkdir(parents=True)
    monkeypatch.chdir(os.sep)
    assert check_spec(tmp_path / "convert.txt", model="detectnet_v2", check_paths=True).valid
