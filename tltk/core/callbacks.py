"""Training callbacks shared by both models: progress, checkpoints, validation, run records.

Files written under the results folder (chief process only):

* ``status.json``: one JSON object per line (TAO's status log): ``date``, ``time``, ``status``
  (STARTED/RUNNING/SUCCESS/FAILURE), ``message``, and for RUNNING lines ``epoch``, ``step``,
  ``losses``, ``learning_rate``, ``eta_seconds`` and validation ``metrics``.
* ``metrics.jsonl``: one JSON object per cycle with every logged scalar.
* ``plots/loss.png`` and, once validation ran, ``plots/<metric>.png``.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import time
from collections.abc import Callable
from typing import Any

import keras

from tltk import console
from tltk.core import checkpoints
from tltk.core.task import Task, TrainingPlan

log = logging.getLogger(__name__)


def _fmt_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return str(_dt.timedelta(seconds=seconds))


def _scalar(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


class ProgressCallback(keras.callbacks.Callback):
    """A per-cycle progress bar (losses, learning rate, ETA) on an interactive stderr, and TAO's
    one-line ``Epoch e/N: loss: ... learning rate: ... Time taken: ... ETA: ...`` log per cycle.

    With ``plan.log_every_steps`` it also logs every that many global steps (MaskRCNN's
    ``logging_frequency``): the step, the losses (``plan.loss_display_names``, or every loss of
    the logs), the learning rate and samples/sec.
    """

    def __init__(self, plan: TrainingPlan) -> None:
        super().__init__()
        self.plan = plan
        self._bar: Any = None
        self._cycle_start = 0.0
        self._run_start = 0.0
        self._first_cycle = 0
        self._step = 0
        self._since = 0.0

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._run_start = time.monotonic()
        self._first_cycle = -1

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self._first_cycle < 0:
            self._first_cycle = epoch
        self._cycle_start = time.monotonic()
        self._step = epoch * self.plan.steps_per_cycle
        self._since = self._cycle_start
        if console.progress_enabled():
            import sys

            from tqdm import tqdm

            self._bar = tqdm(total=self.plan.steps_per_cycle, file=sys.stderr, dynamic_ncols=True, leave=False,
                             desc=f"{self.plan.cycle_name.capitalize()} {epoch + 1}/{self.plan.num_cycles}",
                             unit="step")

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        self._step += 1
        every = self.plan.log_every_steps
        if every > 0 and self._step % every == 0:
            now = time.monotonic()
            rate = every * self.plan.batch_size / max(now - self._since, 1e-9)
            self._since = now
            shown = self.plan.loss_display_names or tuple((k, k) for k in logs if k.endswith("loss"))
            losses = ", ".join(f"{name}: {_scalar(logs[key]):.5f}" for key, name in shown if key in logs)
            log.info("step %d/%d: %s, learning rate: %.6g, samples/sec: %.2f", self._step, self.plan.total_steps,
                     losses, _scalar(logs.get("learning_rate")), rate)
        if self._bar is None:
            return
        self._bar.update(1)
        self._bar.set_postfix(loss=f"{_scalar(logs.get('loss')):.5f}", lr=f"{_scalar(logs.get('learning_rate')):.2e}",
                              refresh=False)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        logs = logs or {}
        now = time.monotonic()
        done = epoch + 1 - self._first_cycle
        remaining = self.plan.num_cycles - (epoch + 1)
        eta = (now - self._run_start) / max(done, 1) * remaining
        logs["eta_seconds"] = eta
        log.info("%s %d/%d: loss: %.5f learning rate: %.6g Time taken: %s ETA: %s",
                 self.plan.cycle_name.capitalize(), epoch + 1, self.plan.num_cycles, _scalar(logs.get("loss")),
                 _scalar(logs.get("learning_rate")), _fmt_duration(now - self._cycle_start), _fmt_duration(eta))


def append_status(results_dir: str, status: str, message: str, **extra: Any) -> None:
    """Append one line to ``<results_dir>/status.json`` (TAO's status log).

    Args:
        results_dir: the run's folder (must exist).
        status: ``STARTED``, ``RUNNING``, ``SUCCESS`` or ``FAILURE``.
        message: one human sentence.
        **extra: more JSON-able fields (epoch, losses...).
    """
    now = _dt.datetime.now()
    record = {"date": now.strftime("%-m/%-d/%Y"), "time": now.strftime("%H:%M:%S"), "status": status,
              "verbosity": "ERROR" if status == "FAILURE" else "INFO", "message": message}
    record.update(extra)
    with open(os.path.join(results_dir, "status.json"), "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, default=_scalar) + "\n")


class RunRecorder(keras.callbacks.Callback):
    """Validation, checkpoints, ``status.json``, ``metrics.jsonl`` and plots at the end of each cycle.

    Args:
        results_dir: the run's folder.
        plan: the training plan (cadences).
        network: the inference network (validated and checkpointed).
        task: the task (``validate``).
        optimizer: the optimizer (checkpointed).
        extra_state: returns the JSON-able state to store with each checkpoint.
        chief: whether this process writes files.
        signature: the network's :func:`tltk.core.checkpoints.network_signature`, stored with
            each checkpoint.
    """

    def __init__(self, results_dir: str, plan: TrainingPlan, network: keras.Model, task: Task,
                 optimizer: Any, extra_state: Callable[[], dict[str, Any]], chief: bool = True,
                 signature: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.signature = signature
        self.results_dir = results_dir
        self.plan = plan
        self.network = network
        self.task = task
        self.optimizer_ref = optimizer
        self.extra_state = extra_state
        self.chief = chief
        self.last_logs: dict[str, float] = {}
        self.history: list[dict[str, float]] = []
        self._load_history()

    def _load_history(self) -> None:
        path = os.path.join(self.results_dir, "metrics.jsonl")
        if not os.path.isfile(path):
            return
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if line:
                    try:
                        self.history.append(json.loads(line))
                    except ValueError:
                        continue

    def log_status(self, status: str, message: str, **extra: Any) -> None:
        """Append one line to ``status.json``."""
        if not self.chief:
            return
        append_status(self.results_dir, status, message, **extra)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs if logs is not None else {}
        cycle = epoch + 1
        step = cycle * self.plan.steps_per_cycle
        metrics: dict[str, float] = {}
        if cycle in self.plan.validate_after:
            metrics, report = self.task.validate(self.network)
            console.echo(f"\n{self.plan.cycle_name.capitalize()} {cycle}/{self.plan.num_cycles}\n{'=' * 25}\n{report}")
            for name, value in metrics.items():
                logs[f"val_{name}"] = value
        if cycle % self.plan.checkpoint_every == 0 or cycle == self.plan.num_cycles:
            if self.chief:
                checkpoints.save_checkpoint(self.results_dir, cycle, step, self.network, self.optimizer_ref,
                                            self.extra_state(), cycle_name=self.plan.cycle_name,
                                            signature=self.signature)
        scalars = {k: _scalar(v) for k, v in logs.items() if not isinstance(v, (dict, list, str))}
        scalars = {k: v for k, v in scalars.items() if not math.isnan(v)}
        self.last_logs = scalars
        record = {self.plan.cycle_name: cycle, "step": step, **scalars}
        self.history.append(record)
        if not self.chief:
            return
        with open(os.path.join(self.results_dir, "metrics.jsonl"), "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        losses = {k: v for k, v in scalars.items() if k.endswith("loss") or k.startswith("cost")}
        self.log_status("RUNNING", f"{self.plan.cycle_name} {cycle}/{self.plan.num_cycles} done",
                        epoch=cycle, step=step, losses=losses, learning_rate=scalars.get("learning_rate"),
                        eta_seconds=scalars.get("eta_seconds"),
                        metrics={k[4:]: v for k, v in scalars.items() if k.startswith("val_")})
        self._plot()

    def _plot(self) -> None:
        try:
            from tltk.viz.plots import plot_curves
        except ImportError:  # matplotlib missing from a minimal install: skip the plots, keep training
            return
        plots = os.path.join(self.results_dir, "plots")
        os.makedirs(plots, exist_ok=True)
        key = self.plan.cycle_name
        loss_series = {name: [(r[key], r[name]) for r in self.history if name in r]
                       for name in ("loss", "task_loss", "regularization_loss")}
        loss_series = {k: v for k, v in loss_series.items() if v}
        values = [y for v in loss_series.values() for _, y in v]
        # Losses fall by orders of magnitude in the first epochs: a log axis keeps the tail readable.
        log_y = bool(values) and min(values) > 0 and max(values) / min(values) > 20
        plot_curves(loss_series, os.path.join(plots, "loss.png"), xlabel=key, ylabel="loss",
                    title="Training loss", log_y=log_y)
        val_names = sorted({k for r in self.history for k in r if k.startswith("val_")})
        for name in val_names:
            series = [(r[key], r[name]) for r in self.history if name in r]
            plot_curves({name[4:]: series}, os.path.join(plots, f"{name[4:].replace('/', '_')}.png"),
                        xlabel=key, ylabel=name[4:], title=name[4:])
