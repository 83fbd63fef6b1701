"""Reading images into network input: the one preprocessing used by inference and calibration.

A model's :class:`Preprocessing` (given by its Task) says how an 8-bit RGB image becomes the
network's NCHW float input: resized to the network size (stretched, or letterboxed: aspect
kept, padded bottom/right), then ``(pixel - mean[c]) / std[c]``.  The same object gives
DeepStream's ``net-scale-factor`` and ``offsets`` and maps detections back to original pixels.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

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


#: Image formats TensorFlow's PNG/JPEG decoders read (the training loaders decode with them).
LOADER_FORMATS = ("PNG", "JPEG", "GIF")


def verify_image(path: str | os.PathLike[str]) -> tuple[int, int]:
    """Decode an image file completely, as a training loader will, and return its size.

    Opening an image only reads its header; a truncated or corrupt file then fails in the
    middle of training.  This decodes every pixel, so such files are found before.

    Args:
        path: the image file.

    Returns:
        ``(width, height)`` in pixels.

    Raises:
        InvalidInputError: the file is missing, cannot be decoded (truncated, corrupt), or is
            in a format the loaders cannot decode (not PNG, JPEG or GIF); the message names the
            file and the reason.
    """
    from PIL import Image

    source = os.fspath(path)
    try:
        with Image.open(source) as img:
            fmt = str(img.format or "unknown")
            if fmt not in LOADER_FORMATS:
                raise InvalidInputError(f"{source}: a {fmt} image; the training loader decodes "
                                        f"{', '.join(LOADER_FORMATS)} only",
                                        hint="convert it to PNG or JPEG")
            img.load()
            return int(img.size[0]), int(img.size[1])
    except InvalidInputError:
        raise
    except Exception as exc:  # PIL raises many types for broken files
        raise InvalidInputError(f"{source}: cannot decode the image ({exc})") from exc


#: Marker of the error :func:`assert_decodable` raises inside a ``tf.data`` pipeline.
UNDECODABLE_IMAGE_MARKER = "tltk: undecodable image file:"

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"
_JPEG_START = b"\xff\xd8"
_TAIL_BYTES = 1024


def assert_decodable(contents: Any, path: Any) -> Any:
    """Check in a ``tf.data`` pipeline that image bytes are a complete PNG or JPEG file.

    TensorFlow's decoders report a truncated file without its name; this check runs before
    decoding and fails with :data:`UNDECODABLE_IMAGE_MARKER` and the path, which
    :func:`undecodable_image_path` finds in the error message.  It looks at the first bytes
    (PNG or JPEG signature, or GIF) and, for PNG, for the ``IEND`` chunk in the last 1024 bytes.
    JPEG files may legitimately carry kilobytes after their end marker, so a truncated JPEG,
    like a file corrupt inside, is left to the decoder (``dataset_convert`` decodes every image
    and skips such files before training; :func:`verify_image`).

    Args:
        contents: scalar ``tf.string`` tensor, the file's bytes.
        path: scalar ``tf.string`` tensor, the file's path (for the message).

    Returns:
        ``contents``, with the check as a control dependency.
    """
    import tensorflow as tf

    size = tf.strings.length(contents)
    tail = tf.strings.substr(contents, tf.maximum(size - _TAIL_BYTES, 0), _TAIL_BYTES)

    def ends_with_marker(marker: bytes) -> Any:
        return tf.size(tf.strings.split(tail, marker)) > 1

    head = tf.strings.substr(contents, 0, 8)
    is_png = tf.equal(head, _PNG_SIGNATURE)
    is_jpeg = tf.equal(tf.strings.substr(head, 0, 2), _JPEG_START)
    is_gif = tf.equal(tf.strings.substr(head, 0, 3), b"GIF")
    complete = tf.logical_or(tf.logical_or(is_gif, is_jpeg), tf.logical_and(is_png, ends_with_marker(_PNG_END)))
    check = tf.debugging.Assert(complete, [UNDECODABLE_IMAGE_MARKER, path, "(truncated, or not a PNG or JPEG file)"])
    with tf.control_dependencies([check]):
        return tf.identity(contents)


def undecodable_image_path(message: str) -> str | None:
    """The path named by an :func:`assert_decodable` failure in a TensorFlow error message, else None."""
    at = message.find(UNDECODABLE_IMAGE_MARKER)
    if at < 0:
        return None
    rest = message[at + len(UNDECODABLE_IMAGE_MARKER):]
    start = rest.find("[")
    end = rest.find("]", start + 1)
    return rest[start + 1:end] if 0 <= start < end else None


@dataclass(frozen=True)
class ImageTransform:
    """Where an original image sits in the network input.

    Attributes:
        original_hw: ``(height, width)`` of the original image in pixels.
        scaled_hw: ``(height, width)`` of the resized image inside the network input (before
            padding; the whole input when stretching).
        scale_yx: network pixels per original pixel, vertically and horizontally.
    """

    original_hw: tuple[int, int]
    scaled_hw: tuple[int, int]
    scale_yx: tuple[float, float]

    def to_original(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """Map ``[..., 4]`` boxes (x1, y1, x2, y2) from network pixels to original pixels, clipped."""
        boxes = np.asarray(boxes_xyxy, dtype=np.float64).copy()
        sy, sx = self.scale_yx
        boxes[..., 0::2] /= sx
        boxes[..., 1::2] /= sy
        h, w = self.original_hw
        boxes[..., 0::2] = np.clip(boxes[..., 0::2], 0, w)
        boxes[..., 1::2] = np.clip(boxes[..., 1::2], 0, h)
        return boxes


@dataclass(frozen=True)
class Preprocessing:
    """An 8-bit image -> network input: resize, then ``(pixel - mean[c]) / std[c]``, NCHW.

    Attributes:
        input_chw: network input ``(C, H, W)``; C is 3 (RGB) or 1 (grey).
        mean: per-channel value subtracted, in 8-bit pixel units.
        std: per-channel divisor, in 8-bit pixel units.
        letterbox: keep the aspect ratio (scale = min(H/h, W/w), scaled size floored) and pad
            bottom/right with zeros after normalisation; else stretch to (W, H).
    """

    input_chw: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    letterbox: bool = False

    @property
    def net_scale_factor(self) -> float:
        """DeepStream's single ``net-scale-factor`` (1 / std; its channels must share one std)."""
        if len(set(self.std)) != 1:
            raise ValueError(f"DeepStream has one scale factor; this preprocessing has per-channel std {self.std}")
        return 1.0 / float(self.std[0])

    @property
    def offsets(self) -> tuple[float, ...]:
        """DeepStream's per-channel ``offsets`` (the mean, 8-bit units)."""
        return tuple(float(m) for m in self.mean)

    def transform_for(self, original_hw: tuple[int, int]) -> ImageTransform:
        """Where an image of ``original_hw`` lands in the network input."""
        _, height, width = self.input_chw
        h, w = int(original_hw[0]), int(original_hw[1])
        if not self.letterbox:
            return ImageTransform((h, w), (height, width), (height / h, width / w))
        scale = min(height / h, width / w)
        scaled = (min(height, max(1, math.floor(scale * h))), min(width, max(1, math.floor(scale * w))))
        return ImageTransform((h, w), scaled, (scale, scale))

    def apply(self, image: np.ndarray) -> tuple[np.ndarray, ImageTransform]:
        """Preprocess one uint8 ``(h, w, C)`` image.

        Returns:
            ``(chw, transform)``: float32 ``(C, H, W)`` network input and where the image sits in it.
        """
        from PIL import Image

        c, height, width = self.input_chw
        transform = self.transform_for((image.shape[0], image.shape[1]))
        sh, sw = transform.scaled_hw
        if (image.shape[0], image.shape[1]) != (sh, sw):
            pil = Image.fromarray(image[:, :, 0] if c == 1 else image)
            image = np.asarray(pil.resize((sw, sh), Image.BILINEAR), dtype=np.uint8)
            if c == 1:
                image = image[:, :, None]
        mean = np.asarray(self.mean, np.float32).reshape(c, 1, 1)
        std = np.asarray(self.std, np.float32).reshape(c, 1, 1)
        chw = (image.transpose(2, 0, 1).astype(np.float32) - mean) / std
        if (sh, sw) != (height, width):
            padded = np.zeros((c, height, width), np.float32)
            padded[:, :sh, :sw] = chw
            chw = padded
        return np.ascontiguousarray(chw, dtype=np.float32), transform

    def load(self, path: str | os.PathLike[str]) -> tuple[np.ndarray, ImageTransform]:
        """:func:`load_image` then :meth:`apply`."""
        return self.apply(load_image(path, self.input_chw[0]))

    def batch(self, paths: list[str]) -> np.ndarray:
        """``[N, C, H, W]`` float32 batch of image files (calibration)."""
        return np.stack([self.load(p)[0] for p in paths])


