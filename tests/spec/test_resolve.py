"""Resolved spec writer: defaults filled in, atomic write, lossless round trip."""

from __future__ import annotations

from pathlib import Path

from tltk.models import load_spec
from tltk.spec import fill_defaults, resolved_text, write_resolved_spec


def test_round_trip_with_defaults_filled(repo_root: Path, tmp_path: Path) -> None:
    src = repo_root / "specs" / "detectnet_v2" / "label_filter_experiment.txt"
    loaded = load_spec(src, model="detectnet_v2")
    out = tmp_path / "deep" / "resolved.txt"
    write_resolved_spec(loaded.message, out)
    assert not [p for p in out.parent.iterdir() if p.name != "resolved.txt"]  # no temp file left
    text = out.read_text()
    assert text.startswith("# Resolved tltk.detectnet_v2.Experiment spec")
    # unset scalars of present blocks are written with their defaults
    assert "rotate_probability: 1.0" in text and "vflip_probability: 0.0" in text
    assert "checkpoint_interval: 10" in text
    # absent blocks stay absent, unselected oneof members stay unset
    assert "visualizer" not in text and "early_stopping_annealing_schedule" not in text
    again = load_spec(out, model="detectnet_v2", kind="experiment")
    assert again.message == fill_defaults(loaded.message)
    # every field reads the same as in the original
    assert resolved_text(again.message) == resolved_text(loaded.message)


def test_round_trip_mask_rcnn_sparse_spec(tmp_path: Path) -> None:
    src = tmp_path / "sparse.txt"
    src.write_text('data_config { num_classes: 2 image_size: "(576, 960)" }\nmaskrcnn_config { }\n')
    loaded = load_spec(src, model="mask_rcnn")
    out = tmp_path / "resolved.txt"
    write_resolved_spec(loaded.message, out, header="")
    text = out.read_text()
    assert 'aspect_ratios: "[(1.0, 1.0), (1.4, 0.7), (0.7, 1.4)]"' in text
    assert "rpn_positive_overlap: 0.7" in text and "seed: 123" in text
    again = load_spec(out, model="mask_rcnn")
    assert again.message == fill_defaults(loaded.message)
    assert again.message.maskrcnn_config.test_detections_per_image == 100
