"""The shared Keras-native trainer.

:class:`TaskModel` puts the task's loss inside ``train_step`` so ``fit()``, callbacks and
``tf.distribute`` work unchanged; :func:`train` wires checkpoints, resume, validation, status
files, TensorBoard, plots, mixed precision and the final model file for any :class:`Task`.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import keras
import tensorflow as tf

from tltk.core import checkpoints
from tltk.core.callbacks import ProgressCallback, RunRecorder, append_status
from tltk.core.distribution import is_chief, make_strategy
from tltk.core.task import CostScaling, Task
from tltk.data.images import undecodable_image_path
from tltk.errors import InvalidInputError, TltkError
from tltk.fileio import folder_lock, remove_stale_temporaries

log = logging.getLogger(__name__)


class TaskModel(keras.Model):
    """Wraps a task's inference network so that ``fit()`` optimises the task's loss.

    The forward pass is the task's :meth:`~tltk.core.task.Task.training_forward` (images and
    targets: a two-stage model samples ROIs from the ground truth); the variables optimised
    are the inference network's.

    Args:
        network: the Keras inference network (NCHW images in, task outputs out).
        task: the task providing ``training_forward`` and ``compute_loss``.
        loss_names: names of the loss components returned by ``compute_loss``.
        cost_scaling: TAO-style cost scaling, or None.
    """

    def __init__(self, network: keras.Model, task: Task, loss_names: list[str],
                 cost_scaling: CostScaling | None = None) -> None:
        super().__init__(name=f"{task.model_kind}_trainer")
        self.network = network
        self.task = task
        self.loss_names = list(loss_names)
        self.cost_scaling_cfg = cost_scaling
        self.trackers = {name: keras.metrics.Mean(name=name) for name in ["loss", "task_loss", "regularization_loss"] + self.loss_names}
        if cost_scaling is not None:
            self.cost_exponent = tf.Variable(float(cost_scaling.initial_exponent), trainable=False,
                                             dtype=tf.float32, name="cost_scaling_exponent")
            self.bad_steps = tf.Variable(0, trainable=False, dtype=tf.int64, name="bad_grad_counter")

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return list(self.trackers.values())

    def call(self, inputs: Any, training: bool = False) -> Any:
        return self.network(inputs, training=training)

    def _maybe_symbolic_build(self, iterator: Any = None, data_batch: Any = None) -> None:
        # Keras builds the model symbolically from a first batch reduced over replicas, which
        # fails under MultiWorkerMirroredStrategy.  The network and optimizer are already built
        # before fit() here, and there are no compiled losses/metrics to build, so skip it.
        if self.network.built and self.optimizer is not None and self.optimizer.built:
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def _forward_losses(self, images: Any, targets: Any, training: bool) -> tuple[Any, Any, Any, dict[str, Any]]:
        outputs = self.task.training_forward(self.network, images, targets, training)
        outputs = tf.nest.map_structure(lambda t: tf.cast(t, tf.float32), outputs)
        task_loss, components = self.task.compute_loss(outputs, targets)
        reg = tf.add_n([tf.cast(v, tf.float32) for v in self.network.losses]) if self.network.losses else tf.constant(0.0)
        return task_loss + reg, task_loss, reg, components

    def _update_trackers(self, total: Any, task_loss: Any, reg: Any, components: dict[str, Any]) -> dict[str, Any]:
        self.trackers["loss"].update_state(total)
        self.trackers["task_loss"].update_state(task_loss)
        self.trackers["regularization_loss"].update_state(reg)
        for name in self.loss_names:
            if name in components:
                self.trackers[name].update_state(components[name])
        logs = {name: tracker.result() for name, tracker in self.trackers.items()}
        return _for_reduction(logs)

    def train_step(self, data: Any) -> dict[str, Any]:
        images, targets = data
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        variables = self.network.trainable_variables
        with tf.GradientTape() as tape:
            total, task_loss, reg, components = self._forward_losses(images, targets, training=True)
            # Gradients are summed over replicas: divide so the sum is the global mean.
            objective = total / float(replicas)
            if self.cost_scaling_cfg is not None:
                objective = objective * tf.pow(2.0, self.cost_exponent)
            else:
                objective = self.optimizer.scale_loss(objective)
        grads = tape.gradient(objective, variables)
        if self.cost_scaling_cfg is not None:
            scale = tf.pow(2.0, self.cost_exponent)
            grads = [g / scale if g is not None else None for g in grads]
            finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads if g is not None])
            grads = [tf.where(finite, g, tf.zeros_like(g)) if g is not None else None for g in grads]
            cfg = self.cost_scaling_cfg
            self.cost_exponent.assign_add(tf.where(finite, cfg.increment, -cfg.decrement))
            self.bad_steps.assign_add(tf.cast(tf.logical_not(finite), tf.int64))
        self.optimizer.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])
        logs = self._update_trackers(total, task_loss, reg, components)
        logs.update(_for_reduction({"learning_rate": tf.convert_to_tensor(self.optimizer.learning_rate)}))
        return logs

    def test_step(self, data: Any) -> dict[str, Any]:
        images, targets = data
        total, task_loss, reg, components = self._forward_losses(images, targets, training=False)
        return self._update_trackers(total, task_loss, reg, components)


def _for_reduction(logs: dict[str, Any]) -> dict[str, Any]:
    """Keras reduces multi-worker logs with ``MEAN`` over axis 0, which needs rank-1 values."""
    if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
        return {k: tf.reshape(v, [1]) for k, v in logs.items()}
    return logs


@dataclass
class TrainReport:
    """What a finished (or already finished) training run produced.

    Attributes:
        results_dir: the run's folder.
        model_path: the final model file.
        resumed_from: cycle the run resumed from (0 for a fresh run).
        cycles: cycles completed in total.
        steps: optimizer steps completed in total.
        seconds: wall time of this invocation.
        final_metrics: last logged losses and validation metrics.
    """

    results_dir: str
    model_path: str
    resumed_from: int
    cycles: int
    steps: int
    seconds: float
    final_metrics: dict[str, float] = field(default_factory=dict)


def train(task: Task, results_dir: str, model_name: str = "model", key: str | None = None,
          use_amp: bool = False, gpus: int = 1, gpu_index: list[int] | None = None,
          resume: bool = True, strategy: Any = None) -> TrainReport:
    """Train ``task`` into ``results_dir``, resuming from its newest checkpoint.

    Writes ``status.json`` and ``metrics.jsonl`` (one JSON object per line), TensorBoard
    events under ``events/``, loss/metric curves under ``plots/``, checkpoints under
    ``checkpoints/`` and the final model ``<model_name>.tlt``.

    Args:
        task: the model's task.
        results_dir: output folder (created).
        model_name: stem of the final model file.
        key: optional key sealing the final ``.tlt``.
        use_amp: train with mixed precision (float16 compute, float32 variables, loss scaling).
        gpus: number of GPUs (``--gpus``).
        gpu_index: explicit GPU ids (``--gpu_index``).
        resume: continue from the newest complete checkpoint when one exists.
        strategy: an explicit ``tf.distribute`` strategy (overrides ``gpus``/``gpu_index``).

    Returns:
        A :class:`TrainReport`.

    Raises:
        InvalidInputError: the results folder holds checkpoints of another network, or the
            training data cannot be read (an image that cannot be decoded is named when the
            task's input pipeline can tell which); ``status.json`` then ends with a FAILURE line.
        TltkError: what the task raises (spec or data errors); also recorded as FAILURE.
    """
    started = time.monotonic()
    os.makedirs(results_dir, exist_ok=True)
    with folder_lock(results_dir, "another training run"):
        return _train_locked(task, results_dir, model_name, key, use_amp, gpus, gpu_index, resume, strategy, started)


def _train_locked(task: Task, results_dir: str, model_name: str, key: str | None, use_amp: bool, gpus: int,
                  gpu_index: list[int] | None, resume: bool, strategy: Any, started: float) -> TrainReport:
    locked = time.time()
    strategy = strategy or make_strategy(gpus, gpu_index)
    chief = is_chief(strategy)
    if chief:
        for path in remove_stale_temporaries(results_dir, older_than=locked):
            log.info("removed %s, left by an interrupted run", path)
    if not resume and chief:
        _forget_earlier_run(results_dir)
    previous_policy = keras.mixed_precision.global_policy()
    if use_amp:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        return _run(task, results_dir, model_name, key, use_amp, resume, strategy, chief, started)
    except BaseException as exc:
        error = _input_data_error(exc)
        failure = error or exc
        if chief:
            if isinstance(exc, KeyboardInterrupt):
                reason = "interrupted"
            elif isinstance(failure, TltkError):
                reason = failure.message
            else:
                reason = f"{type(exc).__name__}: {_tf_message(exc)}"
            append_status(results_dir, "FAILURE", reason)
        if error is not None:
            raise error from exc
        raise
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def _forget_earlier_run(results_dir: str) -> None:
    """``--no_resume``: an earlier run's checkpoints and metrics history would mix with the new run's."""
    removed = checkpoints.remove_checkpoints(results_dir)
    history = os.path.join(results_dir, "metrics.jsonl")
    if os.path.isfile(history):
        os.remove(history)
    if removed:
        log.warning("--no_resume: removed %d checkpoint(s) of the earlier run in %s", removed, results_dir)


#: Messages of TensorFlow's image decoders (the file is not named in them).
_DECODE_ERRORS = ("Invalid PNG data", "Invalid JPEG data", "jpeg::Uncompress", "Unknown image file format",
                  "DecodePng", "DecodeJpeg", "DecodeImage", "DecodeBmp", "DecodeGif")


def _tf_message(exc: BaseException) -> str:
    text = str(getattr(exc, "message", exc))
    if "}}" in text and text.lstrip().startswith("{{"):
        text = text.split("}}", 1)[1]
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _input_data_error(exc: BaseException) -> InvalidInputError | None:
    """A TensorFlow error raised by the input pipeline, as the user's data problem it is (else None)."""
    if not isinstance(exc, (tf.errors.InvalidArgumentError, tf.errors.DataLossError, tf.errors.NotFoundError)):
        return None
    message = str(getattr(exc, "message", exc))
    hint = ("remove or replace the file and run dataset_convert again (it decodes every image and skips the bad "
            "ones); training resumes from the newest checkpoint")
    path = undecodable_image_path(message)
    if path:
        return InvalidInputError(f"training stopped: the image {path} cannot be decoded (truncated, or not a PNG or "
                                 "JPEG file)", hint=hint)
    if isinstance(exc, tf.errors.NotFoundError):
        return InvalidInputError(f"training stopped: a file of the training data is missing ({_tf_message(exc)})",
                                 hint="check the spec's data paths; training resumes from the newest checkpoint")
    if any(marker in message for marker in _DECODE_ERRORS):
        return InvalidInputError(f"training stopped: an image of the training data cannot be decoded "
                                 f"(TensorFlow: {_tf_message(exc)})", hint=hint)
    if isinstance(exc, tf.errors.DataLossError):
        return InvalidInputError(f"training stopped: a TFRecord file is damaged ({_tf_message(exc)})",
                                 hint="run dataset_convert again to rewrite the TFRecords")
    return None


def _run(task: Task, results_dir: str, model_name: str, key: str | None, use_amp: bool, resume: bool,
         strategy: Any, chief: bool, started: float) -> TrainReport:
    from tltk.modelfile.container import save_keras_model

    with strategy.scope():
        network = task.build_network()
        plan = task.training_plan(strategy.num_replicas_in_sync)
        optimizer = task.build_optimizer(plan)
        cost_scaling = task.cost_scaling()
        if use_amp and cost_scaling is None:
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        loss_names = list(task.loss_names())
        model = TaskModel(network, task, loss_names, cost_scaling)
        model.compile(optimizer=optimizer, jit_compile=False)
        optimizer.build(model.trainable_variables)
    signature = checkpoints.network_signature(network, task.model_metadata().get("class_names"))

    start_cycle = 0
    latest = checkpoints.latest_checkpoint(results_dir) if resume else None
    if latest is not None:
        checkpoints.check_signature(latest, signature, results_dir)
        state = checkpoints.restore_checkpoint(latest, network, optimizer)
        task.restore_extra_state(state.get("task", {}))
        if cost_scaling is not None and "cost_exponent" in state:
            model.cost_exponent.assign(state["cost_exponent"])
        start_cycle = latest.cycle
        log.info("resuming from %s (%s %d, step %d)", latest.path, plan.cycle_name, latest.cycle, latest.step)

    def extra_state() -> dict[str, Any]:
        state: dict[str, Any] = {"task": task.extra_state()}
        if cost_scaling is not None:
            state["cost_exponent"] = float(model.cost_exponent.numpy())
        return state

    recorder = RunRecorder(results_dir=results_dir, plan=plan, network=network, task=task,
                           optimizer=optimizer, extra_state=extra_state, chief=chief, signature=signature)
    callbacks: list[Any] = [ProgressCallback(plan)] + list(task.callbacks()) + [recorder]
    if chief:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=os.path.join(results_dir, "events"),
                                                     write_graph=False, update_freq="epoch"))
    if start_cycle < plan.num_cycles:
        dataset = task.train_dataset(start_cycle, plan.batch_size)
        recorder.log_status("STARTED", f"training from {plan.cycle_name} {start_cycle}")
        model.fit(dataset, epochs=plan.num_cycles, initial_epoch=start_cycle,
                  steps_per_epoch=plan.steps_per_cycle, callbacks=callbacks, verbose=0,
                  shuffle=False)
    else:
        log.info("the newest checkpoint already completes the run; writing the final model only")

    model_path = os.path.join(results_dir, f"{model_name}.tlt")
    if chief:
        if use_amp:
            network = _as_float32_network(network)
        save_keras_model(model_path, network, task.model_metadata(), key=key)
        recorder.log_status("SUCCESS", f"final model written to {model_path}")
    return TrainReport(results_dir=results_dir, model_path=model_path, resumed_from=start_cycle,
                       cycles=plan.num_cycles, steps=plan.total_steps,
                       seconds=time.monotonic() - started, final_metrics=dict(recorder.last_logs))


def _as_float32_network(network: keras.Model) -> keras.Model:
    """Rebuild a mixed-precision network with float32 compute so the saved model is portable."""
    config = network.get_config()
    for layer_cfg in config.get("layers", []):
        layer_cfg.get("config", {}).pop("dtype", None)
    current = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        rebuilt = keras.Model.from_config(config)
    finally:
        keras.mixed_precision.set_global_policy(current)
    rebuilt.set_weights(network.get_weights())
    return rebuilt
