"""``tltk detectnet_v2 inference``: run an inference spec on images; KITTI files and overlays."""

from __future__ import annotations

import click

from tltk.cli.common import CommandResult, key_option, set_option, tltk_command
from tltk.errors import UsageError


@tltk_command("inference", help="Detect objects in images with an inference spec; writes KITTI labels and overlays.")
@click.option("-e", "--inference_spec", "--experiment_spec_file", "--experiment_spec", "spec", required=True,
              type=click.Path(dir_okay=False), help="Inference spec (inferencer_config, bbox_handler_config).")
@click.option("-i", "--inference_input", "--image_dir", "input_path", required=True, type=click.Path(),
              help="One image or a folder of images (.jpg .jpeg .png .ppm .bmp).")
@click.option("-o", "--inference_output", "--output_dir", "output_dir", default=None,
              help="Output folder: labels/ and images_annotated/ go here.")
@click.option("-r", "--results_dir", default=None, help="Same as -o (TAO 5 spelling).")
@key_option()
@click.option("--batch_size", type=int, default=None, help="Images per batch (default inferencer_config.batch_size).")
@set_option()
def detectnet_v2_inference(spec: str, input_path: str, output_dir: str | None, results_dir: str | None,
                           key: str | None, batch_size: int | None, overrides: tuple[str, ...]) -> CommandResult:
    if output_dir and results_dir and output_dir != results_dir:
        raise UsageError("-o and -r name different folders; give one of them")
    out = output_dir or results_dir
    if not out:
        raise UsageError("missing the output folder: -o/--inference_output (or -r/--results_dir)")
    from tltk.detectnet_v2.inference import run_inference
    from tltk.models import load_spec

    loaded = load_spec(spec, model="detectnet_v2", kind="inference", overrides=overrides)
    data = run_inference(loaded, input_path, out, key=key, batch_size=batch_size)
    where = ", ".join(p for p in (data["labels_dir"], data["annotated_dir"]) if p) or "nothing written"
    summary = (f"{data['detections_total']} detection(s) in {data['images']} image(s) with {data['backend']}; "
               f"{where}")
    return CommandResult(summary, data)
