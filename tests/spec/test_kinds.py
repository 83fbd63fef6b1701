"""Recognising the spec kind from a file's fields."""

from __future__ import annotations

from pathlib import Path

import pytest

from tltk.models import check_spec, spec_catalog
from tltk.spec import detect_kind
from tltk.spec.textformat import parse_tree


@pytest.mark.parametrize(("text", "model", "kind"), [
    ("training_config { num_epochs: 1 }\nmodel_config { }\n", "detectnet_v2", "experiment"),
    ("inferencer_config { }\nbbox_handler_config { }\n", "detectnet_v2", "inference"),
    ('kitti_config { root_directory_path: "d" }\nimage_directory_path: "d"\n', "detectnet_v2", "dataset_convert"),
    ('coco_config { img_dir_names: ["a"] }\n', "detectnet_v2", "dataset_convert"),
    ("data_config { }\nmaskrcnn_config { }\nseed: 1\n", "mask_rcnn", "experiment"),
])
def test_kind_from_top_level_fields(text: str, model: str, kind: str) -> None:
    nodes, _ = parse_tree(text)
    detection = detect_kind(spec_catalog(), model, nodes, text)
    assert detection.kind == kind and detection.confident and detection.foreign is None


def test_other_model_spec_is_named(tmp_path: Path) -> None:
    path = tmp_path / "m.txt"
    path.write_text("seed: 1\ntrain_batch_size: 2\ndata_config { num_classes: 2 }\nmaskrcnn_config { }\n")
    report = check_spec(path, model="detectnet_v2")
    assert not report.valid
    assert "looks like a MaskRCNN experiment spec" in report.errors[0]
    assert "tltk mask_rcnn validate_spec" in report.errors[0]


def test_deepstream_ini_is_named(tmp_path: Path) -> None:
    path = tmp_path / "ds.txt"
    path.write_text("[property]\ngpu-id=0\nnet-scale-factor=0.0039\n")
    report = check_spec(path, model="detectnet_v2")
    assert not report.valid and "DeepStream nvinfer/app config (INI format)" in report.errors[0]


def test_explicit_kind_that_does_not_fit_is_explained(repo_root: Path) -> None:
    path = repo_root / "specs" / "detectnet_v2" / "hybrid_inference.txt"
    report = check_spec(path, model="detectnet_v2", kind="experiment")
    assert report.kind == "experiment" and not report.valid
    assert "looks like a DetectNet_v2 inference spec (--kind inference)" in report.errors[0]
