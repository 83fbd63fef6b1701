"""PR-curve and generic line plots (matplotlib Agg)."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pytest

from tltk.errors import InvalidInputError
from tltk.metrics.detection_ap import EvaluationParams, GroundTruth, Prediction, compute_ap
from tltk.viz.plots import plot_curves, plot_pr_curves

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _result():
    gts = [[GroundTruth("car", 0, 0, 9, 9), GroundTruth("car", 50, 0, 59, 9)]]
    preds = [[Prediction("car", 0, 0, 9, 9, 0.9), Prediction("car", 200, 0, 209, 9, 0.8),
              Prediction("person", 0, 0, 9, 9, 0.5)]]
    return compute_ap(gts, preds, ["car", "person", "bicycle"],
                      EvaluationParams.uniform(["car", "person", "bicycle"], 0.5, "SAMPLE"))


def test_pr_curves_png(tmp_path: Path) -> None:
    out = plot_pr_curves(_result(), tmp_path / "plots" / "pr.png")
    data = out.read_bytes()
    assert out == tmp_path / "plots" / "pr.png"
    assert data.startswith(PNG_MAGIC) and len(data) > 5000
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["pr.png"]  # no temporary left


def test_pr_curve_legend_has_ap(tmp_path: Path) -> None:
    # car: precision 1, 1/2; recall 1/2, 1/2 -> SAMPLE AP 6/11 = 54.55 %.
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        out = plot_pr_curves(_result(), tmp_path / "pr.svg")
    text = out.read_text()
    assert "car (AP 54.55%)" in text
    assert "person (AP 0.00%)" in text
    assert "bicycle (AP 0.00%), no predictions" in text
    assert "mAP 18.18% (SAMPLE)" in text


def test_plot_curves(tmp_path: Path) -> None:
    series = {"train loss": [(1, 0.9), (2, 0.5), (3, 0.3)], "validation loss": [(1, 1.0), (3, 0.4)], "empty": []}
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        out = plot_curves(series, tmp_path / "loss.svg", "epoch", "loss", "Losses", log_y=True)
    text = out.read_text()
    for label in ("train loss", "validation loss", "epoch", "Losses"):
        assert label in text
    png = plot_curves(series, tmp_path / "loss.png", "epoch", "loss", "Losses")
    assert png.read_bytes().startswith(PNG_MAGIC)
    with pytest.raises(InvalidInputError, match="'bad'"):
        plot_curves({"bad": [(1, 2, 3)]}, tmp_path / "x.png", "x", "y", "t")  # type: ignore[list-item]
