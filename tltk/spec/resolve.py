"""The resolved spec: every default written out, saved atomically next to the results.

"Filled in" means: in every block that is present, every scalar field that was left unset
is written with its default.  Absent blocks stay absent and unset oneof members stay unset,
because presence carries meaning (an absent ``loss_mask_label_filter`` means no filter;
setting ``validation_fold`` would select that oneof branch).
"""

from __future__ import annotations

import os
from pathlib import Path

from google.protobuf import text_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from tltk.spec.fieldpath import is_map


def fill_defaults(message: Message) -> Message:
    """A copy of ``message`` where every unset scalar of every present block holds its default.

    Args:
        message: any spec message.

    Returns:
        A new message of the same type; reading any field gives the same value as on
        ``message``, but every scalar is now explicitly set.
    """
    filled = type(message)()
    filled.CopyFrom(message)
    _fill(filled)
    return filled


def _fill(message: Message) -> None:
    for fd in message.DESCRIPTOR.fields:
        if fd.containing_oneof is not None and message.WhichOneof(fd.containing_oneof.name) != fd.name:
            continue
        if is_map(fd):
            value_fd = fd.message_type.fields_by_name["value"]
            if value_fd.message_type is not None:
                for entry in getattr(message, fd.name).values():
                    _fill(entry)
            continue
        if fd.label == FieldDescriptor.LABEL_REPEATED:
            if fd.message_type is not None:
                for element in getattr(message, fd.name):
                    _fill(element)
            continue
        if fd.message_type is not None:
            if message.HasField(fd.name):
                _fill(getattr(message, fd.name))
            continue
        if not message.HasField(fd.name):
            setattr(message, fd.name, getattr(message, fd.name))


def resolved_text(message: Message, header: str | None = None) -> str:
    """Protobuf text of ``message`` with every default filled in.

    Args:
        message: any spec message.
        header: optional comment text (each line is prefixed with ``# ``).

    Returns:
        Text that :func:`tltk.spec.load_spec` reads back to an equal message.
    """
    body = text_format.MessageToString(fill_defaults(message), as_utf8=True)
    if header:
        lines = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
        return lines + body
    return body


def write_resolved_spec(message: Message, path: str | os.PathLike[str], header: str | None = None) -> None:
    """Write ``message`` as protobuf text with every default filled in, atomically.

    The text goes to a temporary file in the destination folder, is flushed to disk, and
    then renamed over ``path``, so a reader never sees a half-written spec.

    Args:
        message: the spec message (for example ``LoadedSpec.message``).
        path: destination file; its folder is created when missing.
        header: optional comment placed at the top (defaults to a note naming tltk).
    """
    from tltk import __version__
    from tltk.fileio import atomic_write_text

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    text = resolved_text(message, header if header is not None else
                         f"Resolved {message.DESCRIPTOR.full_name} spec written by tltk {__version__}.\n"
                         "Every default is filled in; edit and pass it back with -e.")
    atomic_write_text(target, text)
