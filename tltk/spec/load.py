"""Loading a spec file: read, parse, recognise its kind, apply overrides, validate.

Pipeline (every step adds to one list of problems; nothing stops at the first error):

1. read the file (UTF-8, optional BOM, CRLF accepted) and pre-scan it: typographic quotes
   are read as straight quotes and tabs are accepted, both with a warning;
2. read the text into a syntax tree and walk it against the schema: unknown fields (with
   did-you-mean), wrong value types, unknown enum values, oneof conflicts, duplicates;
3. build the protobuf message with ``google.protobuf.text_format.Merge`` (as TAO does);
4. apply ``--set`` overrides; clear explicit zeros where TAO reads 0 as "use the default";
5. run the model's rule tables (presence, values, cross-section checks);
6. look for the files and folders the spec names (warnings, errors with ``check_paths``).

Relative paths in a spec are resolved by :func:`resolve_spec_path`: the spec file's folder
first, then the current directory, then ``$DATA_BASE_PATH`` (TAO's data root variable).
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format
from google.protobuf.message import Message

from tltk.errors import SpecError
from tltk.spec.kinds import KINDS, SpecCatalog, detect_kind, schema_for, schemas
from tltk.spec.overrides import apply_overrides
from tltk.spec.problems import ERROR, Problem, Reporter
from tltk.spec.rules import DataPath, KindSchema, clear_zero_defaults, validate_message
from tltk.spec.textformat import parse_tree, prescan, walk

log = logging.getLogger(__name__)

MAX_SPEC_BYTES = 8 * 1024 * 1024


@dataclass
class LoadedSpec:
    """A parsed and validated spec.

    Attributes:
        path: the spec file as given.
        model: ``detectnet_v2`` or ``mask_rcnn``.
        kind: ``experiment``, ``inference`` or ``dataset_convert``.
        message: the protobuf message (defaults apply to unset fields).
        warnings: formatted warnings (``file:line:col: field.path: message``).
        overrides: the ``--set`` expressions that were applied.
    """

    path: str
    model: str
    kind: str
    message: Message
    warnings: list[str] = field(default_factory=list)
    overrides: tuple[str, ...] = ()

    @property
    def spec_dir(self) -> str:
        """Absolute folder of the spec file (base of relative paths)."""
        return os.path.dirname(os.path.abspath(self.path))


@dataclass
class SpecReport:
    """Outcome of :func:`check_spec`.

    Attributes:
        kind: the kind checked (given or recognised), or None when the file could not be read.
        valid: True when there are no errors.
        errors: formatted errors.
        warnings: formatted warnings.
    """

    kind: str | None
    valid: bool
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        """The JSON document printed by ``validate_spec --json``."""
        return {"kind": self.kind, "valid": self.valid, "errors": list(self.errors),
                "warnings": list(self.warnings)}


@dataclass
class _Analysis:
    source: str
    kind: str | None
    problems: list[Problem]
    message: Message | None


def _exists(candidate: str, kind: str = "any") -> bool:
    if kind == "file":
        return os.path.isfile(candidate)
    if kind == "dir":
        return os.path.isdir(candidate)
    if glob.has_magic(candidate):
        return bool(glob.glob(candidate))
    if kind == "glob":
        return os.path.exists(candidate)
    return os.path.exists(candidate) or bool(glob.glob(glob.escape(candidate) + "*"))


def _candidates(value: str, spec_dir: str | None) -> list[str]:
    expanded = os.path.expanduser(os.path.expandvars(value))
    if os.path.isabs(expanded):
        return [os.path.normpath(expanded)]
    places = []
    if spec_dir:
        places.append(os.path.join(spec_dir, expanded))
    places.append(os.path.join(os.getcwd(), expanded))
    base = os.environ.get("DATA_BASE_PATH")
    if base:
        places.append(os.path.join(os.path.expanduser(base), expanded))
    return [os.path.normpath(p) for p in places]


def resolve_path(value: str, spec_dir: str | None, kind: str = "any") -> str:
    """Resolve a path written in a spec (see :func:`resolve_spec_path` for the rule).

    Args:
        value: the path as written; ``~`` and ``$VARS`` are expanded.
        spec_dir: folder of the spec file, or None for in-memory specs.
        kind: ``"file"``, ``"dir"``, ``"glob"`` or ``"any"``: what counts as existing.

    Returns:
        An absolute, normalised path ("" stays "").
    """
    if not value:
        return value
    places = _candidates(value, spec_dir)
    for place in places:
        if _exists(place, kind):
            return os.path.abspath(place)
    expanded = os.path.expanduser(os.path.expandvars(value))
    return os.path.abspath(expanded)


def resolve_spec_path(loaded: LoadedSpec, value: str) -> str:
    """Resolve a (possibly relative) path written in a loaded spec.

    Rule: absolute paths (after ``~`` and ``$VAR`` expansion) are used as they are.  A
    relative path is tried against (1) the folder of the spec file, (2) the current working
    directory, (3) ``$DATA_BASE_PATH`` when that variable is set (TAO's convention); the first
    place where it exists wins (for glob patterns: matches at least one file).  When it
    exists nowhere, the path relative to the current directory is returned, so error
    messages and newly created outputs follow the usual shell convention.

    Args:
        loaded: the spec the value comes from.
        value: the path as written in the spec.

    Returns:
        An absolute path ("" stays "").
    """
    return resolve_path(value, loaded.spec_dir)


def _read(path: str, reporter: Reporter) -> str | None:
    try:
        size = os.path.getsize(path)
        if size > MAX_SPEC_BYTES:
            reporter.error(None, f"file is {size} bytes; a spec is protobuf text of a few kilobytes")
            return None
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        reporter.error(None, "file not found")
        return None
    except IsADirectoryError:
        reporter.error(None, "is a folder, not a spec file")
        return None
    except OSError as exc:
        reporter.error(None, f"cannot read the file: {exc.strerror or exc}")
        return None
    if b"\x00" in data:
        reporter.error(None, "binary file (NUL bytes); a spec is protobuf text")
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        reporter.error(None, f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                             "save the spec as UTF-8")
        return None


def _check_paths(message: Message, schema: KindSchema, spec_dir: str | None, strict: bool,
                 reporter: Reporter) -> None:
    if schema.data_paths is None:
        return
    words = {"file": "file", "dir": "folder", "glob": "no file matches", "any": "path"}
    for item in schema.data_paths(message):
        if not item.value:
            continue
        resolved = _resolve_data_path(item, spec_dir)
        if _exists(resolved, item.kind):
            for path, problem in item.inspect(resolved) if item.inspect is not None else ():
                reporter.error(path, problem)
            continue
        where = ("" if os.path.isabs(os.path.expanduser(os.path.expandvars(item.value))) or item.base
                 else " (looked next to the spec, in the current folder"
                 + (" and in $DATA_BASE_PATH)" if os.environ.get("DATA_BASE_PATH") else ")"))
        if item.kind == "glob":
            text = f"no file matches {item.value!r}{where}"
        else:
            text = f"{words[item.kind]} {item.value!r} not found{where}"
        if item.base:
            text += f" (relative to {item.base!r})"
        if not strict:
            text += "; it must exist before the data is used (--check_paths makes this an error)"
        reporter.add(ERROR if strict else "warning", item.path, text)


def _resolve_data_path(item: DataPath, spec_dir: str | None) -> str:
    if item.base:
        value = os.path.expanduser(os.path.expandvars(item.value))
        if os.path.isabs(value):
            return value
        return os.path.join(resolve_path(item.base, spec_dir, "dir"), value)
    return resolve_path(item.value, spec_dir, item.kind)


def _analyse_text(text: str, source: str, model: str, kind: str | None, overrides: Sequence[str],
                  check_paths: bool, spec_dir: str | None, catalog: SpecCatalog) -> _Analysis:
    normalised, problems = prescan(text)
    nodes, syntax = parse_tree(normalised)
    detection = detect_kind(catalog, model, nodes, normalised)
    chosen = kind or detection.kind
    schema = schema_for(catalog, model, chosen)
    walked = walk(nodes, schema.message_class.DESCRIPTOR)
    problems += walked.problems + syntax
    reporter = Reporter(positions=walked.positions)
    if detection.foreign:
        problems.insert(0, Problem(ERROR, f"this file looks like {detection.foreign}"))
    elif kind and detection.confident and detection.kind != kind and any(p.severity == ERROR for p in problems):
        problems.insert(0, Problem(ERROR, f"checked as a {schema.description} as requested, but it looks like a "
                                          f"{schemas(catalog, model)[detection.kind].description} (--kind {detection.kind})"))
    message: Message | None = None
    if not any(p.severity == ERROR for p in problems) and not reporter.errors:
        message = schema.message_class()
        try:
            text_format.Merge(normalised, message)
        except text_format.ParseError as exc:
            line, col = exc.GetLine(), exc.GetColumn()
            detail = str(exc)
            if line is not None:
                detail = detail.split(" : ", 1)[-1]
            reporter.add(ERROR, None, detail, line, col)
            message = None
    if message is not None:
        apply_overrides(message, overrides, reporter)
        clear_zero_defaults(message, schema.zero_means_default)
        validate_message(message, schema, reporter)
        _check_paths(message, schema, spec_dir, check_paths, reporter)
    problems += reporter.problems
    problems.sort(key=lambda p: (p.origin is not None, p.line or 0, p.col or 0))
    return _Analysis(source, chosen, problems, message)


def _analyse(path: str | os.PathLike[str], model: str, kind: str | None, overrides: Sequence[str],
             check_paths: bool, catalog: SpecCatalog) -> _Analysis:
    _check_model_kind(catalog, model, kind)
    source = os.fspath(path)
    reporter = Reporter()
    text = _read(source, reporter)
    if text is None:
        return _Analysis(source, kind, reporter.problems, None)
    return _analyse_text(text, source, model, kind, overrides, check_paths,
                         os.path.dirname(os.path.abspath(source)), catalog)


def _check_model_kind(catalog: SpecCatalog, model: str, kind: str | None) -> None:
    if model not in catalog:
        raise SpecError(f"unknown model {model!r}", [f"models: {', '.join(catalog)}"])
    if kind is None:
        return
    if kind not in KINDS:
        raise SpecError(f"unknown spec kind {kind!r}", [f"expected one of {', '.join(KINDS)}"])
    if kind not in schemas(catalog, model):
        raise SpecError(f"{model} has no {kind} spec", [f"kinds of {model}: {', '.join(schemas(catalog, model))}"])


def check_spec(path: str | os.PathLike[str], model: str, kind: str | None = None,
               overrides: Sequence[str] = (), check_paths: bool = False, *, catalog: SpecCatalog) -> SpecReport:
    """Check a spec file and report every problem; never raises for problems in the file.

    Args:
        path: the spec file.
        model: a model name of ``catalog``.
        kind: ``experiment``, ``inference`` or ``dataset_convert``; recognised from the
            file's fields when None.
        overrides: ``FIELD=VALUE`` strings applied before validation.
        check_paths: treat missing data files/folders as errors instead of warnings.
        catalog: every model's kind schemas (:func:`tltk.models.spec_catalog`; callers
            normally use :func:`tltk.models.check_spec`, which passes it).

    Returns:
        A :class:`SpecReport` (an unreadable file gives ``valid=False`` and one error).

    Raises:
        SpecError: when ``model``/``kind`` name no schema (a usage error, not a file problem).
    """
    analysis = _analyse(path, model, kind, overrides, check_paths, catalog)
    errors = [p.format(analysis.source) for p in analysis.problems if p.severity == ERROR]
    warnings = [p.format(analysis.source) for p in analysis.problems if p.severity != ERROR]
    return SpecReport(analysis.kind, not errors, errors, warnings)


def load_spec(path: str | os.PathLike[str], model: str, kind: str | None = None,
              overrides: Sequence[str] = (), check_paths: bool = False, *, catalog: SpecCatalog) -> LoadedSpec:
    """Parse and validate a spec file.

    Args:
        path: the spec file.
        model: a model name of ``catalog``.
        kind: ``experiment``, ``inference`` or ``dataset_convert``; recognised when None.
            Subtasks pass the kind they need (``train`` -> ``experiment``).
        overrides: ``FIELD=VALUE`` strings (``--set``) applied before validation.
        check_paths: treat missing data files/folders as errors.
        catalog: every model's kind schemas (:func:`tltk.models.spec_catalog`; callers
            normally use :func:`tltk.models.load_spec`, which passes it).

    Returns:
        The :class:`LoadedSpec`; its warnings are also logged.

    Raises:
        SpecError: listing every problem (``file:line:col: field.path: message``) when the
            file is missing, unreadable or invalid.
    """
    analysis = _analyse(path, model, kind, overrides, check_paths, catalog)
    source = analysis.source
    errors = [p.format(source) for p in analysis.problems if p.severity == ERROR]
    warnings = [p.format(source) for p in analysis.problems if p.severity != ERROR]
    if errors or analysis.message is None or analysis.kind is None:
        what = schema_for(catalog, model, analysis.kind).description if analysis.kind else f"{model} spec"
        raise SpecError(f"{source}: invalid {what} ({len(errors)} error{'s' if len(errors) != 1 else ''})",
                        errors + [f"warning: {w}" for w in warnings],
                        hint=f"run `tltk {model} validate_spec -e {source}` to list the problems again")
    for warning in warnings:
        log.warning("%s", warning)
    return LoadedSpec(source, model, analysis.kind, analysis.message, warnings, tuple(overrides))


def parse_spec_text(text: str, message_cls: type[Message], source_name: str = "<spec>",
                    validate: bool = False, overrides: Sequence[str] = (),
                    catalog: SpecCatalog | None = None) -> Message:
    """Parse protobuf text into ``message_cls`` with tltk's error reporting.

    Args:
        text: spec text (any accepted dialect).
        message_cls: top-level message class, e.g. ``tltk.spec.schemas.DetectNetInference``.
        source_name: name used in problem locations.
        validate: also run the model's rules for this message class (data paths are not
            checked).
        overrides: ``FIELD=VALUE`` strings applied after parsing.
        catalog: the spec catalog that holds ``message_cls``'s rules (zero-means-default
            fields and, with ``validate``, the rule tables); without it only the syntax and
            field names are checked.

    Returns:
        The message (defaults apply to unset fields).

    Raises:
        SpecError: listing every problem.
    """
    schema = _schema_of_class(catalog, message_cls) if catalog is not None else None
    reporter = Reporter()
    normalised, problems = prescan(text)
    nodes, syntax = parse_tree(normalised)
    walked = walk(nodes, message_cls.DESCRIPTOR)
    problems += walked.problems + syntax
    reporter.positions = walked.positions
    message = message_cls()
    if not any(p.severity == ERROR for p in problems):
        try:
            text_format.Merge(normalised, message)
        except text_format.ParseError as exc:
            reporter.add(ERROR, None, str(exc).split(" : ", 1)[-1], exc.GetLine(), exc.GetColumn())
        else:
            apply_overrides(message, overrides, reporter)
            if schema is not None:
                clear_zero_defaults(message, schema.zero_means_default)
                if validate:
                    validate_message(message, schema, reporter)
    problems += reporter.problems
    errors = [p.format(source_name) for p in problems if p.severity == ERROR]
    if errors:
        raise SpecError(f"{source_name}: invalid {message_cls.DESCRIPTOR.full_name} "
                        f"({len(errors)} error{'s' if len(errors) != 1 else ''})", errors)
    return message


def _schema_of_class(catalog: SpecCatalog, message_cls: type[Message]) -> KindSchema | None:
    full_name = message_cls.DESCRIPTOR.full_name
    for model in catalog:
        for schema in schemas(catalog, model).values():
            if schema.message_class.DESCRIPTOR.full_name == full_name:
                return schema
    return None


def spec_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Every ``*.txt``/``*.prototxt``/``*.pbtxt`` file under ``folder``, sorted."""
    root = Path(folder)
    return sorted(p for p in root.rglob("*") if p.suffix in (".txt", ".prototxt", ".pbtxt") and p.is_file())
