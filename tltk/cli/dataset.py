"""``tltk dataset synthesize``: write a synthetic KITTI or COCO dataset with a ready convert spec."""

from __future__ import annotations

import re
from typing import Any

import click

from tltk.cli.common import CommandResult, tltk_command

_SIZE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


def _parse_size(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, int]:
    match = _SIZE.match(value)
    if not match:
        raise click.BadParameter(f"{value!r} is not WIDTHxHEIGHT (e.g. 960x544)", ctx=ctx, param=param)
    return int(match.group(1)), int(match.group(2))


@tltk_command("synthesize", "Write a synthetic KITTI or COCO dataset (images, labels, ready dataset_convert spec).")
@click.option("--format", "fmt", type=click.Choice(["kitti", "coco"], case_sensitive=False), required=True,
              help="kitti: image_2/ + label_2/; coco: images/{train,val}/ + annotations/instances_{train,val}.json.")
@click.option("-o", "--output", "--output_dir", "output", type=click.Path(file_okay=False), required=True,
              help="Dataset folder (created; must be empty unless --overwrite).")
@click.option("-n", "--num_images", type=click.IntRange(min=1), default=200, show_default=True,
              help="Number of images.")
@click.option("--image_size", default="960x544", show_default=True, callback=_parse_size, metavar="WxH",
              help="Image width x height in pixels.")
@click.option("--seed", type=click.IntRange(min=0), default=42, show_default=True,
              help="Seed; the same seed writes byte-identical files.")
@click.option("--val_fraction", type=click.FloatRange(min=0.0, max=1.0, max_open=True), default=0.2,
              show_default=True,
              help="Validation fraction: KITTI -> val_split of the spec; COCO -> images/val vs images/train.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes (default: min(2, CPU count)); the output does not depend on it.")
@click.option("--overwrite", is_flag=True, default=False,
              help="Replace a dataset already in the output folder.")
def synthesize(fmt: str, output: str, num_images: int, image_size: tuple[int, int], seed: int,
               val_fraction: float, workers: int | None, overwrite: bool) -> CommandResult:
    """Generate the dataset and report what was written."""
    from tltk.data.synthetic import synthesize_coco, synthesize_kitti

    writer = synthesize_kitti if fmt.lower() == "kitti" else synthesize_coco
    report = writer(output, num_images=num_images, image_size=image_size, seed=seed,
                    val_fraction=val_fraction, workers=workers, overwrite=overwrite)
    data: dict[str, Any] = report.to_dict()
    per_class = ", ".join(f"{n} {name}" for name, n in report.objects_per_class.items())
    ignore = "DontCare" if report.format == "kitti" else "iscrowd"
    summary = (f"{report.num_images} {report.format.upper()} images ({report.num_train} train, {report.num_val} val) "
               f"of {report.image_size[0]}x{report.image_size[1]} in {report.output_dir}: {per_class}, "
               f"{report.num_dontcare} {ignore}; {report.num_images / max(report.seconds, 1e-9):.1f} images/s. "
               f"Spec: {report.files['spec']}")
    return CommandResult(summary=summary, data=data)
