"""TAO's calibration TensorFile: an HDF5 file of preprocessed input batches.

Layout (the one TAO's ``calibration_tensorfile`` writes and its calibrators read):

* root attribute ``count``: number of stored records (batches);
* root attribute ``shape``: shape of the first stored array (when same-shape enforcement is on,
  the default; every later array must have this shape);
* record ``i`` is the group ``_tensorfile_array_key__<i>`` (note the double underscore); a bare
  array is stored in it as the gzip-compressed dataset ``_tensorfile_array_key_``, a dict of
  arrays as one dataset per key (nested dicts become sub-groups).

For DetectNet_v2 one record is one batch of network input: float32, NCHW, RGB in [0, 1].
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from tltk.errors import InvalidInputError
from tltk.fileio import temporary_name

__all__ = ["ARRAY_KEY", "record_name", "TensorFileWriter", "read_tensorfile", "count_batches"]

#: Name of the dataset that holds a bare array inside a record group.
ARRAY_KEY = "_tensorfile_array_key_"


def record_name(index: int) -> str:
    """HDF5 group name of record ``index``: ``_tensorfile_array_key__<index>``."""
    return f"{ARRAY_KEY}_{int(index)}"


def _write_value(group: Any, key: str, value: Any) -> None:
    if isinstance(value, Mapping):
        sub = group.create_group(key)
        for k, v in value.items():
            _write_value(sub, str(k), v)
    else:
        group.create_dataset(key, data=np.asarray(value), compression="gzip")


def _read_value(node: Any) -> Any:
    import h5py

    if isinstance(node, h5py.Dataset):
        return node[()]
    keys = list(node.keys())
    if keys == [ARRAY_KEY] and isinstance(node[ARRAY_KEY], h5py.Dataset):
        return node[ARRAY_KEY][()]
    return {k: _read_value(node[k]) for k in keys}


class TensorFileWriter:
    """Write batches to a new TensorFile.

    The file is written under a temporary name next to ``path`` and renamed when
    :meth:`close` runs (also at the end of a ``with`` block without error), so an interrupted
    run never leaves a TensorFile that looks complete.

    Args:
        path: the output ``.tensor``/``.h5`` file.
        overwrite: replace an existing file (TAO refuses; so does tltk unless asked).
        enforce_same_shape: every array must have the shape of the first one (TAO's default).

    Raises:
        InvalidInputError: ``path`` exists and ``overwrite`` is false.
    """

    def __init__(self, path: str | os.PathLike[str], overwrite: bool = False, enforce_same_shape: bool = True) -> None:
        import h5py

        self.path = os.fspath(path)
        if os.path.exists(self.path) and not overwrite:
            raise InvalidInputError(f"output TensorFile already exists: {self.path}",
                                    hint="choose another -o path, delete the file, or pass --force")
        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        self._temp = temporary_name(self.path, ".tltk-partial")
        self._file: Any = h5py.File(self._temp, "w")
        self._enforce = enforce_same_shape
        self._shape: tuple[int, ...] | None = None
        self.count = 0
        self._file.attrs["count"] = 0

    def write_batch(self, batch: np.ndarray | Mapping[str, Any]) -> None:
        """Append one record.

        Args:
            batch: an array (DetectNet_v2: ``[N, C, H, W]`` float32) or a dict of arrays.

        Raises:
            ValueError: same-shape enforcement is on and the array's shape differs from the
                first one ("Shape mismatch", as TAO).
        """
        if self._file is None:
            raise ValueError("TensorFileWriter is closed")
        group = self._file.create_group(record_name(self.count))
        if isinstance(batch, Mapping):
            for key, value in batch.items():
                _write_value(group, str(key), value)
        else:
            array = np.asarray(batch)
            if self._enforce:
                if self._shape is None:
                    self._shape = tuple(array.shape)
                    self._file.attrs["shape"] = np.asarray(array.shape, dtype=np.int64)
                elif tuple(array.shape) != self._shape:
                    del self._file[record_name(self.count)]
                    raise ValueError(f"Shape mismatch: record {self.count} has shape {tuple(array.shape)}, "
                                     f"the file holds {self._shape}")
            group.create_dataset(ARRAY_KEY, data=array, compression="gzip")
        self.count += 1
        self._file.attrs["count"] = self.count

    def close(self) -> str:
        """Finish the file and move it to its final path; returns that path."""
        if self._file is not None:
            self._file.close()
            self._file = None
            os.replace(self._temp, self.path)
        return self.path

    def abort(self) -> None:
        """Close and delete the temporary file without creating ``path``."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if os.path.exists(self._temp):
            os.remove(self._temp)

    def __enter__(self) -> TensorFileWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _open(path: str) -> Any:
    import h5py

    if not os.path.isfile(path):
        raise InvalidInputError(f"TensorFile not found: {path}")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise InvalidInputError(f"{path} is not a TensorFile (HDF5): {exc}") from None


def count_batches(path: str | os.PathLike[str]) -> int:
    """Number of records stored in a TensorFile (its ``count`` attribute).

    Raises:
        InvalidInputError: missing file, not HDF5, or no ``count`` attribute.
    """
    path = os.fspath(path)
    with _open(path) as handle:
        if "count" not in handle.attrs:
            raise InvalidInputError(f"{path} has no 'count' attribute; not a TensorFile")
        count = np.asarray(handle.attrs["count"])
        if count.shape != () or count.dtype.kind not in "iu" or int(count) < 0:
            raise InvalidInputError(f"{path}: the 'count' attribute is {count!r}, not a record count; "
                                    "not a TensorFile")
        return int(count)


def read_tensorfile(path: str | os.PathLike[str]) -> Iterator[Any]:
    """Iterate over the records of a TensorFile in index order.

    Args:
        path: the file.

    Returns:
        An iterator of arrays (records written as bare arrays, e.g. ``[N, C, H, W]``) or
        dicts (records written as dicts).

    Raises:
        InvalidInputError: missing/invalid file or a record group is missing.
    """
    path = os.fspath(path)
    count = count_batches(path)
    with _open(path) as handle:
        for index in range(count):
            name = record_name(index)
            if name not in handle:
                raise InvalidInputError(f"{path}: record {name!r} is missing (count says {count}); the file is "
                                        "truncated or was not written by calibration_tensorfile")
            try:
                value = _read_value(handle[name])
            except (OSError, KeyError, ValueError, TypeError) as exc:
                raise InvalidInputError(f"{path}: record {name!r} cannot be read ({exc}); the file is damaged",
                                        hint="write it again with calibration_tensorfile") from None
            yield value
