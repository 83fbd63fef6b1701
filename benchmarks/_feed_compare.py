"""Shared harness: one training step fed by the real input pipeline vs. the same step on in-memory batches.

Used by ``benchmarks/detectnet_v2_train.py`` and ``benchmarks/mask_rcnn_train_input.py``.

Method (what makes the numbers comparable):

* one compiled :class:`tltk.core.trainer.TaskModel` and its Keras train function (the function
  ``fit()`` calls once per step, without the callbacks) serves every mode;
* the *in-memory* baseline replays ``--cached`` batches taken from the same real pipeline
  (materialised once, then served from a ``tf.data`` dataset of tensors), so it runs exactly the
  same training step on the same kind of data, with no decoding, augmentation or targets;
* each timed block opens a fresh iterator, runs ``warmup`` untimed steps (pipeline start,
  shuffle buffer, autotuning; tracing happens once before the first block), then times ``steps``
  steps, waits for the last one and closes the iterator (so no pipeline thread keeps working
  into the next block);
* the modes are interleaved: repetition r runs them in a rotated order, so slow phases of a
  shared machine hit every mode alike;
* per mode: median, minimum and maximum over the repetitions of wall seconds per step, and the
  process CPU seconds per step (all threads: training and input pipeline); the ratio is the
  in-memory median step time over the mode's (1.0 means the pipeline costs training nothing),
  with the range of the per-repetition ratios and their median (``paired``: each repetition's
  blocks of the two modes run back to back, so this one follows a machine whose speed drifts
  during the run better than the ratio of the medians does); the CPU ratio is the same for the median process
  CPU-seconds per step (in-memory CPU-s / mode CPU-s: the share of the process's CPU time that
  is the training step itself; steadier than wall time on a machine shared with other jobs).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ModeResult:
    """Timings of one mode: seconds per step of each repetition (wall and process CPU)."""

    name: str
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)


def materialise(dataset: Any, batches: int) -> Any:
    """A repeating dataset of ``batches`` batches taken once from ``dataset`` (held in memory)."""
    import tensorflow as tf

    iterator = iter(dataset)
    taken = [next(iterator) for _ in range(batches)]
    del iterator
    stacked = tf.nest.map_structure(lambda *parts: tf.stack(parts), *taken)
    return tf.data.Dataset.from_tensor_slices(stacked).repeat()


def _block(train_function: Callable[[Any], Any], dataset: Any, warmup: int, steps: int) -> tuple[float, float]:
    import tensorflow as tf

    iterator = iter(dataset)
    logs = None
    for _ in range(warmup):
        logs = train_function(iterator)
    tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, logs)
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        logs = train_function(iterator)
    tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, logs)  # wait for the last step
    wall, used = time.perf_counter() - start, time.process_time() - cpu
    del iterator
    return wall / steps, used / steps


def time_steps(train_function: Callable[[Any], Any], dataset: Any, steps: int) -> list[float]:
    """Wall seconds of each of ``steps`` calls of ``train_function`` on ``dataset``, after one untimed call."""
    import tensorflow as tf

    iterator = iter(dataset)
    tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, train_function(iterator))
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, train_function(iterator))
        seconds.append(time.perf_counter() - start)
    return seconds


def compare(model: Any, modes: dict[str, Any], steps: int, reps: int, warmup: int,
            log: Callable[[str], None] = print, partial: Callable[[list[ModeResult]], None] | None = None
            ) -> list[ModeResult]:
    """Time ``model``'s train function on each dataset of ``modes`` (name -> dataset), interleaved.

    ``partial`` (when given) receives the results after every complete repetition, so that a
    run cut short still reports what it measured.

    Returns:
        One :class:`ModeResult` per mode, in the order of ``modes``.
    """
    model.make_train_function()
    train_function = model.train_function
    names = list(modes)
    results = {name: ModeResult(name) for name in names}
    for name in names:  # trace once per element spec, start nothing timed
        _block(train_function, modes[name], 1, 1)
    for rep in range(reps):
        order = names[rep % len(names):] + names[:rep % len(names)]
        for name in order:
            wall, cpu = _block(train_function, modes[name], warmup, steps)
            results[name].wall.append(wall)
            results[name].cpu.append(cpu)
            log(f"  rep {rep + 1}/{reps} {name}: {wall:.3f} s/step wall, {cpu:.3f} CPU-s/step, "
                f"load {os.getloadavg()[0]:.2f}")
        if partial is not None:
            partial([results[name] for name in names])
    return [results[name] for name in names]


def table(title: str, results: list[ModeResult], batch: int, baseline: str = "in-memory") -> str:
    """The results as a text table: per mode median [min-max] s/step, img/s, CPU-s/step, ratio to ``baseline``."""
    base = next(r for r in results if r.name == baseline)
    base_median = statistics.median(base.wall)
    base_cpu = statistics.median(base.cpu)
    lines = [title,
             f"{'mode':<22}{'s/step median [min-max]':>28}{'img/s':>8}{'ratio':>7}{'ratio range':>14}"
             f"{'paired':>8}{'CPU-s/step':>12}{'CPU ratio':>11}"]
    lines.append("-" * len(lines[-1]))
    for r in results:
        median = statistics.median(r.wall)
        cpu = statistics.median(r.cpu)
        pairs = [b / w for b, w in zip(base.wall, r.wall, strict=True)]
        lines.append(f"{r.name:<22}{median:>10.3f} [{min(r.wall):.3f}-{max(r.wall):.3f}]".ljust(50)
                     + f"{batch / median:>8.2f}{base_median / median:>7.2f}{f'{min(pairs):.2f}-{max(pairs):.2f}':>14}"
                     f"{statistics.median(pairs):>8.2f}{cpu:>12.3f}{base_cpu / cpu:>11.2f}")
    return "\n".join(lines)
