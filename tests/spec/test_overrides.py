"""``--set FIELD=VALUE`` overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from tltk.errors import SpecError
from tltk.models import check_spec, load_spec
from tltk.spec import DetectNetExperiment, DetectNetInference, apply_override
from tltk.spec.overrides import OverrideError


@pytest.fixture()
def nms_spec(repo_root: Path) -> Path:
    return repo_root / "specs" / "detectnet_v2" / "nms_clustering_experiment.txt"


def test_scalar_enum_bool_string_nested(nms_spec: Path) -> None:
    loaded = load_spec(nms_spec, model="detectnet_v2", overrides=[
        "training_config.num_epochs=5",
        "evaluation_config.average_precision_mode=SAMPLE",
        "training_config.enable_qat=yes",
        "dataset_config.image_extension='jpg'",
        "augmentation_config.spatial_augmentation.zoom_max=1.5",
        "training_config.regularizer.type=l2",
    ])
    msg = loaded.message
    assert msg.training_config.num_epochs == 5
    assert msg.evaluation_config.average_precision_mode == msg.evaluation_config.SAMPLE
    assert msg.training_config.enable_qat is True
    assert msg.dataset_config.image_extension == "jpg"
    assert msg.augmentation_config.spatial_augmentation.zoom_max == pytest.approx(1.5)
    assert msg.training_config.regularizer.type == msg.training_config.regularizer.L2


def test_repeated_and_map_entries() -> None:
    msg = DetectNetExperiment()
    msg.cost_function_config.target_classes.add(name="car")
    msg.cost_function_config.target_classes.add(name="person")
    assert apply_override(msg, "cost_function_config.target_classes[1].class_weight=2.5") == \
        "cost_function_config.target_classes[1].class_weight"
    assert msg.cost_function_config.target_classes[1].class_weight == 2.5
    assert apply_override(msg, 'dataset_config.target_class_mapping[van]=car') == \
        'dataset_config.target_class_mapping["van"]'
    apply_override(msg, 'dataset_config.target_class_mapping["Heavy truck"]="car"')
    assert dict(msg.dataset_config.target_class_mapping) == {"van": "car", "Heavy truck": "car"}
    apply_override(msg, "postprocessing_config.target_class_config[car].clustering_config.dbscan_eps=0.25")
    entry = msg.postprocessing_config.target_class_config["car"]
    assert entry.clustering_config.dbscan_eps == pytest.approx(0.25)
    apply_override(msg, "model_config.freeze_blocks=[0, 1]")
    apply_override(msg, "model_config.freeze_blocks[2]=3")  # index == length appends
    assert list(msg.model_config.freeze_blocks) == [0.0, 1.0, 3.0]
    apply_override(msg, "cost_function_config.target_classes[2]={name: 'cyclist' class_weight: 3}")
    assert [t.name for t in msg.cost_function_config.target_classes] == ["car", "person", "cyclist"]


def test_block_replacement_and_oneof_switch() -> None:
    msg = DetectNetExperiment()
    msg.training_config.learning_rate.soft_start_annealing_schedule.soft_start = 0.2
    apply_override(msg, "training_config.learning_rate.early_stopping_annealing_schedule.patience_steps=3")
    assert msg.training_config.learning_rate.WhichOneof("learning_rate") == "early_stopping_annealing_schedule"
    apply_override(msg, "training_config.regularizer={type: L2 weight: 1e-5}")
    assert msg.training_config.regularizer.type == msg.training_config.regularizer.L2
    inf = DetectNetInference()
    apply_override(inf, "inferencer_config.target_classes=[car, 'person']")
    assert list(inf.inferencer_config.target_classes) == ["car", "person"]


@pytest.mark.parametrize(("expression", "fragment"), [
    ("training_config.learning_rat.x=1", "did you mean 'learning_rate'?"),
    ("training_config.num_epochs=ten", "expects an integer (uint32)"),
    ("training_config.num_epochs=-1", "out of range for uint32"),
    ("evaluation_config.average_precision_mode=INTEGRAL", "did you mean INTEGRATE?"),
    ("training_config.enable_qat=maybe", "expects true or false"),
    ("cost_function_config.target_classes[3].name=x", "out of range"),
    ("training_config.num_epochs.x=1", "has no fields"),
    ("training_config", "expected FIELD=VALUE"),
    ("training_config=5", "give {...}"),
])
def test_bad_overrides_are_explained(expression: str, fragment: str) -> None:
    with pytest.raises(OverrideError, match=None) as info:
        apply_override(DetectNetExperiment(), expression)
    assert fragment in str(info.value)


def test_override_problems_are_reported_with_the_rest(nms_spec: Path) -> None:
    report = check_spec(nms_spec, model="detectnet_v2", overrides=["training_config.num_epoch=5",
                                             "training_config.batch_size_per_gpu=0"])
    assert not report.valid
    assert any(e.startswith("--set training_config.num_epoch=5: unknown field 'num_epoch'")
               and "did you mean 'num_epochs'" in e for e in report.errors)
    # a rule violated by an overridden value names the override, not a file position
    assert any(e.startswith("--set training_config.batch_size_per_gpu=0: training_config.batch_size_per_gpu: 0 is "
                            "invalid: must be > 0") for e in report.errors)
    with pytest.raises(SpecError):
        load_spec(nms_spec, model="detectnet_v2", overrides=["training_config.num_epoch=5"])
