"""DetectNet_v2 cost function (``cost_function_config``) with optional auto-weighting.

Per class ``c`` and objective ``o`` in {``cov``, ``bbox``}:

* ``cov``: weighted binary cross-entropy, ``-[t ln(p + 1e-5) + (1 - t) ln(1 - p + 1e-5)]``,
  per-pixel weight ``coverage_foreground_weight`` where ``t > 0.5`` else
  ``1 - coverage_foreground_weight``, times the loss mask, averaged over (N, H, W).
* ``bbox``: L1 distance between predicted and target L/T/R/B, weighted by the target's
  normalised coverage (``cov_norm``) and the loss mask, averaged over (N, 4, H, W).

Task cost = ``sum_c sum_o w_c * w_{c,o} * cost_{c,o}`` with ``w_c = class_weight_c / sum(class_weight)``
and ``w_{c,o}`` starting at ``initial_weight_o / sum_o initial_weight_o``.  With
``enable_autoweighting`` the objective weights are recomputed after every epoch from the
epoch's summed costs: ``u_o = weight_target_o / S_{c,o}``, ``w_{c,o} = clamp(u_o / sum u,
min_objective_weight, max_objective_weight)``.  tltk only: the weights change at the end of
the first epoch that ends at or after ``autoweighting_warmup_steps`` optimizer steps, and of
every epoch after it; 0 is TAO's arithmetic (every epoch).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

OBJECTIVES = ("cov", "bbox")
EPSILON = 1e-5


@dataclass(frozen=True)
class CostParams:
    """Numbers of ``cost_function_config``, in cost-function class order.

    Attributes:
        class_names: target classes (network output channel order).
        class_weights: ``class_weight`` per class, shape (C,).
        foreground_weights: ``coverage_foreground_weight`` per class, shape (C,).
        initial_weights: ``initial_weight`` per class and objective, shape (C, 2) in (cov, bbox) order.
        weight_targets: ``weight_target`` per class and objective, shape (C, 2).
        autoweighting: ``enable_autoweighting``.
        min_objective_weight: lower clamp of auto-weights.
        max_objective_weight: upper clamp of auto-weights.
        autoweighting_warmup_steps: optimizer steps trained with the initial weights before
            the first auto-weighting update (0: TAO, an update after every epoch).
    """

    class_names: tuple[str, ...]
    class_weights: tuple[float, ...]
    foreground_weights: tuple[float, ...]
    initial_weights: tuple[tuple[float, float], ...]
    weight_targets: tuple[tuple[float, float], ...]
    autoweighting: bool
    min_objective_weight: float
    max_objective_weight: float
    autoweighting_warmup_steps: int

    @classmethod
    def from_config(cls, cost_function_config: Any) -> CostParams:
        """Read the ``CostFunctionConfig`` of a loaded (validated) spec.

        The spec rules guarantee that every class has exactly the objectives ``cov`` and
        ``bbox``; unset numbers are the proto's defaults.
        """
        classes = list(cost_function_config.target_classes)
        objectives = [{o.name: o for o in tc.objectives} for tc in classes]
        return cls(class_names=tuple(tc.name for tc in classes),
                   class_weights=tuple(float(tc.class_weight) for tc in classes),
                   foreground_weights=tuple(float(tc.coverage_foreground_weight) for tc in classes),
                   initial_weights=tuple((float(o["cov"].initial_weight), float(o["bbox"].initial_weight))
                                         for o in objectives),
                   weight_targets=tuple((float(o["cov"].weight_target), float(o["bbox"].weight_target))
                                        for o in objectives),
                   autoweighting=bool(cost_function_config.enable_autoweighting),
                   min_objective_weight=float(cost_function_config.min_objective_weight),
                   max_objective_weight=float(cost_function_config.max_objective_weight),
                   autoweighting_warmup_steps=int(cost_function_config.autoweighting_warmup_steps))

    def normalised_class_weights(self) -> np.ndarray:
        """``w_c``, shape (C,), summing to 1."""
        w = np.asarray(self.class_weights, dtype=np.float64)
        return (w / w.sum()).astype(np.float32) if w.sum() > 0 else np.full(len(w), 1.0 / max(len(w), 1), np.float32)

    def initial_objective_weights(self) -> np.ndarray:
        """``w_{c,o}`` at the start of training, shape (C, 2)."""
        w = np.asarray(self.initial_weights, dtype=np.float64)
        sums = w.sum(axis=1, keepdims=True)
        return np.where(sums > 0, w / np.where(sums > 0, sums, 1), 0.5).astype(np.float32)


def autoweights(sums: np.ndarray, weight_targets: np.ndarray, previous: np.ndarray,
                min_weight: float, max_weight: float) -> np.ndarray:
    """New objective weights from one epoch's summed costs.

    Args:
        sums: summed cost per class and objective over the epoch, shape (C, 2).
        weight_targets: ``weight_target`` per class and objective, shape (C, 2).
        previous: current weights, shape (C, 2) (kept for a class whose ``sum u`` is 0).
        min_weight: lower clamp.
        max_weight: upper clamp.

    Returns:
        Weights, shape (C, 2).
    """
    sums = np.asarray(sums, np.float64)
    u = np.where(sums > 0, np.asarray(weight_targets, np.float64) / np.where(sums > 0, sums, 1.0), 0.0)
    total = u.sum(axis=1, keepdims=True)
    new = np.where(total > 0, u / np.where(total > 0, total, 1.0), previous)
    clamped = np.minimum(np.maximum(new, min_weight), max_weight)
    return np.where(total > 0, clamped, previous).astype(np.float32)


class DetectNetCost:
    """The cost function as a callable used inside ``train_step``.

    Args:
        params: the spec's numbers.

    Call arguments:
        cov_pred: predicted coverage, (N, C, H, W) in [0, 1].
        bbox_pred: predicted L/T/R/B, (N, 4C, H, W).
        targets: dict with ``cov`` (N, C, H, W), ``bbox`` (N, 4C, H, W), ``cov_norm`` (N, C, H, W)
            and optionally ``loss_mask`` (N, C, H, W) (1 where the loss counts), or per-objective
            ``cov_mask`` and ``bbox_mask`` (N, C, H, W).

    Returns:
        (task cost scalar, dict of per-class costs named ``cost_<class>_<objective>``).
    """

    def __init__(self, params: CostParams) -> None:
        self.params = params
        c = len(params.class_names)
        self.class_weights = tf.constant(params.normalised_class_weights())
        self.fg_weights = tf.constant(np.asarray(params.foreground_weights, np.float32))
        self.objective_weights = tf.Variable(params.initial_objective_weights(), trainable=False,
                                             name="cost_autoweights", dtype=tf.float32)
        self.epoch_sums = tf.Variable(tf.zeros((c, 2)), trainable=False, name="cost_epoch_sums",
                                      synchronization=tf.VariableSynchronization.ON_READ,
                                      aggregation=tf.VariableAggregation.SUM)

    def per_class_costs(self, cov_pred: Any, bbox_pred: Any, targets: dict[str, Any]) -> Any:
        """Costs per class and objective, shape (C, 2) in (cov, bbox) order."""
        cov_t = tf.cast(targets["cov"], tf.float32)
        cov_norm = tf.cast(targets["cov_norm"], tf.float32)
        bbox_t = tf.cast(targets["bbox"], tf.float32)
        mask = tf.cast(targets["loss_mask"], tf.float32) if "loss_mask" in targets else tf.ones_like(cov_t)
        cov_mask = tf.cast(targets["cov_mask"], tf.float32) if "cov_mask" in targets else mask
        bbox_mask = tf.cast(targets["bbox_mask"], tf.float32) if "bbox_mask" in targets else mask
        p = tf.cast(cov_pred, tf.float32)
        bce = -(cov_t * tf.math.log(p + EPSILON) + (1.0 - cov_t) * tf.math.log(1.0 - p + EPSILON))
        fg = self.fg_weights[tf.newaxis, :, tf.newaxis, tf.newaxis]
        pixel_w = tf.where(cov_t > 0.5, fg, 1.0 - fg)
        cov_cost = tf.reduce_mean(cov_mask * pixel_w * bce, axis=[0, 2, 3])  # (C,)
        shape = tf.shape(bbox_t)
        c = len(self.params.class_names)
        diff = tf.abs(tf.cast(bbox_pred, tf.float32) - bbox_t)
        diff = tf.reshape(diff, [shape[0], c, 4, shape[2], shape[3]])
        weight = (bbox_mask * cov_norm)[:, :, tf.newaxis]
        bbox_cost = tf.reduce_mean(weight * diff, axis=[0, 2, 3, 4])  # (C,)
        return tf.stack([cov_cost, bbox_cost], axis=1)

    def __call__(self, cov_pred: Any, bbox_pred: Any, targets: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        costs = self.per_class_costs(cov_pred, bbox_pred, targets)
        if self.params.autoweighting:
            self.epoch_sums.assign_add(costs)
        weighted = self.class_weights[:, tf.newaxis] * self.objective_weights * costs
        total = tf.reduce_sum(weighted)
        components = {}
        for i, name in enumerate(self.params.class_names):
            for j, obj in enumerate(OBJECTIVES):
                components[f"cost_{name}_{obj}"] = costs[i, j]
        return total, components

    def component_names(self) -> list[str]:
        """Names of the per-class cost components, in a stable order."""
        return [f"cost_{n}_{o}" for n in self.params.class_names for o in OBJECTIVES]

    def end_epoch(self, steps_done: int) -> np.ndarray:
        """Apply auto-weighting from this epoch's sums and reset them; returns the weights (C, 2).

        Args:
            steps_done: optimizer steps of the run so far, this epoch's included; no update
                while ``steps_done < autoweighting_warmup_steps`` (the sums are dropped).
        """
        if self.params.autoweighting:
            sums = self.epoch_sums.read_value().numpy()
            if steps_done >= self.params.autoweighting_warmup_steps:
                new = autoweights(sums, np.asarray(self.params.weight_targets), self.objective_weights.numpy(),
                                  self.params.min_objective_weight, self.params.max_objective_weight)
                self.objective_weights.assign(new)
            self.epoch_sums.assign(tf.zeros_like(self.epoch_sums.read_value()))
        return self.objective_weights.numpy()

    def get_state(self) -> dict[str, Any]:
        """JSON-able state for checkpoints."""
        return {"objective_weights": self.objective_weights.numpy().tolist()}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`get_state`'s output."""
        if "objective_weights" in state:
            self.objective_weights.assign(np.asarray(state["objective_weights"], np.float32))


def class_index(names: Sequence[str], name: str) -> int:
    """Index of ``name`` in the cost-function class list (case-insensitive)."""
    lowered = [n.lower() for n in names]
    return lowered.index(name.lower())
