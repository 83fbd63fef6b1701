"""The tolerant text-format reader: dialects, positions, did-you-mean, all problems at once."""

from __future__ import annotations

import pytest

from tltk.errors import SpecError
from tltk.models import parse_spec_text
from tltk.spec import DetectNetInference, MaskRCNNExperiment
from tltk.spec.schemas import DetectNetExperiment
from tltk.spec.textformat import parse_tree, prescan, walk


def _problems(text: str, cls=DetectNetExperiment) -> list[str]:
    norm, problems = prescan(text)
    nodes, syntax = parse_tree(norm)
    res = walk(nodes, cls.DESCRIPTOR)
    return [p.format("spec.txt") for p in problems + syntax + res.problems]


def test_all_dialects_parse_to_the_same_message() -> None:
    canonical = parse_spec_text(
        'inferencer_config { target_classes: "car" target_classes: "person" image_width: 640 '
        'image_height: 384 batch_size: 2 tlt_config { model: "m.tlt" } }\n'
        'bbox_handler_config { kitti_dump: true disable_overlay: false '
        'classwise_bbox_handler_config { key: "car" value { clustering_config { dbscan_eps: 0.3 '
        'dbscan_min_samples: 0.05 } } } }\n', DetectNetInference)
    dialect = ("# leading comment\r\n"
               "inferencer_config: {\r\n"
               "\ttarget_classes: ['car', \"person\"]\r\n"
               "  image_width:640; image_height: 0x180 ,\r\n"
               "  batch_size: 2\r\n"
               "  tlt_config < model: 'm' \".tlt\" >\r\n"
               "}\r\n"
               "bbox_handler_config{ kitti_dump: True disable_overlay: f\n"
               "  classwise_bbox_handler_config: { key:'car' value: { clustering_config { dbscan_eps: 3e-1\n"
               "     dbscan_min_samples: .05 } } } }")
    assert parse_spec_text(dialect, DetectNetInference) == canonical


def test_unknown_field_has_position_and_did_you_mean() -> None:
    text = "training_config {\n  learning_rat {\n  }\n}\n"
    (problem,) = _problems(text)
    assert problem.startswith("spec.txt:2:3: training_config: unknown field 'learning_rat' in TrainingConfig")
    assert "did you mean 'learning_rate'?" in problem


def test_field_in_the_wrong_block_says_where_it_belongs() -> None:
    (problem,) = _problems("image_extension: \"png\"\n")
    assert "spec.txt:1:1" in problem and "dataset_config.image_extension" in problem


def test_every_problem_is_reported_at_once() -> None:
    text = ("random_sed: 1\n"                         # unknown, line 1
            "model_config { num_layers: 1.5 }\n"       # int expected, line 2
            "evaluation_config { average_precision_mode: INTEGRAL }\n"   # bad enum, line 3
            "training_config { batch_size_per_gpu: -4 }\n"               # negative uint, line 4
            "dataset_config { validation_fold: 0 validation_data_source { } }\n")  # oneof, line 5
    problems = _problems(text)
    assert len(problems) == 5
    assert problems[0].startswith("spec.txt:1:1:") and "did you mean 'random_seed'" in problems[0]
    assert problems[1].startswith("spec.txt:2:28: model_config.num_layers: expects an integer")
    assert "did you mean INTEGRATE?" in problems[2] and problems[2].startswith("spec.txt:3:")
    assert "non-negative" in problems[3]
    assert "oneof dataset_split_type" in problems[4]


def test_syntax_error_position_and_earlier_problems_kept() -> None:
    problems = _problems("random_sed: 1\nmodel_config {\n  arch: \"resnet\"\n")
    assert any("unknown field 'random_sed'" in p for p in problems)
    assert any(p.startswith("spec.txt:4:1:") and "missing '}'" in p and "line 2, column 14" in p
               for p in problems)


def test_typographic_quotes_and_tabs_warn_but_parse() -> None:
    text = "dataset_config {\n\timage_extension: \u201cpng\u201d\n}\n"
    norm, warnings = prescan(text)
    assert 'image_extension: "png"' in norm
    messages = [w.format("s") for w in warnings]
    assert any("s:2:1" in m and "tab" in m for m in messages)
    assert any("s:2:19" in m and "U+201C" in m for m in messages)
    assert any("s:2:23" in m and "U+201D" in m for m in messages)
    spec = parse_spec_text(text, DetectNetExperiment)
    assert spec.dataset_config.image_extension == "png"


def test_curly_quote_inside_straight_string_is_data_with_warning() -> None:
    norm, warnings = prescan('name: "it\u2019s"\n')
    assert norm == 'name: "it\u2019s"\n'
    assert len(warnings) == 1 and "inside a string" in warnings[0].message


def test_duplicates_warn_and_last_value_wins() -> None:
    text = 'dataset_config { target_class_mapping { key: "car" value: "car" }\n' \
           '  target_class_mapping { key: "car" value: "truck" } image_extension: "png"\n' \
           '  image_extension: "jpg" }\n'
    problems = _problems(text)
    assert len(problems) == 2 and all("first at line" in p or "appears again" in p for p in problems)
    spec = parse_spec_text(text, DetectNetExperiment)
    assert spec.dataset_config.target_class_mapping["car"] == "truck"
    assert spec.dataset_config.image_extension == "jpg"


def test_scalar_written_as_block_and_block_as_scalar() -> None:
    problems = _problems('model_config: "resnet"\ntraining_config { num_epochs { } }\n')
    assert "model_config: is a ModelConfig block" in problems[0]
    assert "training_config.num_epochs: is a uint32, not a block" in problems[1]


def test_float_accepted_for_dbscan_min_samples_and_trailing_dot_floats() -> None:
    spec = parse_spec_text('maskrcnn_config { rpn_min_size: 0. bbox_reg_weights: "(10., 10., 5., 5.)" }',
                           MaskRCNNExperiment)
    assert spec.maskrcnn_config.rpn_min_size == 0.0
    inf = parse_spec_text('bbox_handler_config { classwise_bbox_handler_config { key: "a" value { '
                          'clustering_config { dbscan_min_samples: 0.05 } } } }', DetectNetInference)
    value = inf.bbox_handler_config.classwise_bbox_handler_config["a"].clustering_config.dbscan_min_samples
    assert value == pytest.approx(0.05)


def test_parse_spec_text_raises_spec_error_with_every_problem() -> None:
    with pytest.raises(SpecError) as info:
        parse_spec_text("foo: 1\nbar: 2\n", DetectNetInference, "mem.txt")
    assert len(info.value.problems) == 2
    assert info.value.problems[0].startswith("mem.txt:1:1:")
    assert info.value.problems[1].startswith("mem.txt:2:1:")
