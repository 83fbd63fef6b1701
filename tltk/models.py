"""The model table: the one place that maps a model name to its package.

Each package (``tltk.detectnet_v2``, ``tltk.mask_rcnn``) is a :class:`ModelPackage`: a help
line, its subtask commands, its spec schemas and a factory for its Task.  The CLI groups, the
spec catalog and every subtask are built from :data:`MODELS`; shared packages never import a
model package, this module hands them what they need.  Adding a model is one row here plus
its package.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from tltk import detectnet_v2, mask_rcnn
from tltk.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from tltk.spec.kinds import SpecCatalog
    from tltk.spec.rules import KindSchema


class ModelPackage(Protocol):
    """What a model package's ``__init__`` provides (and nothing heavy to import)."""

    HELP: str
    COMMANDS: dict[str, str]

    def spec_schemas(self) -> Mapping[str, KindSchema]:
        """Spec kind -> its schema and rules."""
        ...

    def load_layers(self) -> None:
        """Import the modules that register the model's Keras layers (before loading a model file)."""
        ...

    def make_task(self, spec: Any = None, key: str | None = None, metadata: Mapping[str, Any] | None = None) -> Any:
        """The model's :class:`tltk.core.task.Task`."""
        ...


MODELS: dict[str, ModelPackage] = {
    "detectnet_v2": detectnet_v2,
    "mask_rcnn": mask_rcnn,
}


def model_package(model: str) -> ModelPackage:
    """The package of ``model`` (UsageError naming the known models otherwise)."""
    if model not in MODELS:
        raise UsageError(f"unknown model {model!r}; models: {', '.join(MODELS)}")
    return MODELS[model]


def spec_catalog() -> SpecCatalog:
    """Model name -> spec kind -> schema, for the spec package."""
    return {name: package.spec_schemas() for name, package in MODELS.items()}


def load_spec(path: str | os.PathLike[str], model: str, kind: str | None = None,
              overrides: Sequence[str] = (), check_paths: bool = False) -> Any:
    """:func:`tltk.spec.load.load_spec` with the model table's catalog (see there)."""
    from tltk.spec import load as _spec_load

    return _spec_load.load_spec(path, model, kind, overrides, check_paths, catalog=spec_catalog())


def check_spec(path: str | os.PathLike[str], model: str, kind: str | None = None,
               overrides: Sequence[str] = (), check_paths: bool = False) -> Any:
    """:func:`tltk.spec.load.check_spec` with the model table's catalog (see there)."""
    from tltk.spec import load as _spec_load

    return _spec_load.check_spec(path, model, kind, overrides, check_paths, catalog=spec_catalog())


def parse_spec_text(text: str, message_cls: Any, source_name: str = "<spec>", validate: bool = False,
                    overrides: Sequence[str] = ()) -> Any:
    """:func:`tltk.spec.load.parse_spec_text` with the model table's catalog (see there)."""
    from tltk.spec import load as _spec_load

    return _spec_load.parse_spec_text(text, message_cls, source_name, validate, overrides, catalog=spec_catalog())


def make_task(model: str, spec: Any = None, key: str | None = None,
              metadata: Mapping[str, Any] | None = None) -> Any:
    """The Task of ``model`` for a loaded spec and/or a model file's metadata."""
    return model_package(model).make_task(spec, key=key, metadata=metadata)


def task_for_model_file(model: str, path: str, key: str | None = None, spec: Any = None) -> tuple[Any, Any, dict[str, Any]]:
    """Load a Keras model file and the Task of ``model`` for it, checking its kind.

    Args:
        model: the model name the command was run for.
        path: a ``.tlt``/``.keras``/``.hdf5`` file.
        key: key of sealed or legacy files.
        spec: an optional loaded experiment spec.

    Returns:
        ``(task, network, metadata)``.

    Raises:
        InvalidInputError: the file holds another model kind, or is not this model.
    """
    from tltk.modelfile.container import check_model_kind, load_keras_model

    model_package(model).load_layers()
    network, metadata = load_keras_model(path, key)
    metadata = dict(metadata)
    metadata.setdefault("input_shape", [int(d) for d in network.inputs[0].shape[1:]])
    check_model_kind(metadata, model, str(path))
    task = make_task(model, spec, key=key, metadata=metadata)
    task.check_model(network, path)
    return task, network, metadata
