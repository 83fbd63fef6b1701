#!/usr/bin/env python3
"""DetectNet_v2 from scratch: the measurements behind docs/training.md ("Training from scratch").

Subcommands (run from an empty work folder; every one prints a table and appends JSON lines
to ``study.jsonl`` there):

* ``data``: the synthetic datasets: ``data/kitti`` (400 images of 480x272, seed 42: 320
  train, 80 validation) and three shifted validation sets of 80 images each:
  ``data/seed7`` (another seed), ``data/size960`` (960x544 images, resized to the network
  input) and ``data/dark`` (another seed whose backgrounds are darker and of higher contrast).
* ``targets SPEC``: what the rasterised targets allow before any training: per object, the
  number of cells with coverage > 0.5 and the largest coverage; and the mAP of the targets
  themselves (ground-truth coverage and boxes through the spec's clustering and evaluation),
  the ceiling a perfect network would reach with this spec.
* ``train SPEC NAME [--set a.b=c ...]``: ``tltk detectnet_v2 train`` in a child process;
  reports the coverage and bbox cost and the auto-weights of every epoch, the final mAP,
  the wall time and the CPU seconds of the child (user + system).
* ``shift SPEC MODEL``: ``evaluate`` of a trained model on the validation split of each
  dataset (same spec, other data).

Usage: python scripts/detectnet_v2_scratch_study.py data
       python scripts/detectnet_v2_scratch_study.py train specs/detectnet_v2/tao_style_scratch.txt tao
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TLTK_NO_PROGRESS", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TLTK = [str(Path(sys.executable).with_name("tltk"))]

#: name -> (number of images, image size, seed, darker backgrounds)
DATASETS: dict[str, tuple[int, tuple[int, int], int, bool]] = {
    "kitti": (400, (480, 272), 42, False),
    "seed7": (100, (480, 272), 7, False),
    "size960": (100, (960, 544), 11, False),
    "dark": (100, (480, 272), 13, True),
}


def _record(entry: dict[str, Any]) -> None:
    with open("study.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")


def _dark_backgrounds() -> Any:
    """Swap the generator's background for a darker, higher-contrast one (this process only)."""
    import numpy as np

    from tltk.data import synthetic

    original = synthetic._background

    def dark(rng: Any, width: int, height: int) -> Any:
        image = original(rng, width, height).astype(np.float32)
        return np.clip((image - image.mean()) * 1.6 + 60.0, 0, 255).astype(np.uint8)

    synthetic._background = dark
    return original


def cmd_data(_: argparse.Namespace) -> None:
    from tltk.data import synthetic
    from tltk.detectnet_v2.dataset_convert import convert_dataset
    from tltk.models import parse_spec_text
    from tltk.spec.schemas import DetectNetDatasetExportConfig

    for name, (count, size, seed, dark) in DATASETS.items():
        folder = Path("data") / name
        if (folder / "tfrecords").exists():
            continue
        original = _dark_backgrounds() if dark else None
        try:
            # one worker: the darker background is swapped in this process only
            synthetic.synthesize_kitti(folder, num_images=count, image_size=size, seed=seed,
                                       val_fraction=0.2 if name == "kitti" else 0.8, workers=1 if dark else None)
        finally:
            if original is not None:
                synthetic._background = original
        spec = parse_spec_text((folder / "dataset_convert_spec.txt").read_text(), DetectNetDatasetExportConfig)
        convert_dataset(spec, str(folder / "tfrecords" / "kitti"), base_dir=str(folder))
        print(f"{name}: {count} images of {size[0]}x{size[1]}, seed {seed}{', dark backgrounds' if dark else ''}")


def _spec_for(spec: str, data: str) -> str:
    """A copy of ``spec`` reading ``data/<data>`` (written next to the work folder's data)."""
    import re

    text = re.sub(r'tfrecords_path: "[^"]*"', f'tfrecords_path: "data/{data}/tfrecords/kitti-fold-*"',
                  Path(spec).read_text())
    text = re.sub(r'image_directory_path: "[^"]*"', f'image_directory_path: "data/{data}"', text)
    out = Path("specs") / f"{Path(spec).stem}_{data}.txt"
    out.parent.mkdir(exist_ok=True)
    out.write_text(text)
    return str(out)


