"""Reading one spec field with the schema's own default (the proto's ``[default = ...]``).

Spec values reach model code as generated protobuf messages, whose unset fields already read
as the documented default.  A few entry points (``build_detectnet_v2_model``,
``convert_dataset``) also accept a plain object with TAO's field names (a
``types.SimpleNamespace`` in tests and scripts); :func:`spec_field` gives such an object the same
defaults as the message, taken from the message's descriptor, so no default is spelled twice.

An explicit zero stays a zero here.  Where TAO reads zero as "use the default", the spec
kind's ``zero_means_default`` table (:mod:`tltk.spec.rules`) clears it when the spec is
loaded; everything else about a value is checked by the spec rules.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from google.protobuf.message import Message


def _is_repeated(field: Any) -> bool:
    is_repeated = getattr(field, "is_repeated", None)
    if is_repeated is not None:
        return bool(is_repeated)
    return bool(field.label == field.LABEL_REPEATED)


def spec_default(message_class: type[Message], name: str, as_written: bool = False) -> Any:
    """The value an unset ``name`` of ``message_class`` reads as.

    Args:
        message_class: a generated message class (``detectnet_v2_pb2.KITTIConfig``).
        name: one of its field names.
        as_written: give a float default as the decimal written in the proto (``0.3``) instead
            of the float32 a message stores (``0.30000001192092896``), for parameters that are
            used as Python floats.

    Returns:
        The ``[default = ...]`` of a scalar (floats as the float32 a message stores, or as
        written, enums as their number), ``None`` for a sub-message, ``[]`` for a repeated
        field, ``{}`` for a map.

    Raises:
        KeyError: the message has no such field (a bug in the caller, not a user error).
    """
    fields = message_class.DESCRIPTOR.fields_by_name
    if name not in fields:
        raise KeyError(f"{message_class.DESCRIPTOR.full_name} has no field {name!r}")
    field = fields[name]
    if _is_repeated(field):
        entry = field.message_type
        return {} if entry is not None and entry.GetOptions().map_entry else []
    if field.message_type is not None:
        return None
    value = field.default_value
    if as_written and isinstance(value, float):
        return float(np.format_float_positional(np.float32(value), unique=True))
    return value


def spec_field(obj: Any, message_class: type[Message], name: str) -> Any:
    """Field ``name`` of ``obj``, a ``message_class`` message or an object with TAO's names.

    Args:
        obj: the message, a plain object (namespace) with some of its fields, or ``None``
            (an absent block: every field reads its default).
        message_class: the schema ``obj`` follows; defaults come from it.
        name: the field name.

    Returns:
        For a message: the field as protobuf reads it (the default when unset), except that an
        unset sub-message is ``None``.  For another object: its attribute, or
        :func:`spec_default` when it has none (or it is ``None``).

    Raises:
        KeyError: ``message_class`` has no such field.
    """
    default = spec_default(message_class, name)
    if obj is None:
        return default
    if isinstance(obj, Message):
        field = obj.DESCRIPTOR.fields_by_name[name]
        if field.message_type is not None and not _is_repeated(field) and not obj.HasField(name):
            return None
        return getattr(obj, name)
    value = getattr(obj, name, None)
    return default if value is None else value
