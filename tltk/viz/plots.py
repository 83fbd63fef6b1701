"""Plots written as image files with matplotlib's Agg backend (no display needed).

matplotlib is imported inside the functions, so importing this module is free.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tltk.errors import InvalidInputError
from tltk.fileio import atomic_output


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(out, suffix=".tmp" + out.suffix) as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight", format=out.suffix.lstrip(".") or "png")
    return out


def plot_pr_curves(result: Any, path: str | os.PathLike[str], title: str | None = None) -> Path:
    """Precision-recall curves, one per class, with the class AP in the legend.

    Args:
        result: an :class:`tltk.metrics.detection_ap.EvaluationResult` (uses its
            ``pr_curves``, ``ap_per_class``, ``mean_ap`` and ``mode``).
        path: output image file (``.png``, ``.svg``, ``.pdf``); folders are created.
        title: plot title (default: the mAP and AP mode).

    Returns:
        The path written.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    try:
        for name, curve in result.pr_curves.items():
            ap = result.ap_per_class.get(name, 0.0)
            label = f"{name} (AP {ap * 100:.2f}%)"
            if len(curve.recall):
                ax.step(curve.recall, curve.precision, where="post", label=label)
            else:
                ax.plot([], [], label=f"{label}, no predictions")
        ax.set_xlim(0.0, 1.0)
        ax.set_ylim(0.0, 1.05)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title(title or f"mAP {result.mean_ap * 100:.2f}% ({result.mode})")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower left", fontsize="small")
        return _save(fig, path)
    finally:
        plt.close(fig)


def plot_curves(series: Mapping[str, Sequence[tuple[float, float]]], path: str | os.PathLike[str],
                xlabel: str, ylabel: str, title: str, log_y: bool = False) -> Path:
    """Line plot of named ``(x, y)`` series, e.g. losses or mAP against epochs.

    Args:
        series: ``{label: [(x, y), ...]}``; empty series are listed in the legend only.
        path: output image file (``.png``, ``.svg``, ``.pdf``); folders are created.
        xlabel: x axis label (e.g. ``"epoch"``).
        ylabel: y axis label (e.g. ``"loss"``).
        title: plot title.
        log_y: use a logarithmic y axis (positive values only).

    Returns:
        The path written.

    Raises:
        InvalidInputError: a point is not an ``(x, y)`` pair.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    try:
        for label, points in series.items():
            pts = list(points)
            if any(len(p) != 2 for p in pts):
                raise InvalidInputError(f"series {label!r}: every point must be an (x, y) pair")
            xs = [float(p[0]) for p in pts]
            ys = [float(p[1]) for p in pts]
            ax.plot(xs, ys, marker="o" if len(pts) < 30 else None, markersize=3, label=label)
        if log_y:
            ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        if series:
            ax.legend(fontsize="small")
        return _save(fig, path)
    finally:
        plt.close(fig)
