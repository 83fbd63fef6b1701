"""Detection overlays drawn with Pillow: boxes in a class colour and ``name:confidence`` labels.

This is how TAO's DetectNet_v2 ``inference`` renders ``images_annotated/``: for every box a
rectangle outline in the class's ``bbox_color`` (only when the box has a positive width and
height), then ``overlay_linewidth`` further outlines grown by 0, 1, ..., linewidth - 1 pixels,
then the text ``<name>:<confidence with 3 decimals>`` at the box's top-left corner in Pillow's
default font.  Pillow is imported inside the functions, so importing this module is free.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tltk.errors import InvalidInputError

RGB = tuple[int, int, int]

#: Colours used for classes whose spec entry sets no ``bbox_color`` (cycled by class index).
DEFAULT_PALETTE: tuple[RGB, ...] = (
    (0, 255, 0),
    (255, 0, 0),
    (0, 0, 255),
    (255, 255, 0),
    (255, 0, 255),
    (0, 255, 255),
    (255, 128, 0),
    (128, 0, 255),
)


@dataclass(frozen=True)
class OverlayBox:
    """One box to draw.

    Attributes:
        label: text written at the top-left corner (e.g. the class's ``output_map``).
        x1: left edge, pixels of the image drawn on.
        y1: top edge, pixels.
        x2: right edge, pixels.
        y2: bottom edge, pixels.
        confidence: printed with 3 decimals after the label (None: the label alone).
        color: outline colour ``(R, G, B)``, each 0..255.
    """

    label: str
    x1: float
    y1: float
    x2: float
    y2: float
    confidence: float | None
    color: RGB


def _check_color(color: Sequence[int]) -> RGB:
    values = tuple(int(c) for c in color)
    if len(values) != 3 or any(not 0 <= c <= 255 for c in values):
        raise InvalidInputError(f"overlay colour {tuple(color)!r} is not three values in 0..255")
    return values[0], values[1], values[2]


def draw_boxes(image: Any, boxes: Sequence[OverlayBox], linewidth: int = 1, draw_text: bool = True) -> Any:
    """Draw boxes on a copy of an image, the way TAO's ``inference`` does.

    Args:
        image: a ``PIL.Image.Image`` or a uint8 array (H, W, 3) or (H, W) / (H, W, 1) (grey
            images are drawn on in RGB).
        boxes: the boxes, in the image's pixel coordinates.
        linewidth: number of outlines per box (``overlay_linewidth``); 0 draws only the first
            outline, like TAO.
        draw_text: write ``label:confidence`` at each box's top-left corner.

    Returns:
        A new RGB ``PIL.Image.Image``; the input is not modified.

    Raises:
        InvalidInputError: a colour is out of range or ``linewidth`` is negative.
    """
    from PIL import Image, ImageDraw

    if linewidth < 0:
        raise InvalidInputError(f"overlay_linewidth must be >= 0, got {linewidth}")
    if isinstance(image, np.ndarray):
        array = image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1 else image
        canvas = Image.fromarray(np.asarray(array, dtype=np.uint8)).convert("RGB")
    else:
        canvas = image.convert("RGB")
    draw = ImageDraw.Draw(canvas)
    for box in boxes:
        color = _check_color(box.color)
        x1, y1, x2, y2 = float(box.x1), float(box.y1), float(box.x2), float(box.y2)
        if x2 > x1 and y2 > y1:
            draw.rectangle([x1, y1, x2, y2], outline=color)
        for grow in range(linewidth):
            draw.rectangle([x1 - grow, y1 - grow, x2 + grow, y2 + grow], outline=color)
        if draw_text:
            text = box.label if box.confidence is None else f"{box.label}:{box.confidence:.3f}"
            draw.text((x1, y1), text)
    return canvas


def save_overlay(image: Any, boxes: Sequence[OverlayBox], path: str | os.PathLike[str], linewidth: int = 1) -> Path:
    """Draw boxes (see :func:`draw_boxes`) and save the result; the format follows the extension.

    Args:
        image: a ``PIL.Image.Image`` or uint8 array.
        boxes: the boxes, in the image's pixels.
        path: output file (``.png``, ``.jpg``, ``.ppm``, ``.bmp``...); its folder is created.
        linewidth: outlines per box.

    Returns:
        The path written.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    draw_boxes(image, boxes, linewidth).save(out)
    return out
