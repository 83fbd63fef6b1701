"""MaskRCNN: model-specific code (FPN, anchors, RPN, heads, losses, postprocessing, subtasks).

This module is the package's row in the model table (:mod:`tltk.models`): its help line, its
subtask commands, its spec schemas and its Task.  It imports nothing heavy, so ``tltk --help``
stays instant.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - typing only
    from tltk.spec.rules import KindSchema

HELP = "MaskRCNN instance segmentation (COCO data)."

#: Subtask -> ``module:attribute`` of its click command.
COMMANDS: dict[str, str] = {
    "validate_spec": "tltk.cli.validate_spec:mask_rcnn_validate_spec",
    "train": "tltk.cli.train:mask_rcnn_train",
    "export": "tltk.cli.export:mask_rcnn_export",
    "prune": "tltk.cli.prune:mask_rcnn_prune",
    "evaluate": "tltk.cli.mask_rcnn_infer:mask_rcnn_evaluate",
    "inference": "tltk.cli.mask_rcnn_infer:mask_rcnn_inference",
    "converter": "tltk.cli.converter:mask_rcnn_converter",
    "dataset_convert": "tltk.cli.mask_rcnn_data:dataset_convert",
}


def spec_schemas() -> Mapping[str, KindSchema]:
    """The spec kinds of MaskRCNN (experiment) and their rules."""
    from tltk.mask_rcnn.spec import SCHEMAS

    return SCHEMAS


def load_layers() -> None:
    """Import the modules that register MaskRCNN's Keras layers (before loading a model file)."""
    import tltk.mask_rcnn.model  # noqa: F401


def make_task(spec: Any = None, key: str | None = None, metadata: Mapping[str, Any] | None = None) -> Any:
    """The MaskRCNN Task for a loaded experiment spec and/or a model file's metadata."""
    from tltk.mask_rcnn.task import MaskRCNNTask

    return MaskRCNNTask(spec, key=key, metadata=metadata)
