"""MaskRCNN input pipeline throughput: full pipeline vs decode-only vs what training consumes.

Synthetic COCO data (``synthesize_coco``, 640x384 PNG images with polygon masks and crowd
regions) is converted with ``dataset_convert`` and read back through
:class:`tltk.mask_rcnn.dataloader.MaskRCNNData` at each network size:

* *decode-only*: parse, decode, letterbox (resize + normalize + pad) and batch the images;
* *full*: the training pipeline -- crowd skipping, flips, masks decoded and cropped, padded
  ground truth and the RPN anchor targets of every level;
* *train*: images per second one training step of the model consumes (forward, losses,
  gradients, SGD update on a fixed batch; ``--nlayers`` ResNet), when the model is importable.

Ratios: full / decode-only is the share of the decode-bound rate the targets keep;
full / train above 1 means the pipeline feeds training faster than it consumes.

Usage::

    python benchmarks/mask_rcnn_input_pipeline.py [--sizes 832x1344,256x384] [--batch_size 2]
        [--batches 6] [--train_steps 1] [--train_batch_size 1] [--nlayers 18] [--no_train]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import Any

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


def _train_rate(exp: Any, data: Any, batch_size: int, steps: int) -> float | str:
    """Images/s of training steps on one fixed batch, or why it could not be measured."""
    try:
        from tltk.mask_rcnn.losses import mask_rcnn_loss
        from tltk.mask_rcnn.model import build_mask_rcnn, training_inputs
        from tltk.mask_rcnn.params import MaskRCNNParams
    except ImportError:
        return "n/a until mask_rcnn train lands"
    import keras
    import tensorflow as tf

    params = MaskRCNNParams.from_experiment(exp)
    _, model = build_mask_rcnn(params)
    optimizer = keras.optimizers.SGD(learning_rate=1e-3, momentum=0.9)
    images, targets = next(iter(data.dataset("train", batch_size=batch_size)))
    inputs = training_inputs(images, targets)

    @tf.function
    def step() -> tf.Tensor:
        with tf.GradientTape() as tape:
            outputs = model(inputs, training=True)
            total, _ = mask_rcnn_loss(outputs, targets, params)
        grads = tape.gradient(total, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return total

    step()  # trace and warm up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch_size / (time.perf_counter() - start)


def _ratio(a: float | str, b: float | str) -> str:
    return f"{a / b:.2f}" if isinstance(a, float) and isinstance(b, float) else "n/a"


def _fmt(value: float | str) -> str:
    return f"{value:.2f}" if isinstance(value, float) else value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="832x1344,256x384",
                        help="network sizes HxW, comma-separated (832x1344 is TAO's; 256x384 the quickstart size)")
    parser.add_argument("--num_images", type=int, default=24, help="synthetic 640x384 images")
    parser.add_argument("--batch_size", type=int, default=2)
    parser.add_argument("--batches", type=int, default=6, help="timed batches per pipeline (after 2 warm-up)")
    parser.add_argument("--train_steps", type=int, default=1, help="timed training steps (after 1 warm-up)")
    parser.add_argument("--train_batch_size", type=int, default=1, help="images per training step")
    parser.add_argument("--nlayers", type=int, default=18, help="ResNet depth of the training measurement")
    parser.add_argument("--no_train", action="store_true", help="skip the training measurement")
    parser.add_argument("--workdir", default=None, help="folder for the data (default: a temporary folder)")
    args = parser.parse_args(argv)
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes.split(",") if s.strip()]

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
        for height, width in sizes:
            spec_path = os.path.join(work, f"spec_{height}x{width}.txt")
            with open(spec_path, "w", encoding="utf-8") as handle:
                handle.write(SPEC % {"batch": args.batch_size, "height": height, "width": width,
                                     "tfrecords": tfrecords, "json": syn.files["annotations_train"],
                                     "nlayers": args.nlayers})
            exp = load_spec(spec_path, model="mask_rcnn", kind="experiment").message
            data = MaskRCNNData(exp)
            decode = _rate(iter(data.dataset("train", output="images")), args.batch_size, args.batches, 2)
            full = _rate(iter(data.dataset("train")), args.batch_size, args.batches, 2)
            train: float | str = "skipped (--no_train)" if args.no_train else _train_rate(
                exp, data, args.train_batch_size, args.train_steps)
            rows.append((f"{height}x{width}", decode, full, train))

    print(f"MaskRCNN input pipeline, {args.num_images} synthetic 640x384 images, batch {args.batch_size}, "
          f"{os.cpu_count()} CPU(s); training: ResNet-{args.nlayers}, SGD, fixed batch of {args.train_batch_size}")
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
