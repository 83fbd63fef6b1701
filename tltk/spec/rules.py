"""Declarative validation: rule tables, the schema of one spec kind, and the rule engine.

Model packages describe their specs with these building blocks (see
``tltk/detectnet_v2/spec.py`` and ``tltk/mask_rcnn/spec.py``):

* :class:`Required` -- a block that must be present, or a repeated/map field that must not
  be empty;
* :class:`Rule` -- a value check on every field matching a path pattern (``[*]`` for all
  elements / map entries), optionally only when a condition on the enclosing message holds;
* cross-section checks -- plain functions ``check(message, reporter)`` for relations between
  fields (every cost-function class has a rasterizer entry, ...);
* :class:`DataPath` producers -- functions listing the files and folders a spec refers to;
* zero-means-default fields -- where TAO treats an explicit 0 (or "") as "use the default".

Every rule runs on every spec; problems are collected, never raised one at a time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from tltk.spec.fieldpath import FieldRef, iter_fields, parse_path
from tltk.spec.problems import ERROR, WARNING, Reporter


@dataclass(frozen=True)
class Check:
    """A predicate on one value with the phrase that describes a valid value.

    Attributes:
        test: returns True when the value is valid.
        text: completes "must be ..." (``"> 0"``, ``"in [0, 1]"``, ``"a multiple of 16"``).
    """

    test: Callable[[Any], bool]
    text: str

    def __and__(self, other: Check) -> Check:
        return Check(lambda v: self.test(v) and other.test(v), f"{self.text} and {other.text}")


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not (isinstance(v, float) and math.isnan(v))


def positive() -> Check:
    """``> 0``."""
    return Check(lambda v: _num(v) and v > 0, "> 0")


def non_negative() -> Check:
    """``>= 0``."""
    return Check(lambda v: _num(v) and v >= 0, ">= 0")


def between(lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> Check:
    """Inside an interval; ``between(0, 1, hi_open=True)`` is ``[0, 1)``."""
    def test(v: Any) -> bool:
        if not _num(v):
            return False
        above = v > lo if lo_open else v >= lo
        below = v < hi if hi_open else v <= hi
        return above and below

    return Check(test, f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}")


def multiple_of(n: int) -> Check:
    """An integer multiple of ``n``."""
    return Check(lambda v: _num(v) and v % n == 0, f"a multiple of {n}")


def one_of(*values: Any) -> Check:
    """One of the listed values."""
    return Check(lambda v: v in values, "one of " + ", ".join(str(x) for x in values))


def non_empty() -> Check:
    """A non-empty string or container."""
    return Check(lambda v: len(v) > 0, "set (not empty)")


def whole_number() -> Check:
    """A float that holds an integer value (``2.0``)."""
    return Check(lambda v: _num(v) and float(v).is_integer(), "a whole number")


@dataclass(frozen=True)
class Rule:
    """A value check applied to every field matching ``path``.

    Attributes:
        path: pattern such as ``cost_function_config.target_classes[*].class_weight``.
        check: the predicate.
        severity: ``"error"`` or ``"warning"``.
        note: optional sentence appended to the message (why, or what to do).
        when: optional condition on the message that holds the field.
        when_text: how the condition reads in the docs (``"when clustering_algorithm is NMS"``).
    """

    path: str
    check: Check
    severity: str = ERROR
    note: str = ""
    when: Callable[[Message], bool] | None = None
    when_text: str = ""

    def describe(self) -> str:
        """The rule as a sentence for the spec reference."""
        text = f"must be {self.check.text}"
        if self.when_text:
            text += f" {self.when_text}"
        if self.severity == WARNING:
            text += " (warning)"
        if self.note:
            text += f"; {self.note}"
        return text


@dataclass(frozen=True)
class Required:
    """A block that must be present, or a repeated/map field that must not be empty.

    Attributes:
        path: pattern of the field (its parent may contain ``[*]``).
        note: optional explanation appended to the message.
        severity: ``"error"`` (default) or ``"warning"``.
    """

    path: str
    note: str = ""
    severity: str = ERROR

    def describe(self) -> str:
        """The rule as a sentence for the spec reference."""
        text = "required" if self.severity == ERROR else "expected (warning when missing)"
        return f"{text}; {self.note}" if self.note else text


@dataclass(frozen=True)
class DataPath:
    """A file or folder named by a spec.

    Attributes:
        path: field path of the value.
        value: the path as written in the spec.
        kind: ``"file"``, ``"dir"``, ``"glob"`` (must match at least one file) or ``"any"``.
        base: folder the value is relative to (for example KITTI's root_directory_path), or
            None for the spec's own rule (see :func:`tltk.spec.load.resolve_spec_path`).
        inspect: called with the resolved path when it exists; returns ``(field path,
            message)`` errors about the spec and the file's content together (for example
            ``num_classes`` against the categories of a COCO file).
    """

    path: str
    value: str
    kind: str = "any"
    base: str | None = None
    inspect: Callable[[str], Iterable[tuple[str, str]]] | None = None


CrossCheck = Callable[[Message, Reporter], None]
PathLister = Callable[[Message], Iterable[DataPath]]


@dataclass(frozen=True)
class KindSchema:
    """Everything tltk knows about one spec kind of one model.

    Attributes:
        model: CLI model name (``detectnet_v2``, ``mask_rcnn``).
        kind: ``experiment``, ``inference`` or ``dataset_convert``.
        message_class: the generated protobuf class of the top-level message.
        description: one phrase for messages (``"DetectNet_v2 inference spec"``).
        required: presence rules.
        rules: value rules.
        checks: cross-section checks.
        data_paths: function listing the files/folders the spec refers to.
        zero_means_default: patterns of fields where an explicit 0 or "" means "use the
            default" (TAO substitutes the default for zero there); such values are cleared.
    """

    model: str
    kind: str
    message_class: type[Message]
    description: str
    required: Sequence[Required] = ()
    rules: Sequence[Rule] = ()
    checks: Sequence[CrossCheck] = ()
    data_paths: PathLister | None = None
    zero_means_default: Sequence[str] = ()


def _parent_refs(message: Message, pattern: str) -> Iterable[tuple[str, Message, str]]:
    segments = parse_path(pattern)
    last = segments[-1]
    if len(segments) == 1:
        yield "", message, last.name
        return
    for ref in iter_fields(message, segments[:-1]):
        if isinstance(ref.value, Message):
            yield ref.path, ref.value, last.name


def check_required(message: Message, required: Iterable[Required], reporter: Reporter) -> None:
    """Report every missing block / empty repeated field.

    Args:
        message: the spec message.
        required: presence rules.
        reporter: where problems go.
    """
    for req in required:
        for prefix, parent, name in _parent_refs(message, req.path):
            fd = parent.DESCRIPTOR.fields_by_name[name]
            path = f"{prefix}.{name}" if prefix else name
            if fd.label == fd.LABEL_REPEATED:
                missing = len(getattr(parent, name)) == 0
                what = "must not be empty"
            else:
                missing = not parent.HasField(name)
                what = "is required" if fd.message_type is not None else "must be set"
            if missing:
                reporter.add(req.severity, path, what + (f"; {req.note}" if req.note else ""))


def check_rules(message: Message, rules: Iterable[Rule], reporter: Reporter) -> None:
    """Apply every value rule to every matching field.

    Args:
        message: the spec message.
        rules: value rules.
        reporter: where problems go.
    """
    for rule in rules:
        for ref in iter_fields(message, rule.path):
            if rule.when is not None and not rule.when(ref.parent):
                continue
            if not rule.check.test(ref.value):
                verb = "is invalid: must be" if rule.severity == ERROR else "should be"
                reporter.add(rule.severity, ref.path, f"{_show(ref)} {verb} {rule.check.text}"
                             + (f" {rule.when_text}" if rule.when_text else "")
                             + (f"; {rule.note}" if rule.note else ""))


def _show(ref: FieldRef) -> str:
    value = ref.value
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, Message):
        return "the block"
    if hasattr(value, "__len__") and not isinstance(value, (str, bytes)):
        return "the list" if not hasattr(value, "keys") else "the map"
    fd = ref.field
    if fd.enum_type is not None and isinstance(value, int):
        return fd.enum_type.values_by_number[value].name if value in fd.enum_type.values_by_number else str(value)
    return str(value)


def clear_zero_defaults(message: Message, patterns: Iterable[str]) -> list[str]:
    """Clear fields explicitly set to 0 / "" where TAO reads zero as "use the default".

    Args:
        message: the spec message (modified in place).
        patterns: field patterns (the last segment names a scalar field).

    Returns:
        The concrete paths that were cleared.
    """
    cleared: list[str] = []
    for pattern in patterns:
        for prefix, parent, name in _parent_refs(message, pattern):
            if parent.HasField(name) and not getattr(parent, name):
                parent.ClearField(name)
                cleared.append(f"{prefix}.{name}" if prefix else name)
    return cleared


def validate_message(message: Message, schema: KindSchema, reporter: Reporter) -> None:
    """Run presence rules, value rules and cross-section checks of ``schema``.

    Args:
        message: the spec message (after overrides and zero-default clearing).
        schema: the kind's schema.
        reporter: where problems go.
    """
    check_required(message, schema.required, reporter)
    check_rules(message, schema.rules, reporter)
    for check in schema.checks:
        check(message, reporter)
