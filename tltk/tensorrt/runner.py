"""Run a serialized TensorRT engine (``.engine``/``.plan``/``.trt``) with pycuda buffers.

Used by the TensorRT inference backend behind ``evaluate`` and ``inference``.  Device buffers are
allocated once per I/O tensor for the engine's largest profile shape; each :meth:`TensorRTRunner.run`
sets the actual input shapes (dynamic batch), copies inputs in, runs ``execute_async_v3`` on a
CUDA stream and copies outputs back.  Batches larger than the engine's maximum are split.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tltk.errors import InvalidInputError, ModelFileError, TltkError
from tltk.tensorrt.availability import require_tensorrt

if TYPE_CHECKING:
    import tensorrt as trt

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TensorInfo:
    """One engine I/O tensor.

    Attributes:
        name: tensor name, as in the ONNX model.
        dtype: numpy dtype of the tensor.
        shape: shape from the engine; ``-1`` marks dynamic dims.
        max_shape: largest shape (profile 0 max for inputs; the output shape at max inputs).
        is_input: input or output.
    """

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    max_shape: tuple[int, ...]
    is_input: bool


class TensorRTRunner:
    """Load an engine and run it on numpy inputs.

    Args:
        engine_path: the serialized engine file.
        device_id: CUDA device index.

    Raises:
        MissingDependencyError: TensorRT, pycuda or a GPU is missing (exit code 3).
        ModelFileError: the file is not an engine for this TensorRT version / GPU.
    """

    def __init__(self, engine_path: str | os.PathLike[str], device_id: int = 0) -> None:
        self.engine_path = os.fspath(engine_path)
        if not os.path.isfile(self.engine_path):
            raise InvalidInputError(f"{self.engine_path}: no such engine file")
        require_tensorrt(f"tltk <model> inference ... -m {self.engine_path} (on the machine the engine was built on)",
                         need_pycuda=True)
        import pycuda.driver as cuda
        import tensorrt as trt

        cuda.init()
        self._context_cuda = cuda.Device(device_id).retain_primary_context()
        self._context_cuda.push()
        try:
            self._logger = trt.Logger(trt.Logger.WARNING)
            trt.init_libnvinfer_plugins(self._logger, "")
            self._runtime = trt.Runtime(self._logger)
            with open(self.engine_path, "rb") as fh:
                engine = self._runtime.deserialize_cuda_engine(fh.read())
            if engine is None:
                raise ModelFileError(
                    f"{self.engine_path}: TensorRT {trt.__version__} cannot load this engine",
                    hint="engines only load on the TensorRT version and GPU model they were built with; "
                         "rebuild it here with `tltk <model> converter` or `export --engine_file`")
            self._engine: trt.ICudaEngine = engine
            execution = engine.create_execution_context()
            if execution is None:
                raise TltkError(f"{self.engine_path}: TensorRT could not create an execution context "
                                "(out of GPU memory?)")
            self._execution: trt.IExecutionContext = execution
            self._stream = cuda.Stream()
            self.tensors = self._describe_tensors()
            self._device: dict[str, Any] = {}
            for info in self.tensors.values():
                nbytes = int(np.prod(info.max_shape)) * info.dtype.itemsize
                self._device[info.name] = cuda.mem_alloc(max(nbytes, 1))
        except BaseException:
            self._context_cuda.pop()
            self._context_cuda.detach()
            raise
        self._context_cuda.pop()
        self._closed = False

    # ---- description ---------------------------------------------------------------------------

    @property
    def input_names(self) -> list[str]:
        """Input tensor names, in engine order."""
        return [t.name for t in self.tensors.values() if t.is_input]

    @property
    def output_names(self) -> list[str]:
        """Output tensor names, in engine order."""
        return [t.name for t in self.tensors.values() if not t.is_input]

    @property
    def max_batch_size(self) -> int:
        """Largest batch the engine accepts (first dim of the inputs' max profile shape)."""
        return min(t.max_shape[0] for t in self.tensors.values() if t.is_input)

    def _describe_tensors(self) -> dict[str, TensorInfo]:
        import tensorrt as trt

        engine = self._engine
        infos: dict[str, TensorInfo] = {}
        max_inputs: dict[str, tuple[int, ...]] = {}
        for index in range(engine.num_io_tensors):
            name = engine.get_tensor_name(index)
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                shape = _dims(engine.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    max_inputs[name] = _dims(engine.get_tensor_profile_shape(name, 0)[2])
                else:
                    max_inputs[name] = shape
        for name, shape in max_inputs.items():
            self._execution.set_input_shape(name, trt.Dims(list(shape)))
        for index in range(engine.num_io_tensors):
            name = engine.get_tensor_name(index)
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            shape = _dims(engine.get_tensor_shape(name))
            max_shape = max_inputs[name] if is_input else _dims(self._execution.get_tensor_shape(name))
            if any(d < 0 for d in max_shape):
                raise ModelFileError(f"{self.engine_path}: output '{name}' has a data-dependent shape "
                                     f"{max_shape}; tltk's runner needs shapes known from the inputs")
            infos[name] = TensorInfo(name, dtype, shape, max_shape, is_input)
        return infos

    # ---- running -------------------------------------------------------------------------------

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the engine.

        Args:
            inputs: input name -> array shaped like the engine input (batch first, e.g.
                ``[N, 3, H, W]`` float32 for DetectNet_v2).  ``N`` may exceed the engine's max
                batch; the batch is then split and the outputs concatenated.

        Returns:
            Output name -> array, batch first, in the engine's dtypes.

        Raises:
            InvalidInputError: missing/unknown inputs, inconsistent batch sizes or shapes the
                engine's profile does not allow.
        """
        if self._closed:
            raise TltkError("the TensorRT runner is closed")
        missing = [n for n in self.input_names if n not in inputs]
        unknown = [n for n in inputs if n not in self.tensors or not self.tensors[n].is_input]
        if missing or unknown:
            raise InvalidInputError(f"{self.engine_path}: engine inputs are {', '.join(self.input_names)}; "
                                    f"missing {missing or 'none'}, unknown {unknown or 'none'}")
        batches = {int(np.shape(inputs[n])[0]) for n in self.input_names}
        if len(batches) != 1:
            raise InvalidInputError(f"{self.engine_path}: all inputs must have the same batch size, got {sorted(batches)}")
        total = batches.pop()
        step = self.max_batch_size
        pieces: list[dict[str, np.ndarray]] = []
        for start in range(0, total, step):
            chunk = {n: np.asarray(inputs[n])[start:start + step] for n in self.input_names}
            pieces.append(self._run_chunk(chunk))
        if len(pieces) == 1:
            return pieces[0]
        return {name: np.concatenate([p[name] for p in pieces], axis=0) for name in self.output_names}

    def _run_chunk(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import pycuda.driver as cuda
        import tensorrt as trt

        self._context_cuda.push()
        try:
            hosts: dict[str, Any] = {}
            for name in self.input_names:
                info = self.tensors[name]
                array = np.ascontiguousarray(inputs[name], dtype=info.dtype)
                if array.ndim != len(info.max_shape) or any(a > m for a, m in zip(array.shape, info.max_shape, strict=True)):
                    raise InvalidInputError(f"{self.engine_path}: input '{name}' has shape {array.shape}; the engine "
                                            f"accepts up to {info.max_shape}")
                if not self._execution.set_input_shape(name, trt.Dims(list(array.shape))):
                    raise InvalidInputError(f"{self.engine_path}: the engine's profile does not allow shape "
                                            f"{array.shape} for input '{name}'")
                host = cuda.pagelocked_empty(array.shape, info.dtype)
                np.copyto(host, array)
                hosts[name] = host
                cuda.memcpy_htod_async(self._device[name], host, self._stream)
            for name, buffer in self._device.items():
                self._execution.set_tensor_address(name, int(buffer))
            outputs: dict[str, Any] = {}
            for name in self.output_names:
                shape = _dims(self._execution.get_tensor_shape(name))
                outputs[name] = cuda.pagelocked_empty(shape, self.tensors[name].dtype)
            if not self._execution.execute_async_v3(self._stream.handle):
                raise TltkError(f"{self.engine_path}: TensorRT failed to run the engine (see the TensorRT log)")
            for name, host in outputs.items():
                cuda.memcpy_dtoh_async(host, self._device[name], self._stream)
            self._stream.synchronize()
            return {name: np.array(host) for name, host in outputs.items()}
        finally:
            self._context_cuda.pop()

    def close(self) -> None:
        """Free the device buffers and release the CUDA context (idempotent)."""
        if getattr(self, "_closed", True):
            return
        self._context_cuda.push()
        try:
            for buffer in self._device.values():
                buffer.free()
            self._device.clear()
            del self._execution
            del self._engine
        finally:
            self._context_cuda.pop()
            self._context_cuda.detach()
            self._closed = True

    def __enter__(self) -> TensorRTRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _dims(dims: trt.Dims) -> tuple[int, ...]:
    return tuple(int(dims[i]) for i in range(len(dims)))
