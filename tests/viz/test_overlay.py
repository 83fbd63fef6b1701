"""Detection overlays: box borders in the class colour, TAO's line width rule, label formats, masks, saving."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tltk.errors import InvalidInputError
from tltk.viz.overlay import MASK_RCNN_LABEL_FORMAT, OverlayBox, draw_boxes, format_label, save_overlay

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


def test_label_formats_are_taos() -> None:
    assert format_label("car", 0.91234) == "car:0.912"  # DetectNet_v2 inference
    assert format_label("person", 0.9271, MASK_RCNN_LABEL_FORMAT) == "person: 0.93"  # MaskRCNN
    assert format_label("car", None) == "car"
    black = np.zeros((80, 100, 3), np.uint8)
    detectnet = np.asarray(draw_boxes(black, [_box()], draw_text=True))
    mask_rcnn = np.asarray(draw_boxes(black, [_box()], draw_text=True, label_format=MASK_RCNN_LABEL_FORMAT))
    assert (detectnet != mask_rcnn).any()  # "car:0.900" and "car: 0.90" render differently


def test_masks_are_blended_and_pixels_outside_untouched() -> None:
    image = np.full((20, 30, 3), 100, np.uint8)
    image[:, :, 2] = 10
    first = np.zeros((20, 30), bool)
    first[2:6, 3:9] = True
    second = np.zeros((20, 30), np.uint8)
    second[10:15, 20:25] = 1
    boxes = [_box(x1=3, y1=2, x2=8, y2=5, color=(200, 0, 50), mask=first),
             _box(x1=20, y1=10, x2=24, y2=14, color=(0, 250, 0), mask=second)]
    out = np.asarray(draw_boxes(image, boxes, linewidth=0, draw_text=False, mask_alpha=0.4))
    # Inside the outlines: 0.6 * pixel + 0.4 * colour.
    assert tuple(out[3, 5]) == (140, 60, 26)  # 0.6*(100,100,10) + 0.4*(200,0,50)
    assert tuple(out[12, 22]) == (60, 160, 6)  # 0.6*(100,100,10) + 0.4*(0,250,0)
    # The outline is drawn on top of the mask.
    assert tuple(out[2, 5]) == (200, 0, 50)
    outside = np.ones((20, 30), bool)
    outside[2:6, 3:9] = False
    outside[10:15, 20:25] = False
    np.testing.assert_array_equal(out[outside], image[outside])
    assert tuple(image[3, 5]) == (100, 100, 10)  # the input is left alone
    opaque = np.asarray(draw_boxes(image, boxes[:1], linewidth=0, draw_text=False, mask_alpha=1.0))
    assert tuple(opaque[3, 5]) == (200, 0, 50)


def test_mask_problems_are_rejected(tmp_path) -> None:
    image = np.zeros((10, 10, 3), np.uint8)
    with pytest.raises(InvalidInputError, match=r"mask of box 0 \(car\) has shape \(5, 5\)"):
        draw_boxes(image, [_box(mask=np.ones((5, 5), bool))])
    with pytest.raises(InvalidInputError, match="mask_alpha"):
        draw_boxes(image, [_box()], mask_alpha=1.5)
    with pytest.raises(InvalidInputError, match="unknown extension"):
        save_overlay(image, [_box()], tmp_path / "a.txt")
    assert list(tmp_path.iterdir()) == []
    jpg = save_overlay(image, [_box(x1=1, y1=1, x2=8, y2=8, mask=np.ones((10, 10), bool))], tmp_path / "a.jpg")
    assert Image.open(jpg).format == "JPEG" and sorted(p.name for p in tmp_path.iterdir()) == ["a.jpg"]
