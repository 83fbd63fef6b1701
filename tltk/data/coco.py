"""COCO instance annotation files (JSON): reading for dataset conversion and MaskRCNN.

Only the standard library is used (no pycocotools), so loading never prints and every
problem is reported with the file and the offending record.  Images keep the order of the
``images`` list (the order ``pycocotools.COCO.getImgIds()`` returns), annotations keep the
order of the ``annotations`` list within each image.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from tltk.data.kitti import LabelProblem
from tltk.errors import InvalidInputError

__all__ = ["CocoImage", "CocoAnnotation", "CocoDataset", "read_coco", "detection_class_name"]


@dataclass
class CocoAnnotation:
    """One object annotation.

    Attributes:
        id: annotation id.
        image_id: id of the image it belongs to.
        category_id: category id.
        bbox: ``(x, y, width, height)`` in pixels.
        iscrowd: crowd flag (0 or 1).
        area: area as written in the file.
        segmentation: polygons (list of flat coordinate lists) or RLE dict, as written.
    """

    id: int
    image_id: int
    category_id: int
    bbox: tuple[float, float, float, float]
    iscrowd: int = 0
    area: float = 0.0
    segmentation: Any = None

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        """The box as ``(x1, y1, x2, y2) = (x, y, x + w, y + h)`` in pixels."""
        x, y, w, h = self.bbox
        return (x, y, x + w, y + h)


@dataclass
class CocoImage:
    """One image record: ``id``, ``file_name``, ``width``, ``height`` (pixels) and its annotations."""

    id: int
    file_name: str
    width: int
    height: int
    annotations: list[CocoAnnotation] = field(default_factory=list)


@dataclass
class CocoDataset:
    """A parsed COCO annotation file.

    Attributes:
        path: the JSON file.
        images: image records in file order, each with its annotations.
        categories: category id -> name, in file order.
        problems: annotations that could not be used (unknown image or category id,
            malformed bbox), each with the annotation's index in the file.
    """

    path: str
    images: list[CocoImage]
    categories: dict[int, str]
    problems: list[LabelProblem] = field(default_factory=list)

    @property
    def num_annotations(self) -> int:
        """Number of usable annotations."""
        return sum(len(img.annotations) for img in self.images)


def detection_class_name(coco_name: str) -> str:
    """The class name TAO's COCO converter writes: spaces removed, lower-cased
    (``"traffic light"`` -> ``"trafficlight"``)."""
    return coco_name.replace(" ", "").lower()


def read_coco(path: str | os.PathLike[str], require_annotations: bool = True) -> CocoDataset:
    """Read a COCO instances JSON file.

    Args:
        path: the annotation file.
        require_annotations: fail when the ``annotations`` list is empty (conversion needs
            objects; MaskRCNN inference files may have none).

    Returns:
        The dataset.  Unusable annotations are listed in ``problems``, not raised.

    Raises:
        InvalidInputError: the file is missing, not JSON, or lacks ``images``/``categories``
            (or ``annotations`` when required).
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise InvalidInputError(f"COCO annotation file not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise InvalidInputError(f"{path}: a COCO annotation file holds a JSON object at the top level")
    for key in ("images", "categories") + (("annotations",) if require_annotations else ()):
        if not data.get(key):
            raise InvalidInputError(f"{path}: the {key!r} list is missing or empty",
                                    hint="a COCO instances file needs images, categories and annotations")
    categories: dict[int, str] = {}
    for cat in data["categories"]:
        categories[int(cat["id"])] = str(cat["name"])
    images: list[CocoImage] = []
    by_id: dict[int, CocoImage] = {}
    for index, rec in enumerate(data["images"]):
        try:
            img = CocoImage(int(rec["id"]), str(rec["file_name"]), int(rec["width"]), int(rec["height"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"{path}: images[{index}] lacks a valid {exc} field") from None
        images.append(img)
        by_id[img.id] = img
    problems: list[LabelProblem] = []
    for index, rec in enumerate(data.get("annotations") or []):
        ann_id = rec.get("id", index)
        where = f"annotations[{index}] (id {ann_id})"
        try:
            bbox = tuple(float(v) for v in rec["bbox"])
            image_id = int(rec["image_id"])
            category_id = int(rec["category_id"])
        except (KeyError, TypeError, ValueError):
            problems.append(LabelProblem(path, 0, "malformed_annotation", f"{where}: missing or malformed bbox/image_id/category_id"))
            continue
        if len(bbox) != 4:
            problems.append(LabelProblem(path, 0, "malformed_annotation", f"{where}: bbox has {len(bbox)} values, expected 4"))
            continue
        if image_id not in by_id:
            problems.append(LabelProblem(path, 0, "unknown_image", f"{where}: image_id {image_id} is not in 'images'"))
            continue
        if category_id not in categories:
            problems.append(LabelProblem(path, 0, "unknown_category", f"{where}: category_id {category_id} is not in 'categories'"))
            continue
        by_id[image_id].annotations.append(CocoAnnotation(
            id=int(ann_id), image_id=image_id, category_id=category_id,
            bbox=(bbox[0], bbox[1], bbox[2], bbox[3]), iscrowd=int(rec.get("iscrowd", 0) or 0),
            area=float(rec.get("area", 0.0) or 0.0), segmentation=rec.get("segmentation")))
    return CocoDataset(path=path, images=images, categories=categories, problems=problems)
