"""Inference backends (Keras, ONNX Runtime, TensorRT) behind one interface, chosen by file extension."""

from tltk.runtime.backends import (
    BACKEND_BY_EXTENSION,
    InferenceBackend,
    KerasBackend,
    OnnxRuntimeBackend,
    TensorRTBackend,
    backend_kind,
    open_backend,
)

__all__ = [
    "BACKEND_BY_EXTENSION",
    "InferenceBackend",
    "KerasBackend",
    "OnnxRuntimeBackend",
    "TensorRTBackend",
    "backend_kind",
    "open_backend",
]
