"""DetectNet_v2 checks before training: classes that match no object, frames read twice."""

from __future__ import annotations

import logging
import shutil

import pytest

from tltk.errors import InvalidInputError
from tltk.models import load_spec, make_task


def _task(root, text: str):
    path = root / "experiment_checks.txt"
    path.write_text(text)
    return make_task("detectnet_v2", load_spec(str(path), model="detectnet_v2", kind="experiment"))


def test_target_classes_that_match_no_object_stop_before_training(detectnet_v2_toy) -> None:
    text = detectnet_v2_toy["experiment"].read_text()
    wrong = (text.replace('target_class_mapping { key: "car" value: "car" }',
                          'target_class_mapping { key: "automobile" value: "car" }')
             .replace('target_class_mapping { key: "pedestrian" value: "pedestrian" }',
                      'target_class_mapping { key: "person" value: "pedestrian" }'))
    task = _task(detectnet_v2_toy["root"], wrong)
    with pytest.raises(InvalidInputError) as info:
        task.training_plan(1)
    message = str(info.value)
    assert info.value.exit_code == 2
    assert "no object of the train data maps to a target class (car, pedestrian)" in message
    assert "The TFRecords hold car: 4, pedestrian: 2;" in message
    assert "'automobile' -> 'car', 'person' -> 'pedestrian'" in message


def test_a_target_class_without_objects_is_a_warning(detectnet_v2_toy, caplog) -> None:
    text = detectnet_v2_toy["experiment"].read_text().replace(
        'target_class_mapping { key: "pedestrian" value: "pedestrian" }',
        'target_class_mapping { key: "person" value: "pedestrian" }')
    with caplog.at_level(logging.WARNING, logger="tltk"):
        plan = _task(detectnet_v2_toy["root"], text).training_plan(1)
    assert plan.num_cycles == 1
    assert "no object maps to target class(es) pedestrian; they cannot be learned" in caplog.text


def test_frames_found_in_two_tfrecord_files_are_reported(detectnet_v2_toy, tmp_path, caplog) -> None:
    root = tmp_path / "toy"
    shutil.copytree(detectnet_v2_toy["root"], root)
    shard = sorted((root / "tfrecords").glob("toy-fold-001-*"))[0]
    shutil.copy(shard, root / "tfrecords" / "toy-fold-001-of-002-shard-00000-of-00009")  # a stale shard
    task = _task(root, detectnet_v2_toy["experiment"].read_text())
    with caplog.at_level(logging.WARNING, logger="tltk"):
        stats = task.data.stats("train")
    assert stats.num_examples == 8 and stats.repeated_frames == 4
    assert "4 frame id(s) are in more than one TFRecord file" in caplog.text
    assert "stale shards of an earlier dataset_convert" in caplog.text


def test_validation_runs_after_the_last_epoch_when_the_spec_has_validation_data(detectnet_v2_toy) -> None:
    text = (detectnet_v2_toy["experiment"].read_text().replace("num_epochs: 1", "num_epochs: 7")
            .replace("first_validation_epoch: 1", "first_validation_epoch: 2")
            .replace("validation_period_during_training: 1", "validation_period_during_training: 4"))
    assert _task(detectnet_v2_toy["root"], text).training_plan(1).validate_after == {2, 6, 7}
    late = text.replace("first_validation_epoch: 2", "first_validation_epoch: 9")
    assert _task(detectnet_v2_toy["root"], late).training_plan(1).validate_after == {7}
    no_validation = text.replace("validation_fold: 0", "")
    assert _task(detectnet_v2_toy["root"], no_validation).training_plan(1).validate_after == frozenset()


def test_reusing_a_results_folder_with_another_backbone_is_one_sentence(detectnet_v2_toy, tmp_path) -> None:
    import json

    from click.testing import CliRunner

    from tltk.cli.app import cli

    root = detectnet_v2_toy["root"]
    out = tmp_path / "results"
    first = CliRunner().invoke(cli, ["detectnet_v2", "train", "-e", str(detectnet_v2_toy["experiment"]), "-r", str(out),
                                     "--json"])
    assert first.exit_code == 0, first.output
    resolved = (out / "experiment_spec.txt").read_text()
    other = root / "experiment_resnet10.txt"
    other.write_text(detectnet_v2_toy["experiment"].read_text().replace("num_layers: 18", "num_layers: 10"))
    res = CliRunner().invoke(cli, ["detectnet_v2", "train", "-e", str(other), "-r", str(out), "--json"])
    assert res.exit_code == 2, res.output
    error = json.loads(res.stdout)["error"]
    assert error.startswith(f"{out} holds checkpoints of a different network than this spec builds (another "
                            "architecture")
    assert "--no_resume" in error and "ValueError" not in res.output and len(error.splitlines()) == 2
    assert (out / "experiment_spec.txt").read_text() == resolved  # still the spec of the run in the folder
    status = [json.loads(line) for line in (out / "status.json").read_text().splitlines()]
    assert status[-1]["status"] == "FAILURE"
