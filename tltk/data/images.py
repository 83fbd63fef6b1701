"""Reading images into network input: the one preprocessing used by inference and calibration."""

from __future__ import annotations

import os

import numpy as np

from tltk.errors import InvalidInputError

#: Image file extensions accepted by inference (lower case, with the dot).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp")


def load_image(path: str | os.PathLike[str], channels: int) -> np.ndarray:
    """Decode an image file.

    Args:
        path: the image file.
        channels: 3 (RGB) or 1 (grey).

    Returns:
        uint8 array (H, W, channels).

    Raises:
        InvalidInputError: the file is missing or not a readable image.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("RGB" if channels == 3 else "L")
            array = np.asarray(img, dtype=np.uint8)
    except (OSError, UnidentifiedImageError) as exc:
        raise InvalidInputError(f"{os.fspath(path)}: cannot read the image ({exc})") from exc
    return array if channels == 3 else array[:, :, None]


def to_network_input(image: np.ndarray, input_chw: tuple[int, int, int]) -> np.ndarray:
    """Resize (bilinear) to the network's (W, H), scale to [0, 1] and make it CHW float32.

    Args:
        image: uint8 (h, w, C) image.
        input_chw: network input (C, H, W).

    Returns:
        float32 array (C, H, W) with values in [0, 1].
    """
    from PIL import Image

    c, h, w = input_chw
    if image.shape[0] != h or image.shape[1] != w:
        pil = Image.fromarray(image[:, :, 0] if c == 1 else image)
        image = np.asarray(pil.resize((w, h), Image.BILINEAR), dtype=np.uint8)
        if c == 1:
            image = image[:, :, None]
    return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32) / 255.0


def preprocess_file(path: str | os.PathLike[str], input_chw: tuple[int, int, int]) -> np.ndarray:
    """``load_image`` then ``to_network_input``: (C, H, W) float32 in [0, 1]."""
    return to_network_input(load_image(path, input_chw[0]), input_chw)
