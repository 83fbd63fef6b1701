"""Learning-rate schedules shared by both models.

All schedules are functions of the global optimizer step (an integer counted from 0) and
return the learning rate as a float32 scalar, so they work inside ``train_step`` under any
``tf.distribute`` strategy and are saved/restored with the optimizer's ``iterations``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
from keras import ops


def soft_start_annealing_lr(step: float, total_steps: int, min_lr: float, max_lr: float,
                            soft_start: float, annealing: float) -> float:
    """Reference (pure Python) value of TAO's soft-start annealing schedule.

    Progress ``p = step / total_steps``.  Before ``soft_start`` the rate rises log-linearly from
    ``min_lr`` to ``max_lr``; after ``annealing`` it falls log-linearly back to ``min_lr`` at
    ``p = 1``; in between it stays at ``max_lr``: ``lr = min_lr * (max_lr / min_lr) ** t``.

    Args:
        step: global step (0-based).
        total_steps: steps of the whole run (``steps_per_epoch * num_epochs``).
        min_lr: lowest learning rate (> 0).
        max_lr: peak learning rate (> 0).
        soft_start: fraction of the run spent warming up, in [0, 1].
        annealing: fraction of the run after which annealing starts, in [soft_start, 1].

    Returns:
        The learning rate at ``step``.
    """
    p = min(max(step / max(total_steps, 1), 0.0), 1.0)
    if soft_start > 0 and p < soft_start:
        t = p / soft_start
    elif annealing < 1 and p > annealing:
        t = (1.0 - p) / (1.0 - annealing)
    else:
        t = 1.0
    return math.exp(math.log(min_lr) + t * (math.log(max_lr) - math.log(min_lr)))


@keras.saving.register_keras_serializable(package="tltk")
class SoftStartAnnealingSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """TAO DetectNet_v2 ``soft_start_annealing_schedule`` as a Keras schedule.

    Args:
        total_steps: steps of the whole run.
        min_learning_rate: lowest rate (> 0).
        max_learning_rate: peak rate (> 0).
        soft_start: warm-up fraction of the run, in [0, 1].
        annealing: fraction after which the rate decays, in [soft_start, 1].
    """

    def __init__(self, total_steps: int, min_learning_rate: float, max_learning_rate: float,
                 soft_start: float, annealing: float) -> None:
        if min_learning_rate <= 0 or max_learning_rate <= 0:
            raise ValueError("min_learning_rate and max_learning_rate must be > 0")
        if not 0.0 <= soft_start <= annealing <= 1.0:
            raise ValueError(f"need 0 <= soft_start ({soft_start}) <= annealing ({annealing}) <= 1")
        self.total_steps = int(total_steps)
        self.min_learning_rate = float(min_learning_rate)
        self.max_learning_rate = float(max_learning_rate)
        self.soft_start = float(soft_start)
        self.annealing = float(annealing)

    def __call__(self, step: Any) -> Any:
        p = ops.clip(ops.cast(step, "float32") / float(max(self.total_steps, 1)), 0.0, 1.0)
        one = ops.ones_like(p)
        if self.soft_start > 0:
            rising = p / self.soft_start
        else:
            rising = one
        if self.annealing < 1:
            falling = (1.0 - p) / (1.0 - self.annealing)
        else:
            falling = one
        t = ops.where(p < self.soft_start, rising, ops.where(p > self.annealing, falling, one))
        log_min = math.log(self.min_learning_rate)
        log_max = math.log(self.max_learning_rate)
        return ops.exp(log_min + t * (log_max - log_min))

    def get_config(self) -> dict[str, Any]:
        return {
            "total_steps": self.total_steps,
            "min_learning_rate": self.min_learning_rate,
            "max_learning_rate": self.max_learning_rate,
            "soft_start": self.soft_start,
            "annealing": self.annealing,
        }


def warmup_step_decay_lr(step: float, init_lr: float, warmup_steps: int, warmup_lr: float,
                         boundaries: Sequence[int], levels: Sequence[float]) -> float:
    """Reference value of the MaskRCNN schedule: linear warm-up, then piecewise-constant levels.

    During the first ``warmup_steps`` steps the rate moves linearly from ``warmup_lr`` to
    ``init_lr``; afterwards it is ``init_lr`` until ``boundaries[0]``, then ``levels[i]`` from
    ``boundaries[i]`` on (levels are absolute rates, TAO's ``learning_rate_decay_levels`` times
    ``init_learning_rate``).
    """
    if warmup_steps > 0 and step < warmup_steps:
        return warmup_lr + (init_lr - warmup_lr) * step / warmup_steps
    lr = init_lr
    for boundary, level in zip(boundaries, levels):
        if step >= boundary:
            lr = level
    return lr


@keras.saving.register_keras_serializable(package="tltk")
class WarmupStepDecaySchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up followed by step decay (MaskRCNN ``learning_rate_steps`` / ``_decay_levels``).

    Args:
        init_learning_rate: rate after warm-up.
        warmup_steps: number of warm-up steps (0 disables warm-up).
        warmup_learning_rate: rate at step 0.
        boundaries: steps at which the rate switches to the next level, increasing.
        levels: absolute rates used from each boundary on (same length as ``boundaries``).
    """

    def __init__(self, init_learning_rate: float, warmup_steps: int, warmup_learning_rate: float,
                 boundaries: Sequence[int], levels: Sequence[float]) -> None:
        if len(boundaries) != len(levels):
            raise ValueError(f"{len(boundaries)} learning-rate steps but {len(levels)} decay levels")
        if list(boundaries) != sorted(boundaries):
            raise ValueError(f"learning-rate steps must increase: {list(boundaries)}")
        self.init_learning_rate = float(init_learning_rate)
        self.warmup_steps = int(warmup_steps)
        self.warmup_learning_rate = float(warmup_learning_rate)
        self.boundaries = [int(b) for b in boundaries]
        self.levels = [float(v) for v in levels]

    def __call__(self, step: Any) -> Any:
        s = ops.cast(step, "float32")
        lr = ops.ones_like(s) * self.init_learning_rate
        for boundary, level in zip(self.boundaries, self.levels):
            lr = ops.where(s >= float(boundary), ops.ones_like(s) * level, lr)
        if self.warmup_steps > 0:
            frac = s / float(self.warmup_steps)
            warm = self.warmup_learning_rate + (self.init_learning_rate - self.warmup_learning_rate) * frac
            lr = ops.where(s < float(self.warmup_steps), warm, lr)
        return lr

    def get_config(self) -> dict[str, Any]:
        return {
            "init_learning_rate": self.init_learning_rate,
            "warmup_steps": self.warmup_steps,
            "warmup_learning_rate": self.warmup_learning_rate,
            "boundaries": self.boundaries,
            "levels": self.levels,
        }
