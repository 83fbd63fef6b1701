"""Render a few images of a KITTI or COCO dataset with their labels drawn over them.

KITTI: boxes coloured by class (``DontCare`` dashed grey), with ``class occ=N trunc=T``.
COCO: instance masks blended in, boxes and category names (``iscrowd`` regions hatched grey).

Usage::

    python scripts/preview_dataset.py DATASET_DIR OUT_DIR [--count 4] [--split train]

``DATASET_DIR`` is a folder with ``image_2``/``label_2`` (KITTI) or ``images``/``annotations``
(COCO), such as the ones ``tltk dataset synthesize`` writes.  One PNG per image is written to
``OUT_DIR`` (``preview_<name>.png``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
from PIL import Image, ImageDraw

PALETTE = {"car": (40, 120, 255), "pedestrian": (255, 60, 40), "cyclist": (40, 220, 60)}
OTHER = (255, 220, 0)
IGNORE = (200, 200, 200)


def _colour(name: str) -> tuple[int, int, int]:
    return PALETTE.get(name.lower(), OTHER)


def _dashed_rect(draw: ImageDraw.ImageDraw, box: tuple[float, float, float, float], colour: tuple[int, int, int]) -> None:
    x0, y0, x1, y1 = box
    for a, b in (((x0, y0), (x1, y0)), ((x1, y0), (x1, y1)), ((x1, y1), (x0, y1)), ((x0, y1), (x0, y0))):
        length = max(abs(b[0] - a[0]), abs(b[1] - a[1]))
        steps = max(1, int(length // 6))
        for k in range(0, steps, 2):
            t0, t1 = k / steps, min(1.0, (k + 1) / steps)
            draw.line([(a[0] + (b[0] - a[0]) * t0, a[1] + (b[1] - a[1]) * t0),
                       (a[0] + (b[0] - a[0]) * t1, a[1] + (b[1] - a[1]) * t1)], fill=colour, width=1)


def preview_kitti(root: str, out_dir: str, count: int) -> list[str]:
    image_dir, label_dir = os.path.join(root, "image_2"), os.path.join(root, "label_2")
    written = []
    for name in sorted(os.listdir(image_dir))[:count]:
        stem = os.path.splitext(name)[0]
        img = Image.open(os.path.join(image_dir, name)).convert("RGB")
        draw = ImageDraw.Draw(img)
        with open(os.path.join(label_dir, stem + ".txt"), encoding="utf-8") as handle:
            for line in handle:
                cols = line.split()
                if len(cols) < 8:
                    continue
                box = (float(cols[4]), float(cols[5]), float(cols[6]), float(cols[7]))
                if cols[0].lower() == "dontcare":
                    _dashed_rect(draw, box, IGNORE)
                    continue
                colour = _colour(cols[0])
                draw.rectangle(box, outline=colour, width=2)
                draw.text((box[0] + 2, max(0.0, box[1] - 11)), f"{cols[0]} occ={cols[2]} trunc={cols[1]}", fill=colour)
        path = os.path.join(out_dir, f"preview_{stem}.png")
        img.save(path)
        written.append(path)
    return written


def preview_coco(root: str, out_dir: str, count: int, split: str) -> list[str]:
    import pycocotools.mask as mask_util

    with open(os.path.join(root, "annotations", f"instances_{split}.json"), encoding="utf-8") as handle:
        data = json.load(handle)
    names = {c["id"]: c["name"] for c in data["categories"]}
    by_image: dict[int, list[dict]] = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    written = []
    for rec in data["images"][:count]:
        h, w = rec["height"], rec["width"]
        pixels = np.asarray(Image.open(os.path.join(root, "images", split, rec["file_name"])).convert("RGB"),
                            dtype=np.float32)
        overlay = pixels.copy()
        anns = by_image.get(rec["id"], [])
        for ann in anns:
            segm = ann["segmentation"]
            rle = mask_util.merge(mask_util.frPyObjects(segm, h, w)) if isinstance(segm, list) else segm
            mask = mask_util.decode(rle).astype(bool)
            if ann.get("iscrowd"):
                hatch = ((np.add.outer(np.arange(h), np.arange(w)) // 4) % 2).astype(bool)
                overlay[mask & hatch] = IGNORE
            else:
                overlay[mask] = 0.45 * overlay[mask] + 0.55 * np.array(_colour(names[ann["category_id"]]), np.float32)
        img = Image.fromarray(np.clip(overlay, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(img)
        for ann in anns:
            x, y, bw, bh = ann["bbox"]
            name = names[ann["category_id"]]
            colour = IGNORE if ann.get("iscrowd") else _colour(name)
            draw.rectangle((x, y, x + bw, y + bh), outline=colour, width=1)
            if not ann.get("iscrowd"):
                draw.text((x + 2, max(0.0, y - 11)), f"{name} a={int(ann['area'])}", fill=colour)
        path = os.path.join(out_dir, f"preview_{split}_{os.path.splitext(rec['file_name'])[0]}.png")
        img.save(path)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset_dir")
    parser.add_argument("out_dir")
    parser.add_argument("--count", type=int, default=4, help="images to render (default 4)")
    parser.add_argument("--split", default="train", help="COCO split: train or val (default train)")
    args = parser.parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    if os.path.isdir(os.path.join(args.dataset_dir, "image_2")):
        written = preview_kitti(args.dataset_dir, args.out_dir, args.count)
    elif os.path.isdir(os.path.join(args.dataset_dir, "annotations")):
        written = preview_coco(args.dataset_dir, args.out_dir, args.count, args.split)
    else:
        print(f"{args.dataset_dir}: neither a KITTI (image_2/label_2) nor a COCO (images/annotations) folder",
              file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
