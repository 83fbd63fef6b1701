"""DetectNet_v2 inference speed on this machine: Keras vs ONNX Runtime FP32 vs ONNX Runtime INT8 (Q/DQ).

Model: a resnet18 DetectNet_v2 (3 classes) from ``tltk.detectnet_v2.model.build_detectnet_v2_model``
(random weights; speed does not depend on them).  Input 3x544x960 NCHW, as TAO's sample specs.

For each backend the table shows:

* ``b1 ms``: median latency of one image (batch 1);
* ``b8 img/s``: throughput at batch 8 (images per second, median of the runs);
* ``GFLOP/s``: the model's convolution FLOPs (2 x the multiply-adds that
  :func:`tltk.core.pruning.count_flops` counts) x images per second at batch 8;
* ``% matmul``: that rate as a fraction of a large float32 NumPy matmul (4096x4096, 2n^3 FLOPs)
  timed in the same run, i.e. how much of this CPU's practical dense peak the backend reaches;
* ``vs Keras``: throughput ratio against the Keras baseline (> 1: faster than Keras).

INT8 rows use the Q/DQ model written by :func:`tltk.export.qdq.write_qdq_onnx` from an entropy
calibration on 8 synthetic images: ``INT8 Q/DQ (TensorRT placement)`` has Q/DQ only on the inputs
of weighted layers (the default, what TensorRT wants); ``INT8 Q/DQ (+Add/Relu)`` also quantizes
Add/Relu inputs, which lets ONNX Runtime's CPU provider fuse QLinearConv/QLinearAdd.  ONNX Runtime
on CPU is not the target of the Q/DQ model (TensorRT is), so the INT8 rows show what a CPU gets.

Run: ``.venv/bin/python benchmarks/detectnet_v2_inference.py [--runs 3] [--height 544 --width 960]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

NAMES = {"output_cov": "output_cov/Sigmoid", "output_bbox": "output_bbox/BiasAdd"}
NUM_CLASSES = 3


def build_model(height: int, width: int):  # noqa: ANN201 - keras.Model, imported lazily
    """(model, description): tltk's resnet18 DetectNet_v2."""
    from types import SimpleNamespace

    from tltk.detectnet_v2.model import build_detectnet_v2_model

    config = SimpleNamespace(arch="resnet", num_layers=18, use_batch_norm=True, use_pooling=False,
                             all_projections=True, dropout_rate=0.0, freeze_blocks=[], freeze_bn=False,
                             objective_set=None, pretrained_model_file="")
    return build_detectnet_v2_model(config, NUM_CLASSES, (3, height, width)), \
        "tltk resnet18 DetectNet_v2 (build_detectnet_v2_model)"


def conv_flops(model) -> float:  # noqa: ANN001
    """FLOPs (2 x multiply-adds) of the convolutions for one image."""
    from tltk.core.pruning import count_flops

    return 2.0 * float(count_flops(model) or 0)


def matmul_gflops(n: int = 4096, runs: int = 3) -> float:
    """Best-of-``runs`` float32 NumPy matmul rate in GFLOP/s."""
    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(runs))
    return 2.0 * n ** 3 / best / 1e9


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(run: Callable[[np.ndarray], object], x1: np.ndarray, x8: np.ndarray, runs: int) -> tuple[float, float]:
    """(median batch-1 latency in ms, median batch-8 throughput in images/s)."""
    run(x1)
    run(x8)
    latency = statistics.median(_timed(lambda: run(x1)) for _ in range(runs)) * 1e3
    throughput = x8.shape[0] / statistics.median(_timed(lambda: run(x8)) for _ in range(runs))
    return latency, throughput


def synthetic_images(n: int, height: int, width: int, seed: int) -> np.ndarray:
    """Smooth random images in [0, 1] (block noise), NCHW float32."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((n, 3, height // 16, width // 16), dtype=np.float32)
    return np.repeat(np.repeat(coarse, 16, axis=2), 16, axis=3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs per measurement (median)")
    parser.add_argument("--height", type=int, default=544)
    parser.add_argument("--width", type=int, default=960)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import onnxruntime as ort

    from tltk.export.calibration import calibrate_onnx
    from tltk.export.onnx_export import export_keras_to_onnx
    from tltk.export.qdq import write_qdq_onnx
    from tltk.runtime import KerasBackend, OnnxRuntimeBackend

    model, description = build_model(args.height, args.width)
    flops = conv_flops(model)
    x1 = synthetic_images(1, args.height, args.width, 1)
    x8 = synthetic_images(8, args.height, args.width, 2)
    peak = matmul_gflops()
    rows: list[tuple[str, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="tltk-bench-") as tmp:
        fp32 = os.path.join(tmp, "model.onnx")
        report = export_keras_to_onnx(model, fp32, "input_1", NAMES, parity_inputs=x1)
        ranges = calibrate_onnx(fp32, (synthetic_images(2, args.height, args.width, 10 + i) for i in range(4)),
                                images_per_run=1)
        int8 = write_qdq_onnx(fp32, ranges, os.path.join(tmp, "int8.onnx"))
        int8_ort = write_qdq_onnx(fp32, ranges, os.path.join(tmp, "int8_ort.onnx"), activation_ops=("Add", "Relu"))

        keras_backend = KerasBackend(model=model, output_names=NAMES)
        rows.append(("Keras (TensorFlow)", *measure(keras_backend.run, x1, x8, args.runs)))
        errors = {}
        reference = OnnxRuntimeBackend(fp32, providers=["CPUExecutionProvider"]).run(x8)
        for label, path in (("ONNX Runtime FP32", fp32), ("INT8 Q/DQ (TensorRT placement)", int8),
                            ("INT8 Q/DQ (+Add/Relu)", int8_ort)):
            backend = OnnxRuntimeBackend(path, providers=["CPUExecutionProvider"])
            rows.append((label, *measure(backend.run, x1, x8, args.runs)))
            out = backend.run(x8)
            errors[label] = max(float(np.abs(out[k] - reference[k]).max()) for k in reference)

    print(f"DetectNet_v2 inference, input 3x{args.height}x{args.width}, model: {description}")
    print(f"conv FLOPs per image: {flops / 1e9:.2f} GFLOP; NumPy float32 matmul: {peak:.1f} GFLOP/s; "
          f"ONNX Runtime {ort.__version__} (CPU), {os.cpu_count()} CPUs; export parity max |diff| "
          f"{report.parity_max_abs_diff:.2e}")
    header = f"{'backend':<32}{'b1 ms':>10}{'b8 img/s':>11}{'GFLOP/s':>10}{'% matmul':>10}{'vs Keras':>10}" \
             f"{'max |diff| vs FP32':>20}"
    print(header)
    print("-" * len(header))
    base = rows[0][2]
    for label, latency, throughput in rows:
        rate = flops * throughput / 1e9
        diff = f"{errors[label]:.3g}" if label in errors else "-"
        print(f"{label:<32}{latency:>10.1f}{throughput:>11.2f}{rate:>10.1f}{100 * rate / peak:>9.1f}%"
              f"{throughput / base:>10.2f}{diff:>20}")


if __name__ == "__main__":
    main()
