"""DetectNet_v2 input pipeline throughput: full augmenting loader vs a decode-only loader.

All loaders read the same TFRecords (synthetic KITTI data at 960x544, converted with
``dataset_convert``).  The *full* loader parses labels, applies every spatial and colour
augmentation, rasterizes the coverage/bbox targets and loss masks and batches, with its images
from the in-memory cache (``dataset_config.image_cache_mb``, the default) or read and decoded
from the files (``image_cache_mb: 0``); the *augment only* rows stop before the targets
(``output="images"``); the *decode-only* loader reads and decodes the same PNG files into [0, 1]
float NCHW batches and nothing else.  Columns: images per second, the ratio to decode-only, and
process CPU milliseconds per image (all pipeline threads; steadier than wall time on a shared
machine).

Usage::

    python benchmarks/detectnet_v2_input_pipeline.py [--num_images 64] [--batch_size 8] [--batches 20]
        [--size 960x544] [--auto_resize]
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import tempfile
import time

SPEC = """
random_seed: 42
dataset_config {
  data_sources { tfrecords_path: "%(tfrecords)s-*" image_directory_path: "%(images)s" }
  image_extension: "png"
  target_class_mapping { key: "car" value: "car" }
  target_class_mapping { key: "pedestrian" value: "pedestrian" }
  target_class_mapping { key: "cyclist" value: "cyclist" }
  validation_fold: 0
}
augmentation_config {
  preprocessing { output_image_width: 960 output_image_height: 544 output_image_channel: 3
                  min_bbox_width: 1.0 min_bbox_height: 1.0 }
  spatial_augmentation { hflip_probability: 0.5 vflip_probability: 0.5 zoom_min: 0.8 zoom_max: 1.2
                         translate_max_x: 16.0 translate_max_y: 16.0 rotate_rad_max: 0.1 rotate_probability: 0.5 }
  color_augmentation { color_shift_stddev: 0.05 hue_rotation_max: 25.0 saturation_shift_max: 0.2
                       contrast_scale_max: 0.1 contrast_center: 0.5 }
}
bbox_rasterizer_config {
  target_class_config { key: "car" value { cov_center_x: 0.5 cov_center_y: 0.5 cov_radius_x: 0.4 cov_radius_y: 0.4 bbox_min_radius: 1.0 } }
  target_class_config { key: "pedestrian" value { cov_center_x: 0.5 cov_center_y: 0.5 cov_radius_x: 0.4 cov_radius_y: 0.4 bbox_min_radius: 1.0 } }
  target_class_config { key: "cyclist" value { cov_center_x: 0.5 cov_center_y: 0.5 cov_radius_x: 0.4 cov_radius_y: 0.4 bbox_min_radius: 1.0 } }
  deadzone_radius: 0.67
}
cost_function_config {
  target_classes { name: "car" }
  target_classes { name: "pedestrian" }
  target_classes { name: "cyclist" }
}
model_config { objective_set { bbox { scale: 35.0 offset: 0.5 } cov {} } }
training_config { batch_size_per_gpu: %(batch)d }
"""


def _throughput(dataset, batch_size: int, batches: int, warmup: int = 3) -> tuple[float, float]:
    """(images per second, process CPU milliseconds per image) over ``batches`` batches."""
    iterator = iter(dataset)
    for _ in range(warmup):
        next(iterator)
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        next(iterator)
    images = batches * batch_size
    return images / (time.perf_counter() - start), (time.process_time() - cpu) / images * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_images", type=int, default=64, help="synthetic images to generate (960x544)")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=20, help="timed batches per loader (after 3 warm-up batches)")
    parser.add_argument("--workdir", default=None, help="folder for the data (default: a temporary folder)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--size", default="960x544", help="network input WIDTHxHEIGHT")
    parser.add_argument("--auto_resize", action="store_true", help="enable_auto_resize (the quickstart's setting)")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    from google.protobuf import text_format

    from tltk._proto import detectnet_v2_pb2 as pb
    from tltk.data.synthetic import synthesize_kitti
    from tltk.detectnet_v2.dataloader import DetectNetV2Data
    from tltk.detectnet_v2.dataset_convert import convert_dataset
    from tltk.models import load_spec
    from tltk.spec import resolve_spec_path

    workdir = args.workdir or tempfile.mkdtemp(prefix="tltk_bench_")
    data_dir = os.path.join(workdir, "kitti")
    if not os.path.isdir(os.path.join(data_dir, "image_2")):
        synthesize_kitti(data_dir, num_images=args.num_images, image_size=(960, 544), seed=args.seed)
    prefix = os.path.join(workdir, "tfrecords", "kitti")
    if not glob.glob(prefix + "-fold-*"):
        loaded = load_spec(os.path.join(data_dir, "dataset_convert_spec.txt"), model="detectnet_v2", kind="dataset_convert")
        convert_dataset(loaded.message, prefix, resolve=lambda v: resolve_spec_path(loaded, v))
    text = SPEC % {"tfrecords": prefix, "images": data_dir, "batch": args.batch_size}
    text = text.replace("output_image_width: 960 output_image_height: 544",
                        f"output_image_width: {width} output_image_height: {height}"
                        + (" enable_auto_resize: true" if args.auto_resize else ""))
    cached = DetectNetV2Data(text_format.Parse(text, pb.Experiment()), spec_dir=workdir)
    files = DetectNetV2Data(text_format.Parse(text.replace('validation_fold: 0', 'validation_fold: 0 image_cache_mb: 0'),
                                              pb.Experiment()), spec_dir=workdir)
    n_train = cached.num_examples("train")
    loaders = [("decode-only loader (baseline)", files.dataset("train", decode_only=True)),
               ("augment only, files", files.dataset("train", output="images")),
               ("augment only, cache", cached.dataset("train", output="images")),
               ("full loader, files", files.dataset("train", output="targets")),
               ("full loader, cache", cached.dataset("train", output="targets"))]
    rows = [(name, *_throughput(ds, args.batch_size, args.batches)) for name, ds in loaders]

    cores = os.cpu_count() or 1
    print(f"DetectNet_v2 input pipeline, {width}x{height} network input{' (auto-resize)' if args.auto_resize else ''}, "
          f"960x544 synthetic KITTI ({n_train} training images), batch {args.batch_size}, {args.batches} timed "
          f"batches, {cores} CPU cores, load {os.getloadavg()[0]:.1f}, TensorFlow {tf.__version__}")
    print(f"{'loader':<34} {'images/s':>10} {'ratio':>8} {'CPU ms/img':>11}")
    print("-" * 66)
    for name, ips, cpu_ms in rows:
        print(f"{name:<34} {ips:>10.1f} {ips / rows[0][1]:>8.2f} {cpu_ms:>11.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
