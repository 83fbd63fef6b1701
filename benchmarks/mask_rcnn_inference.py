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
* ``ONNX Runtime INT8 (Q/DQ)``: the Q/DQ twin from an entropy calibration on 4 synthetic images
  (ONNX Runtime's CPU provider is not the target of the Q/DQ model, TensorRT is);
* ``TF Model Garden``: ``official.vision``'s Mask R-CNN with the same backbone depth, input size,
  class count, FPN levels, anchors, box head (2 fully connected layers) and proposal/detection
  counts, run through its serving module (which includes its resize and normalisation).  It
  lives in its own virtual environment (``--peer_venv``, default ``~/.cache/tltk-bench/tf-models``),
  created and filled with ``pip install tf-models-official`` on first use; when that fails the
  column says why (for instance no network) and no number is shown.

Columns: ``b1 ms`` median latency of one image; ``b4 img/s`` throughput at batch 4 (median);
``vs Keras`` batch-1 latency ratio against Keras (< 1: faster); ``vs peer`` batch-1 latency ratio
against Model Garden (goal for ONNX Runtime FP32: at most 0.5).

``--threads N`` gives every framework N CPU threads (TensorFlow's intra- and inter-op pools, ONNX
Runtime's intra-op pool, the peer's TensorFlow); 0 keeps each one's default.  On a machine shared
with other jobs, ``--threads 1`` gives steadier ratios.

Run: ``.venv/bin/python benchmarks/mask_rcnn_inference.py [--runs 3] [--models resnet50,quickstart]
[--threads 0]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parents[1]
SPECS = {"resnet50": REPO / "specs" / "mask_rcnn" / "default_train.txt",
         "quickstart": REPO / "specs" / "mask_rcnn" / "quickstart_train.txt"}
PEER_PACKAGE = "tf-models-official"
DEFAULT_PEER_VENV = Path.home() / ".cache" / "tltk-bench" / "tf-models"

#: Runs in the peer's virtual environment: argv[1] is a JSON document of settings; prints one
#: JSON line {"b1_ms": ..., "b4_img_s": ...}.
PEER_SCRIPT = textwrap.dedent('''
    import json, os, statistics, sys, time
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np
    import tensorflow as tf
    from official.core import exp_factory
    from official.vision.serving import detection

    s = json.loads(sys.argv[1])
    params = exp_factory.get_exp_config("maskrcnn_resnetfpn_coco")
    model = params.task.model
    model.num_classes = s["num_classes"]
    model.backbone.resnet.model_id = s["depth"]
    model.min_level, model.max_level = s["min_level"], s["max_level"]
    model.anchor.num_scales = s["num_scales"]
    model.anchor.aspect_ratios = s["aspect_ratios"]
    model.anchor.anchor_size = s["anchor_scale"]
    model.rpn_head.num_convs = 1
    model.detection_head.num_convs = 0  # TAO's box head: two fully connected layers
    model.detection_head.num_fcs = 2
    model.detection_head.fc_dims = s["mlp_dim"]
    model.roi_generator.test_pre_nms_num_proposals = s["pre_nms"]
    model.roi_generator.test_num_proposals = s["post_nms"]
    model.detection_generator.max_num_detections = s["detections"]
    model.input_size = [s["height"], s["width"], 3]

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


def measure(run: Callable[[np.ndarray], object], x1: np.ndarray, x4: np.ndarray, runs: int) -> tuple[float, float]:
    """(median batch-1 latency in ms, median batch-4 throughput in images/s)."""
    run(x1)
    run(x4)
    latency = statistics.median(_timed(lambda: run(x1)) for _ in range(runs)) * 1e3
    throughput = x4.shape[0] / statistics.median(_timed(lambda: run(x4)) for _ in range(runs))
    return latency, throughput


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


def peer_python(venv: Path) -> tuple[Path | None, str]:
    """The peer venv's python with tf-models-official installed, or (None, why not)."""
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import official.vision"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python, ""
    try:
        if not python.exists():
            venv.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
        install = subprocess.run([str(python), "-m", "pip", "install", "--retries", "1", "--timeout", "15",
                                  PEER_PACKAGE], capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"could not create the virtual environment {venv}: {exc}"
    if install.returncode != 0:
        text = install.stdout + install.stderr
        offline = any(s in text for s in ("NewConnectionError", "Temporary failure in name resolution",
                                          "Network is unreachable", "No matching distribution found",
                                          "Could not find a version"))
        reason = "no network: pip could not install " + PEER_PACKAGE if offline else \
            f"pip install {PEER_PACKAGE} failed: {text.strip().splitlines()[-1] if text.strip() else 'no output'}"
        return None, reason
    if subprocess.run(check, capture_output=True).returncode != 0:
        return None, f"{PEER_PACKAGE} installed but official.vision does not import"
    return python, ""


def thread_env(threads: int) -> dict[str, str]:
    """Environment variables giving TensorFlow ``threads`` intra- and inter-op threads (0: none)."""
    if threads <= 0:
        return {}
    return {"TF_NUM_INTRAOP_THREADS": str(threads), "TF_NUM_INTEROP_THREADS": str(threads),
            "OMP_NUM_THREADS": str(threads)}


def run_peer(python: Path, task: Any, runs: int, threads: int) -> tuple[dict[str, float] | None, str]:
    """Model Garden's timings for the settings of ``task``, or (None, why not)."""
    p = task.params
    settings = {"depth": p.nlayers, "height": p.image_size[0], "width": p.image_size[1],
                "num_classes": p.num_classes, "min_level": p.min_level, "max_level": p.max_level,
                "num_scales": p.num_scales, "aspect_ratios": [x / y for x, y in p.aspect_ratios],
                "anchor_scale": p.anchor_scale, "pre_nms": p.test_rpn_pre_nms_topn,
                "post_nms": p.test_rpn_post_nms_topn, "detections": p.test_detections_per_image,
                "mlp_dim": p.fast_rcnn_mlp_head_dim, "runs": runs}
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as fh:
        fh.write(PEER_SCRIPT)
    try:
        done = subprocess.run([str(python), fh.name, json.dumps(settings)], capture_output=True, text=True,
                              timeout=3600, env={**os.environ, **thread_env(threads)})
    finally:
        os.remove(fh.name)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"Model Garden run failed: {last}"
    return json.loads(done.stdout.strip().splitlines()[-1]), ""


def _export_worker(model_path: str, folder: str, threads: int) -> None:
    """In a child process (tf2onnx's conversion of a ResNet-50 at 832x1344 peaks near 7 GB, freed when
    the child ends): FP32 ONNX with the parity check, calibration, Q/DQ model; writes report.json."""
    os.environ.update(thread_env(threads))
    import onnx

    import tltk.mask_rcnn.model  # noqa: F401 - registers the layers
    from tltk.export.calibration import activation_tensor_names, calibrate_onnx
    from tltk.export.onnx_export import export_keras_to_onnx
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
    write_qdq_onnx(fp32, ranges, os.path.join(folder, "int8.onnx"))
    Path(folder, "report.json").write_text(json.dumps({"parity": report.parity_max_abs_diff}))


def bench_case(name: str, model_file: str | None, runs: int, peer: tuple[Path | None, str], threads: int) -> None:
    import multiprocessing

    from tltk.modelfile.container import save_keras_model
    from tltk.runtime import OnnxRuntimeBackend

    task, network, description = load_case(name, model_file)
    x1 = synthetic_images(task, 1, 1)
    x4 = synthetic_images(task, 4, 2)
    rows: list[tuple[str, float | None, float | None, str]] = []
    with tempfile.TemporaryDirectory(prefix="tltk-bench-") as tmp:
        model_path = os.path.join(tmp, "model.tlt")
        save_keras_model(model_path, network, {"model_kind": "mask_rcnn"})
        np.savez(os.path.join(tmp, "images.npz"), x1=x1, calibration=synthetic_images(task, 4, 10))
        child = multiprocessing.get_context("spawn").Process(target=_export_worker, args=(model_path, tmp, threads))
        child.start()
        child.join()
        if child.exitcode != 0:
            raise SystemExit(f"the ONNX export of the {name} model failed (exit code {child.exitcode})")
        parity = json.loads(Path(tmp, "report.json").read_text())["parity"]
        rows.append(("Keras (TensorFlow)", *measure(task.keras_predictor(network), x1, x4, runs), ""))
        for label, file in (("ONNX Runtime FP32", "model.onnx"), ("ONNX Runtime INT8 (Q/DQ)", "int8.onnx")):
            backend = OnnxRuntimeBackend(os.path.join(tmp, file), providers=["CPUExecutionProvider"],
                                         intra_op_threads=threads)
            rows.append((label, *measure(backend.run, x1, x4, runs), ""))
            backend.close()
    python, why = peer
    peer_result: dict[str, float] | None = None
    if python is not None:
        peer_result, why = run_peer(python, task, runs, threads)
    if peer_result is not None:
        rows.append(("TF Model Garden Mask R-CNN", peer_result["b1_ms"], peer_result["b4_img_s"], ""))
    else:
        rows.append(("TF Model Garden Mask R-CNN", None, None, f"unavailable ({why})"))

    print(f"\nMaskRCNN inference [{name}]: {description}")
    print(f"export parity Keras vs ONNX Runtime max |diff| {parity:.2e}; "
          f"{os.cpu_count()} CPUs, threads per framework: {threads or 'default'}")
    header = f"{'backend':<30}{'b1 ms':>10}{'b4 img/s':>10}{'vs Keras':>10}{'vs peer':>10}"
    print(header)
    print("-" * len(header))
    keras_ms = rows[0][1]
    peer_ms = peer_result["b1_ms"] if peer_result else None
    for label, latency, throughput, note in rows:
        if latency is None or throughput is None:
            print(f"{label:<30}{note}")
            continue
        vs_keras = f"{latency / keras_ms:.2f}x" if keras_ms else "-"
        vs_peer = f"{latency / peer_ms:.2f}x" if peer_ms else "n/a"
        print(f"{label:<30}{latency:>10.1f}{throughput:>10.2f}{vs_keras:>10}{vs_peer:>10}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs per measurement (median)")
    parser.add_argument("--models", default="resnet50,quickstart", help="comma-separated: resnet50, quickstart")
    parser.add_argument("--quickstart_model", default=None, help="a trained quickstart .tlt to time instead")
    parser.add_argument("--peer_venv", default=str(DEFAULT_PEER_VENV),
                        help="virtual environment for tf-models-official (created when missing)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads per framework (0: defaults)")
    args = parser.parse_args()
    os.environ.update(thread_env(args.threads))  # before TensorFlow is imported
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("tltk.spec").setLevel(logging.ERROR)  # the specs' data paths are not used here
    peer = peer_python(Path(args.peer_venv))
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        if name not in SPECS:
            parser.error(f"--models: unknown model {name!r} (resnet50, quickstart)")
        bench_case(name, args.quickstart_model if name == "quickstart" else None, args.runs, peer, args.threads)


if __name__ == "__main__":
    main()
