"""DetectNet_v2 inference speed on this machine: Keras, ONNX Runtime FP32 and both INT8 files, against the real limit.

Model: a resnet18 DetectNet_v2 (3 classes) from ``tltk.detectnet_v2.model.build_detectnet_v2_model``
(random weights; speed does not depend on them).  Input 3x544x960 NCHW, as TAO's sample specs.

Rows (all timed in the same run, **interleaved**: each round times every backend once, so a
busy moment on a shared machine hits all of them):

* ``Keras (TensorFlow)``;
* ``ONNX Runtime FP32``: the exported model;
* ``INT8 Q/DQ (TensorRT placement)``: ``<model>_int8_qdq.onnx`` as ``export --data_type int8``
  writes it for TensorRT (:mod:`tltk.export.qdq`) -- the only INT8 file before issue 19 ("before");
* ``INT8 CPU (ONNX Runtime)``: ``<model>_int8_cpu.onnx`` (:mod:`tltk.export.cpu_int8`), from the
  same calibration ranges ("after").

Both INT8 files come from one entropy calibration on 8 synthetic images.  Columns: ``b1 ms``
median batch-1 latency and its spread (min-max over the runs); ``b8 img/s`` median throughput at
batch 8; ``G(FL)OP/s`` the model's convolution work (2 x the multiply-adds of
:func:`tltk.core.pruning.count_flops`) x images per second at batch 8; ``% peak`` that rate as a
fraction of the machine's measured dense peak (float32 rows against the float32 peak, INT8 rows
against the INT8 peak; :mod:`benchmarks._peak`: best of NumPy / ONNX Runtime / TensorFlow GEMMs
and ONNX Runtime ``MatMulInteger``, measured before and after the timings); ``vs FP32`` batch-1
latency ratio against ONNX Runtime FP32 (< 1: faster; goal for the CPU INT8 file: <= 0.6);
``int convs`` the Conv nodes ONNX Runtime runs as ``QLinearConv`` in its optimized graph.

Two before/after tables follow: the INT8 file (Q/DQ vs CPU INT8) and the yardstick (the old
NumPy-only matmul vs the best measured GEMM or convolution kernel).

Run: ``nice -n 5 .venv/bin/python benchmarks/detectnet_v2_inference.py [--runs 5] [--height 544 --width 960]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from _peak import fraction, load_average, measure_peaks, merge, peak_lines  # noqa: E402

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


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure_interleaved(runs: dict[str, Callable[[np.ndarray], object]], x1: np.ndarray, x8: np.ndarray,
                        rounds: int) -> dict[str, tuple[list[float], list[float]]]:
    """Batch-1 latencies (s) and batch-8 times (s) per backend, timed round-robin (one warm-up each)."""
    for run in runs.values():
        run(x1)
        run(x8)
    times: dict[str, tuple[list[float], list[float]]] = {label: ([], []) for label in runs}
    for _ in range(rounds):
        for label, run in runs.items():
            times[label][0].append(_timed(lambda run=run: run(x1)))
        for label, run in runs.items():
            times[label][1].append(_timed(lambda run=run: run(x8)))
    return times


def synthetic_images(n: int, height: int, width: int, seed: int) -> np.ndarray:
    """Smooth random images in [0, 1] (block noise), NCHW float32."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((n, 3, height // 16, width // 16), dtype=np.float32)
    return np.repeat(np.repeat(coarse, 16, axis=2), 16, axis=3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed rounds (median and spread)")
    parser.add_argument("--height", type=int, default=544)
    parser.add_argument("--width", type=int, default=960)
    parser.add_argument("--no_keras", action="store_true", help="leave the Keras row out")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import onnxruntime as ort

    from tltk.export.calibration import calibrate_onnx
    from tltk.export.cpu_int8 import optimized_node_counts, write_cpu_int8_onnx
    from tltk.export.onnx_export import export_keras_to_onnx
    from tltk.export.qdq import write_qdq_onnx
    from tltk.runtime import KerasBackend, OnnxRuntimeBackend

    model, description = build_model(args.height, args.width)
    flops = conv_flops(model)
    x1 = synthetic_images(1, args.height, args.width, 1)
    x8 = synthetic_images(8, args.height, args.width, 2)
    load_before = load_average()
    peaks_before = measure_peaks()
    fp32_label, qdq_label, cpu_label = "ONNX Runtime FP32", "INT8 Q/DQ (TensorRT placement)", "INT8 CPU (ONNX Runtime)"
    with tempfile.TemporaryDirectory(prefix="tltk-bench-") as tmp:
        fp32 = os.path.join(tmp, "model.onnx")
        report = export_keras_to_onnx(model, fp32, "input_1", NAMES, parity_inputs=x1)
        ranges = calibrate_onnx(fp32, (synthetic_images(2, args.height, args.width, 10 + i) for i in range(4)),
                                images_per_run=1)
        files = {fp32_label: fp32,
                 qdq_label: write_qdq_onnx(fp32, ranges, os.path.join(tmp, "model_int8_qdq.onnx")),
                 cpu_label: write_cpu_int8_onnx(fp32, ranges, os.path.join(tmp, "model_int8_cpu.onnx"))[0]}
        counts = {label: optimized_node_counts(path) for label, path in files.items()}
        runs: dict[str, Callable[[np.ndarray], object]] = {}
        if not args.no_keras:
            runs["Keras (TensorFlow)"] = KerasBackend(model=model, output_names=NAMES).run
        backends = {label: OnnxRuntimeBackend(path, providers=["CPUExecutionProvider"])
                    for label, path in files.items()}
        runs.update({label: backend.run for label, backend in backends.items()})
        reference = backends[fp32_label].run(x8)
        errors = {label: max(float(np.abs(backend.run(x8)[k] - reference[k]).max()) for k in reference)
                  for label, backend in backends.items()}
        times = measure_interleaved(runs, x1, x8, args.runs)
    peaks = merge(peaks_before, measure_peaks())
    load_after = load_average()

    print(f"DetectNet_v2 inference, input 3x{args.height}x{args.width}, model: {description}")
    print(f"conv FLOPs per image: {flops / 1e9:.2f} GFLOP; ONNX Runtime {ort.__version__} (CPU); export parity "
          f"max |diff| {report.parity_max_abs_diff:.2e}; {args.runs} interleaved rounds")
    print(f"{load_before} (start), {load_after} (end)")
    print("machine peak (best of each GEMM and convolution kernel, measured before and after the timings):")
    print("\n".join(peak_lines(peaks)))
    header = (f"{'backend':<32}{'b1 ms':>9}{'spread':>15}{'b8 img/s':>10}{'G(FL)OP/s':>11}{'% peak':>9}"
              f"{'vs FP32':>9}{'int convs':>11}{'max |diff|':>12}")
    print(header)
    print("-" * len(header))
    stats: dict[str, tuple[float, float]] = {}
    for label, (b1, b8) in times.items():
        latency = statistics.median(b1) * 1e3
        throughput = x8.shape[0] / statistics.median(b8)
        stats[label] = (latency, throughput)
    fp32_ms = stats[fp32_label][0]
    for label, (b1, _) in times.items():
        latency, throughput = stats[label]
        rate = flops * throughput / 1e9
        peak = peaks.int8 if label.startswith("INT8") else peaks.float32
        count = counts.get(label, {})
        convs = f"{count.get('QLinearConv', 0)}/{count.get('QLinearConv', 0) + count.get('Conv', 0) + count.get('FusedConv', 0)}" \
            if count else "-"
        diff = f"{errors[label]:.3g}" if label in errors else "-"
        spread = f"{min(b1) * 1e3:.0f}-{max(b1) * 1e3:.0f}"
        print(f"{label:<32}{latency:>9.1f}{spread:>15}{throughput:>10.2f}{rate:>11.1f}{fraction(rate, peak):>9}"
              f"{latency / fp32_ms:>8.2f}x{convs:>11}{diff:>12}")

    print("\nbefore/after: the INT8 file for ONNX Runtime on CPU (before: Q/DQ, TensorRT placement; after: CPU INT8)")
    (q_ms, q_ips), (c_ms, c_ips) = stats[qdq_label], stats[cpu_label]
    print(f"{'':<28}{'before':>12}{'after':>12}{'after/before':>14}")
    print(f"{'b1 ms':<28}{q_ms:>12.1f}{c_ms:>12.1f}{c_ms / q_ms:>13.2f}x")
    print(f"{'b1 vs ORT FP32':<28}{q_ms / fp32_ms:>11.2f}x{c_ms / fp32_ms:>11.2f}x{c_ms / q_ms:>13.2f}x")
    print(f"{'b8 img/s':<28}{q_ips:>12.2f}{c_ips:>12.2f}{c_ips / q_ips:>13.2f}x")
    print(f"{'QLinearConv in ORT graph':<28}{counts[qdq_label].get('QLinearConv', 0):>12}"
          f"{counts[cpu_label].get('QLinearConv', 0):>12}")
    print(f"{'DequantizeLinear left':<28}{counts[qdq_label].get('DequantizeLinear', 0):>12}"
          f"{counts[cpu_label].get('DequantizeLinear', 0):>12}")
    print(f"{'max |diff| vs FP32':<28}{errors[qdq_label]:>12.3g}{errors[cpu_label]:>12.3g}")
    old = peaks.candidates["NumPy matmul 4096"]
    fp32_rate = flops * stats[fp32_label][1] / 1e9
    print("\nbefore/after: the yardstick (before: NumPy 4096^2 matmul; after: best measured GEMM or convolution)")
    print(f"{'':<28}{'before':>12}{'after':>12}{'after/before':>14}")
    print(f"{'float32 peak GFLOP/s':<28}{old:>12.1f}{peaks.float32:>12.1f}{peaks.float32 / old:>13.2f}x")
    print(f"{'ORT FP32 % of peak':<28}{fraction(fp32_rate, old):>12}{fraction(fp32_rate, peaks.float32):>12}")


if __name__ == "__main__":
    main()
