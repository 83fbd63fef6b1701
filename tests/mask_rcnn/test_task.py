"""The training side of the MaskRCNN Task: plan, optimizer, step-seeded ROI sampling, checkpoint loading, log line."""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

from tltk.core.callbacks import ProgressCallback
from tltk.errors import SpecError
from tltk.mask_rcnn.sampling import RoiSampler
from tltk.models import load_spec, make_task


def _experiments() -> Any:
    name = "_mrcnn_experiments"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("_experiments.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _task(tmp_path: Path, name: str = "experiment.txt", **changes: Any) -> Any:
    path = tmp_path / name
    path.write_text(_experiments().spec_text(**changes))
    return make_task("mask_rcnn", load_spec(path, model="mask_rcnn", kind="experiment"))


def test_plan_has_one_cycle_per_evaluation_period(tmp_path: Path) -> None:
    task = _task(tmp_path, total_steps=12, num_steps_per_eval=4, logging_frequency=3, train_batch_size=3)
    plan = task.training_plan(num_replicas=2)
    assert (plan.steps_per_cycle, plan.num_cycles, plan.total_steps) == (4, 3, 12)
    assert plan.validate_after == frozenset({1, 2, 3}) and plan.checkpoint_every == 1
    assert plan.batch_size == 6 and plan.log_every_steps == 3 and plan.cycle_name == "cycle"
    assert plan.loss_display_names == (
        ("rpn_score_loss", "RPN score loss"), ("rpn_box_loss", "RPN box loss"),
        ("fast_rcnn_class_loss", "FastRCNN class loss"), ("fast_rcnn_box_loss", "FastRCNN box loss"),
        ("mask_loss", "Mask loss"), ("regularization_loss", "L2 loss"), ("loss", "Total loss"))


def test_plan_from_epochs_without_validation_data(tmp_path: Path) -> None:
    # num_epochs wins over total_steps: ceil(3 * 10 / 4) = 8 steps; no validation TFRecords, no validation.
    task = _task(tmp_path, num_epochs=3, num_examples_per_epoch=10, train_batch_size=4, num_steps_per_eval=4,
                 data_config__validation_file_pattern=None, l1_weight_decay=0.001)
    plan = task.training_plan(num_replicas=1)
    assert (plan.steps_per_cycle, plan.num_cycles, plan.batch_size) == (4, 2, 4)
    assert plan.validate_after == frozenset()
    assert dict(plan.loss_display_names)["regularization_loss"] == "L1+L2 loss"


def test_plan_rounds_a_partial_period_up_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    task = _task(tmp_path, total_steps=10, num_steps_per_eval=4)
    with caplog.at_level(logging.WARNING):
        plan = task.training_plan(num_replicas=1)
    assert (plan.steps_per_cycle, plan.num_cycles) == (4, 3)
    assert "total_steps 10 is not a multiple of num_steps_per_eval 4: training runs 12 steps" in caplog.text


def test_optimizer_is_sgd_with_warmup_then_absolute_decay_levels(tmp_path: Path) -> None:
    task = _task(tmp_path, warmup_steps=4, warmup_learning_rate=0.001, init_learning_rate=0.01,
                 learning_rate_steps="[6, 8]", learning_rate_decay_levels="[0.1, 0.01]", momentum=0.8,
                 global_gradient_clip_ratio=5.0)
    task.build_network()
    optimizer = task.build_optimizer(task.training_plan(1))
    assert isinstance(optimizer, keras.optimizers.SGD)
    assert optimizer.momentum == pytest.approx(0.8) and optimizer.global_clipnorm == pytest.approx(5.0)
    schedule = optimizer._learning_rate
    # warm-up: 0.001 + (0.01 - 0.001) * step / 4; then 0.01, 0.01 x 0.1 from step 6, 0.01 x 0.01 from step 8
    expected = {0: 0.001, 2: 0.0055, 3: 0.00775, 4: 0.01, 5: 0.01, 6: 0.001, 7: 0.001, 8: 0.0001, 100: 0.0001}
    for step, lr in expected.items():
        assert float(schedule(step)) == pytest.approx(lr, rel=1e-6), step


def test_roi_sampling_follows_the_optimizer_step(tmp_path: Path) -> None:
    """The sampling order is a function of (seed, optimizer step): a resumed run samples the same ROIs."""
    task = _task(tmp_path)
    task.build_network()
    optimizer = task.build_optimizer(task.training_plan(1))
    samplers = [layer for layer in task._training_model.layers if isinstance(layer, RoiSampler)]
    assert len(samplers) == 1
    sampler = samplers[0]
    rng = np.random.default_rng(0)
    # 40 proposals around one ground-truth box: more foreground candidates than the sampler keeps.
    gt = np.array([[[20.0, 20.0, 80.0, 90.0]] + [[-1.0] * 4] * 11], np.float32)
    rois = gt[:, :1] + rng.uniform(-8, 8, (1, 40, 4)).astype(np.float32)
    args = (rois, np.ones((1, 40), np.float32), gt, np.array([[1] + [-1] * 11], np.int32),
            np.zeros((1, 12, 20, 20), np.float32))

    def sampled() -> np.ndarray:
        return sampler(*args)["rois"].numpy()

    first = sampled()
    np.testing.assert_array_equal(sampled(), first)  # no hidden state advances between calls
    optimizer.iterations.assign(7)
    at_seven = sampled()
    assert not np.array_equal(at_seven, first)
    # a fresh layer (a resumed process) at the same step samples the same ROIs
    twin = RoiSampler.from_config(sampler.get_config())
    twin.use_step_counter(optimizer.iterations)
    np.testing.assert_array_equal(twin(*args)["rois"].numpy(), at_seven)


def _save_network(task: Any, path: Path) -> keras.Model:
    network = task.build_network()
    network.save_weights(str(path))
    return network


def test_checkpoint_loads_by_layer_name_and_skip_checkpoint_variables_is_a_search(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    keras.utils.set_random_seed(1)
    source = _save_network(_task(tmp_path, "source.txt"), tmp_path / "source.weights.h5")
    keras.utils.set_random_seed(2)
    # "predict/kernel" matches the variable paths class-predict/kernel and box-predict/kernel (re.search).
    task = _task(tmp_path, checkpoint="source.weights.h5", skip_checkpoint_variables="predict/kernel|^rpn-box$")
    with caplog.at_level(logging.INFO):
        network = task.build_network()
    skipped = {"class-predict", "box-predict", "rpn-box"}
    with_weights = [layer for layer in network.layers if layer.weights]
    assert f"{len(with_weights) - 3} layers loaded, 3 skipped (skip_checkpoint_variables), 0 mismatched" in caplog.text
    for layer in with_weights:
        same = all(np.array_equal(a, b) for a, b in zip(layer.get_weights(), source.get_layer(layer.name).get_weights()))
        assert same == (layer.name not in skipped), layer.name


def test_checkpoint_with_other_classes_reports_the_mismatched_heads(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    source = _save_network(_task(tmp_path, "source.txt"), tmp_path / "source.weights.h5")
    task = _task(tmp_path, checkpoint="source.weights.h5", data_config__num_classes=3)
    with caplog.at_level(logging.INFO):
        network = task.build_network()
    assert "3 mismatched" in caplog.text
    for name in ("class-predict", "box-predict", "mask_fcn_logits"):
        assert f"layer {name} not loaded, shapes differ" in caplog.text
    np.testing.assert_array_equal(network.get_layer("conv1").get_weights()[0], source.get_layer("conv1").get_weights()[0])


def test_bad_skip_checkpoint_variables_is_a_spec_error(tmp_path: Path) -> None:
    _save_network(_task(tmp_path, "source.txt"), tmp_path / "source.weights.h5")
    # The spec rules refuse it when the spec loads, before any weight is read.
    with pytest.raises(SpecError, match="is not a regular expression"):
        _task(tmp_path, checkpoint="source.weights.h5", skip_checkpoint_variables="class-(predict")


def test_step_log_line_uses_taos_loss_names(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    task = _task(tmp_path, total_steps=4, num_steps_per_eval=2, logging_frequency=2, train_batch_size=2)
    callback = ProgressCallback(task.training_plan(1))
    logs = {"loss": 2.5, "task_loss": 2.0, "regularization_loss": 0.5, "rpn_score_loss": 0.25, "rpn_box_loss": 0.125,
            "fast_rcnn_class_loss": 0.75, "fast_rcnn_box_loss": 0.375, "mask_loss": 0.5,
            "learning_rate": tf.constant(0.01)}
    with caplog.at_level(logging.INFO):
        callback.on_train_begin()
        callback.on_epoch_begin(0)
        callback.on_train_batch_end(0, logs)
        callback.on_train_batch_end(1, logs)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ")]
    assert len(lines) == 1
    assert lines[0].startswith(
        "step 2/4: RPN score loss: 0.25000, RPN box loss: 0.12500, FastRCNN class loss: 0.75000, "
        "FastRCNN box loss: 0.37500, Mask loss: 0.50000, L2 loss: 0.50000, Total loss: 2.50000, "
        "learning rate: 0.01, samples/sec: ")
    assert "task_loss" not in lines[0]
