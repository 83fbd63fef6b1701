"""The interface between a model package and the shared training core.

The trainer, evaluator, exporter and pruner only talk to a :class:`Task`.  DetectNet_v2 runs
epoch-based and MaskRCNN step-based; both are expressed as a :class:`TrainingPlan` made of
*cycles* (an epoch for DetectNet_v2, ``num_steps_per_eval`` steps for MaskRCNN), so resume,
checkpoints, validation cadence, progress, AMP and distribution are the same code for both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class TrainingPlan:
    """How long to train and when to checkpoint and validate.

    Attributes:
        steps_per_cycle: optimizer steps in one cycle (an epoch, or an evaluation period).
        num_cycles: cycles in the whole run.
        checkpoint_every: write a checkpoint every this many cycles (and always at the end).
        validate_after: 1-based cycle numbers after which validation runs.
        cycle_name: word used in logs ("epoch" or "cycle").
        batch_size: global batch size (images per optimizer step over all replicas).
    """

    steps_per_cycle: int
    num_cycles: int
    checkpoint_every: int
    validate_after: frozenset[int] = field(default_factory=frozenset)
    cycle_name: str = "epoch"
    batch_size: int = 1

    @property
    def total_steps(self) -> int:
        """Optimizer steps in the whole run."""
        return self.steps_per_cycle * self.num_cycles


@dataclass(frozen=True)
class CostScaling:
    """TAO's static-exponent cost scaling (``training_config.cost_scaling``).

    The loss is multiplied by ``2**exponent`` before differentiation and the gradients divided
    by it; after a step with finite gradients the exponent grows by ``increment``, after a
    step with a non-finite gradient the update is skipped and it shrinks by ``decrement``.
    """

    initial_exponent: float
    increment: float
    decrement: float


@runtime_checkable
class Task(Protocol):
    """What a model package provides to the shared training core.

    Tensors are TensorFlow tensors; images are NCHW float32.  ``compute_loss`` runs inside the
    Keras ``train_step`` (graph mode, under the distribution strategy).
    """

    model_kind: str

    def training_plan(self, num_replicas: int) -> TrainingPlan:
        """Steps per cycle, number of cycles, checkpoint and validation cadence."""
        ...

    def build_network(self) -> Any:
        """Build (or load, for pretrained / ``load_graph`` specs) the Keras inference network."""
        ...

    def train_dataset(self, start_cycle: int, global_batch_size: int) -> Any:
        """A ``tf.data.Dataset`` of ``(images, targets)`` covering cycles ``start_cycle..end``.

        Each cycle's data (order and augmentation) must depend only on the seed and the cycle
        number, so a resumed run sees exactly the batches an uninterrupted run would.
        """
        ...

    def compute_loss(self, outputs: Any, targets: Any) -> tuple[Any, dict[str, Any]]:
        """Task loss (without regularization) and named components for logging."""
        ...

    def build_optimizer(self, plan: TrainingPlan) -> Any:
        """A Keras optimizer with the spec's learning-rate schedule."""
        ...

    def cost_scaling(self) -> CostScaling | None:
        """TAO-style cost scaling, or None."""
        ...

    def extra_state(self) -> dict[str, Any]:
        """Non-Keras training state to checkpoint (e.g. auto-weighting), as JSON-able values."""
        ...

    def restore_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned."""
        ...

    def callbacks(self) -> list[Any]:
        """Task-specific Keras callbacks (e.g. auto-weighting at epoch end)."""
        ...

    def validate(self, network: Any) -> tuple[dict[str, float], str]:
        """Evaluate ``network`` on the validation split: (scalar metrics, printable report)."""
        ...

    def model_metadata(self) -> dict[str, Any]:
        """Metadata stored in the final ``.tlt`` (class names, input shape, resolved spec...)."""
        ...
