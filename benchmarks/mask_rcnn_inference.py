"""MaskRCNN inference speed on this CPU: Keras, ONNX Runtime FP32/INT8 and TF Model Garden's Mask R-CNN.

Two models:

* ``resnet50``: TAO's sample spec (``specs/mask_rcnn/default_train.txt``: ResNet-50 FPN, 832x1344,
  91 classes, 1000 proposals, 100 detections);
* ``quickstart``: ``specs/mask_rcnn/quickstart_train.txt`` (ResNet-10 FPN, 256x448, 4 classes),
  or the trained model given with ``--quickstart_model``.

tltk's models are built by :func:`tltk.mask_rcnn.model.build_mask_rcnn` with random weights
(speed does not depend on them) unless a model file is given.  Rows:

* ``Keras (TensorFlow)``: the inference network through the Task's Keras predictor;
* ``ONNX Runtime FP32``: the exported ONNX model (constant-folded, what TensorRT parses);
* ``ONNX Runtime INT8 Q/DQ (TensorRT placement)``: ``<model>_int8_qdq.onnx`` from an entropy
  calibration on 4 synthetic images (the INT8 file before issue 19; TensorRT is its target);
* ``ONNX Runtime INT8 CPU``: ``<model>_int8_cpu.onnx`` (:mod:`tltk.export.cpu_int8`) from the same
  ranges, placed for ONNX Runtime's integer kernels;
* ``ORT INT8 CPU before (FPN path float)``: the same ranges placed with
  ``quantize_for_cpu(..., quantize_moves=False)`` (the FPN's upsampling ``Unsqueeze/Tile/Reshape``
  and ``Transpose`` nodes float, so the lateral convolutions stay float): the placement's
  before/after in the same rounds (trunk table: ``trunk INT8 CPU before (FPN float)``);
* ``ORT FP32 allow_spinning=0``: the FP32 file with ``session.intra_op.allow_spinning=0``
  (ONNX Runtime's worker threads sleep between operators instead of spinning);
* ``--history`` adds ``ORT FP32 before (no rewrites)``: the same model exported with
  ``rewrites=False`` (the converter's graph: Mul/ReduceSum ROIAlign blend, CHW transpose before
  ``fc6``, the stem's ``Pad``), for a before/after of :mod:`tltk.export.onnx_passes`' exact
  rewrites in the same run; in the trunk table ``trunk FP32 before (Pad)`` and ``trunk INT8 CPU
  before (Pad kept)`` (that graph calibrated and placed without folding the ``Pad``);
* ``TF Model Garden``: ``official.vision``'s Mask R-CNN with the same backbone depth, input size,
  class count, FPN levels, anchors, box head (2 fully connected layers) and proposal/detection
  counts, run through its serving module (which includes its resize and normalisation).  It
  lives in its own virtual environment (``--peer_venv``, default ``~/.cache/tltk-bench/tf-models``),
  created and filled with ``pip install tf-models-official`` on first use; when that fails the
  column says why (for instance no network) and no number is shown.

Columns: ``b1 ms`` median latency of one image and its spread (min-max); ``b1 CPU ms`` the process
CPU time of those runs (all threads: with ``--threads 1`` the one core's work, the steadiest figure
on a shared machine; with several threads spinning workers count); ``b4 img/s`` throughput at
batch 4 (median); ``G(FL)OP/s`` the FLOPs of one image (Conv/ConvTranspose/Gemm/MatMul of the FP32
graph; the heads after TopK/NMS sized from one run, :func:`_peak.onnx_conv_flops`) over the
median b1 latency and ``% peak`` that rate against the machine's peak at the same thread count
(Model Garden's row assumes the same arithmetic per image: same architecture and counts); ``vs Keras`` batch-1 latency ratio against Keras (< 1: faster); ``vs FP32``
against ONNX Runtime FP32; ``vs peer`` against Model Garden (goal for ONNX Runtime FP32: at most
0.5).  All backends are timed **interleaved** (each round times every one), so a busy moment on a
shared machine hits all of them.

A second table times the **trunk** alone (backbone, FPN and RPN heads: the ONNX graph from the
input up to the tensors post-processing reads, cut with ``onnx.utils.extract_model``), FP32 and
both INT8 placements of it with the same ranges (post-processing is float in every file, so the
trunk is where INT8 can pay; goal for the CPU INT8 trunk: <= 0.6x FP32).  Its ``G(FL)OP/s`` is the
trunk's Conv/Gemm work per image over the b1 latency, and ``% peak`` that rate against the machine's
measured dense peak (float32 rows against the float32 peak, INT8 rows against the INT8 peak;
:mod:`benchmarks._peak`, measured before and after the timings at the benchmark's thread count).
Before/after tables (Q/DQ file -> CPU INT8 file; CPU placement before -> after) close each model.

``--threads N`` gives every framework N CPU threads (TensorFlow's intra- and inter-op pools, ONNX
Runtime's intra-op pool, the peer's TensorFlow); 0 keeps each one's default.  On a machine shared
with other jobs, ``--threads 1`` gives steadier ratios.

Run: ``.venv/bin/python benchmarks/mask_rcnn_inference.py [--runs 3] [--models resnet50,quickstart]
[--threads 0] [--history]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from _model_garden import DEFAULT_PEER_VENV, MODEL_CONFIG, model_settings, peer_python, run_script, thread_env  # noqa: E402
from _peak import fraction, load_average, measure_peaks, merge, onnx_conv_flops, peak_lines  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
#: Rows of the files exported as before the exact rewrites (gather ROIAlign, stem Pad kept).
BEFORE_FP32 = "ORT FP32 before (no rewrites)"
BEFORE_TRUNK_INT8 = "trunk INT8 CPU before (Pad kept)"
#: Rows of the CPU INT8 placement before its value-moving nodes (FPN upsampling) were quantized.
BEFORE_MOVES = "ORT INT8 CPU before (FPN path float)"
BEFORE_TRUNK_MOVES = "trunk INT8 CPU before (FPN float)"
#: The FP32 model with ONNX Runtime's intra-op threads sleeping instead of spinning.
NO_SPIN = "ORT FP32 allow_spinning=0"
SPECS = {"resnet50": REPO / "specs" / "mask_rcnn" / "default_train.txt",
         "quickstart": REPO / "specs" / "mask_rcnn" / "quickstart_train.txt"}

#: Runs in the peer's virtual environment: argv[1] is a JSON document of settings; prints one
#: JSON line {"b1_ms": ..., "b4_img_s": ...}.
PEER_SCRIPT = textwrap.dedent('''
    import json, os, statistics, sys, time
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np
    import tensorflow as tf
    from official.core import exp_factory
    from official.vision.serving import detection
''') + MODEL_CONFIG + textwrap.dedent('''
    model.roi_generator.test_pre_nms_num_proposals = s["pre_nms"]
    model.roi_generator.test_num_proposals = s["post_nms"]
    model.detection_generator.max_num_detections = s["detections"]

    def timed(fn):
        start = time.perf_counter(); fn(); return time.perf_counter() - start

    results = {}
    for batch, key in ((1, "b1_ms"), (4, "b4_img_s")):
        module = detection.DetectionModule(params=params, batch_size=batch,
                                           input_image_size=[s["height"], s["width"]],
                                           input_type="image_tensor")
        images = tf.constant(np.random.default_rng(batch).integers(0, 255, (batch, s["height"], s["width"], 3)),
                             tf.uint8)
        serve = tf.function(module.serve)
        serve(images)
        median = statistics.median(timed(lambda: serve(images)) for _ in range(s["runs"]))
        results[key] = median * 1e3 if batch == 1 else batch / median
    print(json.dumps(results))
''')


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure_interleaved(runs: dict[str, Callable[[np.ndarray], object]], x1: np.ndarray, xb: np.ndarray,
                        rounds: int) -> dict[str, tuple[list[float], list[float], list[float]]]:
    """Per backend: batch-1 latencies (s), batch-``len(xb)`` times (s) and the process CPU time (s)
    of each batch-1 run (all threads: a spinning ONNX Runtime pool counts), timed round-robin (one
    warm-up each)."""
    for run in runs.values():
        run(x1)
        run(xb)
    times: dict[str, tuple[list[float], list[float], list[float]]] = {label: ([], [], []) for label in runs}
    for _ in range(rounds):
        for label, run in runs.items():
            cpu = time.process_time()
            times[label][0].append(_timed(lambda run=run: run(x1)))
            times[label][2].append(time.process_time() - cpu)
        for label, run in runs.items():
            times[label][1].append(_timed(lambda run=run: run(xb)))
    return times


def trunk_outputs(model: Any) -> list[str]:
    """The tensors where MaskRCNN's convolutional trunk (backbone, FPN, RPN heads) hands over to post-processing.

    A node belongs to the trunk when every data input (the first input of Reshape, Tile, Slice,
    ...: the others are shapes) comes from the graph input or the trunk and it is a
    Conv/Gemm/MatMul or a feature-map operator of the calibration's ``"network"`` region; the
    trunk's outputs are its tensors read by any other node (or by a graph output).  (Before, the
    shape operand of the FPN's upsampling ``Reshape``, computed from ``Shape``, cut the trunk
    after P5: the P3/P4 levels' FPN and RPN convolutions, 2/3 of its work, were left out.)
    """
    from tltk.export.calibration import _FIRST_INPUT_ONLY, NETWORK_OPS, QUANTIZABLE_OPS

    graph = model.graph
    constants = {i.name for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            constants.update(node.output)
    trunk = {graph.input[0].name}
    members: list[Any] = []
    for node in graph.node:
        # the shape operands of Reshape/Tile/... (computed from Shape for a dynamic batch) are not
        # feature maps: extract_model brings their small subgraphs along
        inputs = node.input[:1] if node.op_type in _FIRST_INPUT_ONLY else node.input
        data = [t for t in inputs if t and t not in constants]
        if data and all(t in trunk for t in data) and node.op_type in (set(NETWORK_OPS) | set(QUANTIZABLE_OPS)):
            trunk.update(node.output)
            members.append(node)
    member_ids = {id(n) for n in members}
    outputs: list[str] = []
    for node in graph.node:
        if id(node) in member_ids or node.op_type == "Shape":  # a Shape reads no values
            continue
        outputs += [t for t in node.input if t in trunk and t != graph.input[0].name and t not in outputs]
    outputs += [o.name for o in graph.output if o.name in trunk and o.name not in outputs]
    return outputs


def quantized_trunk_outputs(fp32: Any, quantized: Any, outputs: list[str]) -> list[str]:
    """The tensors of an INT8 file that post-processing reads where the FP32 graph reads ``outputs``.

    An INT8 writer rewires post-processing to a ``DequantizeLinear`` output when it quantized a
    trunk output; cutting the INT8 file there (rather than placing Q/DQ on the FP32 trunk cut as a
    model of its own, where every output is a graph output and the convolutions producing them
    cannot fuse) times the trunk exactly as the whole INT8 model runs it.  Each output is found
    through a post-processing node reading it (same node name in both files, same input slot).
    """
    readers: dict[str, tuple[str, int]] = {}
    for node in fp32.graph.node:
        for slot, name in enumerate(node.input):
            if name in outputs and name not in readers and node.name and node.op_type != "Shape":
                readers[name] = (node.name, slot)
    by_name = {n.name: n for n in quantized.graph.node if n.name}
    mapped = []
    for name in outputs:
        reader = readers.get(name)
        node = by_name.get(reader[0]) if reader else None
        mapped.append(node.input[reader[1]] if node is not None and reader is not None else name)
    return mapped


def synthetic_images(task: Any, n: int, seed: int) -> np.ndarray:
    """Letterboxed, normalised synthetic scenes (coloured rectangles on smooth noise), NCHW float32."""
    from PIL import Image

    _, height, width = task.input_shape
    pre = task.preprocessing()
    rng = np.random.default_rng(seed)
    batch = []
    with tempfile.TemporaryDirectory(prefix="tltk-bench-img-") as tmp:
        for i in range(n):
            coarse = rng.integers(40, 200, (max(height // 32, 1), max(width // 32, 1), 3), dtype=np.uint8)
            image = np.kron(coarse, np.ones((32, 32, 1), np.uint8))[:height, :width]
            for _ in range(6):
                y, x = rng.integers(0, height - 40), rng.integers(0, width - 40)
                image[y:y + rng.integers(20, 120), x:x + rng.integers(20, 160)] = rng.integers(0, 255, 3)
            path = os.path.join(tmp, f"{i}.png")
            Image.fromarray(image).save(path)
            batch.append(pre.load(path)[0])
    return np.stack(batch).astype(np.float32)


def load_case(name: str, model_file: str | None) -> tuple[Any, Any, str]:
    """(task, Keras inference network, description) of one benchmark model."""
    from tltk.mask_rcnn.model import build_mask_rcnn
    from tltk.models import load_spec, make_task, task_for_model_file

    if model_file:
        _, _, metadata = task_for_model_file("mask_rcnn", model_file)
        with tempfile.TemporaryDirectory(prefix="tltk-bench-spec-") as tmp:  # the spec it was trained with
            spec_path = Path(tmp) / "spec.txt"
            spec_path.write_text(str(metadata["spec"]))
            spec = load_spec(str(spec_path), model="mask_rcnn", kind="experiment")
        task, network, _ = task_for_model_file("mask_rcnn", model_file, spec=spec)
        source = f"{model_file}, trained"
    else:
        spec = load_spec(str(SPECS[name]), model="mask_rcnn", kind="experiment")
        task = make_task("mask_rcnn", spec)
        network, _ = build_mask_rcnn(task.params)
        source = f"{SPECS[name].relative_to(REPO)}, random weights"
    p = task.params
    return task, network, (f"{source}: resnet{p.nlayers} FPN P{p.min_level}-P{p.max_level}, "
                           f"{p.image_size[0]}x{p.image_size[1]}, {p.num_classes} classes, "
                           f"{p.test_rpn_post_nms_topn} proposals, {p.test_detections_per_image} detections "
                           f"({network.count_params() / 1e6:.1f} M parameters)")


def run_peer(python: Path, task: Any, runs: int, threads: int) -> tuple[dict[str, float] | None, str]:
    """Model Garden's timings for the settings of ``task``, or (None, why not)."""
    p = task.params
    settings = {**model_settings(p), "pre_nms": p.test_rpn_pre_nms_topn, "post_nms": p.test_rpn_post_nms_topn,
                "detections": p.test_detections_per_image, "runs": runs}
    return run_script(python, PEER_SCRIPT, settings, threads, timeout=3600)