def list_images(input_path: str | os.PathLike[str]) -> list[str]:
    """The images to run on: one file, or a folder's image files sorted by name.

    Files in a folder are kept when their lower-cased extension is one of
    :data:`tltk.data.images.IMAGE_EXTENSIONS` (``.jpg .jpeg .png .ppm .bmp``); sub-folders are
    not searched.

    Args:
        input_path: an image file or a folder.

    Returns:
        Absolute image paths.

    Raises:
        InvalidInputError: the path does not exist, a folder holds no image, or two images
            share a file stem (their label files would collide).
    """
    path = os.fspath(input_path)
    if os.path.isfile(path):
        return [os.path.abspath(path)]
    if not os.path.isdir(path):
        raise InvalidInputError(f"-i: {path}: no such image file or folder")
    files = sorted(os.path.join(path, f) for f in os.listdir(path)
                   if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS and os.path.isfile(os.path.join(path, f)))
    if not files:
        raise InvalidInputError(f"-i: {path} holds no image ({' '.join(IMAGE_EXTENSIONS)})")
    stems: dict[str, str] = {}
    clashes = []
    for f in files:
        stem = os.path.splitext(os.path.basename(f))[0]
        if stem in stems:
            clashes.append(f"{os.path.basename(stems[stem])} and {os.path.basename(f)}")
        stems[stem] = f
    if clashes:
        raise InvalidInputError(f"-i: images with the same name would write the same label file: {'; '.join(clashes)}",
                                hint="rename one of each pair")
    return [os.path.abspath(f) for f in files]
