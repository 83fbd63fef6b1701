"""MaskRCNN rules and typed accessors (tltk/mask_rcnn/spec.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tltk.mask_rcnn import spec as mr
from tltk.models import check_spec, load_spec, parse_spec_text
from tltk.spec import MaskRCNNExperiment


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
