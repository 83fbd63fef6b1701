#!/usr/bin/env python3
"""DetectNet_v2 training throughput: the real input pipeline vs. the same step on in-memory tensors.

For resnet18 at 960x544 and at the quickstart size (480x272), the table shows training images
per second (a) fed by the full augmenting tf.data pipeline over synthetic TFRecords and (b) fed
from one in-memory batch (the baseline: pure compute), and their ratio = the share of the
compute speed the pipeline lets training keep (1.0 means no input-pipeline overhead).

Usage: python benchmarks/detectnet_v2_train.py [--steps 6] [--batch 4] [--images 48]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TLTK_NO_PROGRESS", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _spec(width: int, height: int, batch: int) -> str:
    text = (ROOT / "specs" / "detectnet_v2" / "quickstart_train.txt").read_text()
    text = text.replace("output_image_width: 480", f"output_image_width: {width}")
    text = text.replace("output_image_height: 272", f"output_image_height: {height}")
    text = text.replace("num_layers: 10", "num_layers: 18")
    return text.replace("batch_size_per_gpu: 8", f"batch_size_per_gpu: {batch}")


def _measure(task, steps: int, in_memory: bool) -> float:
    import tensorflow as tf

    from tltk.core.task import TrainingPlan
    from tltk.core.trainer import TaskModel

    network = task.build_network()
    plan = TrainingPlan(steps_per_cycle=steps, num_cycles=1, checkpoint_every=1, batch_size=task.batch)
    model = TaskModel(network, task, task.loss_names())
    model.compile(optimizer=task.build_optimizer(plan))
    ds = task.data.dataset("train", batch_size=task.batch, training=True, output="targets", repeat=True)
    if in_memory:
        first = next(iter(ds))
        ds = tf.data.Dataset.from_tensors(first).repeat()
    model.fit(ds, epochs=1, steps_per_epoch=2, verbose=0)  # warm-up: tracing, pipeline start
    start = time.perf_counter()
    model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0)
    return steps * task.batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--images", type=int, default=48)
    args = parser.parse_args()

    from tltk.data.synthetic import synthesize_kitti
    from tltk.detectnet_v2.dataset_convert import convert_dataset
    from tltk.detectnet_v2.task import DetectNetV2Task
    from tltk.models import load_spec, parse_spec_text
    from tltk.spec.schemas import DetectNetDatasetExportConfig

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        synthesize_kitti(data / "kitti", num_images=args.images, image_size=(960, 544), seed=3)
        convert_spec = parse_spec_text((data / "kitti" / "dataset_convert_spec.txt").read_text(),
                                       DetectNetDatasetExportConfig)
        convert_dataset(convert_spec, str(data / "tfrecords" / "kitti"), base_dir=str(data / "kitti"))
        for width, height in ((960, 544), (480, 272)):
            spec_path = Path(tmp) / f"train_{width}.txt"
            spec_path.write_text(_spec(width, height, args.batch))
            loaded = load_spec(spec_path, model="detectnet_v2", kind="experiment")
            task = DetectNetV2Task(loaded)
            task.batch = args.batch
            real = _measure(task, args.steps, in_memory=False)
            memory = _measure(task, args.steps, in_memory=True)
            rows.append((f"resnet18 {width}x{height}", real, memory))
    print(f"{'model / input':24s} {'pipeline img/s':>15s} {'in-memory img/s':>16s} {'ratio':>7s}")
    for name, real, memory in rows:
        print(f"{name:24s} {real:15.2f} {memory:16.2f} {real / memory:7.2f}")


if __name__ == "__main__":
    main()
