"""Which spec kinds exist and how a file's kind is recognised.

The spec package knows no model: every function takes a *catalog*, model name -> its kind
schemas (``{"experiment": KindSchema, ...}``), which the model table (:mod:`tltk.models`) builds
from each model package's rule tables and hands in.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from tltk.spec.rules import KindSchema
from tltk.spec.textformat import Node, all_names, schema_field_index, top_level_names

KINDS: tuple[str, ...] = ("experiment", "inference", "dataset_convert")

#: Model name -> kind name -> schema, as :func:`tltk.models.spec_catalog` builds it.
SpecCatalog = Mapping[str, Mapping[str, KindSchema]]

# Files that are not TAO specs at all but end up in the same folders.  Each entry: a
# description and the top-level names that give it away (two hits are needed).
FOREIGN_FORMATS: tuple[tuple[str, frozenset[str]], ...] = (
    ("a Triton-client post-processing (clustering) config from NVIDIA-AI-IOT/tao-toolkit-triton-apps, "
     "not a TAO inference spec; tltk's inference takes an Inference spec with inferencer_config and "
     "bbox_handler_config (the per-class dbscan_* settings go in "
     "bbox_handler_config.classwise_bbox_handler_config[...].clustering_config)",
     frozenset({"classwise_clustering_config", "linewidth", "stride", "dbscan_config"})),
    ("a Triton model configuration (config.pbtxt), not a TAO spec",
     frozenset({"platform", "max_batch_size", "input", "output", "backend", "instance_group",
                "default_model_filename", "dynamic_batching"})),
)

_INI_RE = re.compile(r"^\s*\[(property|class-attrs-[\w-]+|application|source\d*|primary-gie)\]\s*$", re.MULTILINE)


def schemas(catalog: SpecCatalog, model: str) -> Mapping[str, KindSchema]:
    """The kind schemas of ``model`` (``{"experiment": KindSchema, ...}``).

    Args:
        catalog: the spec catalog (:func:`tltk.models.spec_catalog`).
        model: a model name of the catalog.

    Returns:
        The model's table.

    Raises:
        KeyError: for an unknown model name.
    """
    if model not in catalog:
        raise KeyError(f"unknown model {model!r}; expected one of {', '.join(catalog)}")
    return catalog[model]


def schema_for(catalog: SpecCatalog, model: str, kind: str) -> KindSchema:
    """The :class:`KindSchema` of one model and kind (KeyError when it does not exist)."""
    table = schemas(catalog, model)
    if kind not in table:
        raise KeyError(f"{model} has no {kind!r} spec; kinds: {', '.join(table)}")
    return table[kind]


@dataclass(frozen=True)
class Detection:
    """Result of kind detection.

    Attributes:
        kind: the best-matching kind of the requested model.
        confident: False when no top-level field matched any kind (the kind is a guess).
        foreign: a description of what the file looks like when it is not a spec of the
            requested model (another model's spec, a Triton config, a DeepStream INI), else None.
    """

    kind: str
    confident: bool
    foreign: str | None = None


def _score(names: list[str], schema: KindSchema) -> int:
    fields = schema.message_class.DESCRIPTOR.fields_by_name
    return sum(1 for n in names if n in fields)


def detect_kind(catalog: SpecCatalog, model: str, nodes: list[Node], text: str = "") -> Detection:
    """Recognise which kind of ``model`` spec a parsed file is.

    The kind whose top-level message declares most of the file's top-level field names
    wins.  When none matches, every field name in the file is compared with every name of
    each kind's schema.  The file is also compared with the other models' kinds and with
    known non-TAO formats, to explain a mix-up.

    Args:
        catalog: the spec catalog (every model's schemas, to explain a mix-up).
        model: the requested model.
        nodes: the file's syntax tree (see :func:`tltk.spec.textformat.parse_tree`).
        text: the raw text (used to recognise DeepStream INI files).

    Returns:
        A :class:`Detection`.
    """
    table = schemas(catalog, model)
    top = top_level_names(nodes)
    scores = {kind: _score(top, schema) for kind, schema in table.items()}
    best = max(scores, key=lambda k: scores[k])
    confident = scores[best] > 0
    if not confident:
        names = all_names(nodes)
        deep = {kind: len(names & set(schema_field_index(schema.message_class.DESCRIPTOR)))
                for kind, schema in table.items()}
        best = max(deep, key=lambda k: deep[k])
    foreign: str | None = None
    if _INI_RE.search(text):
        foreign = "a DeepStream nvinfer/app config (INI format), not a TAO spec"
    else:
        for description, signature in FOREIGN_FORMATS:
            if len(signature & set(top)) >= 2 or (not confident and len(signature & all_names(nodes)) >= 2):
                foreign = description
                break
    if foreign is None:
        own = scores[best] if confident else 0
        for other in catalog:
            if other == model:
                continue
            for schema in schemas(catalog, other).values():
                if _score(top, schema) > own and _score(top, schema) >= max(1, len(top) // 2):
                    foreign = (f"a {schema.description}; validate it with "
                               f"`tltk {other} validate_spec`")
                    break
            if foreign:
                break
    return Detection(best, confident, foreign)
