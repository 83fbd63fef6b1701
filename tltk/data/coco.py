"""COCO instance annotation files (JSON): reading for dataset conversion and MaskRCNN.

Only the standard library is used (no pycocotools), so loading never prints and every
problem is reported with the file and the offending record.  Images keep the order of the
``images`` list (the order ``pycocotools.COCO.getImgIds()`` returns), annotations keep the
order of the ``annotations`` list within each image.
"""

from __future__ import annotations

import json
import math
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
    data = _load_json(path)
    if not isinstance(data, dict):
        raise InvalidInputError(f"{path}: a COCO annotation file holds a JSON object at the top level, "
                                f"not a {_json_type(data)}")
    for key in ("images", "categories") + (("annotations",) if require_annotations else ()):
        if not data.get(key):
            raise InvalidInputError(f"{path}: the {key!r} list is missing or empty",
                                    hint="a COCO instances file needs images, categories and annotations")
    for key in ("images", "categories", "annotations"):
        if key in data and data[key] is not None and not isinstance(data[key], list):
            raise InvalidInputError(f"{path}: {key!r} must be a list, not a {_json_type(data[key])}")
    categories: dict[int, str] = {}
    for index, cat in enumerate(data["categories"]):
        cat_id = _int_field(cat, "id")
        if cat_id is None or not isinstance(cat.get("name"), str) or not cat["name"]:
            raise InvalidInputError(f"{path}: categories[{index}] needs an integer 'id' and a non-empty 'name' "
                                    f"(found {_preview(cat)})")
        categories[cat_id] = cat["name"]
    images: list[CocoImage] = []
    by_id: dict[int, CocoImage] = {}
    for index, rec in enumerate(data["images"]):
        fields = {name: _int_field(rec, name) for name in ("id", "width", "height")}
        missing = [name for name, value in fields.items() if value is None]
        if not isinstance(rec, dict) or not isinstance(rec.get("file_name"), str) or not rec["file_name"]:
            missing.insert(0, "file_name")
        if missing:
            raise InvalidInputError(f"{path}: images[{index}] lacks a valid {', '.join(missing)} field "
                                    f"(found {_preview(rec)})")
        img = CocoImage(int(fields["id"] or 0), str(rec["file_name"]), int(fields["width"] or 0),
                        int(fields["height"] or 0))
        images.append(img)
        by_id[img.id] = img
    problems: list[LabelProblem] = []
    for index, rec in enumerate(data.get("annotations") or []):
        if not isinstance(rec, dict):
            problems.append(LabelProblem(path, 0, "malformed_annotation",
                                         f"annotations[{index}]: not a JSON object ({_preview(rec)})"))
            continue
        ann_id = rec.get("id", index)
        where = f"annotations[{index}] (id {ann_id})"
        image_id, category_id = _int_field(rec, "image_id"), _int_field(rec, "category_id")
        bbox = _bbox(rec.get("bbox"))
        if image_id is None or category_id is None or bbox is None or _int_field(rec, "id", index) is None:
            problems.append(LabelProblem(path, 0, "malformed_annotation",
                                         f"{where}: missing or malformed bbox/image_id/category_id/id "
                                         "(bbox is [x, y, width, height]: 4 finite numbers, width and height >= 0)"))
            continue
        if image_id not in by_id:
            problems.append(LabelProblem(path, 0, "unknown_image", f"{where}: image_id {image_id} is not in 'images'"))
            continue
        if category_id not in categories:
            problems.append(LabelProblem(path, 0, "unknown_category", f"{where}: category_id {category_id} is not in 'categories'"))
            continue
        by_id[image_id].annotations.append(CocoAnnotation(
            id=int(_int_field(rec, "id", index) or 0), image_id=image_id, category_id=category_id, bbox=bbox,
            iscrowd=1 if rec.get("iscrowd") in (1, True) else 0, area=_float_or_zero(rec.get("area")),
            segmentation=rec.get("segmentation")))
    return CocoDataset(path=path, images=images, categories=categories, problems=problems)


def _load_json(path: str) -> Any:
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        raise InvalidInputError(f"COCO annotation file not found: {path}") from None
    except IsADirectoryError:
        raise InvalidInputError(f"{path}: is a folder, expected a COCO annotation JSON file") from None
    except OSError as exc:
        raise InvalidInputError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not raw.strip():
        raise InvalidInputError(f"{path}: the COCO annotation file is empty ({len(raw)} bytes)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                                "a COCO annotation file is JSON") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}") from None
    except RecursionError:
        raise InvalidInputError(f"{path}: the JSON nests too deeply to be a COCO annotation file") from None


def _json_type(value: Any) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number")


def _preview(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit] + "..."


def _int_field(rec: Any, name: str, default: Any = None) -> int | None:
    """An integer field of a JSON object (integral floats accepted); None when missing or not an integer."""
    if not isinstance(rec, dict):
        return None
    value = rec.get(name, default)
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def _bbox(value: Any) -> tuple[float, float, float, float] | None:
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        return None
    x, y, w, h = (float(v) for v in value)
    if w < 0 or h < 0:
        return None
    return (x, y, w, h)


def _float_or_zero(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return 0.0