def _export_worker(model_path: str, folder: str, threads: int, history: bool) -> None:
    """In a child process (tf2onnx's conversion of a ResNet-50 at 832x1344 peaks near 7 GB, freed when
    the child ends): FP32 ONNX with the parity check, calibration, both INT8 files, and the trunk of
    each (FP32, Q/DQ, CPU INT8 from the same ranges); writes report.json."""
    os.environ.update(thread_env(threads))
    import onnx

    import tltk.mask_rcnn.model  # noqa: F401 - registers the layers
    from tltk.export.calibration import activation_tensor_names, calibrate_onnx
    from tltk.export.cpu_int8 import optimized_node_counts, quantize_for_cpu, write_cpu_int8_onnx
    from tltk.export.onnx_export import export_keras_to_onnx, save_onnx
    from tltk.export.qdq import write_qdq_onnx
    from tltk.mask_rcnn.model import INPUT_NAME, ONNX_OUTPUT_NAMES
    from tltk.modelfile.container import load_keras_model

    data = np.load(os.path.join(folder, "images.npz"))
    network, _ = load_keras_model(model_path)
    fp32 = os.path.join(folder, "model.onnx")
    report = export_keras_to_onnx(network, fp32, INPUT_NAME, ONNX_OUTPUT_NAMES, parity_inputs=data["x1"])
    tensors = activation_tensor_names(onnx.load(fp32), "network")
    calibration = [data["calibration"][i:i + 2] for i in range(0, len(data["calibration"]), 2)]
    ranges = calibrate_onnx(fp32, calibration, tensor_names=tensors, images_per_run=1)
    write_qdq_onnx(fp32, ranges, os.path.join(folder, "model_int8_qdq.onnx"))
    write_cpu_int8_onnx(fp32, ranges, os.path.join(folder, "model_int8_cpu.onnx"))
    # the CPU placement before the value-moving nodes were quantized (FPN top-down path float)
    save_onnx(quantize_for_cpu(onnx.load(fp32), ranges, quantize_moves=False)[0],
              os.path.join(folder, "model_int8_cpu_moves_float.onnx"))
    fp32_model = onnx.load(fp32)
    outputs = trunk_outputs(fp32_model)
    trunk = os.path.join(folder, "trunk.onnx")
    onnx.utils.extract_model(fp32, trunk, [INPUT_NAME], outputs)
    for name in ("int8_qdq", "int8_cpu", "int8_cpu_moves_float"):  # each INT8 file's own trunk
        source = os.path.join(folder, f"model_{name}.onnx")
        onnx.utils.extract_model(source, os.path.join(folder, f"trunk_{name}.onnx"), [INPUT_NAME],
                                 quantized_trunk_outputs(fp32_model, onnx.load(source), outputs))
    names = ["model_int8_qdq.onnx", "model_int8_cpu.onnx", "model_int8_cpu_moves_float.onnx", "trunk_int8_qdq.onnx",
             "trunk_int8_cpu.onnx", "trunk_int8_cpu_moves_float.onnx"]
    if history:
        names += _history_files(network, folder, calibration)
    counts = {name: optimized_node_counts(os.path.join(folder, name)) for name in names}
    Path(folder, "report.json").write_text(json.dumps({"parity": report.parity_max_abs_diff, "counts": counts,
                                                       "trunk_outputs": len(outputs)}))


