"""TAO-compatible spec files: loading, validation, ``--set`` overrides and resolved specs.

Public API::

    from tltk.spec import load_spec, check_spec, write_resolved_spec, LoadedSpec, SpecReport

    from tltk.models import load_spec   # passes the model table's spec catalog

    loaded = load_spec("train.txt", model="detectnet_v2", overrides=["training_config.num_epochs=5"])
    loaded.kind             # "experiment" (recognised from the file when kind=None)
    loaded.message          # tltk._proto.detectnet_v2_pb2.Experiment
    resolve_spec_path(loaded, loaded.message.model_config.pretrained_model_file)
    write_resolved_spec(loaded.message, "results/train/experiment_spec.txt")

Message classes: :mod:`tltk.spec.schemas` (``DetectNetExperiment``, ``DetectNetInference``,
``DetectNetDatasetExportConfig``, ``MaskRCNNExperiment``) and the generated modules
``tltk.spec.detectnet_v2_pb2`` / ``tltk.spec.mask_rcnn_pb2`` / ``tltk.spec.common_pb2``.
MaskRCNN's string-encoded tuples are read with :mod:`tltk.spec.literals` (and the typed
accessors in :mod:`tltk.mask_rcnn.spec`).
"""

from __future__ import annotations

from tltk.spec.fieldpath import format_path, iter_fields, parse_path
from tltk.spec.kinds import KINDS, SpecCatalog, detect_kind, schema_for, schemas
from tltk.spec.literals import (
    LiteralError,
    parse_int_sequence,
    parse_literal,
    parse_number_sequence,
    parse_pair_list,
)
from tltk.spec.load import (
    LoadedSpec,
    SpecReport,
    check_spec,
    load_spec,
    parse_spec_text,
    resolve_path,
    resolve_spec_path,
    spec_files,
)
from tltk.spec.overrides import OverrideError, apply_override
from tltk.spec.problems import Problem
from tltk.spec.resolve import fill_defaults, resolved_text, write_resolved_spec
from tltk.spec.schemas import (
    DetectNetDatasetExportConfig,
    DetectNetExperiment,
    DetectNetInference,
    MaskRCNNExperiment,
    common_pb2,
    detectnet_v2_pb2,
    mask_rcnn_pb2,
)

__all__ = [
    "KINDS",
    "SpecCatalog",
    "DetectNetDatasetExportConfig",
    "DetectNetExperiment",
    "DetectNetInference",
    "LiteralError",
    "LoadedSpec",
    "MaskRCNNExperiment",
    "OverrideError",
    "Problem",
    "SpecReport",
    "apply_override",
    "check_spec",
    "common_pb2",
    "detect_kind",
    "detectnet_v2_pb2",
    "fill_defaults",
    "format_path",
    "iter_fields",
    "load_spec",
    "mask_rcnn_pb2",
    "parse_int_sequence",
    "parse_literal",
    "parse_number_sequence",
    "parse_pair_list",
    "parse_path",
    "parse_spec_text",
    "resolve_path",
    "resolve_spec_path",
    "resolved_text",
    "schema_for",
    "schemas",
    "spec_files",
    "write_resolved_spec",
]
