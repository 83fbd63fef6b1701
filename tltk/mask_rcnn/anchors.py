"""MaskRCNN anchors with TAO's arithmetic (the data pipeline's RPN targets and the model share them).

For level ``l`` (stride ``s = 2**l``), octave ``o`` in ``0..num_scales-1`` and aspect pair
``(ax, ay)``::

    base   = anchor_scale * s * 2**(o / num_scales)
    half_w = base * ax / 2            half_h = base * ay / 2
    centre = (s/2 + i*s, s/2 + j*s)   for every cell (i, j) of the H/s x W/s grid
    box    = (yc - half_h, xc - half_w, yc + half_h, xc + half_w)   (pixels, not clipped)

So ``(1.4, 0.7)`` is a wide anchor (width 1.4*base, height 0.7*base).  Anchors are ordered
row-major by ``(y, x, anchor)`` with the anchor index ``o * len(aspect_ratios) + a`` innermost,
which is the order of an RPN head output reshaped from ``[B, H_l, W_l, A*k]`` to
``[B, H_l*W_l*A, k]``.  Defaults (scale 8, levels 2..6) give 32, 64, 128, 256, 512 px squares.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from google.protobuf.message import Message

from tltk.mask_rcnn import spec


@dataclass(frozen=True)
class AnchorConfig:
    """Anchor layout (``maskrcnn_config`` fields plus the network input size).

    Attributes:
        min_level: lowest pyramid level (stride ``2**min_level``).
        max_level: highest pyramid level.
        num_scales: octave scales per level.
        aspect_ratios: ``(x_factor, y_factor)`` pairs as in TAO's ``aspect_ratios`` string.
        anchor_scale: base anchor size in units of the level stride.
        image_size: network input ``(height, width)`` in pixels, divisible by ``2**max_level``.
    """

    min_level: int
    max_level: int
    num_scales: int
    aspect_ratios: list[tuple[float, float]]
    anchor_scale: float
    image_size: tuple[int, int]

    @property
    def levels(self) -> list[int]:
        """The pyramid levels, ascending."""
        return list(range(self.min_level, self.max_level + 1))

    @property
    def anchors_per_location(self) -> int:
        """A = num_scales * len(aspect_ratios)."""
        return self.num_scales * len(self.aspect_ratios)

    def feature_size(self, level: int) -> tuple[int, int]:
        """``(H_l, W_l)`` = image size divided by ``2**level``."""
        stride = 2**level
        return self.image_size[0] // stride, self.image_size[1] // stride

    @classmethod
    def from_experiment(cls, exp: Message) -> AnchorConfig:
        """The anchor layout of a loaded MaskRCNN ``Experiment`` (proto defaults apply).

        Raises:
            LiteralError: ``image_size`` or ``aspect_ratios`` is malformed.
        """
        mc = exp.maskrcnn_config
        return cls(
            min_level=int(mc.min_level),
            max_level=int(mc.max_level),
            num_scales=int(mc.num_scales),
            aspect_ratios=[(float(x), float(y)) for x, y in spec.aspect_ratios(exp)],
            anchor_scale=float(mc.anchor_scale),
            image_size=spec.image_size(exp),
        )


def anchor_sizes(cfg: AnchorConfig, level: int) -> np.ndarray:
    """Anchor heights and widths of one location, in anchor order.

    Args:
        cfg: the anchor layout.
        level: pyramid level.

    Returns:
        float64 ``[A, 2]`` of ``(height, width)`` in pixels.
    """
    stride = 2.0**level
    sizes = []
    for octave in range(cfg.num_scales):
        base = cfg.anchor_scale * stride * 2.0 ** (octave / cfg.num_scales)
        for ax, ay in cfg.aspect_ratios:
            sizes.append((base * ay, base * ax))
    return np.asarray(sizes, dtype=np.float64)


def generate_anchors(cfg: AnchorConfig) -> dict[int, np.ndarray]:
    """Anchor boxes of every level.

    Args:
        cfg: the anchor layout; ``image_size`` must be divisible by ``2**max_level``.

    Returns:
        level -> float32 ``[H_l * W_l * A, 4]`` boxes ``(y1, x1, y2, x2)`` in input pixels,
        row-major over ``(y, x, anchor)``.

    Raises:
        ValueError: the image size is not divisible by ``2**max_level`` or the layout is empty.
    """
    height, width = (int(v) for v in cfg.image_size)
    top = 2**cfg.max_level
    if height % top or width % top or height <= 0 or width <= 0:
        raise ValueError(f"image size ({height}, {width}) must be positive and divisible by 2^max_level = {top}")
    if cfg.min_level > cfg.max_level or cfg.anchors_per_location == 0:
        raise ValueError(f"empty anchor layout: levels {cfg.min_level}..{cfg.max_level}, "
                         f"{cfg.num_scales} scale(s), {len(cfg.aspect_ratios)} aspect ratio(s)")
    result: dict[int, np.ndarray] = {}
    for level in cfg.levels:
        stride = 2.0**level
        rows, cols = cfg.feature_size(level)
        yc = stride / 2 + stride * np.arange(rows, dtype=np.float64)
        xc = stride / 2 + stride * np.arange(cols, dtype=np.float64)
        half = anchor_sizes(cfg, level) / 2.0  # [A, 2] (half_h, half_w)
        yy = yc[:, None, None]
        xx = xc[None, :, None]
        boxes = np.stack(
            np.broadcast_arrays(
                yy - half[None, None, :, 0],
                xx - half[None, None, :, 1],
                yy + half[None, None, :, 0],
                xx + half[None, None, :, 1],
            ),
            axis=-1,
        )
        result[level] = boxes.reshape(-1, 4).astype(np.float32)
    return result


__all__ = ["AnchorConfig", "anchor_sizes", "generate_anchors"]
