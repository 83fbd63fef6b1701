"""Detection overlays drawn with Pillow: translucent instance masks, boxes in a class colour, labels.

This is how TAO's DetectNet_v2 ``inference`` renders ``images_annotated/``: for every box a
rectangle outline in the class's ``bbox_color`` (only when the box has a positive width and
height), then ``overlay_linewidth`` further outlines grown by 0, 1, ..., linewidth - 1 pixels,
then the label text at the box's top-left corner in Pillow's default font.  The label format
is TAO's per model: DetectNet_v2 writes ``<name>:<confidence with 3 decimals>``
(:data:`DETECTNET_V2_LABEL_FORMAT`, the default), MaskRCNN ``<name>: <confidence with 2
decimals>`` (:data:`MASK_RCNN_LABEL_FORMAT`).

Instances may carry a mask (MaskRCNN): every mask is blended into the image first, in the
instance's colour with opacity ``mask_alpha`` (0.4 as TAO), ``out = (1 - alpha) * pixel +
alpha * colour`` on mask pixels only; boxes and labels are drawn on top.  Pillow is imported
inside the functions, so importing this module is free.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tltk.errors import InvalidInputError
from tltk.fileio import atomic_output

RGB = tuple[int, int, int]

#: TAO DetectNet_v2's overlay label: ``car:0.912``.
DETECTNET_V2_LABEL_FORMAT = "{label}:{confidence:.3f}"

#: TAO MaskRCNN's overlay label: ``person: 0.91``.
MASK_RCNN_LABEL_FORMAT = "{label}: {confidence:.2f}"

#: Opacity of instance masks (TAO MaskRCNN's 0.4).
DEFAULT_MASK_ALPHA = 0.4

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
    """One box (and optionally its instance mask) to draw.

    Attributes:
        label: text written at the top-left corner (e.g. the class's ``output_map``).
        x1: left edge, pixels of the image drawn on.
        y1: top edge, pixels.
        x2: right edge, pixels.
        y2: bottom edge, pixels.
        confidence: written after the label in the drawing's label format (None: the
            label alone).
        color: outline and mask colour ``(R, G, B)``, each 0..255 (one per class).
        mask: ``[H, W]`` bool or integer array the size of the image drawn on; non-zero
            pixels belong to the instance (None: no mask).
    """

    label: str
    x1: float
    y1: float
    x2: float
    y2: float
    confidence: float | None
    color: RGB
    mask: np.ndarray | None = field(default=None, compare=False, repr=False)


def format_label(label: str, confidence: float | None, label_format: str = DETECTNET_V2_LABEL_FORMAT) -> str:
    """The text drawn for one box.

    Args:
        label: the class name to show.
        confidence: the detection confidence (None: the label alone).
        label_format: a ``str.format`` pattern with ``{label}`` and ``{confidence}``.

    Returns:
        e.g. ``car:0.912`` (DetectNet_v2) or ``person: 0.91`` (MaskRCNN).
    """
    return label if confidence is None else label_format.format(label=label, confidence=float(confidence))


def _check_color(color: Sequence[int]) -> RGB:
    values = tuple(int(c) for c in color)
    if len(values) != 3 or any(not 0 <= c <= 255 for c in values):
        raise InvalidInputError(f"overlay colour {tuple(color)!r} is not three values in 0..255")
    return values[0], values[1], values[2]


def _blend_masks(canvas: np.ndarray, boxes: Sequence[OverlayBox], alpha: float) -> np.ndarray:
    out = canvas.astype(np.float64)
    for index, box in enumerate(boxes):
        if box.mask is None:
            continue
        mask = np.asarray(box.mask)
        if mask.ndim == 3 and mask.shape[2] == 1:
            mask = mask[:, :, 0]
        if mask.shape != canvas.shape[:2]:
            raise InvalidInputError(f"mask of box {index} ({box.label}) has shape {mask.shape}, "
                                    f"but the image is {canvas.shape[:2]}",
                                    hint="paste each instance mask into a full-image [H, W] array first")
        inside = mask != 0
        out[inside] = (1.0 - alpha) * out[inside] + alpha * np.asarray(_check_color(box.color), np.float64)
    return np.rint(out).astype(np.uint8)


def draw_boxes(image: Any, boxes: Sequence[OverlayBox], linewidth: int = 1, draw_text: bool = True,
               label_format: str = DETECTNET_V2_LABEL_FORMAT, mask_alpha: float = DEFAULT_MASK_ALPHA) -> Any:
    """Draw instance masks, boxes and labels on a copy of an image, the way TAO's ``inference`` does.

    Args:
        image: a ``PIL.Image.Image`` or a uint8 array (H, W, 3) or (H, W) / (H, W, 1) (grey
            images are drawn on in RGB).
        boxes: the boxes, in the image's pixel coordinates; those with a ``mask`` have it
            blended in first.
        linewidth: number of outlines per box (``overlay_linewidth``); 0 draws only the first
            outline, like TAO.
        draw_text: write the label (see :func:`format_label`) at each box's top-left corner.
        label_format: :data:`DETECTNET_V2_LABEL_FORMAT` or :data:`MASK_RCNN_LABEL_FORMAT`
            (or any pattern with ``{label}`` and ``{confidence}``).
        mask_alpha: mask opacity in [0, 1].

    Returns:
        A new RGB ``PIL.Image.Image``; the input is not modified.

    Raises:
        InvalidInputError: a colour is out of range, ``linewidth`` is negative,
            ``mask_alpha`` is outside [0, 1] or a mask is not the image's size.
    """
    from PIL import Image, ImageDraw

    if linewidth < 0:
        raise InvalidInputError(f"overlay_linewidth must be >= 0, got {linewidth}")
    if not 0.0 <= mask_alpha <= 1.0:
        raise InvalidInputError(f"mask_alpha must be in [0, 1], got {mask_alpha}")
    if isinstance(image, np.ndarray):
        array = image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1 else image
        canvas = Image.fromarray(np.asarray(array, dtype=np.uint8)).convert("RGB")
    else:
        canvas = image.convert("RGB")
    if any(box.mask is not None for box in boxes):
        canvas = Image.fromarray(_blend_masks(np.asarray(canvas), boxes, float(mask_alpha)))
    draw = ImageDraw.Draw(canvas)
    for box in boxes:
        color = _check_color(box.color)
        x1, y1, x2, y2 = float(box.x1), float(box.y1), float(box.x2), float(box.y2)
        if x2 > x1 and y2 > y1:
            draw.rectangle([x1, y1, x2, y2], outline=color)
        for grow in range(linewidth):
            draw.rectangle([x1 - grow, y1 - grow, x2 + grow, y2 + grow], outline=color)
        if draw_text:
            draw.text((x1, y1), format_label(box.label, box.confidence, label_format))
    return canvas


def save_overlay(image: Any, boxes: Sequence[OverlayBox], path: str | os.PathLike[str], linewidth: int = 1,
                 label_format: str = DETECTNET_V2_LABEL_FORMAT, mask_alpha: float = DEFAULT_MASK_ALPHA) -> Path:
    """Draw masks and boxes (see :func:`draw_boxes`) and save the result atomically.

    Args:
        image: a ``PIL.Image.Image`` or uint8 array.
        boxes: the boxes (and masks), in the image's pixels.
        path: output file (``.png``, ``.jpg``, ``.ppm``, ``.bmp``...); the format follows the
            extension; its folder is created.
        linewidth: outlines per box.
        label_format: the label pattern (see :func:`draw_boxes`).
        mask_alpha: mask opacity in [0, 1].

    Returns:
        The path written.

    Raises:
        InvalidInputError: the extension is not an image format, or as :func:`draw_boxes`.
    """
    out = Path(path)
    drawn = draw_boxes(image, boxes, linewidth, label_format=label_format, mask_alpha=mask_alpha)
    fmt = _pil_format(out)
    with atomic_output(out) as tmp:
        drawn.save(tmp, format=fmt)
    return out


def _pil_format(path: Path) -> str:
    from PIL import Image

    Image.init()
    fmt = Image.EXTENSION.get(path.suffix.lower())
    if fmt is None:
        raise InvalidInputError(f"cannot write an overlay image named {path.name}: unknown extension {path.suffix!r}",
                                hint="use .png, .jpg, .bmp or .ppm")
    return fmt
