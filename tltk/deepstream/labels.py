"""DeepStream labels files (``labelfile-path``).

* Detectors (DetectNet_v2): one class name per line, in network output order, which is the order of
  ``cost_function_config.target_classes`` in the training spec.  No background line.
* Instance segmentation (MaskRCNN): ``BG`` on the first line, then the category names in class-id
  order; ``num-detected-classes`` counts the ``BG`` line.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from tltk.errors import UsageError
from tltk.fileio import atomic_write_bytes

BACKGROUND_LABEL = "BG"


def _check(names: Sequence[str]) -> list[str]:
    result = []
    for index, name in enumerate(names):
        text = str(name)
        if not text.strip() or "\n" in text or "\r" in text:
            raise UsageError(f"labels: class {index} has an invalid name {text!r} (must be non-empty, one line)")
        result.append(text)
    if not result:
        raise UsageError("labels: at least one class name is needed")
    return result


def detectnet_v2_labels(class_names: Sequence[str]) -> list[str]:
    """The DetectNet_v2 label lines: the class names in network channel order.

    Args:
        class_names: ``cost_function_config.target_classes`` names, in spec order.

    Returns:
        The lines (without newlines).
    """
    return _check(class_names)


def mask_rcnn_labels(class_names: Sequence[str]) -> list[str]:
    """The MaskRCNN label lines: ``BG`` then the category names in class-id order.

    Args:
        class_names: category names sorted by class id, without background (a leading ``BG`` is
            accepted and not repeated).

    Returns:
        The lines; their count equals ``num-detected-classes``.
    """
    names = _check(class_names) if class_names else []
    if names and names[0] == BACKGROUND_LABEL:
        names = names[1:]
    return [BACKGROUND_LABEL, *_check(names)]


def write_labels(path: str | os.PathLike[str], labels: Sequence[str]) -> None:
    """Write a labels file: one label per line, ``\\n`` line ends, trailing newline.

    Args:
        path: the file (folder created if needed).
        labels: the lines, e.g. from :func:`detectnet_v2_labels` or :func:`mask_rcnn_labels`.
    """
    lines = _check(labels)
    atomic_write_bytes(path, "".join(line + "\n" for line in lines).encode("utf-8"))
