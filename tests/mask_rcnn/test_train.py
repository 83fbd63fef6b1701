"""``tltk mask_rcnn train``: flags, the results folder, TAO's log line, AMP, TAO's sample spec."""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from tltk.cli.app import cli
from tltk.core.trainer import train
from tltk.mask_rcnn.categories import CategoryMap
from tltk.modelfile.container import load_keras_model, read_metadata
from tltk.models import load_spec, make_task

REPO = Path(__file__).resolve().parents[2]


def _experiments() -> Any:
    name = "_mrcnn_experiments"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("_experiments.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLTK_NO_PROGRESS", "1")


def test_help_shows_every_train_flag() -> None:
    result = CliRunner().invoke(cli, ["mask_rcnn", "train", "--help"])
    assert result.exit_code == 0
    for flag in ("-e, --experiment_spec_file", "-r, -d, --results_dir, --model_dir", "-k, --key", "--gpus INTEGER",
                 "--gpu_index", "--use_amp", "--log_file", "--set FIELD=VALUE", "--no_resume", "--json"):
        assert flag in result.output, flag


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _experiments().trained_model(tmp_path_factory)


@pytest.mark.slow
def test_results_folder_as_detectnet_v2s(trained: dict[str, Any]) -> None:
    run: Path = trained["run"]
    summary = json.loads(trained["train_output"].strip().splitlines()[-1])
    assert summary["model"] == str(run / "model.tlt") and summary["steps"] == 8 and summary["epochs"] == 2
    for key in ("val_AP", "val_AP50", "val_mask_AP", "val_ARmax100", "loss", "mask_loss"):
        assert isinstance(summary["metrics"][key], float), key
    # the resolved spec: the tiny spec's values and every documented default, loadable again
    resolved = load_spec(run / "experiment_spec.txt", model="mask_rcnn", kind="experiment").message
    assert resolved.total_steps == 8 and resolved.maskrcnn_config.rpn_positive_overlap == pytest.approx(0.7)
    assert "rpn_positive_overlap: 0.7" in (run / "experiment_spec.txt").read_text()
    status = [json.loads(line) for line in (run / "status.json").read_text().splitlines()]
    assert [s["status"] for s in status] == ["STARTED", "RUNNING", "RUNNING", "SUCCESS"]
    assert status[2]["step"] == 8 and set(status[2]["metrics"]) >= {"AP", "AP50", "mask_AP", "mask_ARmax100"}
    assert {"rpn_score_loss", "mask_loss", "loss"} <= set(status[2]["losses"])
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["cycle"], r["step"]) for r in records] == [(1, 4), (2, 8)]
    assert all(0.0 <= r["val_AP"] <= 1.0 and np.isfinite(r["loss"]) for r in records)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["cycle-0001", "cycle-0002"]
    assert (run / "plots" / "loss.png").stat().st_size > 0 and (run / "plots" / "mask_AP.png").is_file()
    assert any((run / "events").rglob("events.out.tfevents.*"))
    meta = read_metadata(run / "model.tlt")
    assert meta["model_kind"] == "mask_rcnn" and meta["class_names"] == ["car", "pedestrian", "cyclist"]
    assert meta["input_shape"] == [3, 128, 192]
    category_map = CategoryMap.from_json(meta["category_map"])
    assert category_map.category_ids == (1, 2, 3) and category_map.num_classes == 4
    assert meta["preprocessing"] == {"mean": [123.675, 116.28, 103.53], "std": [57.12, 57.12, 57.12],
                                     "letterbox": True}


@pytest.mark.slow
def test_log_line_every_logging_frequency_steps_with_taos_names(trained: dict[str, Any]) -> None:
    lines = [line for line in trained["log_file"].read_text().splitlines() if "tltk.core.callbacks: step " in line]
    assert [re.search(r"step (\d+)/8", line).group(1) for line in lines] == ["2", "4", "6", "8"]
    pattern = (r"step \d/8: RPN score loss: [\d.]+, RPN box loss: [\d.]+, FastRCNN class loss: [\d.]+, "
               r"FastRCNN box loss: [\d.]+, Mask loss: [\d.]+, L2 loss: [\d.]+, Total loss: [\d.]+, "
               r"learning rate: [\d.e-]+, samples/sec: [\d.]+$")
    for line in lines:
        assert re.search(pattern, line), line


