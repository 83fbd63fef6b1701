"""Learning-rate schedules: values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tltk.core.schedules import (
    SoftStartAnnealingSchedule,
    WarmupStepDecaySchedule,
    soft_start_annealing_lr,
    warmup_step_decay_lr,
)


def test_soft_start_annealing_hand_values():
    # min 1e-6, max 1e-2, soft_start 0.1, annealing 0.7, 1000 steps.
    args = dict(total_steps=1000, min_lr=1e-6, max_lr=1e-2, soft_start=0.1, annealing=0.7)
    assert soft_start_annealing_lr(0, **args) == pytest.approx(1e-6)
    # p = 0.05 -> t = 0.5 -> sqrt(1e-6 * 1e-2) = 1e-4
    assert soft_start_annealing_lr(50, **args) == pytest.approx(1e-4, rel=1e-9)
    assert soft_start_annealing_lr(100, **args) == pytest.approx(1e-2)
    assert soft_start_annealing_lr(500, **args) == pytest.approx(1e-2)
    # p = 0.85 -> t = 0.15/0.3 = 0.5 -> 1e-4
    assert soft_start_annealing_lr(850, **args) == pytest.approx(1e-4, rel=1e-9)
    assert soft_start_annealing_lr(1000, **args) == pytest.approx(1e-6)


def test_soft_start_zero_and_annealing_one_keep_max():
    assert soft_start_annealing_lr(0, 10, 1e-5, 1e-3, 0.0, 1.0) == pytest.approx(1e-3)
    assert soft_start_annealing_lr(10, 10, 1e-5, 1e-3, 0.0, 1.0) == pytest.approx(1e-3)


def test_keras_schedule_matches_reference():
    sched = SoftStartAnnealingSchedule(1000, 5e-6, 5e-4, 0.1, 0.7)
    for step in (0, 1, 37, 100, 101, 699, 700, 701, 850, 999, 1000, 1200):
        ref = soft_start_annealing_lr(step, 1000, 5e-6, 5e-4, 0.1, 0.7)
        assert float(np.asarray(sched(step))) == pytest.approx(ref, rel=1e-5)


def test_schedule_rejects_bad_ranges():
    with pytest.raises(ValueError):
        SoftStartAnnealingSchedule(10, 0.0, 1e-3, 0.1, 0.7)
    with pytest.raises(ValueError):
        SoftStartAnnealingSchedule(10, 1e-5, 1e-3, 0.8, 0.7)


def test_warmup_step_decay_hand_values():
    args = dict(init_lr=0.02, warmup_steps=100, warmup_lr=0.002, boundaries=[1000, 2000], levels=[0.002, 0.0002])
    assert warmup_step_decay_lr(0, **args) == pytest.approx(0.002)
    assert warmup_step_decay_lr(50, **args) == pytest.approx(0.011)
    assert warmup_step_decay_lr(100, **args) == pytest.approx(0.02)
    assert warmup_step_decay_lr(999, **args) == pytest.approx(0.02)
    assert warmup_step_decay_lr(1000, **args) == pytest.approx(0.002)
    assert warmup_step_decay_lr(2500, **args) == pytest.approx(0.0002)
    sched = WarmupStepDecaySchedule(0.02, 100, 0.002, [1000, 2000], [0.002, 0.0002])
    for step in (0, 50, 99, 100, 999, 1000, 1999, 2000, 5000):
        assert float(np.asarray(sched(step))) == pytest.approx(warmup_step_decay_lr(step, **args), rel=1e-5)
    assert math.isclose(sched.get_config()["levels"][1], 0.0002)
