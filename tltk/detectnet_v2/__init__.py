"""DetectNet_v2: model-specific code (heads, rasterizer, cost functions, postprocessing, subtasks).

This module is the package's row in the model table (:mod:`tltk.models`): its help line, its
subtask commands, its spec schemas and its Task.  It imports nothing heavy, so ``tltk --help``
stays instant.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - typing only
    from tltk.detectnet_v2.task import DetectNetV2Task
    from tltk.spec.rules import KindSchema

HELP = "DetectNet_v2 object detection (KITTI data)."

#: Subtask -> ``module:attribute`` of its click command.
COMMANDS: dict[str, str] = {
    "validate_spec": "tltk.cli.validate_spec:detectnet_v2_validate_spec",
    "train": "tltk.cli.train:detectnet_v2_train",
    "export": "tltk.cli.export:detectnet_v2_export",
    "converter": "tltk.cli.converter:detectnet_v2_converter",
    "dataset_convert": "tltk.cli.detectnet_v2_data:dataset_convert",
    "calibration_tensorfile": "tltk.cli.detectnet_v2_data:calibration_tensorfile",
    "prune": "tltk.cli.prune:detectnet_v2_prune",
    "evaluate": "tltk.cli.evaluate:detectnet_v2_evaluate",
    "inference": "tltk.cli.inference:detectnet_v2_inference",
}


def spec_schemas() -> Mapping[str, KindSchema]:
    """The spec kinds of DetectNet_v2 (experiment, inference, dataset_convert) and their rules."""
    from tltk.detectnet_v2.spec import SCHEMAS

    return SCHEMAS


def load_layers() -> None:
    """Import the modules that register DetectNet_v2's Keras layers (before loading a model file)."""
    import tltk.detectnet_v2.model  # noqa: F401


def make_task(spec: Any = None, key: str | None = None, metadata: Mapping[str, Any] | None = None) -> DetectNetV2Task:
    """The DetectNet_v2 Task for a loaded experiment spec and/or a model file's metadata."""
    from tltk.detectnet_v2.task import DetectNetV2Task

    return DetectNetV2Task(spec, key=key, metadata=metadata)
