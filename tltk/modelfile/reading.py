"""Reading model files with errors that name the file."""

from __future__ import annotations

import os

from tltk.errors import InvalidInputError

__all__ = ["read_model_bytes"]


def read_model_bytes(path: str | os.PathLike[str]) -> bytes:
    """Read a whole model file, turning OS errors into messages that name the file.

    Args:
        path: the file.

    Returns:
        Its bytes.

    Raises:
        InvalidInputError: the file does not exist, is a folder, or cannot be read.
    """
    source = os.fspath(path)
    try:
        with open(source, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        raise InvalidInputError(f"{source}: no such model file") from None
    except IsADirectoryError:
        raise InvalidInputError(f"{source}: is a folder, expected a model file") from None
    except OSError as exc:
        raise InvalidInputError(f"{source}: cannot be read ({exc.strerror or exc})") from None
