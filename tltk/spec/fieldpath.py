"""Field paths: the one notation used in messages, rules and ``--set`` overrides.

A path is a dot-separated list of field names; repeated fields take ``[index]`` and map
fields take ``["key"]`` (or ``[key]`` when typed on a command line).  Rule patterns may use
``[*]`` to mean every element / every map entry::

    training_config.learning_rate.soft_start_annealing_schedule.soft_start
    cost_function_config.target_classes[0].objectives[1].name
    postprocessing_config.target_class_config["car"].clustering_config.dbscan_eps
    postprocessing_config.target_class_config[*].clustering_config.dbscan_eps
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

WILDCARD = "*"

_SEGMENT_RE = re.compile(
    r"""\s*(?P<name>[A-Za-z_][A-Za-z0-9_]*)
        (?P<selectors>(?:\[\s*(?:"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^\]]*)\s*\])*)\s*""",
    re.VERBOSE,
)
_SELECTOR_RE = re.compile(r"""\[\s*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^\]]*?)\s*\]""")


@dataclass(frozen=True)
class Segment:
    """One step of a path: a field name and an optional element selector.

    Attributes:
        name: the field name.
        selector: None (the field itself), ``"*"`` (every element/entry), an ``int`` index
            for repeated fields, or a ``str`` key for map fields (``quoted`` tells which).
        quoted: True when the selector was written as a quoted string (always a map key).
    """

    name: str
    selector: int | str | None = None
    quoted: bool = False


def is_map(fd: FieldDescriptor) -> bool:
    """Whether ``fd`` is a protobuf map field."""
    mt = fd.message_type
    return bool(fd.label == FieldDescriptor.LABEL_REPEATED and mt is not None
                and mt.GetOptions().map_entry)


def is_repeated(fd: FieldDescriptor) -> bool:
    """Whether ``fd`` is a repeated (non-map) field."""
    return fd.label == FieldDescriptor.LABEL_REPEATED and not is_map(fd)


def is_message(fd: FieldDescriptor) -> bool:
    """Whether ``fd`` holds messages (maps excluded)."""
    return fd.type in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP) and not is_map(fd)


def key_text(key: Any) -> str:
    """A map key as written in a path: ``["car"]``."""
    return "[" + json.dumps(str(key), ensure_ascii=False) + "]"


def join(prefix: str, name: str) -> str:
    """``join("a.b", "c") == "a.b.c"``; ``join("", "c") == "c"``."""
    return f"{prefix}.{name}" if prefix else name


def parse_path(text: str) -> list[Segment]:
    """Parse a path such as ``a.b[0].c["key"]`` or ``a.b[key]`` into segments.

    Args:
        text: the path.

    Returns:
        One :class:`Segment` per field step.  A field with two selectors (not possible in
        tltk's schemas) is rejected.

    Raises:
        ValueError: when the text is not a well-formed path.
    """
    segments: list[Segment] = []
    pos = 0
    text = text.strip()
    if not text:
        raise ValueError("empty field path")
    while True:
        m = _SEGMENT_RE.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError(f"malformed field path {text!r} at character {pos + 1}")
        selectors = _SELECTOR_RE.findall(m.group("selectors"))
        if len(selectors) > 1:
            raise ValueError(f"malformed field path {text!r}: one [..] per field")
        seg = Segment(m.group("name"))
        if selectors:
            raw = selectors[0]
            if raw[:1] in ("'", '"'):
                seg = Segment(seg.name, _unquote(raw), True)
            elif raw == WILDCARD:
                seg = Segment(seg.name, WILDCARD)
            elif re.fullmatch(r"-?\d+", raw):
                seg = Segment(seg.name, int(raw))
            else:
                seg = Segment(seg.name, raw)
        segments.append(seg)
        pos = m.end()
        if pos == len(text):
            return segments
        if text[pos] != ".":
            raise ValueError(f"malformed field path {text!r} at character {pos + 1}")
        pos += 1


def _unquote(raw: str) -> str:
    body = raw[1:-1]
    return re.sub(r"\\(.)", r"\1", body)


def format_path(segments: list[Segment]) -> str:
    """Inverse of :func:`parse_path` for concrete (and wildcard) segments."""
    out = ""
    for seg in segments:
        out = join(out, seg.name)
        if seg.selector is None:
            continue
        if seg.selector == WILDCARD and not seg.quoted:
            out += "[*]"
        elif isinstance(seg.selector, int):
            out += f"[{seg.selector}]"
        else:
            out += key_text(seg.selector)
    return out


@dataclass(frozen=True)
class FieldRef:
    """A concrete field reached by :func:`iter_fields`.

    Attributes:
        path: the concrete path (indices and keys filled in).
        parent: the message that holds the field (for map entries: the map's owner).
        field: the field descriptor.
        value: the effective value (default when unset; the container for whole
            repeated/map fields; the element/entry value when selected).
        index: element index or map key when one element/entry was selected, else None.
    """

    path: str
    parent: Message
    field: FieldDescriptor
    value: Any
    index: int | str | None = None


def iter_fields(message: Message, pattern: str | list[Segment], prefix: str = "") -> Iterator[FieldRef]:
    """Every concrete field matching ``pattern`` that is present in ``message``.

    Absent sub-messages are not entered (so rules under an absent block do not fire);
    scalars yield their effective value (the default when unset).

    Args:
        message: the message to walk.
        pattern: a path, possibly with ``[*]`` selectors, or its parsed segments.
        prefix: path of ``message`` itself, prepended to the yielded paths.

    Yields:
        One :class:`FieldRef` per match.

    Raises:
        KeyError: when the pattern names a field the schema does not have (a bug in a rule
            table, not a user error).
    """
    segments = parse_path(pattern) if isinstance(pattern, str) else pattern
    yield from _iter(message, segments, prefix)


def _iter(message: Message, segments: list[Segment], prefix: str) -> Iterator[FieldRef]:
    seg, rest = segments[0], segments[1:]
    fd = message.DESCRIPTOR.fields_by_name.get(seg.name)
    if fd is None:
        raise KeyError(f"{message.DESCRIPTOR.full_name} has no field {seg.name!r}")
    path = join(prefix, seg.name)
    if is_map(fd):
        container = getattr(message, seg.name)
        if seg.selector is None:
            if rest:
                raise KeyError(f"{path}: a map needs [key] or [*] before going deeper")
            yield FieldRef(path, message, fd, container)
            return
        keys = sorted(container.keys()) if seg.selector == WILDCARD and not seg.quoted else (
            [seg.selector] if seg.selector in container else [])
        for key in keys:
            value = container[key]
            sub = path + key_text(key)
            if rest:
                if isinstance(value, Message):
                    yield from _iter(value, rest, sub)
                continue
            yield FieldRef(sub, message, fd, value, key)
        return
    if is_repeated(fd):
        container = getattr(message, seg.name)
        if seg.selector is None:
            if rest:
                raise KeyError(f"{path}: a repeated field needs [index] or [*] before going deeper")
            yield FieldRef(path, message, fd, container)
            return
        if seg.selector == WILDCARD:
            indices = list(range(len(container)))
        elif isinstance(seg.selector, int) and -len(container) <= seg.selector < len(container):
            indices = [seg.selector % len(container)]
        else:
            indices = []
        for i in indices:
            sub = f"{path}[{i}]"
            if rest:
                yield from _iter(container[i], rest, sub)
            else:
                yield FieldRef(sub, message, fd, container[i], i)
        return
    if seg.selector is not None:
        raise KeyError(f"{path} is not repeated")
    if is_message(fd):
        if not message.HasField(seg.name):
            return
        value = getattr(message, seg.name)
        if rest:
            yield from _iter(value, rest, path)
        else:
            yield FieldRef(path, message, fd, value)
        return
    if rest:
        raise KeyError(f"{path} is a scalar")
    yield FieldRef(path, message, fd, getattr(message, seg.name))
