"""Per-frame DetectNet_v2 postprocessing time (tltk, NumPy + scikit-learn) at 544x960 input.

Synthetic network outputs: a 34x60 grid (stride 16), 3 classes, objects written as patches
of cells whose bbox channels encode the object's box plus 2 px noise and whose coverage is
uniform in [0.05, 0.95]; objects are added until the requested fraction of cells per class
is above the coverage threshold.  For each coverage level and algorithm the table shows:

* ``tltk ms``: :func:`tltk.detectnet_v2.postprocess.postprocess` per frame (decode, threshold,
  cluster, build detections); the ``DBSCAN sklearn`` row uses ``dbscan_backend="sklearn"``
  (scikit-learn's DBSCAN, as TAO), the others the default vectorised backend;
* ``decode ms``: the vectorised decode + threshold alone;
* ``python ms``: the baseline, a pure-Python per-cell loop that only decodes and thresholds
  (what a hand-written client does before clustering);
* ``ratio``: ``python ms / tltk ms`` (> 1: the whole tltk postprocess is faster than the
  Python decode loop alone).

Run: ``.venv/bin/python benchmarks/detectnet_v2_postprocess.py [--frames 20]``.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np

from tltk.detectnet_v2.postprocess import ClusteringParams, decode_grids, encode_boxes, postprocess

HEIGHT, WIDTH, STRIDE = 544, 960, 16
GRID_H, GRID_W = HEIGHT // STRIDE, WIDTH // STRIDE
CLASSES = ["car", "person", "bicycle"]
THRESHOLD = 0.005
# (row label, clustering algorithm, DBSCAN backend)
RUNS = [("DBSCAN", "DBSCAN", "numpy"), ("DBSCAN sklearn", "DBSCAN", "sklearn"), ("NMS", "NMS", "numpy"),
        ("HYBRID", "HYBRID", "numpy")]


def synthetic_frame(rng: np.random.Generator, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """One frame of (cov (1, 3, 34, 60), bbox (1, 12, 34, 60)) with ~fraction of cells above threshold."""
    cov = np.zeros((1, len(CLASSES), GRID_H, GRID_W), np.float32)
    bbox = np.zeros((1, 4 * len(CLASSES), GRID_H, GRID_W), np.float32)
    target = max(1, int(round(fraction * GRID_H * GRID_W)))
    for c in range(len(CLASSES)):
        covered = np.zeros((GRID_H, GRID_W), bool)
        while covered.sum() < target:
            w = rng.uniform(24, 200)
            h = rng.uniform(24, 160)
            x1 = rng.uniform(0, WIDTH - w)
            y1 = rng.uniform(0, HEIGHT - h)
            # Cells near the box centre carry the object (about the middle half of the box).
            c0 = int((x1 + 0.25 * w) // STRIDE)
            c1 = max(c0 + 1, int((x1 + 0.75 * w) // STRIDE))
            r0 = int((y1 + 0.25 * h) // STRIDE)
            r1 = max(r0 + 1, int((y1 + 0.75 * h) // STRIDE))
            rows = slice(r0, min(r1, GRID_H))
            cols = slice(c0, min(c1, GRID_W))
            noisy = np.array([x1, y1, x1 + w, y1 + h]) + rng.normal(0, 2.0, (GRID_H, GRID_W, 4))
            enc = encode_boxes(noisy, GRID_H, GRID_W, stride=STRIDE)
            patch = covered[rows, cols]
            cov[0, c][rows, cols] = rng.uniform(0.05, 0.95, patch.shape)
            bbox[0, 4 * c:4 * c + 4, rows, cols] = enc[:, rows, cols]
            covered[rows, cols] = True
    return cov, bbox


def python_decode(cov: np.ndarray, bbox: np.ndarray, threshold: float) -> list[list[tuple]]:
    """Baseline: per-cell Python loops that decode and threshold (no clustering)."""
    out = []
    n, c, h, w = cov.shape
    covl = cov.tolist()
    bbl = bbox.tolist()
    for img in range(n):
        for k in range(c):
            cands = []
            plane = covl[img][k]
            for j in range(h):
                y = j * STRIDE + 0.5
                for i in range(w):
                    v = plane[j][i]
                    if v > threshold:
                        x = i * STRIDE + 0.5
                        b = bbl[img]
                        cands.append((x - 35.0 * b[4 * k][j][i], y - 35.0 * b[4 * k + 1][j][i],
                                      x + 35.0 * b[4 * k + 2][j][i], y + 35.0 * b[4 * k + 3][j][i], v))
            out.append(cands)
    return out


def vector_decode(cov: np.ndarray, bbox: np.ndarray, threshold: float) -> list[np.ndarray]:
    boxes = decode_grids(cov, bbox, stride=STRIDE)
    mask = cov > threshold
    return [boxes[0, k][mask[0, k]] for k in range(cov.shape[1])]


def best_time(fn, frames: list, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for cov, bbox in frames:
            fn(cov, bbox)
        best = min(best, (time.perf_counter() - t0) / len(frames))
    return best * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20, help="synthetic frames per coverage level")
    parser.add_argument("--repeat", type=int, default=3, help="timing repeats (best is reported)")
    parser.add_argument("--levels", default="0.01,0.05,0.2", help="fractions of cells above threshold")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    base = ClusteringParams(coverage_threshold=THRESHOLD, minimum_bounding_box_height=4, dbscan_eps=0.3,
                            dbscan_min_samples=0.05, dbscan_confidence_threshold=0.1, nms_iou_threshold=0.3,
                            nms_confidence_threshold=0.1)
    header = (f"{'cells':>6} {'algorithm':>14} {'cand/frame':>10} {'dets/frame':>10} {'tltk ms':>8} "
              f"{'decode ms':>9} {'python ms':>9} {'ratio':>6}")
    print(f"DetectNet_v2 postprocess, {WIDTH}x{HEIGHT} input ({GRID_H}x{GRID_W} grid), {len(CLASSES)} classes, "
          f"{args.frames} frames, best of {args.repeat}")
    print("baseline 'python ms' = pure-Python per-cell decode + threshold loop (no clustering); "
          "ratio = python ms / tltk ms")
    print(header)
    print("-" * len(header))
    for level in (float(v) for v in args.levels.split(",")):
        frames = [synthetic_frame(rng, level) for _ in range(args.frames)]
        cands = np.mean([(cov > THRESHOLD).sum() for cov, _ in frames])
        t_py = best_time(lambda c, b: python_decode(c, b, THRESHOLD), frames, args.repeat)
        t_dec = best_time(lambda c, b: vector_decode(c, b, THRESHOLD), frames, args.repeat)
        for label, algorithm, backend in RUNS:
            params = {"default": replace(base, algorithm=algorithm)}
            dets = np.mean([sum(len(d) for d in postprocess(c, b, CLASSES, params, dbscan_backend=backend))
                            for c, b in frames])
            t = best_time(lambda c, b, p=params, k=backend: postprocess(
                c, b, CLASSES, p, stride=STRIDE, image_size=(WIDTH, HEIGHT), dbscan_backend=k), frames, args.repeat)
            print(f"{level * 100:5.0f}% {label:>14} {cands:10.0f} {dets:10.1f} {t:8.2f} {t_dec:9.3f} "
                  f"{t_py:9.2f} {t_py / t:6.2f}")


if __name__ == "__main__":
    main()
