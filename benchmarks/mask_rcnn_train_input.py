#!/usr/bin/env python3
"""MaskRCNN training step: fed by the real input pipeline vs. the same step on in-memory batches.

The quickstart network (``specs/mask_rcnn/quickstart_train.txt``: ResNet-10 FPN, 256x448, batch
4) trains on synthetic COCO data (640x384 PNG images with polygon masks and crowd regions,
converted with ``dataset_convert``, as ``benchmarks/mask_rcnn_train.py`` makes it).  The table
shows seconds per training step of

* ``in-memory``: the baseline, ``--cached`` batches taken once from the same pipeline and replayed
  from memory (pure compute: forward, proposals, ROI sampling, heads, losses, SGD update);
* ``pipeline``: the full training pipeline (parse, decode, masks, flips, letterbox, RPN targets);
* ``pipeline, no cache``: the same with ``data_config.decoded_cache_mb: 0`` (every record decoded
  every epoch, as before the cache).

Method: ``benchmarks/_feed_compare.py`` (same compiled train function for every mode, fresh
iterator and ``--warmup`` untimed steps per block, ``--reps`` repetitions interleaved in rotated
order; median [min-max] s/step, CPU-s/step, ratio = in-memory median / mode median).

Usage: python benchmarks/mask_rcnn_train_input.py [--steps 10] [--warmup 3] [--reps 5] [--images 48]
    [--cached 4] [--batch 0]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TLTK_NO_PROGRESS", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _feed_compare import compare, materialise, table  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per block")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps at the start of every block")
    parser.add_argument("--reps", type=int, default=5, help="repetitions (blocks per mode)")
    parser.add_argument("--images", type=int, default=48, help="synthetic 640x384 images (90%% train)")
    parser.add_argument("--cached", type=int, default=4, help="batches replayed by the in-memory baseline")
    parser.add_argument("--batch", type=int, default=0, help="train_batch_size (0: the spec's, 4)")
    parser.add_argument("--no_uncached", action="store_true", help="leave out the 'pipeline, no cache' mode")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("tltk").setLevel(logging.ERROR)

    import keras
    from mask_rcnn_train import load_task, make_data

    from tltk.core.trainer import TaskModel

    with tempfile.TemporaryDirectory(prefix="tltk-bench-feed-") as tmp:
        pattern, val_json = make_data(Path(tmp), args.images)
        task = load_task("quickstart", pattern, val_json, args.batch or None)
        keras.utils.set_random_seed(task.random_seed())
        network = task.build_network()
        plan = task.training_plan(1)
        model = TaskModel(network, task, list(task.loss_names()))
        model.compile(optimizer=task.build_optimizer(plan), jit_compile=False)
        batch = plan.batch_size
        modes = {"pipeline": task.train_dataset(0, batch)}
        if not args.no_uncached:
            plain = load_task("quickstart", pattern, val_json, args.batch or None)
            plain.experiment.data_config.decoded_cache_mb = 0
            plain.data.decoded_cache_mb = 0
            modes["pipeline, no cache"] = plain.train_dataset(0, batch)
        modes = {"in-memory": materialise(modes["pipeline"], args.cached), **modes}
        p = task.params
        title = (f"MaskRCNN quickstart: resnet{p.nlayers} FPN, {p.image_size[0]}x{p.image_size[1]}, batch {batch}, "
                 f"{args.steps} timed steps x {args.reps} reps (after {args.warmup} warm-up steps each), "
                 f"{os.cpu_count()} CPUs")
        print(title, flush=True)

        def show(partial: list) -> None:
            print(table(f"after {len(partial[0].wall)} rep(s)", partial, batch), flush=True)

        results = compare(model, modes, args.steps, args.reps, args.warmup, partial=show)
    print()
    print(table(title, results, batch))


if __name__ == "__main__":
    main()