def _history_files(network: Any, folder: str, calibration: list[np.ndarray]) -> list[str]:
    """``--history``: the files of issue 15/19's earlier before/after (written into ``folder``): the
    converter's graph without the exact rewrites (Mul/ReduceSum ROIAlign blend, CHW transpose before
    fc6, the stem's Pad), calibrated on that graph, and its trunk placed for CPU without folding the
    Pad.  Returns the INT8 file names (for the node counts)."""
    import onnx

    from tltk.export.calibration import activation_tensor_names, calibrate_onnx
    from tltk.export.cpu_int8 import quantize_for_cpu
    from tltk.export.onnx_export import convert_keras_to_onnx, save_onnx
    from tltk.mask_rcnn.model import INPUT_NAME, ONNX_OUTPUT_NAMES

    before = os.path.join(folder, "model_before.onnx")
    save_onnx(convert_keras_to_onnx(network, INPUT_NAME, ONNX_OUTPUT_NAMES, rewrites=False), before)
    trunk_before = os.path.join(folder, "trunk_before.onnx")
    onnx.utils.extract_model(before, trunk_before, [INPUT_NAME], trunk_outputs(onnx.load(before)))
    ranges_before = calibrate_onnx(before, calibration, tensor_names=activation_tensor_names(onnx.load(before),
                                                                                             "network"),
                                   images_per_run=1)
    save_onnx(quantize_for_cpu(onnx.load(trunk_before), ranges_before, fold_pads=False)[0],
              os.path.join(folder, "trunk_before_int8_cpu.onnx"))
    return ["trunk_before_int8_cpu.onnx"]