@pytest.mark.gpu
@pytest.mark.slow
def test_mixed_precision_trains_and_saves_a_float32_model(tmp_path: Path) -> None:
    # float16 kernels on CPU are emulated: two steps take ten minutes on two cores.
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        pytest.skip("mixed precision needs a GPU to run in reasonable time")
    spec = _experiments().experiment(tmp_path / "data", num_images=8, total_steps=2, num_steps_per_eval=2,
                                     data_config__validation_file_pattern=None)
    task = make_task("mask_rcnn", load_spec(spec, model="mask_rcnn", kind="experiment"))
    keras.utils.set_random_seed(task.random_seed())
    report = train(task, str(tmp_path / "amp"), use_amp=True)
    assert all(np.isfinite(v) for k, v in report.final_metrics.items() if k.endswith("loss"))
    model, _ = load_keras_model(report.model_path)
    assert {w.dtype for w in model.weights} == {"float32"}
    assert keras.mixed_precision.global_policy().name == "float32"
    out = model(np.zeros((1, 3, 128, 192), np.float32))
    assert out["generate_detections"].dtype == "float32" and out["generate_detections"].shape == (1, 10, 6)


def _backbone_weights(path: Path) -> None:
    """A ResNet-50 backbone file with TAO's layer names, like TAO's pretrained resnet50.hdf5."""
    from tltk.backbones.layers import BackboneConfig
    from tltk.backbones.resnet import build_resnet

    inputs = keras.Input((None, None, 3))
    backbone = build_resnet(inputs, 50, BackboneConfig(use_pooling=True, use_bias=False, output_stride=32))
    model = keras.Model(inputs, backbone.levels["C5"])
    model.save_weights(str(path.with_suffix(".weights.h5")))
    path.with_suffix(".weights.h5").rename(path)


@pytest.mark.slow
def test_taos_sample_spec_trains_with_only_its_paths_changed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """specs/mask_rcnn/default_train.txt (TAO's documented sample, ResNet-50 at 832x1344) runs two steps."""
    data = tmp_path / "data"
    _experiments().battery.make_dataset(data, num_images=8)
    _backbone_weights(tmp_path / "resnet50.hdf5")
    text = (REPO / "specs" / "mask_rcnn" / "default_train.txt").read_text()
    replacements = {
        "maskrcnn/pretrained_resnet50/tlt_instance_segmentation_vresnet50/resnet50.hdf5": "resnet50.hdf5",
        "data/train*.tfrecord": "data/tfrecords/train-*.tfrecord",
        "data/val*.tfrecord": "data/tfrecords/val-*.tfrecord",
        "data/annotations/instances_val2017.json": "data/coco/annotations/instances_val.json",
    }
    for old, new in replacements.items():
        assert text.count(f'"{old}"') == 1, old
        text = text.replace(f'"{old}"', f'"{new}"')
    spec = tmp_path / "default_train.txt"
    spec.write_text(text)
    check = CliRunner().invoke(cli, ["mask_rcnn", "validate_spec", "-e", str(spec), "--check_paths"])
    assert check.exit_code == 0, check.output

    task = make_task("mask_rcnn", load_spec(spec, model="mask_rcnn", kind="experiment"))
    losses: list[dict[str, float]] = []

    class StopAfterTwoSteps(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            losses.append({k: float(v) for k, v in (logs or {}).items()})
            if len(losses) == 2:
                raise KeyboardInterrupt

    task.callbacks = lambda: [StopAfterTwoSteps()]
    keras.utils.set_random_seed(task.random_seed())
    tltk_log = logging.getLogger("tltk")  # the CLI above configured it not to propagate
    tltk_log.addHandler(caplog.handler)
    try:
        with caplog.at_level("INFO", logger="tltk"), pytest.raises(KeyboardInterrupt):
            train(task, str(tmp_path / "run"))
    finally:
        tltk_log.removeHandler(caplog.handler)
    # the backbone came from the checkpoint file; the FPN and heads were not in it
    match = re.search(r"(\d+) layers loaded, 0 skipped \(skip_checkpoint_variables\), 0 mismatched, (\d+) not in "
                      r"the file", caplog.text)
    assert match and int(match.group(1)) > 100 and int(match.group(2)) > 10, caplog.text
    assert len(losses) == 2 and all(np.isfinite(step[k]) for step in losses for k in step if k.endswith("loss"))
    assert losses[0]["learning_rate"] == pytest.approx(0.02)  # warmup_steps 0: init_learning_rate at once
    shutil.rmtree(tmp_path / "run")
