"""``tltk info``: what this machine can run (versions, accelerators, subtasks, backends)."""

from __future__ import annotations

import importlib
import importlib.metadata
import platform
import shutil
import sys
from typing import Any

from tltk.cli.common import CommandResult, tltk_command


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _probe_tensorflow() -> dict[str, Any]:
    try:
        import tensorflow as tf
    except Exception as exc:  # a broken TF install is reported, not fatal
        return {"version": None, "error": f"{type(exc).__name__}: {exc}", "gpus": []}
    gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    build = tf.sysconfig.get_build_info()
    return {
        "version": tf.__version__,
        "keras": _dist_version("keras"),
        "built_with_cuda": bool(build.get("is_cuda_build", False)),
        "cuda_version": build.get("cuda_version"),
        "cudnn_version": build.get("cudnn_version"),
        "gpus": gpus,
    }


def _probe_onnxruntime() -> dict[str, Any]:
    try:
        import onnxruntime as ort
    except Exception as exc:
        return {"version": None, "error": f"{type(exc).__name__}: {exc}", "providers": []}
    return {"version": ort.__version__, "providers": list(ort.get_available_providers())}


def _probe_tensorrt() -> dict[str, Any]:
    from tltk.tensorrt.availability import pycuda_version, tensorrt_version

    # tensorrt_version() tells the real library from the type stubs' empty namespace package.
    return {"version": tensorrt_version(), "pycuda": pycuda_version()}


def collect_info() -> dict[str, Any]:
    """Gather the environment report shown by ``tltk info``.

    Returns:
        A JSON-serialisable dict with keys ``tltk``, ``python``, ``platform``, ``tensorflow``,
        ``onnxruntime``, ``tensorrt``, ``nvidia_smi``, ``backends`` and ``subtasks``.
    """
    from tltk import __version__
    from tltk.cli.app import GROUPS

    tf_info = _probe_tensorflow()
    ort_info = _probe_onnxruntime()
    trt_info = _probe_tensorrt()
    has_gpu = bool(tf_info.get("gpus")) or "CUDAExecutionProvider" in ort_info.get("providers", [])
    backends = {
        "keras (.tlt/.keras/.hdf5)": tf_info.get("version") is not None,
        "onnxruntime (.onnx/.etlt)": ort_info.get("version") is not None,
        "onnxruntime CUDA": "CUDAExecutionProvider" in ort_info.get("providers", []),
        "tensorrt (.engine/.plan/.trt)": trt_info.get("version") is not None and trt_info.get("pycuda") is not None,
    }
    return {
        "tltk": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "tensorflow": tf_info,
        "onnxruntime": ort_info,
        "tensorrt": trt_info,
        "nvidia_smi": shutil.which("nvidia-smi"),
        "gpu_available": has_gpu,
        "backends": backends,
        "subtasks": {group: sorted(table) for group, (_, table) in GROUPS.items()},
    }


@tltk_command("info", help="Show versions of TensorFlow, ONNX Runtime, TensorRT, CUDA, the GPUs, and what runs here.")
def info() -> CommandResult:
    from tltk import console

    report = collect_info()
    tf_info, ort_info, trt_info = report["tensorflow"], report["onnxruntime"], report["tensorrt"]
    lines = [
        f"tltk          {report['tltk']}  (Python {report['python']}, {report['platform']})",
        f"TensorFlow    {tf_info.get('version') or 'not available: ' + tf_info.get('error', '')}"
        + (f"  Keras {tf_info.get('keras')}" if tf_info.get("keras") else ""),
        f"  CUDA build  {tf_info.get('built_with_cuda')}  CUDA {tf_info.get('cuda_version') or '-'}"
        f"  cuDNN {tf_info.get('cudnn_version') or '-'}",
        f"  GPUs        {', '.join(tf_info.get('gpus') or []) or 'none'}",
        f"ONNX Runtime  {ort_info.get('version') or 'not available'}  providers: {', '.join(ort_info.get('providers', []))}",
        f"TensorRT      {trt_info.get('version') or 'not installed (pip install tltk[tensorrt] on a GPU machine)'}",
        f"pycuda        {trt_info.get('pycuda') or 'not installed'}",
        "Backends:",
    ]
    lines += [f"  {'yes' if ok else 'no ':3}  {name}" for name, ok in report["backends"].items()]
    lines.append("Subtasks:")
    lines += [f"  {group}: {', '.join(tasks)}" for group, tasks in report["subtasks"].items()]
    for line in lines:
        console.echo(line)
    available = [name for name, ok in report["backends"].items() if ok]
    return CommandResult(summary=f"{len(available)} inference backend(s) available.", data=report)
