"""``tltk mask_rcnn dataset_convert``: COCO instances JSON + images -> MaskRCNN TFRecords.

Flags are TAO's (short and long spellings; ``--include_mask`` is accepted as the docs spell
it).  Exit codes: 0 ok, 1 failure, 2 invalid input (category id 0, normalized boxes, nothing
convertible), 130 interrupted.
"""

from __future__ import annotations

import json
import os

import click

from tltk.cli.common import CommandResult, tltk_command


@tltk_command("dataset_convert",
              help="Convert a COCO instances JSON and its images to MaskRCNN TFRecords (TAO's keys).\n\n"
                   "Shards are named <OUTPUT_DIR>/<TAG>-SSSSS-of-NNNNN.tfrecord (image i in shard i mod N). "
                   "Missing or unreadable images, boxes outside the image or without area and missing "
                   "segmentations are reported and skipped (listed in <TAG>_warnings.json); category id 0 or "
                   "normalized boxes stop the run. --json prints counts per category, problems and shards.")
@click.option("-i", "--image_dir", "image_dir", required=True, type=click.Path(file_okay=False),
              help="Folder the JSON's file_name entries are relative to.")
@click.option("-a", "--annotations_file", "annotations_file", required=True, type=click.Path(dir_okay=False),
              help="COCO instances annotation file (JSON).")
@click.option("-o", "--output_dir", "output_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for the TFRecord shards (created).")
@click.option("-t", "--tag", "tag", default=None,
              help="Shard name prefix.  [default: the annotation file name without extension]")
@click.option("-s", "--num_shards", "num_shards", type=click.IntRange(min=1), default=256, show_default=True,
              help="Number of shards.")
@click.option("--include_masks", "--include_mask", "include_masks", is_flag=True, default=True,
              help="Write the instance masks (always on, as in TAO).")
@click.option("-r", "--results_dir", "results_dir", default=None, type=click.Path(file_okay=False),
              help="Folder for status.json (the conversion report).")
@click.option("--workers", "workers", type=click.IntRange(min=1), default=None,
              help="Worker processes (default: min(4, CPU count)); the output does not depend on it.")
def dataset_convert(image_dir: str, annotations_file: str, output_dir: str, tag: str | None, num_shards: int,
                    include_masks: bool, results_dir: str | None, workers: int | None) -> CommandResult:
    from tltk.fileio import atomic_write_text
    from tltk.mask_rcnn.dataset_convert import convert_coco

    report = convert_coco(image_dir, annotations_file, output_dir, tag=tag, num_shards=num_shards,
                          include_masks=include_masks, workers=workers)
    data = report.to_dict()
    if results_dir:
        os.makedirs(results_dir, exist_ok=True)
        atomic_write_text(os.path.join(results_dir, "status.json"), json.dumps(data, indent=2))
    categories = ", ".join(f"{name}: {n}" for name, n in report.instances_per_category.items())
    summary = (f"Wrote {report.images_written} of {report.num_images} images to {len(report.shards)} shard(s) in "
               f"{report.output_dir} ({categories}; {report.crowd} crowd); {report.images_skipped} image(s) and "
               f"{report.annotations_skipped} annotation(s) skipped"
               + (f", see {report.warnings_file}" if report.warnings_file else "") + ".")
    return CommandResult(summary, data)
