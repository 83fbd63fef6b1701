"""The shared trainer on a toy task: loss decreases, records are written, resume is exact."""

from __future__ import annotations

import json
import os
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

from tltk.core import checkpoints
from tltk.core.schedules import SoftStartAnnealingSchedule
from tltk.core.task import CostScaling, TrainingPlan
from tltk.core.trainer import train

N, C, H, W = 24, 3, 16, 16


class ToyTask:
    """Regress a fixed random map from images with a two-layer conv net."""

    model_kind = "toy"

    def __init__(self, num_cycles: int = 4, interrupt_at: int | None = None, cost_scaling: bool = False,
                 seed: int = 7) -> None:
        rng = np.random.default_rng(0)
        self.images = rng.normal(size=(N, C, H, W)).astype("float32")
        self.targets = (self.images[:, :2] * 0.5 + 0.1).astype("float32")
        self.num_cycles = num_cycles
        self.interrupt_at = interrupt_at
        self.use_cost_scaling = cost_scaling
        self.seed = seed
        self.validations = 0

    def training_plan(self, num_replicas: int) -> TrainingPlan:
        return TrainingPlan(steps_per_cycle=N // 6, num_cycles=self.num_cycles, checkpoint_every=1,
                            validate_after=frozenset({2, self.num_cycles}), batch_size=6)

    def build_network(self) -> keras.Model:
        keras.utils.set_random_seed(self.seed)
        inp = keras.Input((C, H, W), name="input_1")
        x = keras.layers.Permute((2, 3, 1))(inp)
        x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1",
                                kernel_regularizer=keras.regularizers.L2(1e-4))(x)
        x = keras.layers.Conv2D(2, 1, name="head")(x)
        out = keras.layers.Permute((3, 1, 2), name="head_nchw")(x)
        return keras.Model(inp, out, name="toy")

    def train_dataset(self, start_cycle: int, global_batch_size: int) -> tf.data.Dataset:
        order = np.concatenate([np.random.default_rng(self.seed + c).permutation(N)
                                for c in range(start_cycle, self.num_cycles)])
        ds = tf.data.Dataset.from_tensor_slices(order)
        ds = ds.map(lambda i: (tf.gather(self.images, i), tf.gather(self.targets, i)))
        return ds.batch(global_batch_size, drop_remainder=True)

    def training_forward(self, network: Any, images: Any, targets: Any, training: bool) -> Any:
        return network(images, training=training)

    def loss_names(self) -> list[str]:
        return ["l2"]

    def compute_loss(self, outputs: Any, targets: Any) -> tuple[Any, dict[str, Any]]:
        l2 = tf.reduce_mean(tf.square(outputs - targets))
        return l2, {"l2": l2}

    def build_optimizer(self, plan: TrainingPlan) -> keras.optimizers.Optimizer:
        return keras.optimizers.Adam(SoftStartAnnealingSchedule(plan.total_steps, 1e-4, 1e-2, 0.1, 0.7))

    def cost_scaling(self) -> CostScaling | None:
        return CostScaling(10.0, 0.5, 1.0) if self.use_cost_scaling else None

    def extra_state(self) -> dict[str, Any]:
        return {"validations": self.validations}

    def restore_extra_state(self, state: dict[str, Any]) -> None:
        self.validations = int(state.get("validations", 0))

    def callbacks(self) -> list[Any]:
        task = self

        class Interrupt(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
                if task.interrupt_at is not None and epoch == task.interrupt_at:
                    raise KeyboardInterrupt

        return [Interrupt()]

    def validate(self, network: keras.Model) -> tuple[dict[str, float], str]:
        self.validations += 1
        pred = network(self.images, training=False).numpy()
        mse = float(np.mean((pred - self.targets) ** 2))
        return {"mse": mse}, f"validation mse: {mse:.5f}"

    def model_metadata(self) -> dict[str, Any]:
        return {"model_kind": "toy", "input_shape": [C, H, W]}


def _weights(results_dir: str) -> list[np.ndarray]:
    info = checkpoints.latest_checkpoint(results_dir)
    net = ToyTask().build_network()
    net.load_weights(os.path.join(info.path, checkpoints.WEIGHTS_FILE))
    return net.get_weights()


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("TLTK_NO_PROGRESS", "1")


def test_training_writes_records_and_reduces_loss(tmp_path):
    out = str(tmp_path / "run")
    report = train(ToyTask(), out, model_name="toy")
    lines = [json.loads(x) for x in open(os.path.join(out, "metrics.jsonl"))]
    assert [r["epoch"] for r in lines] == [1, 2, 3, 4]
    assert lines[-1]["loss"] < lines[0]["loss"]
    assert "val_mse" in lines[1] and "val_mse" in lines[3] and "val_mse" not in lines[0]
    status = [json.loads(x) for x in open(os.path.join(out, "status.json"))]
    assert status[0]["status"] == "STARTED" and status[-1]["status"] == "SUCCESS"
    assert {"epoch", "step", "losses", "learning_rate", "eta_seconds"} <= set(status[1])
    assert [c.cycle for c in checkpoints.list_checkpoints(out)] == [1, 2, 3, 4]
    assert os.path.isfile(report.model_path) and report.model_path.endswith("toy.tlt")
    assert os.path.isdir(os.path.join(out, "events"))
    assert os.path.isfile(os.path.join(out, "plots", "loss.png"))


def test_resume_after_interruption_matches_uninterrupted_run(tmp_path):
    full = str(tmp_path / "full")
    train(ToyTask(), full)
    resumed = str(tmp_path / "resumed")
    with pytest.raises(KeyboardInterrupt):
        train(ToyTask(interrupt_at=2), resumed)
    assert [c.cycle for c in checkpoints.list_checkpoints(resumed)] == [1, 2]
    assert not os.path.exists(os.path.join(resumed, "model.tlt"))
    report = train(ToyTask(), resumed)
    assert report.resumed_from == 2
    for a, b in zip(_weights(full), _weights(resumed)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_partial_checkpoint_is_ignored(tmp_path):
    out = str(tmp_path / "run")
    train(ToyTask(num_cycles=1), out)
    # A checkpoint folder without state.json (killed mid-write) must not be picked up.
    broken = os.path.join(checkpoints.checkpoint_dir(out), "epoch-0009")
    os.makedirs(broken)
    open(os.path.join(broken, checkpoints.WEIGHTS_FILE), "wb").close()
    assert checkpoints.latest_checkpoint(out).cycle == 1


def test_cost_scaling_trains_and_grows_exponent(tmp_path):
    out = str(tmp_path / "cs")
    train(ToyTask(num_cycles=2, cost_scaling=True), out)
    state = checkpoints.latest_checkpoint(out).state["task_state"]
    # 8 finite steps: 10 + 8 * 0.5 = 14
    assert state["cost_exponent"] == pytest.approx(14.0)


def test_mixed_precision_trains_and_saves_a_float32_model(tmp_path):
    from tltk.modelfile.container import load_keras_model

    out = str(tmp_path / "amp")
    report = train(ToyTask(num_cycles=2), out, use_amp=True)
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after the run
    lines = [json.loads(x) for x in open(os.path.join(out, "metrics.jsonl"))]
    assert np.isfinite(lines[-1]["loss"]) and lines[-1]["loss"] < lines[0]["loss"] * 1.5
    model, _ = load_keras_model(report.model_path)
    assert all(w.dtype == "float32" for w in model.weights)
    assert model.layers[-2].compute_dtype == "float32"
    out_arr = model(np.zeros((1, C, H, W), "float32")).numpy()
    assert out_arr.dtype == np.float32 and out_arr.shape == (1, 2, H, W)


class WiderToyTask(ToyTask):
    """The toy task with 16 filters instead of 8 and named classes (another spec for the same folder)."""

    def __init__(self, filters: int = 16, class_names: tuple[str, ...] = ("a", "b"), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.filters = filters
        self.class_names = list(class_names)

    def build_network(self) -> keras.Model:
        keras.utils.set_random_seed(self.seed)
        inp = keras.Input((C, H, W), name="input_1")
        x = keras.layers.Permute((2, 3, 1))(inp)
        x = keras.layers.Conv2D(self.filters, 3, padding="same", activation="relu", name="conv1")(x)
        x = keras.layers.Conv2D(2, 1, name="head")(x)
        return keras.Model(inp, keras.layers.Permute((3, 1, 2), name="head_nchw")(x), name="toy")

    def model_metadata(self) -> dict[str, Any]:
        return {**super().model_metadata(), "class_names": self.class_names}


def _status(out: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in open(os.path.join(out, "status.json"))]


def test_reusing_a_results_folder_with_another_network_stops_with_a_sentence(tmp_path):
    from tltk.errors import EXIT_USAGE, InvalidInputError

    out = str(tmp_path / "run")
    train(WiderToyTask(num_cycles=1), out)
    with pytest.raises(InvalidInputError) as info:
        train(WiderToyTask(num_cycles=2, filters=8), out)
    message = str(info.value)
    assert info.value.exit_code == EXIT_USAGE
    assert "holds checkpoints of a different network than this spec builds" in message
    assert "another architecture" in message and "--no_resume" in message and "ValueError" not in message
    assert _status(out)[-1]["status"] == "FAILURE"
    with pytest.raises(InvalidInputError, match="classes a, b there, a, c in this spec"):
        train(WiderToyTask(num_cycles=2, class_names=("a", "c")), out)
    # --no_resume starts over in the same folder: the earlier checkpoints go.
    report = train(WiderToyTask(num_cycles=2, filters=8), out, resume=False)
    assert report.resumed_from == 0
    assert [c.cycle for c in checkpoints.list_checkpoints(out)] == [1, 2]
    assert [json.loads(x)["epoch"] for x in open(os.path.join(out, "metrics.jsonl"))] == [1, 2]
    # The same spec resumes as before.
    assert train(WiderToyTask(num_cycles=3, filters=8), out).resumed_from == 2


def test_checkpoint_without_signature_that_does_not_fit_is_a_usage_error(tmp_path):
    from tltk.errors import InvalidInputError

    out = str(tmp_path / "old")
    train(WiderToyTask(num_cycles=1), out)
    info = checkpoints.latest_checkpoint(out)
    state = dict(info.state)
    state.pop("signature")  # as written before signatures were recorded
    with open(os.path.join(info.path, checkpoints.STATE_FILE), "w") as fh:
        json.dump(state, fh)
    with pytest.raises(InvalidInputError, match="does not fit the network this spec builds"):
        train(WiderToyTask(num_cycles=2, filters=8), out)


class ImageFileTask(ToyTask):
    """The toy task reading its images from PNG files through the shared decodability check."""

    def __init__(self, paths: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.paths = paths

    def train_dataset(self, start_cycle: int, global_batch_size: int) -> tf.data.Dataset:
        from tltk.data.images import assert_decodable

        def load(path: tf.Tensor) -> Any:
            image = tf.io.decode_png(assert_decodable(tf.io.read_file(path), path), channels=3)
            image = tf.transpose(tf.cast(image, tf.float32) / 255.0, [2, 0, 1])
            return tf.ensure_shape(image, [C, H, W]), tf.zeros([2, H, W])

        files = tf.data.Dataset.from_tensor_slices(self.paths).repeat()
        return files.map(load).batch(global_batch_size, drop_remainder=True)


def test_an_undecodable_image_met_in_training_is_named_and_recorded(tmp_path):
    from PIL import Image

    from tltk.errors import EXIT_USAGE, InvalidInputError

    paths = []
    for i in range(6):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(np.full((H, W, 3), 40 * i, np.uint8)).save(path)
        paths.append(str(path))
    data = open(paths[4], "rb").read()
    with open(paths[4], "wb") as fh:
        fh.write(data[: len(data) - 20])  # truncated: the IEND chunk is gone
    out = str(tmp_path / "run")
    with pytest.raises(InvalidInputError) as info:
        train(ImageFileTask(paths, num_cycles=1), out)
    assert info.value.exit_code == EXIT_USAGE
    assert f"the image {paths[4]} cannot be decoded" in str(info.value)
    last = _status(out)[-1]
    assert last["status"] == "FAILURE" and paths[4] in last["message"]
