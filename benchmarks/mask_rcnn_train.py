"""MaskRCNN training throughput: tltk next to TF Model Garden's Mask R-CNN, images per second.

Two cases, each with the backbone depth, input size, batch and sampling sizes of a shipped spec:

* ``resnet50``: TAO's sample spec ``specs/mask_rcnn/default_train.txt`` (ResNet-50 FPN, 832x1344,
  batch 2, 91 classes, 2000/1000 training proposals, 512 sampled ROIs, 256 RPN anchors);
* ``quickstart``: ``specs/mask_rcnn/quickstart_train.txt`` (ResNet-10 FPN, 256x448, batch 4).

Both frameworks train from the same synthetic COCO TFRecords (``synthesize_coco`` + tltk's
``dataset_convert``, TAO's feature keys, which are also the TF Object Detection keys Model Garden
reads) through their own input pipelines (flip augmentation, RPN targets), with SGD and
momentum 0.9, for ``--steps`` timed steps after ``--warmup`` untimed ones (tracing, pipeline
start).  The number is images per second of the timed steps.

TF Model Garden (``official.vision``, task ``maskrcnn_resnetfpn_coco``) needs a newer TensorFlow
than tltk, so it runs in a virtual environment of its own (``--peer_venv``, created and filled
with ``pip install tf-models-official`` on first use, shared with
``benchmarks/mask_rcnn_inference.py``).  Its settings are copied from the spec: ResNet depth,
input size, batch, classes, FPN levels, anchors, RPN and ROI sampling sizes and thresholds,
proposal counts, box head (two fully connected layers of ``fast_rcnn_mlp_head_dim``), mask ROIs,
float32 inputs, no synchronised BatchNorm; both train the whole network (the specs' ``freeze_blocks``
and ``freeze_bn`` are turned off for tltk, since Model Garden cannot freeze single ResNet blocks).
When the environment cannot be made (no network, for instance), the peer column says why
and shows no number.

Columns: images per wall-clock second of tltk and of the peer and their ratio (above 1: tltk is
faster), then images per CPU second of each process (all its threads, input pipeline included)
and their ratio; on a machine shared with other jobs the CPU-time ratio is the steadier one.

Run: ``.venv/bin/python benchmarks/mask_rcnn_train.py [--cases resnet50,quickstart] [--steps 4]
[--warmup 2] [--repeats 1] [--images 24] [--batch 0] [--threads 0] [--peer_venv DIR]``; with
``--repeats N`` each framework times N blocks of ``--steps`` steps and the table shows medians
(ranges below it).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TLTK_NO_PROGRESS", "1")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _model_garden import DEFAULT_PEER_VENV, MODEL_CONFIG, model_settings, peer_python, run_script, thread_env  # noqa: E402

SPECS = {"resnet50": REPO / "specs" / "mask_rcnn" / "default_train.txt",
         "quickstart": REPO / "specs" / "mask_rcnn" / "quickstart_train.txt"}

#: Runs in the peer's virtual environment: argv[1] is a JSON document of settings; prints one
#: JSON line {"img_s": ...}.
PEER_SCRIPT = textwrap.dedent('''
    import json, os, sys, time
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    import tf_keras
    from official.core import exp_factory, task_factory
    import official.vision  # registers the vision experiments and tasks
''') + MODEL_CONFIG + textwrap.dedent('''
    params.task.init_checkpoint = None
    params.task.annotation_file = None
    model.roi_generator.pre_nms_top_k = s["pre_nms"]
    model.roi_generator.num_proposals = s["post_nms"]
    model.roi_generator.nms_iou_threshold = s["rpn_nms"]
    model.roi_sampler.num_sampled_rois = s["rois"]
    model.roi_sampler.foreground_fraction = s["fg_fraction"]
    model.roi_sampler.foreground_iou_threshold = s["fg_thresh"]
    model.roi_sampler.background_iou_high_threshold = s["bg_hi"]
    model.roi_sampler.background_iou_low_threshold = s["bg_lo"]
    model.mask_sampler.num_sampled_masks = s["mask_rois"]
    model.include_mask = True
    model.norm_activation.use_sync_bn = False
    data = params.task.train_data
    data.dtype = "float32"  # the experiment's default is bfloat16 (TPU); tltk trains in float32
    data.input_path = s["tfrecords"]
    data.global_batch_size = s["batch"]
    data.shuffle_buffer_size = 64
    data.parser.aug_rand_hflip = True
    data.parser.aug_scale_min = data.parser.aug_scale_max = 1.0
    data.parser.rpn_match_threshold = s["rpn_pos"]
    data.parser.rpn_unmatched_threshold = s["rpn_neg"]
    data.parser.rpn_batch_size_per_im = s["rpn_batch"]
    data.parser.rpn_fg_fraction = s["rpn_fg"]
    data.parser.max_num_instances = s["max_instances"]
    data.parser.mask_crop_size = s["gt_mask_size"]
    task = task_factory.get_task(params.task)
    net = task.build_model()
    optimizer = tf_keras.optimizers.SGD(learning_rate=0.001, momentum=0.9)
    inputs = iter(task.build_inputs(data))
    step = tf.function(lambda batch: task.train_step(batch, net, optimizer))
    for _ in range(s["warmup"]):
        step(next(inputs))
    images = s["steps"] * s["batch"]
    rates = []
    for _ in range(s["repeats"]):
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(s["steps"]):
            logs = step(next(inputs))
        tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, logs)  # wait for the last step
        rates.append([images / (time.perf_counter() - start), images / (time.process_time() - cpu)])
    print(json.dumps({"rates": rates}))
''')


def make_data(root: Path, images: int) -> tuple[str, str]:
    """Synthetic COCO images (640x384) as TFRecords: (training file pattern, validation JSON)."""
    from tltk.data.synthetic import synthesize_coco
    from tltk.mask_rcnn.dataset_convert import convert_coco

    synthesize_coco(root / "coco", num_images=images, image_size=(640, 384), seed=5, val_fraction=0.1)
    for split in ("train", "val"):
        convert_coco(root / "coco" / "images" / split, root / "coco" / "annotations" / f"instances_{split}.json",
                     root / "tfrecords", tag=split, num_shards=2, include_masks=True)
    return str(root / "tfrecords" / "train-*"), str(root / "coco" / "annotations" / "instances_val.json")


def load_task(name: str, pattern: str, val_json: str, batch: int | None = None) -> Any:
    """The spec's Task, reading the synthetic data (4 categories: num_classes stays the spec's);
    ``batch`` replaces ``train_batch_size``."""
    from tltk.models import load_spec, make_task

    # Model Garden cannot freeze single ResNet blocks: both train the whole network here.
    overrides = [f"data_config.training_file_pattern={pattern}", f"data_config.validation_file_pattern={pattern}",
                 f"data_config.val_json_file={val_json}", "checkpoint=", "data_config.shuffle_buffer_size=64",
                 "maskrcnn_config.freeze_blocks=[]", "maskrcnn_config.freeze_bn=false"]
    if batch:
        overrides.append(f"train_batch_size={batch}")
    return make_task("mask_rcnn", load_spec(str(SPECS[name]), model="mask_rcnn", kind="experiment",
                                            overrides=overrides))


def _block_timer(marks: set[int]) -> tuple[Any, list[tuple[float, float]]]:
    """A Keras callback appending ``(perf_counter, process_time)`` to the returned list at the
    end of each training batch whose 0-based index is in ``marks``."""
    import keras

    times: list[tuple[float, float]] = []

    class BlockTimer(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            if batch in marks:
                times.append((time.perf_counter(), time.process_time()))

    return BlockTimer(), times


def tltk_rate(task: Any, steps: int, warmup: int, repeats: int = 1) -> list[tuple[float, float]]:
    """Training images per second of tltk's trainer step (``TaskModel``) fed by the Task's pipeline:
    ``(per wall-clock second, per CPU second of the process)`` of each of ``repeats`` blocks of
    ``steps`` timed steps (the first block after ``warmup`` untimed steps).

    One ``fit`` call runs the warm-up and every block from one iterator of the pipeline, as the
    peer's loop does (and as training does within a cycle); the blocks are timed at batch ends by
    a callback.  A ``fit`` per block would start the pipeline again each time and throw away what
    it had read ahead (``n_workers`` parallel examples plus the prefetch buffer: at 832x1344 about
    20 examples of about 0.13 CPU-s each), which training does only once per cycle."""
    import keras

    from tltk.core.trainer import TaskModel

    keras.utils.set_random_seed(task.random_seed())
    network = task.build_network()
    plan = task.training_plan(1)
    optimizer = task.build_optimizer(plan)
    model = TaskModel(network, task, list(task.loss_names()))
    model.compile(optimizer=optimizer, jit_compile=False)
    dataset = task.train_dataset(0, plan.batch_size)
    warmup = max(1, warmup)  # the first mark is the end of the warm-up
    timer, times = _block_timer({warmup - 1 + block * steps for block in range(repeats + 1)})
    model.fit(dataset, epochs=1, steps_per_epoch=warmup + repeats * steps, verbose=0, callbacks=[timer])
    images = steps * plan.batch_size
    return [(images / (t1 - t0), images / (c1 - c0)) for (t0, c0), (t1, c1) in zip(times[:-1], times[1:], strict=True)]


def peer_rate(python: Path, task: Any, pattern: str, steps: int, warmup: int, threads: int,
              repeats: int = 1) -> tuple[list[tuple[float, float]] | None, str]:
    """Model Garden's training images per (wall, CPU) second of each of ``repeats`` blocks of
    ``steps`` steps with the settings of ``task``, or (None, why not)."""
    p, exp = task.params, task.experiment
    mc = exp.maskrcnn_config
    settings = {**model_settings(p), "pre_nms": p.train_rpn_pre_nms_topn, "post_nms": p.train_rpn_post_nms_topn,
                "rpn_nms": p.train_rpn_nms_threshold, "rois": p.batch_size_per_im, "fg_fraction": p.fg_fraction,
                "fg_thresh": p.fg_thresh, "bg_hi": p.bg_thresh_hi, "bg_lo": p.bg_thresh_lo,
                "mask_rois": p.mask_rois_per_image, "rpn_pos": mc.rpn_positive_overlap,
                "rpn_neg": mc.rpn_negative_overlap, "rpn_batch": p.rpn_batch_size_per_im,
                "rpn_fg": mc.rpn_fg_fraction, "max_instances": p.max_num_instances, "gt_mask_size": p.gt_mask_size,
                "batch": int(exp.train_batch_size), "tfrecords": pattern, "steps": steps, "warmup": warmup,
                "repeats": repeats}
    result, why = run_script(python, PEER_SCRIPT, settings, threads, timeout=7200)
    if result is None:
        return None, why
    return [(float(wall), float(cpu)) for wall, cpu in result["rates"]], ""


def summary(rates: list[tuple[float, float]], column: int) -> tuple[float, float, float]:
    """(median, min, max) of one column (0: per wall-clock second, 1: per CPU second) of timed blocks."""
    values = sorted(rate[column] for rate in rates)
    middle = len(values) // 2
    median = values[middle] if len(values) % 2 else 0.5 * (values[middle - 1] + values[middle])
    return median, values[0], values[-1]


def describe(task: Any) -> str:
    p, exp = task.params, task.experiment
    return (f"resnet{p.nlayers} FPN P{p.min_level}-P{p.max_level}, {p.image_size[0]}x{p.image_size[1]}, batch "
            f"{exp.train_batch_size}, {p.num_classes} classes, proposals {p.train_rpn_pre_nms_topn}/"
            f"{p.train_rpn_post_nms_topn}, {p.batch_size_per_im} ROIs, {p.rpn_batch_size_per_im} RPN anchors")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="resnet50,quickstart", help="comma-separated: resnet50, quickstart")
    parser.add_argument("--steps", type=int, default=4, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (tracing, pipeline start)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="timed blocks of --steps steps per framework (median and range are printed)")
    parser.add_argument("--images", type=int, default=24, help="synthetic images")
    parser.add_argument("--batch", type=int, default=0,
                        help="train_batch_size for both frameworks (0: the spec's; ResNet-50 at 832x1344 with the "
                             "spec's 2 needs more than 15 GB on CPU)")
    parser.add_argument("--peer_venv", default=str(DEFAULT_PEER_VENV),
                        help="virtual environment for tf-models-official (created when missing)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads per framework (0: defaults)")
    parser.add_argument("--skip_peer", action="store_true", help="time tltk only (e.g. to compare two tltk trees)")
    args = parser.parse_args()
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    for name in cases:
        if name not in SPECS:
            parser.error(f"--cases: unknown case {name!r} (resnet50, quickstart)")
    os.environ.update(thread_env(args.threads))  # before TensorFlow is imported
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("tltk").setLevel(logging.ERROR)
    python, why = (None, "--skip_peer") if args.skip_peer else peer_python(Path(args.peer_venv))
    rows = []
    with tempfile.TemporaryDirectory(prefix="tltk-bench-train-") as tmp:
        pattern, val_json = make_data(Path(tmp), args.images)
        for name in cases:
            task = load_task(name, pattern, val_json, args.batch or None)
            mine = tltk_rate(task, args.steps, args.warmup, args.repeats)
            theirs, reason = (None, why)
            if python is not None:
                theirs, reason = peer_rate(python, task, pattern, args.steps, args.warmup, args.threads,
                                           args.repeats)
            rows.append((name, describe(task), mine, theirs, reason))
    print(f"MaskRCNN training throughput ({args.repeats} x {args.steps} timed steps after {args.warmup}; "
          f"{os.cpu_count()} CPUs, threads per framework: {args.threads or 'default'}); img/s per wall-clock "
          "second, img/CPU-s per CPU second of the process (steadier on a shared machine); medians of the "
          "timed blocks, ratio = tltk / peer (above 1: tltk is faster)")
    header = (f"{'case':<12}{'tltk img/s':>12}{'peer img/s':>12}{'ratio':>7}"
              f"{'tltk img/CPU-s':>16}{'peer img/CPU-s':>16}{'ratio':>7}")
    print(header)
    print("-" * len(header))
    for name, _, mine, theirs, reason in rows:
        wall, cpu = summary(mine, 0)[0], summary(mine, 1)[0]
        if theirs is None:
            print(f"{name:<12}{wall:>12.4f}{'-':>12}{'-':>7}{cpu:>16.4f}{'-':>16}{'-':>7}"
                  f"  peer unavailable ({reason})")
        else:
            peer_wall, peer_cpu = summary(theirs, 0)[0], summary(theirs, 1)[0]
            print(f"{name:<12}{wall:>12.4f}{peer_wall:>12.4f}{wall / peer_wall:>7.2f}"
                  f"{cpu:>16.4f}{peer_cpu:>16.4f}{cpu / peer_cpu:>7.2f}")
    if args.repeats > 1:
        print("ranges over the timed blocks (min-max):")
        for name, _, mine, theirs, _ in rows:
            for label, rates in (("tltk", mine), ("peer", theirs)):
                if rates:
                    (_, w0, w1), (_, c0, c1) = summary(rates, 0), summary(rates, 1)
                    print(f"  {name} {label}: img/s {w0:.4f}-{w1:.4f}, img/CPU-s {c0:.4f}-{c1:.4f}")
    for name, text, *_ in rows:
        print(f"  {name}: {text}")


if __name__ == "__main__":
    main()
