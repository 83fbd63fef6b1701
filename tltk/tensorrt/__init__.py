"""TensorRT support (optional extra ``tltk[tensorrt]``): engine building, INT8 calibrators, engine runner.

Nothing here imports ``tensorrt`` or ``pycuda`` at import time; the modules import them inside the
functions that need them, and :mod:`tltk.tensorrt.availability` says whether they are usable.

Modules:
    availability: detect TensorRT, pycuda and GPUs; ``require_tensorrt`` (exit code 3 with the
        equivalent ``trtexec`` command where TensorRT is missing).
    profiles: tao-converter's ``-p``/``-d`` syntax and optimization profiles.
    converter_args: tao-converter flags -> :class:`BuildSettings` and the ``trtexec`` command.
    builder: ONNX -> serialized engine with the TensorRT 10 API (FP16, INT8 via Q/DQ or a cache).
    calibrator: ``IInt8EntropyCalibrator2``/``IInt8MinMaxCalibrator`` over numpy batches or a cache.
    runner: :class:`TensorRTRunner`, run an engine on numpy inputs with pycuda buffers.
"""
