#!/usr/bin/env python3
"""CLI start-up time: `tltk --help` (and a subtask's --help) against `import tensorflow`.

Prints a table of median wall times over several runs and the ratio to the TensorFlow import,
the baseline every TensorFlow-based CLI pays.  Target: well under 0.2 (a fraction of it).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

RUNS = 5


def _time(argv: list[str]) -> float:
    samples = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    py = sys.executable
    baseline = _time([py, "-c", "import tensorflow"])
    rows = [
        ("python -c 'import tensorflow' (baseline)", baseline),
        ("tltk --help", _time([py, "-m", "tltk", "--help"])),
        ("tltk detectnet_v2 --help", _time([py, "-m", "tltk", "detectnet_v2", "--help"])),
        ("tltk detectnet_v2 train --help", _time([py, "-m", "tltk", "detectnet_v2", "train", "--help"])),
    ]
    print(f"{'command':45s} {'median s':>9s} {'ratio':>7s}")
    for name, seconds in rows:
        print(f"{name:45s} {seconds:9.3f} {seconds / baseline:7.3f}")


if __name__ == "__main__":
    main()