def cmd_targets(args: argparse.Namespace) -> None:
    import numpy as np

    from tltk.detectnet_v2.dataloader import DetectNetV2Data
    from tltk.detectnet_v2.evaluation import evaluate_split
    from tltk.models import load_spec

    loaded = load_spec(_spec_for(args.spec, "kitti"), model="detectnet_v2", kind="experiment")
    data = DetectNetV2Data(loaded.message, spec_dir=loaded.spec_dir)
    stride = 16
    rows: list[tuple[float, int, float]] = []
    grids: list[tuple[np.ndarray, np.ndarray]] = []
    for _images, targets, labels in data.dataset("val", batch_size=8, training=False, output="both",
                                                 repeat=False, shuffle=False).as_numpy_iterator():
        grids.append((targets["cov"], targets["bbox"]))
        for i in range(len(targets["cov"])):
            for box, cls in zip(labels["boxes"][i][: labels["num_boxes"][i]], labels["classes"][i]):
                x1, y1, x2, y2 = (float(v) for v in box)
                cells = targets["cov"][i, int(cls), int(y1 // stride):int(np.ceil(y2 / stride)),
                                       int(x1 // stride):int(np.ceil(x2 / stride))]
                rows.append((y2 - y1, int((cells > 0.5).sum()), float(cells.max()) if cells.size else 0.0))
    it = iter(grids)
    oracle = evaluate_split(lambda images: next(it), data, "val")
    heights = np.array([r[0] for r in rows])
    strong = np.array([r[1] for r in rows])
    peak = np.array([r[2] for r in rows])
    print(f"{len(rows)} validation objects; median height {np.median(heights):.0f} px")
    for lo, hi in ((0, 24), (24, 48), (48, 1e9)):
        sel = (heights >= lo) & (heights < hi)
        if sel.any():
            print(f"  height [{lo:g}, {hi:g}) px: {sel.sum():4d} objects, cells with coverage > 0.5: median "
                  f"{np.median(strong[sel]):.0f}, none {np.mean(strong[sel] == 0):.0%}; max coverage median "
                  f"{np.median(peak[sel]):.2f}")
    print(f"mAP of the targets themselves through the spec's clustering: {oracle.result.mean_ap:.3f} ("
          + ", ".join(f"{k} {v:.3f}" for k, v in oracle.result.ap_per_class.items()) + ")")
    _record({"kind": "targets", "spec": args.spec, "objects": len(rows), "oracle_mAP": oracle.result.mean_ap,
             "oracle_AP": oracle.result.ap_per_class})


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _branch(source: Path, epoch: int, results: Path) -> None:
    """Start ``results`` from ``source``'s checkpoint after ``epoch`` (and its metrics up to it)."""
    import shutil

    if results.exists():
        shutil.rmtree(results)
    name = f"epoch-{epoch:04d}"
    shutil.copytree(source / "checkpoints" / name, results / "checkpoints" / name)
    lines = [line for line in (source / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["epoch"] <= epoch]
    (results / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def cmd_train(args: argparse.Namespace) -> None:
    spec = _spec_for(args.spec, "kitti")
    results = Path("runs") / args.name
    command = TLTK + ["detectnet_v2", "train", "-e", spec, "-r", str(results)]
    if args.branch:
        # a run whose first epochs are another run's (same seed, same settings up to there)
        source, epoch = args.branch.split(":")
        _branch(Path("runs") / source, int(epoch), results)
    else:
        command.append("--no_resume")
    for override in args.set or []:
        command += ["--set", override]
    results.parent.mkdir(exist_ok=True)
    cpu0, wall0 = _cpu_seconds(), time.perf_counter()
    with open(Path("runs") / f"{args.name}.log", "w", encoding="utf-8") as log:
        code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT)
    cpu, wall = _cpu_seconds() - cpu0, time.perf_counter() - wall0
    epochs = [json.loads(line) for line in (results / "metrics.jsonl").read_text().splitlines()]
    classes = sorted({k[len("cost_"):-len("_cov")] for k in epochs[0] if k.startswith("cost_") and k.endswith("_cov")})
    print(f"{args.name}: exit {code}, wall {wall:.0f} s, CPU {cpu:.0f} s  ({' '.join(args.set or [])})")
    print("epoch  cov cost  bbox cost  cov weight  val mAP")
    curve = []
    for e in epochs:
        cov = sum(e[f"cost_{c}_cov"] for c in classes) / len(classes)
        bbox = sum(e[f"cost_{c}_bbox"] for c in classes) / len(classes)
        weight = sum(e.get(f"autoweight_{c}_cov", float("nan")) for c in classes) / len(classes)
        curve.append({"epoch": e["epoch"], "cov": cov, "bbox": bbox, "cov_weight": weight,
                      "mAP": e.get("val_mAP")})
        map_text = f"{e['val_mAP']:.1f}" if "val_mAP" in e else ""
        print(f"{e['epoch']:5d}  {cov:8.4f}  {bbox:9.5f}  {weight:10.4f}  {map_text}")
    final = next((e for e in reversed(epochs) if "val_mAP" in e), {})
    _record({"kind": "train", "name": args.name, "spec": args.spec, "set": args.set or [], "exit": code,
             "branch": args.branch,
             "wall_s": wall, "cpu_s": cpu, "curve": curve, "mAP": final.get("val_mAP"),
             "AP": {k[len("val_AP_"):]: v for k, v in final.items() if k.startswith("val_AP_")}})


def cmd_bn(args: argparse.Namespace) -> None:
    """Validation mAP of a checkpoint: batch norm's moving statistics, each validation batch's own
    statistics, and statistics re-estimated from the training images (``recalibrate_batch_norm``)."""
    import tensorflow as tf

    from tltk.detectnet_v2.evaluation import evaluate_split
    from tltk.detectnet_v2.task import DetectNetV2Task, recalibrate_batch_norm
    from tltk.models import load_spec

    loaded = load_spec(_spec_for(args.spec, "kitti"), model="detectnet_v2", kind="experiment",
                       overrides=args.set or [])
    task = DetectNetV2Task(loaded)
    network = task.build_network()
    network.load_weights(str(Path("runs") / args.run / "checkpoints" / f"epoch-{args.epoch:04d}" /
                             "network.weights.h5"))
    row: dict[str, Any] = {"kind": "bn", "run": args.run, "epoch": args.epoch}
    modes = (("moving statistics", False), ("batch statistics", True), ("recalibrated", False))
    for label, training in modes:
        if label == "recalibrated":
            images = int(task.training_config.batch_norm_recalibration_images)
            batch = int(task.training_config.batch_size_per_gpu)
            ds = task.data.dataset("train", batch_size=batch, training=False, output="images", repeat=True,
                                   shuffle=False).take(-(-images // batch))
            recalibrate_batch_norm(network, ds.as_numpy_iterator())

        def predict(images: Any, training: bool = training) -> Any:
            out = network(tf.constant(images), training=training)
            return out["output_cov"].numpy(), out["output_bbox"].numpy()

        result = evaluate_split(predict, task.data, "val", batch_size=8, cost_fn=task.cost_fn())
        row[label] = {"mAP": result.result.mean_ap, "validation_cost": result.validation_cost}
        print(f"{args.run} epoch {args.epoch}, {label}: mAP {result.result.mean_ap:.3f}, validation cost "
              f"{result.validation_cost:.5f}")
    _record(row)


def _find(data: Any, key: str) -> Any:
    """The first value under ``key`` anywhere in a JSON document (None when absent)."""
    if isinstance(data, dict):
        if key in data:
            return data[key]
        data = list(data.values())
    if isinstance(data, list):
        for item in data:
            found = _find(item, key)
            if found is not None:
                return found
    return None


def cmd_shift(args: argparse.Namespace) -> None:
    results = {}
    for name in DATASETS:
        spec = _spec_for(args.spec, name)
        out = subprocess.run(TLTK + ["detectnet_v2", "evaluate", "-e", spec, "-m", args.model, "-r",
                                     f"results/shift_{name}", "--json"],
                             capture_output=True, text=True, check=True).stdout
        document = json.loads(out.strip().splitlines()[-1])
        ap = _find(document, "AP") or {}
        results[name] = {"mAP": 100.0 * _find(document, "mAP"), "AP": {k: round(100.0 * v, 1) for k, v in ap.items()},
                         "images": _find(document, "num_images")}
        print(f"{name:8s} mAP {results[name]['mAP']:.1f}%  {results[name]['AP']}  "
              f"({results[name]['images']} images; vs kitti {results[name]['mAP'] - results['kitti']['mAP']:+.1f})")
    _record({"kind": "shift", "spec": args.spec, "model": args.model, "results": results})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("data").set_defaults(command_fn=cmd_data)
    p = sub.add_parser("targets")
    p.add_argument("spec")
    p.set_defaults(command_fn=cmd_targets)
    p = sub.add_parser("train")
    p.add_argument("spec")
    p.add_argument("name")
    p.add_argument("--set", action="append")
    p.add_argument("--branch", metavar="RUN:EPOCH", help="continue from RUN's checkpoint after EPOCH")
    p.set_defaults(command_fn=cmd_train)
    p = sub.add_parser("bn")
    p.add_argument("spec")
    p.add_argument("run")
    p.add_argument("epoch", type=int)
    p.add_argument("--set", action="append")
    p.set_defaults(command_fn=cmd_bn)
    p = sub.add_parser("shift")
    p.add_argument("spec")
    p.add_argument("model")
    p.set_defaults(command_fn=cmd_shift)
    args = parser.parse_args()
    args.command_fn(args)


if __name__ == "__main__":
    main()
