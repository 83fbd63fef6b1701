"""CPU cost of single parts of a MaskRCNN training step, forward and backward, at a given input size.

Parts (each a traced ``tf.function``, timed after one untimed call, CPU seconds of the process):

* ``roi_align``: tltk's multilevel ROIAlign of the box head (``--rois`` ROIs, 7x7) and of the mask
  head (``--mask_rois``, 14x14) on random FPN levels P2..P6 with 256 channels, forward only and
  forward + backward (the gradient is accumulated into the levels);
* ``box_head_chw``: the box head's (C, H, W) flatten of ``[B, rois, 7, 7, 256]`` (a transpose),
  forward + backward;
* ``mask_targets``: :func:`tltk.mask_rcnn.sampling.mask_targets` of the mask ROIs from
  ``--instances`` padded ground-truth masks of side ``--gt_mask_size + 4``;
* ``batch_norm``: one training BatchNormalization on the C2 activation ``[B, H/4, W/4, 256]``,
  forward + backward, with Keras' ``BatchNormalization`` and with
  :class:`tltk.backbones.fused_batch_norm.FusedBatchNormalization`.

Run: ``.venv/bin/python benchmarks/mask_rcnn_train_parts.py [--size 832x1344] [--batch 1]
[--rois 512] [--mask_rois 128] [--instances 100] [--gt_mask_size 112] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _cpu_ms(fn: Callable[..., Any], args: tuple[Any, ...], repeats: int) -> float:
    """Median CPU milliseconds of ``fn(*args)`` over ``repeats`` calls, after one untimed call."""
    import tensorflow as tf

    fn(*args)
    times = []
    for _ in range(repeats):
        start = time.process_time()
        tf.nest.map_structure(lambda t: t.numpy(), fn(*args))
        times.append(1000.0 * (time.process_time() - start))
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="832x1344", help="input HxW (divisible by 64)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rois", type=int, default=512, help="sampled ROIs per image (box head)")
    parser.add_argument("--mask_rois", type=int, default=128, help="mask-head ROIs per image")
    parser.add_argument("--instances", type=int, default=100, help="padded ground-truth rows per image")
    parser.add_argument("--gt_mask_size", type=int, default=112)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.lower().split("x"))
    if height % 64 or width % 64:
        parser.error("--size: height and width must be divisible by 64 (P6)")

    import keras
    import numpy as np
    import tensorflow as tf

    from tltk.backbones.fused_batch_norm import FusedBatchNormalization
    from tltk.mask_rcnn.roi_align import multilevel_roi_align
    from tltk.mask_rcnn.sampling import mask_targets

    b = args.batch
    rng = np.random.default_rng(0)
    levels = [tf.constant(rng.standard_normal((b, height >> lv, width >> lv, 256)).astype(np.float32))
              for lv in range(2, 7)]

    def boxes(n: int) -> tf.Tensor:
        y, x = rng.uniform(0, height - 50, (b, n)), rng.uniform(0, width - 50, (b, n))
        h, w = (np.exp(rng.uniform(np.log(8), np.log(600), (b, n))) for _ in range(2))
        return tf.constant(np.stack([y, x, np.minimum(y + h, height), np.minimum(x + w, width)], -1)
                           .astype(np.float32))

    box_rois, mask_rois = boxes(args.rois), boxes(args.mask_rois)

    @tf.function
    def roi_align_forward(levels: list[tf.Tensor]) -> tf.Tensor:
        return (tf.reduce_sum(multilevel_roi_align(levels, box_rois, 7, 2))
                + tf.reduce_sum(multilevel_roi_align(levels, mask_rois, 14, 2)))

    @tf.function
    def roi_align_step(levels: list[tf.Tensor]) -> list[tf.Tensor]:
        with tf.GradientTape() as tape:
            tape.watch(levels)
            loss = roi_align_forward(levels)
        return tape.gradient(loss, levels)

    roi_features = tf.constant(rng.standard_normal((b, args.rois, 7, 7, 256)).astype(np.float32))
    flat_weights = tf.range(7 * 7 * 256, dtype=tf.float32)

    @tf.function
    def box_head_chw(x: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            tape.watch(x)
            flat = tf.reshape(tf.transpose(x, [0, 1, 4, 2, 3]), [b, args.rois, -1])
            loss = tf.reduce_sum(flat * flat_weights)
        return tape.gradient(loss, x)

    side = args.gt_mask_size + 4
    masks = tf.constant((rng.uniform(size=(b, args.instances, side, side)) > 0.5).astype(np.float32))
    matched_boxes = boxes(args.mask_rois)
    matched_index = tf.constant(rng.integers(0, args.instances, (b, args.mask_rois)), tf.int32)

    @tf.function
    def targets() -> tf.Tensor:
        return mask_targets(mask_rois, matched_boxes, matched_index, masks, args.gt_mask_size, 28)

    c2 = tf.constant(rng.standard_normal((b, height // 4, width // 4, 256)).astype(np.float32))

    def bn_step(layer: keras.layers.Layer) -> Callable[[tf.Tensor], list[tf.Tensor]]:
        layer.build(c2.shape)

        @tf.function
        def step(x: tf.Tensor) -> list[tf.Tensor]:
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x, training=True)
                loss = tf.reduce_sum(y * y)
            return tape.gradient(loss, [x, *layer.trainable_variables])
        return step

    rows = [
        ("roi_align forward (box + mask)", _cpu_ms(roi_align_forward, (levels,), args.repeats)),
        ("roi_align forward + backward", _cpu_ms(roi_align_step, (levels,), args.repeats)),
        ("box_head_chw flatten fwd + bwd", _cpu_ms(box_head_chw, (roi_features,), args.repeats)),
        ("mask_targets", _cpu_ms(targets, (), args.repeats)),
        ("batch_norm C2, Keras", _cpu_ms(bn_step(keras.layers.BatchNormalization()), (c2,), args.repeats)),
        ("batch_norm C2, fused", _cpu_ms(bn_step(FusedBatchNormalization()), (c2,), args.repeats)),
    ]
    print(f"MaskRCNN training parts at {height}x{width}, batch {b}, {args.rois} ROIs, {args.mask_rois} mask ROIs, "
          f"{args.instances} GT rows (median CPU ms of {args.repeats} calls; {os.cpu_count()} CPUs)")
    for name, ms in rows:
        print(f"  {name:<34}{ms:>10.1f} CPU-ms")


if __name__ == "__main__":
    main()
