"""The battery every model of the model table runs (as keras-hub's shared test cases).

For each model: build the network through its Task, one training step, a save/load round trip,
export with ONNX Runtime parity, a resolved-spec round trip, and ``--help`` without TensorFlow.
A model joins by adding its row to :data:`tltk.models.MODELS` and a ``battery_case`` below.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tltk.models import MODELS


def _detectnet_v2_case(factory: Any) -> Path:
    toy = factory.getfixturevalue("detectnet_v2_toy")
    return Path(toy["experiment"])


def _load_case_module() -> Any:
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "mask_rcnn" / "battery.py"
    spec = importlib.util.spec_from_file_location("mask_rcnn_battery_case", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _mask_rcnn_case(factory: Any) -> Path:
    return Path(_load_case_module().battery_spec(factory.getfixturevalue("tmp_path_factory")))


#: Model name -> fixture that returns a small experiment spec with data next to it.
BATTERY_CASES: dict[str, Callable[[Any], Path]] = {
    "detectnet_v2": _detectnet_v2_case,
    "mask_rcnn": _mask_rcnn_case,
}


def test_every_model_has_a_battery_case() -> None:
    assert sorted(BATTERY_CASES) == sorted(MODELS)


@pytest.fixture(scope="module", params=sorted(MODELS))
def case(request: Any) -> dict[str, Any]:
    model = request.param
    if importlib_missing(model):
        pytest.skip(f"{model} has no Task yet")
    spec_path = BATTERY_CASES[model](request)
    from tltk.models import load_spec, make_task

    loaded = load_spec(str(spec_path), model=model, kind="experiment")
    return {"model": model, "spec": loaded, "task": make_task(model, loaded)}


def importlib_missing(model: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(f"tltk.{model}.task") is None


def test_build_matches_the_export_signature(case: dict[str, Any]) -> None:
    task = case["task"]
    network = task.build_network()
    signature = task.export_signature(network)
    assert tuple(int(d) for d in network.inputs[0].shape[1:]) == signature.input_chw
    assert signature.input_chw == task.preprocessing().input_chw
    assert len(signature.output_names) == len(network.outputs)


def test_one_training_step_changes_the_weights_and_gives_finite_losses(case: dict[str, Any]) -> None:
    import keras
    import tensorflow as tf

    from tltk.core.trainer import TaskModel

    task = case["task"]
    keras.utils.set_random_seed(task.random_seed())
    network = task.build_network()
    plan = task.training_plan(1)
    optimizer = task.build_optimizer(plan)
    model = TaskModel(network, task, task.loss_names(), task.cost_scaling())
    model.compile(optimizer=optimizer, jit_compile=False)
    optimizer.build(model.trainable_variables)
    images, targets = next(iter(task.train_dataset(0, plan.batch_size)))
    before = [np.array(v) for v in network.trainable_variables]
    logs = model.train_step((images, targets))
    assert all(np.isfinite(float(tf.reshape(v, [-1])[0])) for v in logs.values())
    assert set(task.loss_names()) <= set(logs)
    changed = sum(not np.array_equal(b, np.array(v)) for b, v in zip(before, network.trainable_variables, strict=True))
    assert changed > len(before) // 2


def test_save_load_round_trip_gives_identical_outputs(case: dict[str, Any], tmp_path: Path) -> None:
    from tltk.modelfile.container import load_keras_model, save_keras_model

    task = case["task"]
    network = task.build_network()
    save_keras_model(tmp_path / "m.tlt", network, task.model_metadata())
    loaded, metadata = load_keras_model(tmp_path / "m.tlt")
    assert metadata["model_kind"] == case["model"]
    c, h, w = task.export_signature(network).input_chw
    batch = np.random.default_rng(0).normal(size=(2, c, h, w)).astype(np.float32)
    ours, theirs = task.keras_predictor(network)(batch), task.keras_predictor(loaded)(batch)
    assert sorted(ours) == sorted(theirs)
    for name in ours:
        np.testing.assert_array_equal(ours[name], theirs[name])


def test_export_runs_on_onnxruntime_with_the_signature_names(case: dict[str, Any], tmp_path: Path) -> None:
    from tltk.export.subtask import ExportOptions, run_export
    from tltk.modelfile.container import save_keras_model
    from tltk.models import task_for_model_file
    from tltk.runtime.backends import open_backend

    task = case["task"]
    network = task.build_network()
    save_keras_model(tmp_path / "m.tlt", network, task.model_metadata())
    task2, loaded, metadata = task_for_model_file(case["model"], str(tmp_path / "m.tlt"), spec=case["spec"])
    report = run_export(task2, loaded, metadata, ExportOptions(model=str(tmp_path / "m.tlt"),
                                                               output_file=str(tmp_path / "m.onnx")), case["model"])
    assert report["onnx"]["parity_max_abs_diff"] < 1e-3
    signature = task.export_signature(network)
    with open_backend(tmp_path / "m.onnx") as backend:
        assert backend.input_name.split(":")[0] == signature.input_name
        assert sorted(backend.output_names) == sorted(signature.onnx_output_names)
        c, h, w = signature.input_chw
        batch = np.random.default_rng(1).normal(size=(1, c, h, w)).astype(np.float32)
        onnx_out = backend.run(batch)
    keras_out = task.keras_predictor(loaded)(batch)
    for name in signature.onnx_output_names:
        np.testing.assert_allclose(onnx_out[name], keras_out[name], atol=1e-3)


def test_resolved_spec_round_trip(case: dict[str, Any], tmp_path: Path) -> None:
    from tltk.models import load_spec
    from tltk.spec import resolved_text, write_resolved_spec

    write_resolved_spec(case["spec"].message, tmp_path / "resolved.txt")
    again = load_spec(str(tmp_path / "resolved.txt"), model=case["model"], kind="experiment")
    assert resolved_text(again.message) == resolved_text(case["spec"].message)
    assert "\n" in resolved_text(again.message) and again.kind == "experiment"


@pytest.mark.parametrize("model", sorted(MODELS))
def test_help_imports_no_tensorflow(model: str) -> None:
    code = ("import sys, json\nfrom tltk.cli.app import cli\nfrom tltk.models import MODELS\n"
            f"names = sorted(MODELS[{model!r}].COMMANDS)\n"
            "for name in names:\n"
            "    try:\n"
            f"        cli.main(args=[{model!r}, name, '--help'], prog_name='tltk', standalone_mode=False)\n"
            "    except SystemExit:\n        pass\n"
            "print(json.dumps({'tf': 'tensorflow' in sys.modules, 'n': len(names)}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"tf": False, "n": len(MODELS[model].COMMANDS)}
