"""MaskRCNN ``dataset_convert``: a COCO instances JSON and its images -> TFRecord shards in TAO's layout.

One ``tf.train.Example`` per entry of the JSON's ``images`` list (file order, images without
annotations included) with TAO's keys (:data:`tltk.data.tfrecord.COCO_INSTANCE`):

* ``image/encoded`` holds the file's bytes as read from disk (never re-encoded),
  ``image/key/sha256`` their hex SHA-256, ``image/source_id`` the image id as decimal text,
  ``image/height``/``image/width`` the JSON's size;
* per instance: box normalized by the image size (``xmin = x / W``, ``xmax = (x + w) / W``...),
  the raw ``category_id`` (no remapping) and its name, ``is_crowd``, the JSON's ``area`` and a
  full-image PNG mask with values 0/1 (polygons, uncompressed and compressed RLE rasterized
  by pycocotools exactly as ``COCO.annToMask``).

``image/format`` holds the real format (``jpeg`` or ``png``); TAO writes ``jpeg`` for every
file and every reader (TAO's and tltk's) decodes by content, so both spellings load.

Shards are ``<output_dir>/<tag>-%05d-of-%05d.tfrecord``; image ``i`` goes to shard
``i mod num_shards`` (TAO's round robin), so shards hold the same images as TAO's.  They are
written under hidden temporary names and renamed only when every shard is complete.

Bad data is named, counted and skipped, never written: a missing or unreadable image file
(or one whose size differs from the JSON) skips the image; a box outside the image, a box
without area, a missing or malformed segmentation skip the annotation.  An annotation with
category id 0, or a box that looks normalized (inside [0, 1] x [0, 1] with fractional values),
stops the run: the whole file is then suspect.  A category entry with id 0 that no annotation
uses (labelme's ``_background_``) is ignored with a warning.  Skipped annotations are listed in
``<output_dir>/<tag>_warnings.json`` together with TAO's lists (``box``: annotation ids skipped
for their box, ``mask``: annotation ids whose mask leaves their box by more than a pixel, which
are kept).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import multiprocessing
import os
import re
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tltk import console
from tltk.data.coco import CocoAnnotation, CocoImage, read_coco
from tltk.data.kitti import LabelProblem
from tltk.errors import InvalidInputError, UsageError
from tltk.fileio import atomic_write_text

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_NUM_SHARDS", "PROBLEMS_SHOWN", "ConvertReport", "convert_coco", "shard_path",
           "annotation_mask"]

#: TAO's default number of shards.
DEFAULT_NUM_SHARDS = 256
#: Problems logged one by one before the rest are only counted (all are in the warnings file).
PROBLEMS_SHOWN = 30

_UNKNOWN_CATEGORY = re.compile(r"category_id (-?\d+) ")


def shard_path(output_dir: str, tag: str, shard: int, num_shards: int) -> str:
    """Path of one shard: ``<output_dir>/<tag>-SSSSS-of-NNNNN.tfrecord`` (TAO's naming)."""
    return os.path.join(output_dir, f"{tag}-{shard:05d}-of-{num_shards:05d}.tfrecord")


@dataclass
class ConvertReport:
    """What :func:`convert_coco` did.

    Attributes:
        output_dir: the shards' folder.
        tag: shard name prefix.
        num_images: images in the JSON.
        images_written: records written.
        images_skipped: images not written (missing, unreadable or wrong size).
        instances_per_category: category name -> instances written (crowd excluded).
        crowd: crowd instances written.
        annotations_written: instances written, crowd included.
        annotations_skipped: annotations left out.
        masks_outside_box: annotations kept whose mask leaves their box by more than a pixel.
        problems: every problem found (file, kind, message), in image order.
        shards: the shard files.
        warnings_file: ``<tag>_warnings.json``, or None when there was nothing to list.
    """

    output_dir: str
    tag: str
    num_images: int = 0
    images_written: int = 0
    images_skipped: int = 0
    instances_per_category: dict[str, int] = field(default_factory=dict)
    crowd: int = 0
    annotations_written: int = 0
    annotations_skipped: int = 0
    masks_outside_box: int = 0
    problems: list[LabelProblem] = field(default_factory=list)
    shards: list[str] = field(default_factory=list)
    warnings_file: str | None = None

    def problem_counts(self) -> dict[str, int]:
        """Number of problems per kind."""
        return dict(sorted(Counter(p.kind for p in self.problems).items()))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (used by ``--json`` and ``status.json``)."""
        return {
            "output_dir": self.output_dir, "tag": self.tag, "num_images": self.num_images,
            "images_written": self.images_written, "images_skipped": self.images_skipped,
            "instances_per_category": self.instances_per_category, "crowd": self.crowd,
            "annotations_written": self.annotations_written, "annotations_skipped": self.annotations_skipped,
            "masks_outside_box": self.masks_outside_box,
            "problems": {"total": len(self.problems), "by_kind": self.problem_counts(),
                         "first": [p.to_dict() for p in self.problems[:PROBLEMS_SHOWN]]},
            "num_shards": len(self.shards), "shards": self.shards, "warnings_file": self.warnings_file,
        }


# ---- masks ----------------------------------------------------------------------------------------

def annotation_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """Rasterize a COCO segmentation exactly as ``pycocotools.COCO.annToMask`` does.

    Args:
        segmentation: polygons (list of flat ``[x0, y0, x1, y1, ...]`` lists), uncompressed RLE
            (``counts`` a list) or compressed RLE (``counts`` a string).
        height: image height in pixels.
        width: image width in pixels.

    Returns:
        uint8 ``[height, width]`` with values 0/1.

    Raises:
        ValueError: the segmentation is empty or malformed (a polygon with fewer than 3
            points, an RLE of another size).
    """
    import pycocotools.mask as mask_util

    if isinstance(segmentation, list):
        polygons = [p for p in segmentation if p is not None]
        if not polygons:
            raise ValueError("the polygon list is empty")
        for poly in polygons:
            if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
                raise ValueError(f"a polygon needs x, y pairs of at least 3 points, got {len(poly) if isinstance(poly, list) else poly!r} values")
        rle = mask_util.merge(mask_util.frPyObjects(polygons, height, width))
    elif isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        size = [int(v) for v in segmentation["size"]]
        if size != [height, width]:
            raise ValueError(f"the RLE is {size[0]}x{size[1]} (h x w) but the image is {height}x{width}")
        if isinstance(segmentation["counts"], list):
            rle = mask_util.frPyObjects(segmentation, height, width)
        else:
            counts = segmentation["counts"]
            rle = {"size": size, "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    else:
        raise ValueError("it is neither a polygon list nor an RLE dict with 'size' and 'counts'")
    mask = mask_util.decode(rle)
    if mask.ndim == 3:
        mask = mask[:, :, 0]
    return np.ascontiguousarray(mask, dtype=np.uint8)


def _png(mask: np.ndarray) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(mask, mode="L").save(out, format="PNG")
    return out.getvalue()


def _leaves_box(mask: np.ndarray, box: tuple[float, float, float, float]) -> bool:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return False
    x, y, w, h = box
    # Pixel k covers [k, k + 1); one pixel of slack as TAO.
    return bool(cols[0] < x - 1 or rows[0] < y - 1 or cols[-1] + 1 > x + w + 1 or rows[-1] + 1 > y + h + 1)


# ---- one image (runs in worker processes) ---------------------------------------------------------

@dataclass
class _ImageTask:
    index: int
    image: CocoImage
    image_dir: str
    categories: dict[int, str]


@dataclass
class _ImageResult:
    index: int
    values: dict[str, Any] | None
    problems: list[tuple[str, str, str]]
    skipped: list[dict[str, Any]]
    box_skipped: list[int]
    mask_outside: list[int]
    categories: list[int]
    crowd: int


def _image_format(data: bytes) -> str | None:
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    return None


def _convert_image(task: _ImageTask) -> _ImageResult:
    img = task.image
    path = os.path.join(task.image_dir, img.file_name)
    problems: list[tuple[str, str, str]] = []
    skipped: list[dict[str, Any]] = []
    result = _ImageResult(task.index, None, problems, skipped, [], [], [], 0)
    where = f"image {img.id} ({img.file_name})"
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        problems.append((path, "missing_image", f"{where}: file not found in {task.image_dir}; image skipped "
                                                "with its annotations -- check -i/--image_dir and file_name"))
        return result
    except OSError as exc:
        problems.append((path, "unreadable_image", f"{where}: cannot read the file ({exc}); image skipped"))
        return result
    fmt = _image_format(data)
    try:
        from PIL import Image, UnidentifiedImageError

        with Image.open(io.BytesIO(data)) as pil:
            pil.verify()
            size = pil.size
    except (OSError, UnidentifiedImageError, SyntaxError) as exc:
        problems.append((path, "unreadable_image", f"{where}: not a readable image ({exc}); image skipped -- "
                                                   "replace the file with a valid JPEG or PNG"))
        return result
    if fmt is None:
        problems.append((path, "unreadable_image", f"{where}: not a JPEG or PNG file; image skipped -- convert it "
                                                   "to JPEG or PNG"))
        return result
    if (size[0], size[1]) != (img.width, img.height):
        problems.append((path, "image_size_mismatch",
                         f"{where}: the file is {size[0]}x{size[1]} but the JSON says {img.width}x{img.height}; "
                         "image skipped -- fix width/height in the annotation file"))
        return result
    width, height = img.width, img.height
    cols: dict[str, list[Any]] = {k: [] for k in ("xmin", "xmax", "ymin", "ymax", "text", "label", "crowd", "area",
                                                  "mask")}

    def skip(ann: CocoAnnotation, kind: str, what: str, todo: str, box: bool) -> None:
        message = f"annotation {ann.id} of {where}: {what}; annotation skipped -- {todo}"
        problems.append((path, kind, message))
        skipped.append({"annotation_id": ann.id, "kind": kind, "message": message})
        if box:
            result.box_skipped.append(ann.id)

    for ann in img.annotations:
        x, y, w, h = ann.bbox
        if w <= 0 or h <= 0:
            skip(ann, "degenerate_box", f"box [{x:g}, {y:g}, {w:g}, {h:g}] has no area", "remove it or fix its size",
                 True)
            continue
        if x < -1 or y < -1 or x + w > width + 1 or y + h > height + 1:
            skip(ann, "box_outside_image", f"box [{x:g}, {y:g}, {w:g}, {h:g}] (x, y, w, h) extends past the "
                                           f"{width}x{height} image", "clip the box to the image", True)
            continue
        if ann.segmentation is None or ann.segmentation == [] or ann.segmentation == {}:
            skip(ann, "missing_segmentation", "it has no segmentation", "add a polygon or RLE mask", False)
            continue
        try:
            mask = annotation_mask(ann.segmentation, height, width)
        except (ValueError, TypeError) as exc:
            skip(ann, "bad_segmentation", f"malformed segmentation: {exc}", "fix or remove the segmentation", False)
            continue
        if _leaves_box(mask, ann.bbox):
            result.mask_outside.append(ann.id)
        cols["xmin"].append(x / width)
        cols["xmax"].append((x + w) / width)
        cols["ymin"].append(y / height)
        cols["ymax"].append((y + h) / height)
        cols["text"].append(task.categories[ann.category_id].encode("utf-8"))
        cols["label"].append(ann.category_id)
        cols["crowd"].append(int(ann.iscrowd))
        cols["area"].append(ann.area)
        cols["mask"].append(_png(mask))
        result.categories.append(ann.category_id)
        result.crowd += int(bool(ann.iscrowd))
    result.values = {
        "image/height": height, "image/width": width, "image/filename": img.file_name.encode("utf-8"),
        "image/source_id": str(img.id).encode("ascii"), "image/key/sha256": hashlib.sha256(data).hexdigest(),
        "image/encoded": data, "image/format": fmt,
        "image/object/bbox/xmin": cols["xmin"], "image/object/bbox/xmax": cols["xmax"],
        "image/object/bbox/ymin": cols["ymin"], "image/object/bbox/ymax": cols["ymax"],
        "image/object/class/text": cols["text"], "image/object/class/label": cols["label"],
        "image/object/is_crowd": cols["crowd"], "image/object/area": cols["area"],
        "image/object/mask": cols["mask"],
    }
    return result


# ---- checks that stop the run ---------------------------------------------------------------------

def _looks_normalized(ann: CocoAnnotation) -> bool:
    x, y, w, h = ann.bbox
    inside_unit = 0 <= x and 0 <= y and x + w <= 1.0 and y + h <= 1.0 and w > 0 and h > 0
    return inside_unit and any(v != int(v) for v in (x, y, w, h))


def _check_categories(dataset: Any, path: str) -> dict[int, str]:
    categories = dict(dataset.categories)
    negative = sorted(c for c in categories if c < 0)
    if negative:
        raise InvalidInputError(f"{path}: category id {negative[0]} is negative",
                                hint="category ids must be positive integers")
    zero_users = [a for img in dataset.images for a in img.annotations if a.category_id == 0]
    zero_users_unknown = [p for p in dataset.problems if p.kind == "unknown_category"
                          and (m := _UNKNOWN_CATEGORY.search(p.message)) and int(m.group(1)) == 0]
    if zero_users or zero_users_unknown:
        first = f"annotation {zero_users[0].id}" if zero_users else zero_users_unknown[0].message.split(":")[0]
        count = len(zero_users) + len(zero_users_unknown)
        raise InvalidInputError(
            f"{path}: {count} annotation(s) use category id 0, e.g. {first}; id 0 is the background class",
            hint="number the categories from 1 (shift every category_id by one, in 'categories' and "
                 "'annotations')")
    if 0 in categories:
        log.warning("%s: category id 0 (%r) is not used by any annotation and is ignored (class index 0 is the "
                    "background)", path, categories.pop(0))
    for img in dataset.images:
        for ann in img.annotations:
            if _looks_normalized(ann):
                raise InvalidInputError(
                    f"{path}: annotation {ann.id} of image {img.id} ({img.file_name}) has the box {list(ann.bbox)}, "
                    "which looks normalized to [0, 1]",
                    hint="COCO boxes are [x, y, width, height] in pixels; multiply x and width by the image width "
                         "and y and height by the image height")
    return categories


# ---- driver ---------------------------------------------------------------------------------------

def _workers(workers: int | None, num_images: int) -> int:
    if workers is None:
        workers = min(4, os.cpu_count() or 1)
    return 1 if num_images < 8 else max(1, min(int(workers), num_images))


def _run(tasks: list[_ImageTask], workers: int) -> Iterator[_ImageResult]:
    if workers <= 1:
        yield from console.progress((_convert_image(t) for t in tasks), total=len(tasks), desc="convert", unit="img")
        return
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context()) as pool:
        chunk = max(1, min(8, len(tasks) // (workers * 8)))
        yield from console.progress(pool.map(_convert_image, tasks, chunksize=chunk), total=len(tasks),
                                    desc="convert", unit="img")


def _stale_shards(output_dir: str, tag: str, keep: set[str]) -> list[str]:
    pattern = re.compile(re.escape(tag) + r"-\d{5}-of-\d{5}\.tfrecord$")
    if not os.path.isdir(output_dir):
        return []
    return sorted(os.path.join(output_dir, n) for n in os.listdir(output_dir)
                  if pattern.match(n) and os.path.join(output_dir, n) not in keep)


def convert_coco(image_dir: str | os.PathLike[str], annotations_file: str | os.PathLike[str],
                 output_dir: str | os.PathLike[str], tag: str | None = None, num_shards: int = DEFAULT_NUM_SHARDS,
                 include_masks: bool = True, workers: int | None = None) -> ConvertReport:
    """Convert a COCO instances dataset to MaskRCNN TFRecords (see the module docstring).

    Args:
        image_dir: folder the JSON's ``file_name`` entries are relative to.
        annotations_file: the COCO instances JSON.
        output_dir: folder of the shards (created).
        tag: shard name prefix; default the JSON's file name without extension.
        num_shards: number of shards (>= 1).
        include_masks: TAO's flag; masks are always written (TAO ignores it too), so False is
            refused.
        workers: worker processes (default ``min(4, CPU count)``); does not change the output.

    Returns:
        The report (counts, problems, shards).

    Raises:
        UsageError: ``num_shards < 1`` or ``include_masks`` False.
        InvalidInputError: missing/malformed JSON or image folder, an annotation with category
            id 0, normalized-looking boxes, or no image left to write.
    """
    if num_shards < 1:
        raise UsageError(f"-s/--num_shards must be >= 1, not {num_shards}")
    if not include_masks:
        raise UsageError("MaskRCNN TFRecords always hold the instance masks (training needs them); "
                         "drop the option that turns them off")
    image_dir = os.path.abspath(os.fspath(image_dir))
    annotations_file = os.path.abspath(os.fspath(annotations_file))
    output_dir = os.path.abspath(os.fspath(output_dir))
    if not os.path.isdir(image_dir):
        raise InvalidInputError(f"-i/--image_dir {image_dir} is not a folder")
    tag = tag or os.path.splitext(os.path.basename(annotations_file))[0]
    if os.sep in tag or not tag:
        raise UsageError(f"-t/--tag {tag!r} must be a plain file-name prefix")
    dataset = read_coco(annotations_file, require_annotations=False)
    categories = _check_categories(dataset, annotations_file)
    report = ConvertReport(output_dir=output_dir, tag=tag, num_images=len(dataset.images))
    warnings: dict[str, dict[str, list[Any]]] = {}
    for problem in dataset.problems:
        report.problems.append(problem)
        report.annotations_skipped += 1
        warnings.setdefault("unassigned", {"box": [], "mask": [], "skipped": []})["skipped"].append(
            {"kind": problem.kind, "message": problem.message})

    order = [i for s in range(num_shards) for i in range(s, len(dataset.images), num_shards)]
    tasks = [_ImageTask(i, dataset.images[i], image_dir, categories) for i in order]
    planned = [shard_path(output_dir, tag, s, num_shards) for s in range(num_shards)]
    stale = _stale_shards(output_dir, tag, set(planned))
    if stale:
        log.warning("%d shard(s) from an earlier conversion with another shard count are in %s and would match a "
                    "'%s-*' pattern too: %s%s", len(stale), output_dir, tag, ", ".join(os.path.basename(p) for p in stale[:3]),
                    " ..." if len(stale) > 3 else "")

    from tltk.data.tfrecord import COCO_INSTANCE, ShardSetWriter, build_example

    per_category: Counter[int] = Counter()
    with ShardSetWriter() as shards:
        results = _run(tasks, _workers(workers, len(tasks)))
        current = -1
        writer = None
        for result in results:
            shard = result.index % num_shards
            while current < shard:
                current += 1
                writer = shards.open(planned[current])
            img = dataset.images[result.index]
            for path, kind, message in result.problems:
                report.problems.append(LabelProblem(path, 0, kind, message))
            if result.skipped or result.mask_outside or result.box_skipped:
                entry = warnings.setdefault(str(img.id), {"box": [], "mask": [], "skipped": []})
                entry["box"].extend(result.box_skipped)
                entry["mask"].extend(result.mask_outside)
                entry["skipped"].extend(result.skipped)
            report.masks_outside_box += len(result.mask_outside)
            if result.values is None:
                report.images_skipped += 1
                report.annotations_skipped += len(img.annotations)
                continue
            report.annotations_skipped += len(result.skipped)
            assert writer is not None
            writer.write(build_example(COCO_INSTANCE, result.values).SerializeToString())
            report.images_written += 1
            report.annotations_written += len(result.categories)
            report.crowd += result.crowd
            crowd_flags = result.values["image/object/is_crowd"]
            per_category.update(c for c, crowd in zip(result.categories, crowd_flags, strict=True) if not crowd)
        while current < num_shards - 1:
            current += 1
            shards.open(planned[current])
        shards.close_current()
        if report.images_written == 0:
            _log_problems(report)
            raise InvalidInputError(f"no image of {annotations_file} could be converted ({len(report.problems)} "
                                    "problem(s), see above)", hint="check -i/--image_dir and the annotation file")
        if warnings:
            report.warnings_file = os.path.join(output_dir, f"{tag}_warnings.json")
            atomic_write_text(report.warnings_file, json.dumps(warnings, indent=2))
        report.shards = shards.commit()
    report.instances_per_category = {categories[c]: per_category.get(c, 0) for c in sorted(categories)}
    _log_problems(report)
    _log_summary(report)
    return report


def _log_problems(report: ConvertReport) -> None:
    for problem in report.problems[:PROBLEMS_SHOWN]:
        log.warning("%s", problem)
    if len(report.problems) > PROBLEMS_SHOWN:
        log.warning("... and %d more problem(s)%s", len(report.problems) - PROBLEMS_SHOWN,
                    f"; every skipped annotation is listed in {report.warnings_file}" if report.warnings_file else "")


def _log_summary(report: ConvertReport) -> None:
    lines = "\n".join(f"  {name}: {n}" for name, n in report.instances_per_category.items())
    log.info("Wrote %d of %d images (%d skipped) to %d shard(s) in %s", report.images_written, report.num_images,
             report.images_skipped, len(report.shards), report.output_dir)
    log.info("Instances per category (crowd excluded):\n%s", lines)
    log.info("Crowd instances: %d; annotations skipped: %d%s; masks leaving their box: %d", report.crowd,
             report.annotations_skipped,
             f" ({', '.join(f'{k}: {v}' for k, v in report.problem_counts().items())})" if report.problems else "",
             report.masks_outside_box)
