"""Detection overlays: box borders in the class colour, TAO's line width rule, labels, saving."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tltk.errors import InvalidInputError
from tltk.viz.overlay import OverlayBox, draw_boxes, save_overlay

COLOR = (12, 200, 34)


def _box(**kw) -> OverlayBox:
    values = {"label": "car", "x1": 20, "y1": 30, "x2": 70, "y2": 60, "confidence": 0.9, "color": COLOR}
    values.update(kw)
    return OverlayBox(**values)


def test_border_pixels_take_the_box_colour_and_grow_with_linewidth() -> None:
    black = np.zeros((80, 100, 3), np.uint8)
    out = np.asarray(draw_boxes(black, [_box()], linewidth=2, draw_text=False))
    for x, y in ((20, 45), (70, 45), (45, 30), (45, 60), (19, 45), (71, 45), (45, 29), (45, 61)):
        assert tuple(out[y, x]) == COLOR, (x, y)
    for x, y in ((18, 45), (72, 45), (45, 45), (45, 28)):
        assert tuple(out[y, x]) == (0, 0, 0), (x, y)
    assert not black.any()  # the input is left alone


def test_label_text_is_drawn_at_the_top_left_corner() -> None:
    black = np.zeros((80, 100, 3), np.uint8)
    plain = np.asarray(draw_boxes(black, [_box()], linewidth=1, draw_text=False))
    labelled = np.asarray(draw_boxes(black, [_box()], linewidth=1))
    changed = np.argwhere(np.any(plain != labelled, axis=2))
    assert changed.size and changed[:, 0].min() >= 30 and changed[:, 1].min() >= 20  # text starts at (x1, y1)


def test_degenerate_box_is_not_outlined_and_grey_images_are_drawn_in_rgb(tmp_path) -> None:
    grey = np.full((40, 40, 1), 100, np.uint8)
    out = np.asarray(draw_boxes(grey, [_box(x1=10, y1=10, x2=10, y2=30)], linewidth=0, draw_text=False))
    assert out.shape == (40, 40, 3) and (out == 100).all()
    path = save_overlay(Image.fromarray(grey[:, :, 0]), [_box(x1=5, y1=5, x2=30, y2=30)], tmp_path / "o" / "a.png")
    saved = np.asarray(Image.open(path).convert("RGB"))
    assert tuple(saved[20, 5]) == COLOR and tuple(saved[20, 20]) == (100, 100, 100)


def test_bad_colour_and_linewidth_are_rejected() -> None:
    image = np.zeros((10, 10, 3), np.uint8)
    with pytest.raises(InvalidInputError, match="0..255"):
        draw_boxes(image, [_box(color=(0, 300, 0))])
    with pytest.raises(InvalidInputError, match="overlay_linewidth"):
        draw_boxes(image, [_box()], linewidth=-1)
