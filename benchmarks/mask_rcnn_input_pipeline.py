"""MaskRCNN input pipeline throughput: full pipeline vs decode-only vs what training consumes.

Synthetic COCO data (``synthesize_coco``, 640x384 PNG images with polygon masks and crowd
regions) is converted with ``dataset_convert`` and read back through
:class:`tltk.mask_rcnn.dataloader.MaskRCNNData` at each network size:

* *decode-only*: parse, decode, letterbox (resize + normalize + pad) and batch the images;
* *full*: the training pipeline -- crowd skipping, flips, masks decoded and cropped, padded
  ground truth and the RPN anchor targets of every level;
* *train*: images per second the trainer's own training step consumes at that size (forward,
  TAO's losses, gradients, the spec's optimizer; ``--nlayers`` ResNet, the spec's other
  settings at TAO's defaults), fed from memory so that the pipeline costs it nothing.

Ratios: full / decode-only is the share of the decode-bound rate the targets keep;
full / train above 1 means the pipeline feeds training faster than it consumes.

Usage::

    python benchmarks/mask_rcnn_input_pipeline.py [--sizes 832x1344,quickstart] [--batch_size 2]
        [--batches 6] [--train_steps 3] [--train_batch_size 0] [--nlayers 18] [--no_train]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

QUICKSTART_SPEC = Path(__file__).resolve().parent.parent / "specs" / "mask_rcnn" / "quickstart_train.txt"

SPEC = """
seed: 1
train_batch_size: %(batch)d
eval_batch_size: %(batch)d
num_steps_per_eval: 100
total_steps: 100
init_learning_rate: 0.01
momentum: 0.9
data_config {
  image_size: "(%(height)d, %(width)d)"
  augment_input_data: true
  num_classes: 4
  skip_crowd_during_training: true
  training_file_pattern: "%(tfrecords)s/instances_train-*"
  validation_file_pattern: "%(tfrecords)s/instances_train-*"
  val_json_file: "%(json)s"
  max_num_instances: 100
}
maskrcnn_config {
  nlayers: %(nlayers)d
}
"""


def _rate(iterator: Any, batch_size: int, batches: int, warmup: int) -> float:
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch_size / (time.perf_counter() - start)


def _train_rate(loaded: Any, batch_size: int, steps: int) -> float:
    """Images/s the trainer's own train function consumes at the spec's size, fed from memory.

    The step is the one ``tltk mask_rcnn train`` runs (:class:`tltk.core.trainer.TaskModel`'s
    compiled Keras train function: forward, TAO's losses, gradients, the spec's optimizer), on
    batches taken once from the real pipeline and replayed from memory, so the input pipeline
    costs it nothing (method: ``benchmarks/_feed_compare.py``).  Median over ``steps`` steps
    after one untimed step.
    """
    import keras
    from _feed_compare import materialise, time_steps

    from tltk.core.trainer import TaskModel
    from tltk.models import make_task

    task = make_task("mask_rcnn", loaded)
    keras.utils.set_random_seed(task.random_seed())
    plan = task.training_plan(1)
    model = TaskModel(task.build_network(), task, list(task.loss_names()))
    model.compile(optimizer=task.build_optimizer(plan), jit_compile=False)
    model.make_train_function()
    seconds = time_steps(model.train_function, materialise(task.train_dataset(0, batch_size), 1), steps)
    print("  train step seconds:", " ".join(f"{t:.2f}" for t in seconds), flush=True)
    return batch_size / statistics.median(seconds)


def _ratio(a: float | str, b: float | str) -> str:
    return f"{a / b:.2f}" if isinstance(a, float) and isinstance(b, float) else "n/a"


def _fmt(value: float | str) -> str:
    return f"{value:.2f}" if isinstance(value, float) else value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="832x1344,quickstart",
                        help="comma-separated: HxW (TAO's default settings at that size; 832x1344 is TAO's) or "
                             "'quickstart' (specs/mask_rcnn/quickstart_train.txt as shipped, 256x448)")
    parser.add_argument("--num_images", type=int, default=24, help="synthetic 640x384 images")
    parser.add_argument("--batch_size", type=int, default=2)
    parser.add_argument("--batches", type=int, default=6, help="timed batches per pipeline (after 2 warm-up)")
    parser.add_argument("--train_steps", type=int, default=3, help="timed training steps (after 1 warm-up; median)")
    parser.add_argument("--train_batch_size", type=int, default=0,
                        help="images per training step (0: the quickstart spec's 4; 1 at TAO's defaults, since "
                             "832x1344 at TAO's batch 2 needs more than 15 GB on CPU)")
    parser.add_argument("--nlayers", type=int, default=18, help="ResNet depth of the model (spec's nlayers)")
    parser.add_argument("--no_train", action="store_true", help="skip the training measurement")
    parser.add_argument("--workdir", default=None, help="folder for the data (default: a temporary folder)")
    args = parser.parse_args(argv)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import logging

    logging.getLogger("tltk").setLevel(logging.ERROR)
    from tltk.data.synthetic import synthesize_coco
    from tltk.mask_rcnn.dataloader import MaskRCNNData
    from tltk.mask_rcnn.dataset_convert import convert_coco
    from tltk.models import load_spec

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or tmp
        syn = synthesize_coco(os.path.join(work, "data"), num_images=args.num_images, image_size=(640, 384), seed=7,
                              val_fraction=0.0, overwrite=True)
        tfrecords = os.path.join(work, "tfrecords")
        convert_coco(syn.files["images_train"], syn.files["annotations_train"], tfrecords, num_shards=4)
        rows = []
        for size in sizes:
            if size == "quickstart":
                spec_path = str(QUICKSTART_SPEC)
                overrides = [f'data_config.training_file_pattern="{tfrecords}/instances_train-*"',
                             f'data_config.validation_file_pattern="{tfrecords}/instances_train-*"',
                             f'data_config.val_json_file="{syn.files["annotations_train"]}"']
                train_batch = args.train_batch_size or 0  # 0: the spec's
            else:
                height, width = (int(v) for v in size.lower().split("x"))
                spec_path = os.path.join(work, f"spec_{height}x{width}.txt")
                overrides = []
                train_batch = args.train_batch_size or 1
                with open(spec_path, "w", encoding="utf-8") as handle:
                    handle.write(SPEC % {"batch": args.batch_size, "height": height, "width": width,
                                         "tfrecords": tfrecords, "json": syn.files["annotations_train"],
                                         "nlayers": args.nlayers})
            loaded = load_spec(spec_path, model="mask_rcnn", kind="experiment", overrides=overrides)
            exp = loaded.message
            label = (f"{exp.data_config.image_size} quickstart spec, ResNet-{exp.maskrcnn_config.nlayers}"
                     if size == "quickstart" else f"{size} TAO defaults, ResNet-{args.nlayers}")
            data = MaskRCNNData(exp)
            decode = _rate(iter(data.dataset("train", batch_size=args.batch_size, output="images")), args.batch_size, args.batches, 2)
            full = _rate(iter(data.dataset("train", batch_size=args.batch_size)), args.batch_size, args.batches, 2)
            train: float | str = "skipped (--no_train)" if args.no_train else _train_rate(
                loaded, train_batch or exp.train_batch_size, args.train_steps)
            rows.append((label, decode, full, train))

    print(f"MaskRCNN input pipeline, {args.num_images} synthetic 640x384 images, batch {args.batch_size}, "
          f"{os.cpu_count()} CPU(s); training: the trainer's step on batches from memory")
    header = ("size (HxW)", "decode-only img/s", "full img/s", "full/decode", "train img/s", "full/train")
    table = [header] + [(size, _fmt(d), _fmt(f), _ratio(f, d), _fmt(t), _ratio(f, t)) for size, d, f, t in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for k, row in enumerate(table):
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)))
        if k == 0:
            print("  ".join("-" * w for w in widths))
    print(f"total {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
