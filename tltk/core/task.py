"""The interface between a model package and the shared cores: a model's whole face.

The trainer, evaluator, exporter, pruner, calibration and inference only talk to a
:class:`Task`; nothing shared imports a model package (the model table, :mod:`tltk.models`,
constructs the Task and hands it over).

Training: DetectNet_v2 runs epoch-based and MaskRCNN step-based; both are a
:class:`TrainingPlan` made of *cycles* (an epoch, or ``num_steps_per_eval`` steps), so resume,
checkpoints, validation cadence, progress, AMP and distribution are the same code for both.
A Task's training graph may differ from its inference network (MaskRCNN samples ROIs from
the ground truth inside the step): the trainer calls :meth:`Task.training_forward` with images
*and* targets, optimises the network's variables, and saves the inference network.

Deployment: :meth:`Task.export_signature` names the network's input and outputs as TAO does,
:meth:`Task.preprocessing` is the one preprocessing used by inference, calibration and
DeepStream's ``net-scale-factor``/``offsets``, :meth:`Task.deepstream_config` fills the nvinfer
config, and :meth:`Task.pruning_protected_layers` lists the layers pruning must keep.

A Task is built from an experiment spec, or without one (``spec=None``) from a model file's
metadata, for the subtasks that need no data (prune, export without calibration, inference).
Methods that need the spec raise :class:`tltk.errors.UsageError` saying which flag is missing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from tltk.data.images import Preprocessing

Predict = Callable[[np.ndarray], Mapping[str, np.ndarray]]
"""A network on some backend: ``[N, C, H, W]`` float32 preprocessed batch -> TAO output name -> array."""


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
        log_every_steps: write a training log line every this many steps (0: once per cycle).
        loss_display_names: ``(log key, name shown)`` pairs, in order, for the per-step log
            line (TAO's names, e.g. ``("rpn_score_loss", "RPN score loss")``); empty: every
            logged loss under its own key.
    """

    steps_per_cycle: int
    num_cycles: int
    checkpoint_every: int
    validate_after: frozenset[int] = field(default_factory=frozenset)
    cycle_name: str = "epoch"
    batch_size: int = 1
    log_every_steps: int = 0
    loss_display_names: tuple[tuple[str, str], ...] = ()

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


@dataclass(frozen=True)
class ExportSignature:
    """The deployed network's tensors, named as TAO's exported models name them.

    Attributes:
        input_name: ONNX/TensorRT input name (``input_1`` for DetectNet_v2, ``Input`` for MaskRCNN).
        input_chw: ``(C, H, W)`` of the input; the layout is always NCHW with a dynamic batch.
        output_names: Keras output (or layer) name -> ONNX output name.
        output_shapes: ONNX output name -> shape without the batch dimension (-1: open).
    """

    input_name: str
    input_chw: tuple[int, int, int]
    output_names: Mapping[str, str]
    output_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def onnx_output_names(self) -> list[str]:
        """The ONNX output names."""
        return list(self.output_names.values())