def _print_table(title: str, times: dict[str, tuple[list[float], list[float], list[float]]], batch: int,
                 flops: float | None, peaks: Any, counts: dict[str, dict[str, int]], errors: dict[str, float],
                 peer: dict[str, float] | None = None) -> dict[str, tuple[float, float, float]]:
    """One table of medians, spreads and ratios; returns label -> (b1 ms, img/s, b1 CPU ms).

    ``flops`` is the work of one batch of ``batch`` images; ``G(FL)OP/s`` is that work per image
    times the batch-1 rate (1 / b1 latency), ``% peak`` that rate against the float32 or INT8
    peak.  ``peer`` (Model Garden's ``b1_ms`` / ``b4_img_s``) adds its row, at the same FLOPs.
    """
    stats = {label: (statistics.median(b1) * 1e3, batch / statistics.median(bb), statistics.median(cpu) * 1e3)
             for label, (b1, bb, cpu) in times.items()}
    keras_ms = stats.get("Keras (TensorFlow)", (None, None, None))[0]
    fp32_ms = next(v[0] for k, v in stats.items() if k.endswith("FP32"))
    peer_ms = peer["b1_ms"] if peer else None
    per_image = flops / batch if flops else None
    print(title)
    header = (f"{'backend':<34}{'b1 ms':>9}{'spread':>13}{'b1 CPU ms':>10}{'spread':>13}{f'b{batch} img/s':>10}"
              f"{'G(FL)OP/s':>11}{'% peak':>9}{'vs Keras':>9}{'vs FP32':>9}{'vs peer':>9}{'int convs':>11}"
              f"{'max |diff|':>11}")
    print(header)
    print("-" * len(header))

    def rate(latency_ms: float, label: str) -> tuple[str, str]:
        if not per_image:
            return "-", "-"
        achieved = per_image / (latency_ms / 1e3) / 1e9
        return f"{achieved:.1f}", fraction(achieved, peaks.int8 if "INT8" in label else peaks.float32)

    for label, (b1, _, cpu) in times.items():
        latency, throughput, cpu_ms = stats[label]
        spread = f"{min(b1) * 1e3:.0f}-{max(b1) * 1e3:.0f}"
        cpu_spread = f"{min(cpu) * 1e3:.0f}-{max(cpu) * 1e3:.0f}"
        achieved, share = rate(latency, label)
        vs_keras = f"{latency / keras_ms:.2f}x" if keras_ms else "-"
        vs_peer = f"{latency / peer_ms:.2f}x" if peer_ms else "n/a"
        count = counts.get(label)
        convs = f"{count.get('QLinearConv', 0)}/{count.get('QLinearConv', 0) + count.get('Conv', 0) + count.get('FusedConv', 0)}" \
            if count else "-"
        diff = f"{errors[label]:.3g}" if label in errors else "-"
        print(f"{label:<34}{latency:>9.1f}{spread:>13}{cpu_ms:>10.1f}{cpu_spread:>13}{throughput:>10.2f}{achieved:>11}"
              f"{share:>9}{vs_keras:>9}{latency / fp32_ms:>8.2f}x{vs_peer:>9}{convs:>11}{diff:>11}")
    if peer:
        achieved, share = rate(peer["b1_ms"], "peer")
        print(f"{'TF Model Garden Mask R-CNN':<34}{peer['b1_ms']:>9.1f}{'':>13}{'':>10}{'':>13}{peer['b4_img_s']:>10.2f}"
              f"{achieved:>11}{share:>9}{'':>9}{peer['b1_ms'] / fp32_ms:>8.2f}x{1.0:>8.2f}x")
    return stats


