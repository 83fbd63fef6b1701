"""``tltk detectnet_v2 inference``: run an inference spec on images; KITTI files and overlays."""

from __future__ import annotations

import os

import click

from tltk.cli.common import CommandResult, check_model_file, key_option, set_option, tltk_command
from tltk.errors import EXIT_USAGE, UsageError


@tltk_command("inference", help="Detect objects in images with an inference spec; writes KITTI labels and overlays.")
@click.option("-e", "--inference_spec", "--experiment_spec_file", "--experiment_spec", "spec", required=True,
              type=click.Path(dir_okay=False), help="Inference spec (inferencer_config, bbox_handler_config).")
@click.option("-i", "--inference_input", "--image_dir", "input_path", required=True, type=click.Path(),
              help="One image or a folder of images (.jpg .jpeg .png .ppm .bmp).")
@click.option("-o", "--inference_output", "--output_dir", "output_dir", default=None,
              help="Output folder: labels/ and images_annotated/ go here.")
@click.option("-r", "--results_dir", default=None, help="Same as -o (TAO 5 spelling).")
@key_option()
@click.option("-b", "--batch_size", type=int, default=None, help="Images per batch (default inferencer_config.batch_size).")
@click.option("-m", "--model_path", default=None, type=click.Path(dir_okay=False),
              help="Run this model file instead of the spec's (backend by extension, as TAO's -m).")
@set_option()
def detectnet_v2_inference(spec: str, input_path: str, output_dir: str | None, results_dir: str | None,
                           key: str | None, batch_size: int | None, model_path: str | None,
                           overrides: tuple[str, ...]) -> CommandResult:
    if output_dir and results_dir and output_dir != results_dir:
        raise UsageError("-o and -r name different folders; give one of them")
    out = output_dir or results_dir
    if not out:
        raise UsageError("missing the output folder: -o/--inference_output (or -r/--results_dir)")
    if model_path:
        from tltk.runtime.backends import backend_kind

        backend_kind(model_path)
        check_model_file(model_path, "-m", "backend")
    from tltk.detectnet_v2.inference import run_inference
    from tltk.models import load_spec

    loaded = load_spec(spec, model="detectnet_v2", kind="inference", overrides=overrides)
    if model_path:
        # As TAO's -m: the model path goes into tlt_config (tltk picks the backend by extension).
        loaded.message.inferencer_config.tlt_config.model = os.path.abspath(model_path)
    data = run_inference(loaded, input_path, out, key=key, batch_size=batch_size)
    where = ", ".join(p for p in (data["labels_dir"], data["annotated_dir"]) if p) or "nothing written"
    summary = (f"{data['detections_total']} detection(s) in {data['images']} image(s) with {data['backend']}; "
               f"{where}")
    skipped = data["skipped"]
    if skipped:
        names = ", ".join(os.path.basename(s["path"]) for s in skipped[:5]) + (" ..." if len(skipped) > 5 else "")
        summary += f"; {len(skipped)} unreadable image(s) skipped: {names}"
        return CommandResult(summary, data, exit_code=EXIT_USAGE)
    return CommandResult(summary, data)