@dataclass
class Evaluation:
    """What evaluating a network on a split produced.

    Attributes:
        metrics: scalar metrics (in 0..1 for AP-like values) under the model's metric names.
        report: the printable block, as TAO prints it.
        num_images: images evaluated.
        details: JSON-able extras for the report file (per-class values, counts...).
        plots: name -> callable writing a PNG to the given path (PR curves...).
    """

    metrics: dict[str, float]
    report: str
    num_images: int
    details: dict[str, Any] = field(default_factory=dict)
    plots: dict[str, Callable[[str], Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class DeepStreamRequest:
    """What the exporter knows when it asks a Task for its DeepStream nvinfer config.

    Attributes:
        model_file: the file nvinfer loads (``.onnx`` or ``.etlt``).
        precision: ``fp32``, ``fp16`` or ``int8``.
        key: the ``.etlt`` key, if any.
        calib_cache: INT8 calibration cache for implicit quantization, or None.
        explicit_quantization: the model file is a Q/DQ ONNX model.
        config_dir: folder the config is written to (paths are made relative to it).
        batch_size: nvinfer's batch size.
        class_names: the model's class names (background excluded).
    """

    model_file: str
    precision: str
    key: str | None
    calib_cache: str | None
    explicit_quantization: bool
    config_dir: str
    batch_size: int
    class_names: tuple[str, ...]


@runtime_checkable
class Task(Protocol):
    """What a model package provides to the shared cores.

    Tensors are TensorFlow tensors; images are NCHW float32.  ``training_forward`` and
    ``compute_loss`` run inside the Keras ``train_step`` (graph mode, under the distribution
    strategy).
    """

    model_kind: str

    # ---- training -------------------------------------------------------------------------
    def random_seed(self) -> int:
        """The spec's random seed (weights initialisation, data order, augmentation)."""
        ...

    def training_plan(self, num_replicas: int) -> TrainingPlan:
        """Steps per cycle, number of cycles, checkpoint, validation and logging cadence."""
        ...

    def build_network(self) -> Any:
        """Build (or load: pretrained weights, pruned models) the Keras inference network.

        This network is what checkpoints hold, what the final ``.tlt`` holds and what export
        converts.  Any training-only graph built around it must own no variables of its own.
        """
        ...

    def training_forward(self, network: Any, images: Any, targets: Any, training: bool) -> Any:
        """The forward pass the loss is computed on (images *and* targets, see the module doc)."""
        ...

    def train_dataset(self, start_cycle: int, global_batch_size: int) -> Any:
        """A ``tf.data.Dataset`` of ``(images, targets)`` covering cycles ``start_cycle..end``.

        Each cycle's data (order and augmentation) must depend only on the seed and the cycle
        number, so a resumed run sees exactly the batches an uninterrupted run would.
        """
        ...

    def loss_names(self) -> list[str]:
        """Names of the loss components :meth:`compute_loss` returns, in log order."""
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

    def model_metadata(self) -> dict[str, Any]:
        """Metadata stored in the final ``.tlt`` (class names, input shape, resolved spec...)."""
        ...

    # ---- evaluation and inference ---------------------------------------------------------
    def keras_predictor(self, network: Any) -> Predict:
        """A :data:`Predict` function running a Keras network (outputs under TAO's names)."""
        ...

    def evaluate(self, predict: Predict, split: str, batch_size: int | None = None,
                 model_metadata: Mapping[str, Any] | None = None) -> Evaluation:
        """Run ``predict`` over a split of the spec's data and score it with the model's metrics.

        Args:
            predict: the network on any backend.
            split: ``val`` or ``train``.
            batch_size: images per batch (default: the spec's).
            model_metadata: the evaluated model file's metadata (e.g. trained loss weights).
        """
        ...

    def validate(self, network: Any) -> tuple[dict[str, float], str]:
        """Evaluate a Keras network on the validation split: (scalar metrics, printable report)."""
        ...

    def preprocessing(self) -> Preprocessing:
        """The network's input preprocessing (inference, calibration, DeepStream)."""
        ...

    # ---- deployment -----------------------------------------------------------------------
    def export_signature(self, network: Any) -> ExportSignature:
        """Input and output names and shapes of ``network`` as deployed."""
        ...

    def calibration_batches(self, batch_size: int, batches: int, split: str = "train") -> Iterator[np.ndarray]:
        """INT8 calibration batches from the spec's data (``train`` shuffled), preprocessed as inference does."""
        ...

    def deepstream_config(self, request: DeepStreamRequest) -> tuple[Any, list[str]]:
        """The nvinfer config (:class:`tltk.deepstream.nvinfer.NvinferConfig`) and ``labels.txt`` lines."""
        ...

    def pruning_protected_layers(self, network: Any) -> tuple[str, ...]:
        """Layers whose output channels pruning must keep (heads, outputs)."""
        ...

    def check_model(self, network: Any, source: str) -> None:
        """Raise :class:`tltk.errors.InvalidInputError` when ``network`` is not this model kind."""
        ...
