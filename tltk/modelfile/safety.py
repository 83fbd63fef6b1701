"""Checks that make loading an untrusted model file safe: no code from the file ever runs.

A Keras model file describes its network as JSON (``config.json`` in a ``.keras`` zip, the
``model_config`` attribute of a Keras HDF5 file).  That description can carry Python code (a
``Lambda`` layer holds marshalled bytecode) or name any importable Python object (``"module":
"os"``), and a zip archive can name members outside the folder it is unpacked to.  tltk's
models never need any of these, so files carrying them are refused with a message naming the
file and what was found, before Keras reads them (Keras' own safe mode stays on as a second
line of defence).
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from typing import Any

from tltk.errors import ModelFileError

__all__ = ["unsafe_member_name", "check_archive_names", "find_code", "check_keras_payload"]

#: Python packages whose classes a model description may name: Keras itself and tltk's own
#: registered layers, schedules and losses.
TRUSTED_MODULES = ("keras", "tltk")
_CODE_CLASSES = {"__lambda__": "a Python lambda (marshalled bytecode)"}
_CODE_LAYERS = {"Lambda", "TFOpLambda", "SlicingOpLambda"}


def unsafe_member_name(name: object) -> str | None:
    """Why an archive member name is unsafe, or None when it is a plain relative path.

    Args:
        name: the member name as stored in the archive.

    Returns:
        ``None``, or a short reason (absolute path, ``..`` component, backslash, drive letter,
        empty component).
    """
    if not isinstance(name, str) or not name:
        return "an empty name"
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "an absolute path"
    if "\\" in name:
        return "a backslash (a Windows path)"
    parts = name.rstrip("/").split("/")
    if ".." in parts:
        return "a '..' component (a path outside the archive)"
    if any(part in ("", ".") for part in parts):
        return "an empty or '.' component"
    if "\x00" in name:
        return "a NUL character"
    return None


def check_archive_names(names: list[str], source: str, what: str = "model archive") -> None:
    """Refuse an archive whose member names could escape the folder it is unpacked to.

    Args:
        names: the member names (``ZipFile.namelist()``).
        source: the file, for the message.
        what: what the archive is, for the message.

    Raises:
        ModelFileError: a name is absolute, contains ``..`` or is otherwise not a plain
            relative path.
    """
    for name in names:
        why = unsafe_member_name(name)
        if why is not None:
            raise ModelFileError(f"{source}: refused: the {what} has a member named {name!r} with {why}; "
                                 "model files never need one, so the file was crafted or damaged",
                                 hint="only load model files from sources you trust")


def _walk(node: Any, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        yield where, node
        for key, value in node.items():
            yield from _walk(value, f"{where}.{key}" if where else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, f"{where}[{index}]")


def find_code(config: Any) -> list[str]:
    """Everything in a Keras model description that would run or import Python code.

    Args:
        config: the parsed JSON description (Keras 3 ``config.json`` or Keras 2 HDF5
            ``model_config``).

    Returns:
        One sentence per finding (empty when the description is plain data), e.g.
        ``"layer 'evil' is a Lambda layer (it runs Python code stored in the file)"``.
    """
    found: list[str] = []
    for where, node in _walk(config, ""):
        class_name = node.get("class_name")
        cfg = node.get("config")
        layer_name = node.get("name") or (cfg.get("name") if isinstance(cfg, dict) else None)
        if isinstance(class_name, str) and class_name in _CODE_LAYERS and "config" in node:
            found.append(f"layer {layer_name or where!r} is a {class_name} layer (it runs Python code stored "
                         "in the file)")
            continue
        if isinstance(class_name, str) and class_name in _CODE_CLASSES:
            found.append(f"{where or 'the model'} holds {_CODE_CLASSES[class_name]}")
        module = node.get("module")
        if isinstance(module, str) and module.split(".")[0] not in TRUSTED_MODULES:
            found.append(f"{where or 'the model'} names the Python module {module!r}"
                         + (f" ({class_name})" if isinstance(class_name, str) else ""))
        if node.get("function_type") in ("lambda", "raw"):
            found.append(f"{where or 'the model'} holds a Python function (Keras 2 Lambda bytecode)")
    return found


def _keras_config(data: bytes, kind: str, source: str) -> Any:
    if kind == "keras":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                check_archive_names(zf.namelist(), source, "Keras model archive")
                for name in zf.namelist():
                    if name.endswith((".npz", ".npy")):
                        _check_numpy_member(zf.read(name), name, source)
                raw = zf.read("config.json")
        except KeyError:
            raise ModelFileError(f"{source}: the Keras model archive has no config.json; it is not a "
                                 "Keras 3 model") from None
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise ModelFileError(f"{source}: damaged or truncated: the Keras model archive cannot be read "
                                 f"({exc})") from None
    else:
        import h5py

        try:
            with h5py.File(io.BytesIO(data), "r") as handle:
                raw = handle.attrs.get("model_config")
        except (OSError, ValueError) as exc:
            raise ModelFileError(f"{source}: damaged or truncated: the HDF5 file cannot be read ({exc})") from None
        if raw is None:
            raise ModelFileError(f"{source}: this HDF5 file holds no Keras model description (model_config); "
                                 "it may hold weights only",
                                 hint="weights-only files are used as pretrained_model_file, not as models")
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    try:
        return json.loads(raw)
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{source}: damaged: the Keras model description is not valid JSON ({exc})") from None


def _check_numpy_member(data: bytes, name: str, source: str) -> None:
    import numpy as np

    try:
        loaded = np.load(io.BytesIO(data), allow_pickle=False)
        arrays = [loaded[key] for key in loaded.files] if hasattr(loaded, "files") else [loaded]
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "pickle" in str(exc).lower():
            raise ModelFileError(f"{source}: refused: the member {name!r} holds a pickled Python object, which "
                                 "tltk never unpickles from a model file",
                                 hint="only load model files from sources you trust") from None
        raise ModelFileError(f"{source}: damaged: the member {name!r} is not a readable NumPy file ({exc})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ModelFileError(f"{source}: damaged: the member {name!r} is not a readable NumPy file ({exc})") from None
    del arrays


def check_keras_payload(data: bytes, kind: str, source: str) -> None:
    """Refuse a Keras model (``.keras`` zip or Keras HDF5 bytes) that carries code.

    Args:
        data: the model file's bytes (a ``.keras`` zip when ``kind == "keras"``, HDF5 otherwise).
        kind: ``"keras"`` or ``"hdf5"``.
        source: the file, for messages.

    Raises:
        ModelFileError: the archive has unsafe member names, the description is unreadable,
            or it holds code (``Lambda`` layers, Python lambdas, modules outside Keras/tltk).
    """
    found = find_code(_keras_config(data, kind, source))
    if found:
        shown = "; ".join(found[:3]) + (f"; and {len(found) - 3} more" if len(found) > 3 else "")
        raise ModelFileError(f"{source}: refused: this model file carries Python code, which tltk never runs "
                             f"from a model file: {shown}",
                             hint="rebuild the model without Lambda layers or custom Python objects "
                                  "(tltk's own models have none)")
