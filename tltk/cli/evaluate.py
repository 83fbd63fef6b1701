"""``tltk detectnet_v2 evaluate``: TAO's AP for a model (any backend) or for KITTI prediction files."""

from __future__ import annotations

import os
import sys

import click

from tltk.cli.common import (
    CommandResult,
    check_model_file,
    default_results_dir,
    key_option,
    set_option,
    tltk_command,
)
from tltk.errors import UsageError


def select_gpu(gpu_index: int | None) -> None:
    """Make only GPU ``gpu_index`` visible (``CUDA_VISIBLE_DEVICES``), as TAO's ``--gpu_index`` does.

    Only effective before TensorFlow, ONNX Runtime or TensorRT initialise CUDA in this process.

    Args:
        gpu_index: the GPU to use, or None to leave the environment alone.

    Raises:
        UsageError: a negative index.
    """
    if gpu_index is None:
        return
    if gpu_index < 0:
        raise UsageError(f"--gpu_index must be >= 0, got {gpu_index}")
    if "tensorflow" in sys.modules:
        click.echo("warning: --gpu_index is applied through CUDA_VISIBLE_DEVICES, which TensorFlow may already have "
                   "read in this process", err=True)
    os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu_index)


@tltk_command("evaluate", help="Evaluate a model (any backend) or KITTI prediction files with TAO's mAP.")
@click.option("-e", "--experiment_spec_file", "--experiment_spec", "spec", required=True,
              type=click.Path(dir_okay=False), help="Experiment spec (the training spec).")
@click.option("-m", "--model", "--model_path", "model", default=None, type=click.Path(dir_okay=False),
              help="Model: .tlt/.keras/.hdf5 (Keras), .onnx/.etlt (ONNX Runtime) or .engine (TensorRT).")
@key_option()
@click.option("-f", "--framework", type=click.Choice(["tlt", "onnx", "tensorrt"], case_sensitive=False), default=None,
              help="Backend to run the model with (default: from the file extension).")
@click.option("--use_training_set", is_flag=True, help="Evaluate the training split instead of the validation split.")
@click.option("--gpu_index", type=int, default=None, help="GPU to run on (sets CUDA_VISIBLE_DEVICES).")
@click.option("-b", "--batch_size", type=int, default=None,
              help="Images per batch (default training_config.batch_size_per_gpu).")
@click.option("-r", "--results_dir", default=None,
              help="Folder for evaluation.json and plots/pr_curves.png (default results/<spec stem>).")
@click.option("--predictions_dir", default=None, type=click.Path(file_okay=False),
              help="Score these KITTI prediction files (16 columns, last = confidence) instead of a model.")
@click.option("--labels_dir", default=None, type=click.Path(file_okay=False),
              help="With --predictions_dir: KITTI ground-truth label files (default: the split's label files).")
@click.option("-i", "--image_dir", "_image_dir", default=None, hidden=True,
              help="Accepted for TAO compatibility (a dummy there too): the spec's data is evaluated.")
@click.option("-l", "--label_dir", "_label_dir", default=None, hidden=True,
              help="Accepted for TAO compatibility (a dummy there too); see --labels_dir.")
@set_option()
def detectnet_v2_evaluate(spec: str, model: str | None, key: str | None, framework: str | None,
                          use_training_set: bool, gpu_index: int | None, batch_size: int | None,
                          results_dir: str | None, predictions_dir: str | None, labels_dir: str | None,
                          _image_dir: str | None, _label_dir: str | None, overrides: tuple[str, ...]) -> CommandResult:
    if model and predictions_dir:
        raise UsageError("give either -m/--model or --predictions_dir, not both")
    if not model and not predictions_dir:
        raise UsageError("missing -m/--model (or --predictions_dir to score prediction files)")
    if labels_dir and not predictions_dir:
        raise UsageError("--labels_dir only applies with --predictions_dir")
    if predictions_dir and framework:
        raise UsageError("-f/--framework only applies with -m/--model")
    if model:
        from tltk.runtime.backends import resolve_framework

        resolve_framework(model, framework, "tltk detectnet_v2 export")
        check_model_file(model, "-m", "backend")
    select_gpu(gpu_index)
    from tltk import console
    from tltk.detectnet_v2.evaluate import evaluate_model, evaluate_prediction_files, write_report
    from tltk.metrics.detection_ap import format_ap_table
    from tltk.models import load_spec

    loaded = load_spec(spec, model="detectnet_v2", kind="experiment", overrides=overrides)
    if model:
        report = evaluate_model(loaded, model, key=key, framework=framework, use_training_set=use_training_set,
                                batch_size=batch_size)
    else:
        assert predictions_dir is not None
        report = evaluate_prediction_files(loaded, predictions_dir, labels_dir, use_training_set=use_training_set)
    console.echo(format_ap_table(report.result, validation_cost=report.validation_cost,
                                 median_inference_time=report.median_inference_time))
    files = write_report(report, os.path.abspath(default_results_dir(spec, results_dir)))
    data = report.to_dict()
    data["files"] = files
    summary = (f"mAP {report.result.mean_ap * 100:.4f}% over {report.result.num_images} image(s) "
               f"({report.split}); report {files['report']}")
    return CommandResult(summary, data)
