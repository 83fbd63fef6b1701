"""Synthetic dataset generation speed at 960x544 (KITTI and COCO) against writing blank PNGs.

For each row the table shows:

* ``images/s``: wall-clock throughput of :func:`tltk.data.synthetic.synthesize_kitti` /
  :func:`~tltk.data.synthetic.synthesize_coco` (scene generation, drawing, PNG writing, labels
  or COCO JSON, spec file) with the given number of worker processes;
* ``cpu s/img``: CPU seconds per image summed over the main and worker processes;
* ``baseline images/s``: the baseline, writing the same number of *blank* 960x544 RGB PNGs
  with PIL (``compress_level=1``) in one process: the cost of merely producing image files;
* ``ratio``: ``images/s / baseline images/s`` (1.0 = as fast as writing blank files).

The target for this project is 1000 images in under 60 s on a 2-core machine.  On a shared
machine the wall-clock numbers depend on the load; ``cpu s/img`` does not.

Run: ``.venv/bin/python benchmarks/synthetic_data.py [--num_images 300] [--workers 2]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time

import numpy as np
from PIL import Image

from tltk.data.synthetic import synthesize_coco, synthesize_kitti

WIDTH, HEIGHT = 960, 544


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def blank_pngs(folder: str, count: int) -> float:
    """Write ``count`` blank 960x544 PNGs; returns the wall-clock seconds."""
    blank = Image.fromarray(np.zeros((HEIGHT, WIDTH, 3), np.uint8), "RGB")
    started = time.perf_counter()
    for i in range(count):
        blank.save(os.path.join(folder, f"{i:06d}.png"), format="PNG", compress_level=1)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_images", type=int, default=300)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args()
    n = args.num_images
    root = tempfile.mkdtemp(prefix="tltk_bench_synth_")
    try:
        os.makedirs(os.path.join(root, "blank"))
        baseline = n / blank_pngs(os.path.join(root, "blank"), n)
        rows = []
        for name, fn in (("KITTI", synthesize_kitti), ("COCO", synthesize_coco)):
            cpu0 = _cpu_seconds()
            report = fn(os.path.join(root, name.lower()), num_images=n, image_size=(WIDTH, HEIGHT), seed=42,
                        workers=args.workers)
            cpu = _cpu_seconds() - cpu0
            rate = n / report.seconds
            rows.append((name, report.seconds, rate, cpu / n, baseline, rate / baseline))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"Synthetic data, {n} images of {WIDTH}x{HEIGHT}, {args.workers} worker(s), {os.cpu_count()} CPU(s)")
    header = f"{'format':<8}{'seconds':>10}{'images/s':>11}{'cpu s/img':>11}{'baseline images/s':>19}{'ratio':>8}"
    print(header)
    print("-" * len(header))
    for name, seconds, rate, cpu, base, ratio in rows:
        print(f"{name:<8}{seconds:>10.1f}{rate:>11.1f}{cpu:>11.3f}{base:>19.1f}{ratio:>8.2f}")
    for name, _seconds, rate, *_ in rows:
        print(f"{name}: 1000 images would take about {1000 / rate:.0f} s at this rate")


if __name__ == "__main__":
    main()