def _before_after(title: str, before: tuple[float, float, float], after: tuple[float, float, float],
                  fp32_ms: float, kinds: str = "before: Q/DQ, TensorRT placement; after: CPU INT8",
                  peer_ms: float | None = None, fp32_cpu_ms: float | None = None) -> None:
    """Before -> after of two rows ``(b1 ms, img/s, b1 CPU ms)``, with their ratios to FP32 (and Model Garden)."""
    print(f"{title} ({kinds})")
    print(f"{'':<20}{'before':>10}{'after':>10}{'after/before':>14}")
    print(f"{'b1 ms':<20}{before[0]:>10.1f}{after[0]:>10.1f}{after[0] / before[0]:>13.2f}x")
    print(f"{'b1 vs ORT FP32':<20}{before[0] / fp32_ms:>9.2f}x{after[0] / fp32_ms:>9.2f}x")
    print(f"{'b1 CPU ms':<20}{before[2]:>10.1f}{after[2]:>10.1f}{after[2] / before[2]:>13.2f}x")
    if fp32_cpu_ms:
        print(f"{'b1 CPU vs FP32 CPU':<20}{before[2] / fp32_cpu_ms:>9.2f}x{after[2] / fp32_cpu_ms:>9.2f}x")
    if peer_ms:
        print(f"{'b1 vs Model Garden':<20}{before[0] / peer_ms:>9.2f}x{after[0] / peer_ms:>9.2f}x")
    print(f"{'b4 img/s':<20}{before[1]:>10.2f}{after[1]:>10.2f}{after[1] / before[1]:>13.2f}x")


