"""TensorRT INT8 calibrators (implicit quantization) fed from numpy batches and/or a cache file.

``IInt8EntropyCalibrator2`` is what TAO and DeepStream use; ``IInt8MinMaxCalibrator`` is offered
for models whose outputs need the full range.  Both are deprecated since TensorRT 10.1 and gone in
TensorRT 11, where INT8 comes from a Q/DQ ONNX model instead (see :mod:`tltk.tensorrt.builder`).

A calibrator made with only a cache path (``batches=None``) is "cache-only": TensorRT reads the
scales from the cache and never asks for data, which is how ``converter -c cal.bin`` builds INT8
engines from a cache tltk wrote without a GPU.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from tltk.errors import InvalidInputError, UsageError
from tltk.fileio import atomic_write_bytes

log = logging.getLogger(__name__)

ALGORITHMS = ("entropy2", "minmax")

Batch = np.ndarray | Mapping[str, np.ndarray]


class _CalibratorLogic:
    """The data and cache handling shared by the TensorRT calibrator subclasses."""

    def _setup(self, cache_file: str, batches: Iterable[Batch] | None, batch_size: int) -> None:
        self.cache_file = cache_file
        self.batch_size = int(batch_size)
        self._batches: Iterator[Batch] | None = iter(batches) if batches is not None else None
        self._device: dict[str, Any] = {}
        self._nbytes: dict[str, int] = {}
        self.batches_seen = 0

    def get_batch_size(self) -> int:
        return self.batch_size

    def get_batch(self, names: list[str]) -> list[int]:
        if self._batches is None:
            return []
        try:
            batch = next(self._batches)
        except StopIteration:
            self._free()
            log.info("calibration: %d batches used", self.batches_seen)
            return []
        import pycuda.driver as cuda

        arrays = batch if isinstance(batch, Mapping) else {names[0]: batch}
        if len(names) != 1 and not isinstance(batch, Mapping):
            raise UsageError(f"calibration: the network has {len(names)} inputs ({', '.join(names)}); "
                             "calibration batches must be dicts of input name -> array")
        pointers: list[int] = []
        for name in names:
            if name not in arrays:
                raise UsageError(f"calibration: the batch has no array for network input '{name}'")
            host = np.ascontiguousarray(arrays[name], dtype=np.float32)
            if host.shape[0] != self.batch_size:
                raise UsageError(f"calibration: batch of {host.shape[0]} for input '{name}', the calibrator "
                                 f"was declared with batch size {self.batch_size} (-b)")
            if name not in self._device or self._nbytes[name] < host.nbytes:
                if name in self._device:
                    self._device[name].free()
                self._device[name] = cuda.mem_alloc(host.nbytes)
                self._nbytes[name] = host.nbytes
            cuda.memcpy_htod(self._device[name], host)
            pointers.append(int(self._device[name]))
        self.batches_seen += 1
        return pointers

    def read_calibration_cache(self) -> bytes | None:
        if self.cache_file and os.path.isfile(self.cache_file):
            with open(self.cache_file, "rb") as fh:
                data = fh.read()
            log.info("calibration: using the cache %s (TensorRT skips calibration)", self.cache_file)
            return data
        return None

    def write_calibration_cache(self, cache: Any) -> None:
        if not self.cache_file:
            return
        data = bytes(cache)
        atomic_write_bytes(self.cache_file, data)
        log.info("calibration: wrote the cache %s (%d bytes)", self.cache_file, len(data))

    def _free(self) -> None:
        for buffer in self._device.values():
            buffer.free()
        self._device.clear()
        self._nbytes.clear()


def make_calibrator(cache_file: str | os.PathLike[str], batches: Iterable[Batch] | None = None,
                    batch_size: int = 8, algorithm: str = "entropy2") -> Any:
    """Create a TensorRT INT8 calibrator.

    Args:
        cache_file: the calibration cache.  Read when it exists (TensorRT then skips calibration);
            written with TensorRT's result otherwise.
        batches: calibration data, already preprocessed exactly like inference input: an iterable
            of float32 arrays ``[batch_size, C, H, W]`` (one network input) or of dicts input name
            -> array.  ``None`` makes a cache-only calibrator.
        batch_size: the first dimension of every batch (``-b``).
        algorithm: ``"entropy2"`` (IInt8EntropyCalibrator2, cache header ``EntropyCalibration2``)
            or ``"minmax"`` (IInt8MinMaxCalibrator, ``MinMaxCalibration``).

    Returns:
        An ``IInt8Calibrator`` instance to pass to :func:`tltk.tensorrt.builder.build_engine`.

    Raises:
        UsageError: unknown algorithm or non-positive batch size.
        InvalidInputError: cache-only and the cache does not exist.
    """
    if algorithm not in ALGORITHMS:
        raise UsageError(f"calibration algorithm '{algorithm}' is not one of {', '.join(ALGORITHMS)}")
    if batch_size < 1:
        raise UsageError(f"-b: the calibration batch size must be positive, got {batch_size}")
    path = os.fspath(cache_file)
    if batches is None and not os.path.isfile(path):
        raise InvalidInputError(f"-c: calibration cache not found: {path}",
                                hint="write it with `tltk <model> export --data_type int8 --cal_cache_file ...`")
    import tensorrt as trt

    class EntropyCalibrator(_CalibratorLogic, trt.IInt8EntropyCalibrator2):
        """IInt8EntropyCalibrator2 over numpy batches and a cache file."""

        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._setup(path, batches, batch_size)

    class MinMaxCalibrator(_CalibratorLogic, trt.IInt8MinMaxCalibrator):
        """IInt8MinMaxCalibrator over numpy batches and a cache file."""

        def __init__(self) -> None:
            trt.IInt8MinMaxCalibrator.__init__(self)
            self._setup(path, batches, batch_size)

    if algorithm == "minmax":
        return MinMaxCalibrator()
    return EntropyCalibrator()
