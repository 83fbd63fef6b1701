"""``--set FIELD=VALUE`` overrides applied to a parsed spec.

Forms accepted (paths use the notation of :mod:`tltk.spec.fieldpath`)::

    --set training_config.num_epochs=5                       scalar
    --set evaluation_config.average_precision_mode=SAMPLE    enum (by name or number)
    --set training_config.enable_qat=true                    bool (true/false/1/0/yes/no/on/off)
    --set dataset_config.image_extension=jpg                 string (quotes optional)
    --set cost_function_config.target_classes[1].class_weight=2.0       element of a repeated field
    --set inferencer_config.target_classes=[car, person]     replace a whole repeated field
    --set inferencer_config.target_classes[2]=cyclist        index == length appends
    --set dataset_config.target_class_mapping[van]=car       map entry (created if missing)
    --set postprocessing_config.target_class_config[car].clustering_config.dbscan_eps=0.2
    --set training_config.regularizer={type: L2 weight: 1e-5}   replace a whole block
    --set training_config.learning_rate.early_stopping_annealing_schedule.patience_steps=3
                                                             (selects that oneof member)
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from google.protobuf import text_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from tltk.spec.fieldpath import Segment, format_path, is_map, parse_path
from tltk.spec.problems import Reporter
from tltk.spec.textformat import Scalar, parse_tree, suggest_field, type_name

_TRUE = {"true", "t", "1", "yes", "y", "on"}
_FALSE = {"false", "f", "0", "no", "n", "off"}


class OverrideError(ValueError):
    """An override cannot be applied (message says why)."""


def _unquote(raw: str) -> str:
    raw = raw.strip()
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
        return raw[1:-1]
    return raw


def convert_scalar(fd: FieldDescriptor, raw: str) -> object:
    """Convert command-line text to a value for the scalar field ``fd``.

    Args:
        fd: the field.
        raw: the text after ``=``.

    Returns:
        A Python value acceptable for the field.

    Raises:
        OverrideError: when the text does not fit the field's type.
    """
    text = raw.strip()
    if fd.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
        return _unquote(raw)
    if fd.type == FieldDescriptor.TYPE_BOOL:
        low = _unquote(text).lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise OverrideError(f"expects true or false, got {text!r}")
    if fd.type == FieldDescriptor.TYPE_ENUM:
        name = _unquote(text)
        values = fd.enum_type.values_by_name
        if name in values:
            return values[name].number
        upper = {n.upper(): v for n, v in values.items()}
        if name.upper() in upper:
            return upper[name.upper()].number
        try:
            number = int(name)
        except ValueError:
            number = None
        if number is not None and number in fd.enum_type.values_by_number:
            return number
        names = list(values)
        close = difflib.get_close_matches(name.upper(), names, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise OverrideError(f"unknown value {name!r} for enum {fd.enum_type.name} (one of "
                            f"{', '.join(names)}){hint}")
    if fd.cpp_type in (FieldDescriptor.CPPTYPE_FLOAT, FieldDescriptor.CPPTYPE_DOUBLE):
        try:
            return float(text)
        except ValueError:
            raise OverrideError(f"expects a number ({type_name(fd)}), got {text!r}") from None
    value = _to_int(text)
    if value is None:
        raise OverrideError(f"expects an integer ({type_name(fd)}), got {text!r}")
    unsigned = fd.cpp_type in (FieldDescriptor.CPPTYPE_UINT32, FieldDescriptor.CPPTYPE_UINT64)
    bits = 64 if fd.cpp_type in (FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64) else 32
    lo, hi = (0, 2 ** bits - 1) if unsigned else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    if not lo <= value <= hi:
        raise OverrideError(f"{value} is out of range for {type_name(fd)}")
    return value


def _to_int(text: str) -> int | None:
    for base in (0, 10):
        try:
            return int(text, base)
        except ValueError:
            pass
    try:
        as_float = float(text)
    except ValueError:
        return None
    return int(as_float) if as_float.is_integer() else None


def _list_items(text: str) -> list[str]:
    """Items of ``[a, 'b c', 3]`` as command-line texts (quoted items keep their quotes)."""
    nodes, problems = parse_tree(f"items: {text}")
    if problems or len(nodes) != 1 or not nodes[0].list_syntax:
        raise OverrideError(f"cannot read {text!r} as a list; write [a, b, c]")
    items = []
    for item in nodes[0].items:
        if not isinstance(item, Scalar):
            raise OverrideError(f"cannot read {text!r} as a list of values")
        items.append(item.text)
    return items


def _merge_text(fd: FieldDescriptor, owner: Message, raw: str) -> None:
    """Replace field ``fd`` of ``owner`` with protobuf text (``{...}`` or ``[...]``)."""
    scratch = type(owner)()
    text = raw.strip()
    joiner = " " if text.startswith("{") and fd.message_type is not None else ": "
    try:
        text_format.Merge(f"{fd.name}{joiner}{text}", scratch)
    except text_format.ParseError as exc:
        raise OverrideError(f"cannot read {raw!r} as a {type_name(fd)}: {exc}") from None
    owner.ClearField(fd.name)
    if fd.label == FieldDescriptor.LABEL_REPEATED:
        if is_map(fd):
            getattr(owner, fd.name).MergeFrom(getattr(scratch, fd.name))
        else:
            getattr(owner, fd.name).extend(getattr(scratch, fd.name))
    elif fd.message_type is not None:
        getattr(owner, fd.name).CopyFrom(getattr(scratch, fd.name))
    else:
        setattr(owner, fd.name, getattr(scratch, fd.name))


def apply_override(message: Message, expression: str) -> str:
    """Apply one ``FIELD=VALUE`` override to ``message`` in place.

    Args:
        message: the top-level spec message.
        expression: ``path=value`` (see the module docstring for the forms).

    Returns:
        The concrete field path that was set (``a.b[2]``, ``m["key"].x``).

    Raises:
        OverrideError: unknown field (with did-you-mean), bad index, or a value that does
            not fit the field.
    """
    path_text, sep, raw = expression.partition("=")
    if not sep or not path_text.strip():
        raise OverrideError("expected FIELD=VALUE, e.g. training_config.num_epochs=5")
    try:
        segments = parse_path(path_text)
    except ValueError as exc:
        raise OverrideError(str(exc)) from None
    root = message.DESCRIPTOR
    current = message
    done: list[Segment] = []
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        prefix = format_path(done)
        fd = current.DESCRIPTOR.fields_by_name.get(seg.name)
        if fd is None:
            where = prefix or current.DESCRIPTOR.name
            raise OverrideError(f"unknown field {seg.name!r} in {where}"
                                f"{suggest_field(seg.name, current.DESCRIPTOR, root, prefix)}")
        if is_map(fd):
            if seg.selector is None:
                if last and raw.strip().startswith("["):
                    _merge_text(fd, current, raw)
                    return format_path(done + [seg])
                raise OverrideError(f"{format_path(done + [seg])} is a map; use {seg.name}[KEY]=VALUE")
            key = str(seg.selector)
            container = getattr(current, seg.name)
            value_fd = fd.message_type.fields_by_name["value"]
            done.append(Segment(seg.name, key, True))
            if value_fd.message_type is not None:
                entry = container[key]
                if last:
                    if not raw.strip().startswith("{"):
                        raise OverrideError(f"{format_path(done)} is a {value_fd.message_type.name} block; "
                                            "give {...} or set one of its fields")
                    scratch = fd.message_type()
                    try:
                        text_format.Merge(f"value {raw.strip()}", scratch)
                    except text_format.ParseError as exc:
                        raise OverrideError(f"cannot read {raw!r}: {exc}") from None
                    entry.CopyFrom(scratch.value)
                    return format_path(done)
                current = entry
                continue
            if not last:
                raise OverrideError(f"{format_path(done)} is a {type_name(value_fd)}, it has no fields")
            container[key] = convert_scalar(value_fd, raw)
            return format_path(done)
        if fd.label == FieldDescriptor.LABEL_REPEATED:
            container = getattr(current, seg.name)
            if seg.selector is None:
                if not last:
                    raise OverrideError(f"{format_path(done + [seg])} is repeated; give an index, "
                                        f"e.g. {seg.name}[0]")
                text = raw.strip()
                if text.startswith("[") and fd.message_type is None:
                    values = [convert_scalar(fd, item) for item in _list_items(text)]
                    del container[:]
                    container.extend(values)
                elif text.startswith("["):
                    _merge_text(fd, current, text)
                elif fd.message_type is not None:
                    _merge_text(fd, current, "[" + text + "]")
                else:
                    value = convert_scalar(fd, raw)
                    del container[:]
                    container.append(value)
                return format_path(done + [seg])
            if not isinstance(seg.selector, int):
                raise OverrideError(f"{format_path(done + [seg])}: {seg.name} is a list; the index must be a "
                                    "number")
            index = seg.selector
            if index < 0:
                index += len(container)
            if not 0 <= index <= len(container):
                raise OverrideError(f"index {seg.selector} is out of range for {format_path(done + [seg])} "
                                    f"({len(container)} element(s); use {len(container)} to append)")
            done.append(Segment(seg.name, index))
            if fd.message_type is not None:
                element = container[index] if index < len(container) else container.add()
                if last:
                    scratch = type(current)()
                    try:
                        text_format.Merge(f"{seg.name} {raw.strip()}", scratch)
                    except text_format.ParseError as exc:
                        raise OverrideError(f"cannot read {raw!r}: {exc}") from None
                    element.CopyFrom(getattr(scratch, seg.name)[0])
                    return format_path(done)
                current = element
                continue
            if not last:
                raise OverrideError(f"{format_path(done)} is a {type_name(fd)}, it has no fields")
            value = convert_scalar(fd, raw)
            if index == len(container):
                container.append(value)
            else:
                container[index] = value
            return format_path(done)
        if seg.selector is not None:
            raise OverrideError(f"{format_path(done + [Segment(seg.name)])} is not a list or map; drop "
                                f"[{seg.selector}]")
        done.append(seg)
        if fd.message_type is not None:
            if last:
                if not raw.strip().startswith("{"):
                    raise OverrideError(f"{format_path(done)} is a {fd.message_type.name} block; give {{...}} "
                                        "or set one of its fields")
                _merge_text(fd, current, raw)
                return format_path(done)
            child = getattr(current, seg.name)
            child.SetInParent()
            current = child
            continue
        if not last:
            raise OverrideError(f"{format_path(done)} is a {type_name(fd)}, it has no fields")
        try:
            setattr(current, seg.name, convert_scalar(fd, raw))
        except (TypeError, ValueError) as exc:
            if isinstance(exc, OverrideError):
                raise
            raise OverrideError(f"{format_path(done)}: {exc}") from None
        return format_path(done)
    raise OverrideError("empty field path")


def apply_overrides(message: Message, expressions: Sequence[str], reporter: Reporter) -> None:
    """Apply every override in order; report each failure (they do not stop the others).

    Args:
        message: the top-level spec message (modified in place).
        expressions: ``FIELD=VALUE`` strings.
        reporter: problems are reported with origin ``--set <expression>``; successfully
            set paths are recorded in ``reporter.overridden``.
    """
    for expression in expressions:
        try:
            path = apply_override(message, expression)
        except OverrideError as exc:
            reporter.origin = f"--set {expression}"
            reporter.error(None, str(exc))
            reporter.origin = None
            continue
        reporter.overridden[path] = expression