def _ort_run(path: str, threads: int, spinning: bool = True) -> Callable[[np.ndarray], list[np.ndarray]]:
    """A CPU ONNX Runtime session of ``path`` as a function of the input batch (all outputs).

    ``spinning=False`` sets ``session.intra_op.allow_spinning=0``: the intra-op worker threads sleep
    between operators instead of spinning, which on a machine shared with other jobs keeps them
    from burning the cores the other work (and this run's own main thread) needs.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    return lambda x: session.run(None, {input_name: x})


def bench_case(name: str, model_file: str | None, runs: int, peer: tuple[Path | None, str], threads: int,
               history: bool = False) -> None:
    import multiprocessing

    from tltk.modelfile.container import save_keras_model

    task, network, description = load_case(name, model_file)
    x1 = synthetic_images(task, 1, 1)
    x4 = synthetic_images(task, 4, 2)
    load_before = load_average()
    peaks_before = measure_peaks(threads=threads)
    labels = {"model.onnx": "ONNX Runtime FP32", "model_int8_qdq.onnx": "ORT INT8 Q/DQ (TensorRT placement)",
              "model_int8_cpu.onnx": "ORT INT8 CPU",
              "model_int8_cpu_moves_float.onnx": BEFORE_MOVES}
    trunk_labels = {"trunk.onnx": "trunk ORT FP32", "trunk_int8_qdq.onnx": "trunk INT8 Q/DQ (TensorRT placement)",
                    "trunk_int8_cpu.onnx": "trunk INT8 CPU", "trunk_int8_cpu_moves_float.onnx": BEFORE_TRUNK_MOVES}
    if history:
        labels["model_before.onnx"] = BEFORE_FP32
        trunk_labels.update({"trunk_before.onnx": "trunk FP32 before (Pad)",
                             "trunk_before_int8_cpu.onnx": BEFORE_TRUNK_INT8})
    with tempfile.TemporaryDirectory(prefix="tltk-bench-") as tmp:
        model_path = os.path.join(tmp, "model.tlt")
        save_keras_model(model_path, network, {"model_kind": "mask_rcnn"})
        np.savez(os.path.join(tmp, "images.npz"), x1=x1, calibration=synthetic_images(task, 4, 10))
        child = multiprocessing.get_context("spawn").Process(target=_export_worker,
                                                             args=(model_path, tmp, threads, history))
        child.start()
        child.join()
        if child.exitcode != 0:
            raise SystemExit(f"the ONNX export of the {name} model failed (exit code {child.exitcode})")
        report = json.loads(Path(tmp, "report.json").read_text())
        counts = {({**labels, **trunk_labels})[f]: c for f, c in report["counts"].items()}
        # shapes after the FPN's upsampling Reshape (its shape computed from Shape) from one run too
        trunk_flops = onnx_conv_flops(os.path.join(tmp, "trunk.onnx"), x4.shape, sample=x4)
        # the whole model: the proposal and detection heads' shapes (after TopK / NMS) from one run
        model_flops = onnx_conv_flops(os.path.join(tmp, "model.onnx"), x4.shape, sample=x4)
        model_flops_static = onnx_conv_flops(os.path.join(tmp, "model.onnx"), x4.shape)
        fp32_path = os.path.join(tmp, "model.onnx")
        whole = {label: _ort_run(os.path.join(tmp, file), threads) for file, label in labels.items()}
        import onnx

        graph_outputs = [o.name for o in onnx.load(fp32_path, load_external_data=False).graph.output]
        mask_index = next(i for i, n in enumerate(graph_outputs) if n.startswith("mask_fcn_logits"))
        timed: dict[str, Callable[[np.ndarray], object]] = {"Keras (TensorFlow)": task.keras_predictor(network)}
        timed.update(whole)
        timed[NO_SPIN] = _ort_run(fp32_path, threads, spinning=False)
        trunk_out = {label: _ort_run(os.path.join(tmp, file), threads) for file, label in trunk_labels.items()}
        reference = whole["ONNX Runtime FP32"](x4)
        errors = {}
        for label, run in whole.items():
            errors[label] = float(np.abs(run(x4)[mask_index] - reference[mask_index]).max())
        trunk_ref = trunk_out["trunk ORT FP32"](x4)
        trunk_errors = {label: max(float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))
                                   for a, b in zip(fn(x4), trunk_ref, strict=True))
                        for label, fn in trunk_out.items()}
        times = measure_interleaved(timed, x1, x4, runs)
        trunk_times = measure_interleaved(dict(trunk_out), x1, x4, runs)
        del whole, trunk_out, timed
    peaks = merge(peaks_before, measure_peaks(threads=threads))
    load_after = load_average()
    python, why = peer
    peer_result: dict[str, float] | None = None
    if python is not None:
        peer_result, why = run_peer(python, task, runs, threads)

    print(f"\nMaskRCNN inference [{name}]: {description}")
    print(f"export parity Keras vs ONNX Runtime max |diff| {report['parity']:.2e}; {os.cpu_count()} CPUs, threads "
          f"per framework: {threads or 'default'}; {runs} interleaved rounds; {load_before} (start), "
          f"{load_after} (end)")
    print(f"machine peak at {threads or 'all'} thread(s) (best of each GEMM and convolution kernel, measured before and after the timings):")
    print("\n".join(peak_lines(peaks)))
    per_image = model_flops / x4.shape[0]
    print(f"\nwhole model: {per_image / 1e9:.2f} GFLOP per image (Conv/ConvTranspose/Gemm/MatMul of the FP32 graph at "
          f"batch {x4.shape[0]}; static shape inference alone finds {model_flops_static / x4.shape[0] / 1e9:.2f}: the "
          f"heads after TopK/NMS are sized from one run); G(FL)OP/s = FLOP per image / b1 latency")
    if peer_result is not None:
        print("Model Garden's row assumes the same arithmetic per image (same backbone, FPN, heads, proposal and "
              "detection counts: PEER_SCRIPT)")
    peer_ms = peer_result["b1_ms"] if peer_result else None
    stats = _print_table("whole model (max |diff|: mask logits vs FP32)", times, x4.shape[0], model_flops, peaks,
                         counts, errors, peer_result)
    if peer_result is None:
        print(f"{'TF Model Garden Mask R-CNN':<34}unavailable ({why})")
    else:
        need_ms = 0.5 * peer_result["b1_ms"]
        need_rate = per_image / (need_ms / 1e3) / 1e9
        print(f"ORT FP32 at 0.5x Model Garden would need {need_ms:.1f} ms = {need_rate:.1f} GFLOP/s = "
              f"{fraction(need_rate, peaks.float32)} of the float32 peak")
    fp32_cpu, spin_cpu = stats["ONNX Runtime FP32"][2], stats[NO_SPIN][2]
    print(f"allow_spinning=0: b1 {stats[NO_SPIN][0]:.1f} vs {stats['ONNX Runtime FP32'][0]:.1f} ms wall "
          f"({stats[NO_SPIN][0] / stats['ONNX Runtime FP32'][0]:.2f}x), CPU {spin_cpu:.1f} vs {fp32_cpu:.1f} ms "
          f"({spin_cpu / fp32_cpu:.2f}x)")
    print(f"\ntrunk: input -> {report['trunk_outputs']} tensors read by post-processing; "
          f"{trunk_flops / x4.shape[0] / 1e9:.2f} GFLOP per image (max |diff|: relative to each output's max)")
    trunk_stats = _print_table("", trunk_times, x4.shape[0], trunk_flops, peaks, counts, trunk_errors)
    print()
    _before_after("before/after, whole model", stats[labels["model_int8_qdq.onnx"]],
                  stats[labels["model_int8_cpu.onnx"]], stats["ONNX Runtime FP32"][0])
    _before_after("CPU INT8 whole model before/after (FPN top-down path on integers)", stats[BEFORE_MOVES],
                  stats[labels["model_int8_cpu.onnx"]], stats["ONNX Runtime FP32"][0],
                  kinds="before: value-moving nodes float; after: quantized", fp32_cpu_ms=fp32_cpu)
    _before_after("CPU INT8 trunk before/after (FPN top-down path on integers)", trunk_stats[BEFORE_TRUNK_MOVES],
                  trunk_stats[trunk_labels["trunk_int8_cpu.onnx"]], trunk_stats["trunk ORT FP32"][0],
                  kinds="before: value-moving nodes float; after: quantized",
                  fp32_cpu_ms=trunk_stats["trunk ORT FP32"][2])
    if history:
        _before_after("FP32 export before/after (MatMul blend, fc6 rows, Pad folded)", stats[BEFORE_FP32],
                      stats["ONNX Runtime FP32"], stats["ONNX Runtime FP32"][0],
                      kinds="before: the converter's graph; after: with the exact rewrites", peer_ms=peer_ms)
        _before_after("CPU INT8 trunk before/after (stem Pad folded into MaxPool)", trunk_stats[BEFORE_TRUNK_INT8],
                      trunk_stats[trunk_labels["trunk_int8_cpu.onnx"]], trunk_stats["trunk ORT FP32"][0],
                      kinds="before: Pad kept, stem conv float; after: stem on integers")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed rounds (median and spread)")
    parser.add_argument("--models", default="resnet50,quickstart", help="comma-separated: resnet50, quickstart")
    parser.add_argument("--quickstart_model", default=None, help="a trained quickstart .tlt to time instead")
    parser.add_argument("--peer_venv", default=str(DEFAULT_PEER_VENV),
                        help="virtual environment for tf-models-official (created when missing)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads per framework (0: defaults)")
    parser.add_argument("--history", action="store_true",
                        help="also time the files of earlier before/afters (export without the exact rewrites, "
                             "stem Pad kept): one more tf2onnx conversion and calibration")
    args = parser.parse_args()
    os.environ.update(thread_env(args.threads))  # before TensorFlow is imported
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("tltk.spec").setLevel(logging.ERROR)  # the specs' data paths are not used here
    peer = peer_python(Path(args.peer_venv))
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        if name not in SPECS:
            parser.error(f"--models: unknown model {name!r} (resnet50, quickstart)")
        bench_case(name, args.quickstart_model if name == "quickstart" else None, args.runs, peer, args.threads,
                   args.history)


if __name__ == "__main__":
    main()
