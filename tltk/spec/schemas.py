"""Convenient names for the spec message classes and their generated modules.

Example::

    from tltk.spec.schemas import DetectNetExperiment
    spec = DetectNetExperiment()
    spec.training_config.num_epochs = 10

The classes are generated from ``protos/tltk/*.proto`` into ``tltk._proto``:
``tltk._proto.detectnet_v2_pb2`` (package ``tltk.detectnet_v2``),
``tltk._proto.mask_rcnn_pb2`` (package ``tltk.mask_rcnn``) and ``tltk._proto.common_pb2``
(package ``tltk.common``: ``WandBConfig``, ``ClearMLConfig``).
"""

from __future__ import annotations

from tltk._proto import common_pb2, detectnet_v2_pb2, mask_rcnn_pb2

DetectNetExperiment = detectnet_v2_pb2.Experiment
DetectNetInference = detectnet_v2_pb2.Inference
DetectNetDatasetExportConfig = detectnet_v2_pb2.DatasetExportConfig
MaskRCNNExperiment = mask_rcnn_pb2.Experiment

__all__ = [
    "DetectNetDatasetExportConfig",
    "DetectNetExperiment",
    "DetectNetInference",
    "MaskRCNNExperiment",
    "common_pb2",
    "detectnet_v2_pb2",
    "mask_rcnn_pb2",
]
