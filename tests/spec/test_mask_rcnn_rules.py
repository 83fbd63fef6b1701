"""MaskRCNN rules and typed accessors (tltk/mask_rcnn/spec.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tltk.mask_rcnn import spec as mr
from tltk.models import check_spec, load_spec, parse_spec_text
from tltk.spec import MaskRCNNExperiment

from ..conftest import shared_dir


def test_accessors_on_the_default_spec(repo_root: Path) -> None:
    exp = load_spec(repo_root / "specs" / "mask_rcnn" / "default_train.txt", model="mask_rcnn").message
    assert mr.image_size(exp) == (832, 1344)
    assert mr.aspect_ratios(exp) == [(1.0, 1.0), (1.4, 0.7), (0.7, 1.4)]
    assert mr.bbox_reg_weights(exp) == (10.0, 10.0, 5.0, 5.0)
    assert mr.learning_rate_steps(exp) == [60000, 80000, 100000]
    assert mr.learning_rate_decay_levels(exp) == pytest.approx([0.1, 0.02, 0.002])
    assert mr.freeze_blocks(exp) == [0, 1]
    assert mr.total_steps(exp) == 120000


def test_documented_defaults_not_zeros() -> None:
    exp = parse_spec_text('data_config { num_classes: 2 }', MaskRCNNExperiment)
    assert mr.image_size(exp) == (832, 1344)
    assert exp.maskrcnn_config.rpn_positive_overlap == pytest.approx(0.7)
    assert exp.data_config.skip_crowd_during_training is True
    assert exp.momentum == pytest.approx(0.9)
    assert mr.freeze_blocks(exp) == [] and mr.learning_rate_steps(exp) == []


def test_total_steps_from_epochs() -> None:
    exp = parse_spec_text("num_epochs: 10 num_examples_per_epoch: 101 train_batch_size: 4", MaskRCNNExperiment)
    assert mr.total_steps(exp) == 253  # ceil(10 * 101 / 4)


def test_every_problem_reported(tmp_path: Path) -> None:
    path = tmp_path / "m.txt"
    path.write_text('learning_rate_steps: "[100, 50]"\n'
                    'learning_rate_decay_levels: "[0.1]"\n'
                    'num_epochs: 3\n'
                    'data_config { image_size: "(800, 1333)" num_classes: 1 }\n'
                    'maskrcnn_config {\n'
                    '  aspect_ratios: "[(1.0, 1.0), __import__(\'os\')]"\n'
                    '  freeze_blocks: "[0, 5]"\n'
                    '  mrcnn_resolution: 30\n'
                    '  bg_thresh_lo: 0.6\n'
                    '}\n')
    report = check_spec(path, model="mask_rcnn")
    errors = "\n".join(report.errors)
    assert "(800, 1333) must be divisible by 2^max_level = 64 (e.g. (832, 1344))" in errors
    assert "num_classes: 1 is invalid: must be > 1" in errors
    assert "only numbers, (tuples) and [lists] are allowed" in errors
    assert "block ids must be in 0..4; got [5]" in errors
    assert "mrcnn_resolution: 30 is invalid: must be > 0 and a multiple of 4" in errors
    assert "bg_thresh_lo: (0.6) is above bg_thresh_hi (0.5)" in errors
    assert "1 level(s) for 2 step boundary(ies)" in errors
    assert "[100, 50] must be non-negative and strictly increasing" in errors
    assert "num_examples_per_epoch: must be > 0 when num_epochs is set" in errors
    assert len(report.errors) == 9
    assert any(e.startswith(f"{path}:6:3: maskrcnn_config.aspect_ratios:") for e in report.errors)


def _coco(path: Path, category_ids: list[int]) -> None:
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png", "height": 8, "width": 8}], "annotations": [],
                                "categories": [{"id": i, "name": f"c{i}"} for i in category_ids]}))


def test_num_classes_must_leave_room_for_every_category_of_val_json_file(tmp_path: Path) -> None:
    _coco(tmp_path / "val.json", [1, 3, 7])  # three categories: num_classes 4 (with the background)
    path = tmp_path / "m.txt"
    path.write_text('data_config {\n  val_json_file: "val.json"\n  num_classes: 3\n}\nmaskrcnn_config { }\n')
    report = check_spec(path, model="mask_rcnn")
    assert len(report.errors) == 1
    assert report.errors[0].startswith(f"{path}:3:3: data_config.num_classes: ")
    assert "category id 7 ('c7') does not fit data_config.num_classes = 3" in report.errors[0]
    assert "set data_config.num_classes to 4" in report.errors[0]
    assert check_spec(path, model="mask_rcnn", overrides=["data_config.num_classes=4"]).valid
    assert check_spec(path, model="mask_rcnn", overrides=["data_config.num_classes=91"]).valid


def test_missing_paths_warn_and_are_errors_with_check_paths(tmp_path: Path) -> None:
    path = tmp_path / "m.txt"
    path.write_text('checkpoint: "pretrained/resnet50.hdf5"\n'
                    'data_config {\n'
                    '  training_file_pattern: "tfrecords/train*.tfrecord"\n'
                    '  validation_file_pattern: "tfrecords/val*.tfrecord"\n'
                    '  val_json_file: "annotations/val.json"\n'
                    '  num_classes: 2\n'
                    '}\n'
                    'maskrcnn_config { }\n')
    lenient = check_spec(path, model="mask_rcnn")
    assert lenient.valid and len(lenient.warnings) == 4
    strict = check_spec(path, model="mask_rcnn", check_paths=True)
    assert not strict.valid and len(strict.errors) == 4
    assert strict.errors[0] == (f"{path}:1:1: checkpoint: path 'pretrained/resnet50.hdf5' not found (looked next to "
                                "the spec, in the current folder)")
    assert any(e.startswith(f"{path}:3:3: data_config.training_file_pattern: no file matches") for e in strict.errors)
    (tmp_path / "tfrecords").mkdir()
    (tmp_path / "tfrecords" / "train-0.tfrecord").write_bytes(b"")
    assert len(check_spec(path, model="mask_rcnn", check_paths=True).errors) == 3


def test_more_rules_each_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "m.txt"
    path.write_text('skip_checkpoint_variables: "class-(predict"\n'
                    'eval_batch_size: 8\n'
                    'data_config { eval_samples: 4 num_classes: 2 }\n'
                    'maskrcnn_config { nlayers: 20 }\n')
    errors = check_spec(path, model="mask_rcnn").errors
    assert len(errors) == 3
    assert errors[0].startswith(f"{path}:1:1: skip_checkpoint_variables: 'class-(predict' is not a regular expression")
    assert errors[1] == f"{path}:3:15: data_config.eval_samples: 4 is fewer than eval_batch_size (8)"
    assert errors[2].startswith(f"{path}:4:19: maskrcnn_config.nlayers: 20 is invalid: must be one of 10, 18, 34, 50, 101")


def test_taos_sample_spec_validates_and_the_shipped_spec_has_its_values(repo_root: Path, tmp_path: Path) -> None:
    """The sample spec of TAO's MaskRCNN documentation (seed 000) is specs/mask_rcnn/default_train.txt."""
    base = shared_dir()
    seeds = sorted((base / "seeds").glob("000_*.txt")) if base else []
    if not seeds:
        pytest.skip("../shared/seeds is not available")
    text = seeds[0].read_text()
    start = text.index("seed: 123")
    end = text.index("mrcnn_weight_loss_mask: 1.0", start)
    sample = text[start:text.index("}", end) + 1]
    (tmp_path / "sample.txt").write_text(sample)
    report = check_spec(tmp_path / "sample.txt", model="mask_rcnn")
    assert report.valid, report.errors
    assert len(report.warnings) == 4  # the four /workspace paths do not exist here
    paths = ("checkpoint", "data_config.training_file_pattern", "data_config.validation_file_pattern",
             "data_config.val_json_file")
    seed_message = load_spec(tmp_path / "sample.txt", model="mask_rcnn").message
    shipped = load_spec(repo_root / "specs" / "mask_rcnn" / "default_train.txt", model="mask_rcnn").message
    for message in (seed_message, shipped):
        for field_path in paths:
            block, _, name = field_path.rpartition(".")
            message.ClearField(name) if not block else getattr(message, block).ClearField(name)
    assert shipped == seed_message


def test_use_amp_in_the_spec_points_to_the_flag(tmp_path: Path) -> None:
    path = tmp_path / "m.txt"
    path.write_text('use_amp: true\ndata_config { num_classes: 2 }\nmaskrcnn_config { }\n')
    report = check_spec(path, model="mask_rcnn")
    assert report.valid
    assert any(w.startswith(f"{path}:1:1: use_amp: is not read from the spec: pass --use_amp") for w in report.warnings)
