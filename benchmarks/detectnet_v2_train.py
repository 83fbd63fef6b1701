#!/usr/bin/env python3
"""DetectNet_v2 training step: fed by the real input pipeline vs. the same step on in-memory batches.

For resnet18 at 960x544 and at the quickstart size 480x272 (``specs/detectnet_v2/quickstart_train.txt``
with ``num_layers: 18``; synthetic 960x544 KITTI images converted to TFRecords), each table shows
seconds per training step of

* ``in-memory``: the baseline, ``--cached`` batches taken once from the same pipeline and replayed
  from memory (pure compute: forward, cost, gradients, Adam update);
* ``pipeline``: the full augmenting tf.data pipeline (read, decode, augment, rasterise targets);
* ``pipeline, no cache``: the same with ``dataset_config.image_cache_mb: 0`` (images decoded from
  the files every epoch, as before the cache), when the default cache is on.

Method (``benchmarks/_feed_compare.py``): the same compiled train function for every mode, a
fresh iterator and ``--warmup`` untimed steps per timed block, ``--steps`` timed steps, ``--reps``
repetitions with the modes interleaved in rotated order; median [min-max] seconds per step, process
CPU-seconds per step, and ratio = in-memory median / mode median (with the range of the
per-repetition ratios).  1.0 means the pipeline costs training nothing.

Usage: python benchmarks/detectnet_v2_train.py [--sizes 960x544,480x272] [--steps 10] [--warmup 3]
    [--reps 5] [--batch 4] [--images 48] [--cached 4]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TLTK_NO_PROGRESS", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _feed_compare import compare, materialise, table  # noqa: E402


def _spec(width: int, height: int, batch: int, extra: str = "") -> str:
    text = (ROOT / "specs" / "detectnet_v2" / "quickstart_train.txt").read_text()
    text = text.replace("output_image_width: 480", f"output_image_width: {width}")
    text = text.replace("output_image_height: 272", f"output_image_height: {height}")
    text = text.replace("num_layers: 10", "num_layers: 18")
    text = text.replace("validation_fold: 0", "validation_fold: 0\n" + extra)
    return text.replace("batch_size_per_gpu: 8", f"batch_size_per_gpu: {batch}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="960x544,480x272", help="comma-separated WIDTHxHEIGHT network inputs")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per block")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps at the start of every block")
    parser.add_argument("--reps", type=int, default=5, help="repetitions (blocks per mode)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--images", type=int, default=48, help="synthetic 960x544 images (80%% train)")
    parser.add_argument("--cached", type=int, default=4, help="batches replayed by the in-memory baseline")
    parser.add_argument("--no_uncached", action="store_true", help="leave out the 'pipeline, no cache' mode")
    args = parser.parse_args()

    import keras

    from tltk.core.trainer import TaskModel
    from tltk.data.synthetic import synthesize_kitti
    from tltk.detectnet_v2.dataset_convert import convert_dataset
    from tltk.detectnet_v2.task import DetectNetV2Task
    from tltk.models import load_spec, parse_spec_text
    from tltk.spec.schemas import DetectNetDatasetExportConfig

    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes.split(",") if s.strip()]
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        synthesize_kitti(data / "kitti", num_images=args.images, image_size=(960, 544), seed=3)
        convert_spec = parse_spec_text((data / "kitti" / "dataset_convert_spec.txt").read_text(),
                                       DetectNetDatasetExportConfig)
        convert_dataset(convert_spec, str(data / "tfrecords" / "kitti"), base_dir=str(data / "kitti"))
        for width, height in sizes:
            tasks = {}
            variants = {"pipeline": ""}
            if not args.no_uncached:
                variants["pipeline, no cache"] = "image_cache_mb: 0"
            for name, extra in variants.items():
                spec_path = Path(tmp) / f"train_{width}_{len(tasks)}.txt"
                spec_path.write_text(_spec(width, height, args.batch, extra))
                task = DetectNetV2Task(load_spec(spec_path, model="detectnet_v2", kind="experiment"))
                task.batch = args.batch
                tasks[name] = task
            first = tasks["pipeline"]
            keras.utils.set_random_seed(first.random_seed())
            network = first.build_network()
            model = TaskModel(network, first, first.loss_names())
            model.compile(optimizer=first.build_optimizer(first.training_plan(1)))
            modes = {name: t.data.dataset("train", batch_size=args.batch, training=True, output="targets", repeat=True)
                     for name, t in tasks.items()}
            modes = {"in-memory": materialise(modes["pipeline"], args.cached), **modes}
            title = (f"resnet18 {width}x{height}, batch {args.batch}, {args.steps} timed steps x {args.reps} reps "
                     f"(after {args.warmup} warm-up steps each), {os.cpu_count()} CPUs")
            print(title, flush=True)

            def show(partial: list, title: str = title) -> None:
                print(table(f"{title}: after {len(partial[0].wall)} rep(s)", partial, args.batch), flush=True)

            results = compare(model, modes, args.steps, args.reps, args.warmup, partial=show)
            out.append(table(title, results, args.batch))
    print()
    print("\n\n".join(out))


if __name__ == "__main__":
    main()
