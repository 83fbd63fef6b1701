"""INT8 calibration data for MaskRCNN: batches preprocessed exactly as inference preprocesses.

Every source goes through :func:`tltk.mask_rcnn.dataloader.letterbox` (resize keeping the
aspect ratio, TAO's normalization, zero padding bottom/right): TAO's calibrator stretched
images to the network size instead, a mismatch with its own training we do not copy.

Sources, as ``export`` chooses them (:func:`calibration_batches`):

* an image folder (``--cal_image_dir``): images drawn at random (seeded) from the folder;
* a TensorFile (``--cal_data_file``) in TAO's layout, read with :mod:`tltk.data.tensorfile`;
  when it does not exist yet it is written first, from the image folder if one is given,
  otherwise from the training data loader;
* neither: the training data loader (no augmentation, shuffled).

Batches are float32 ``[N, 3, H, W]`` (``H, W`` = ``data_config.image_size``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import numpy as np

from tltk.errors import InvalidInputError, UsageError
from tltk.mask_rcnn.dataloader import MaskRCNNData, preprocess_image

log = logging.getLogger(__name__)

__all__ = ["preprocess_file", "loader_batches", "calibration_batches"]


def preprocess_file(path: str | os.PathLike[str], image_size: tuple[int, int]) -> np.ndarray:
    """Network input of one image file.

    Args:
        path: a JPEG/PNG/... file (decoded to RGB).
        image_size: network input ``(H, W)``.

    Returns:
        float32 ``[3, H, W]``.

    Raises:
        InvalidInputError: the file is missing or not an image.
    """
    from tltk.data.images import load_image

    chw, _ = preprocess_image(load_image(path, 3), image_size)
    return chw


def loader_batches(data: MaskRCNNData, batch_size: int, batches: int, split: str = "train") -> Iterator[np.ndarray]:
    """Calibration batches from the data loader: no flips, records shuffled (seeded).

    Args:
        data: the experiment's data.
        batch_size: images per batch.
        batches: number of batches.
        split: ``train`` (default) or ``val``.

    Returns:
        An iterator of float32 ``[batch_size, 3, H, W]`` arrays.

    Raises:
        UsageError: ``batch_size`` or ``batches`` below 1.
        InvalidInputError: the split has fewer images than one batch.
    """
    if batch_size < 1 or batches < 1:
        raise UsageError(f"--batch_size and --batches must be >= 1 (got {batch_size}, {batches})")
    available = data.num_examples(split)
    if available < batch_size:
        raise InvalidInputError(f"the {split} TFRecords hold {available} image(s), fewer than one calibration batch "
                                f"of {batch_size}", hint="lower --batch_size or give --cal_image_dir")
    if available < batch_size * batches:
        log.warning("the %s data has %d images, fewer than --batches x --batch_size = %d; images repeat", split,
                    available, batch_size * batches)
    dataset = data.dataset(split, batch_size=batch_size, training=False, repeat=True, shuffle=True, output="images")
    for images in dataset.take(batches):
        yield np.ascontiguousarray(images.numpy(), dtype=np.float32)


def calibration_batches(data: MaskRCNNData, cal_data_file: str | os.PathLike[str] | None = None,
                        cal_image_dir: str | os.PathLike[str] | None = None, batch_size: int = 8,
                        batches: int = 10) -> Iterator[np.ndarray]:
    """The calibration batches ``export`` feeds the calibrator (see the module docstring).

    Args:
        data: the experiment's data (image size, training loader).
        cal_data_file: TensorFile to read, or to create when missing.
        cal_image_dir: folder of calibration images.
        batch_size: images per batch.
        batches: number of batches.

    Returns:
        An iterator of float32 ``[batch_size, 3, H, W]`` arrays.

    Raises:
        UsageError: ``batch_size`` or ``batches`` below 1.
        InvalidInputError: unreadable TensorFile, too few images.
    """
    from tltk.export.pipeline import (
        calibration_batches_from_tensorfile,
        prepare_calibration_batches,
        write_calibration_tensorfile,
    )

    size = data.image_size

    def preprocess(path: str) -> np.ndarray:
        return preprocess_file(path, size)

    if cal_image_dir:
        prepared = prepare_calibration_batches(cal_data_file, cal_image_dir, batch_size, batches, preprocess)
        assert prepared is not None
        return prepared
    if cal_data_file and not os.path.exists(cal_data_file):
        written = write_calibration_tensorfile(loader_batches(data, batch_size, batches), cal_data_file)
        log.info("wrote calibration TensorFile %s (%d batches of %d from the training data)", os.fspath(cal_data_file),
                 written, batch_size)
    if cal_data_file:
        return calibration_batches_from_tensorfile(cal_data_file, batch_size, batches)
    return loader_batches(data, batch_size, batches)
