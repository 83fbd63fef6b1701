"""``tltk mask_rcnn evaluate`` and ``tltk mask_rcnn inference`` (any backend)."""

from __future__ import annotations

import os

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


def _gpu(gpu_index: int | None) -> None:
    from tltk.cli.evaluate import select_gpu

    select_gpu(gpu_index)


@tltk_command("evaluate", help="COCO bbox and segm metrics of a model (any backend) or of a COCO results file.")
@click.option("-e", "--experiment_spec_file", "--experiment_spec", "spec", required=True,
              type=click.Path(dir_okay=False), help="Experiment spec (validation TFRecords and val_json_file).")
@click.option("-m", "--model", "--model_path", "model", default=None, type=click.Path(dir_okay=False),
              help="Model: .tlt/.keras/.hdf5 (Keras), .onnx/.etlt (ONNX Runtime) or .engine (TensorRT).")
@key_option()
@click.option("-r", "--results_dir", default=None,
              help="Folder for evaluation.json and plots/pr_curves.png (default results/<spec stem>).")
@click.option("--batch_size", type=int, default=None, help="Images per batch (default eval_batch_size).")
@click.option("--gpu_index", type=int, default=None, help="GPU to run on (sets CUDA_VISIBLE_DEVICES).")
@click.option("--predictions_file", default=None, type=click.Path(dir_okay=False),
              help="Score this COCO results file (a list of image_id, category_id, bbox, score, segmentation) "
                   "instead of a model.")
@set_option()
def mask_rcnn_evaluate(spec: str, model: str | None, key: str | None, results_dir: str | None,
                       batch_size: int | None, gpu_index: int | None, predictions_file: str | None,
                       overrides: tuple[str, ...]) -> CommandResult:

    if model and predictions_file:
        raise UsageError("give either -m/--model or --predictions_file, not both")
    if not model and not predictions_file:
        raise UsageError("missing -m/--model (or --predictions_file to score a COCO results file)")
    if model:
        from tltk.runtime.backends import backend_kind

        backend_kind(model)
        check_model_file(model, "-m", "backend")
    _gpu(gpu_index)
    from tltk import console
    from tltk.mask_rcnn.inference import evaluate_model, evaluate_results_file, write_report
    from tltk.models import load_spec, make_task

    loaded = load_spec(spec, model="mask_rcnn", kind="experiment", overrides=overrides)
    if model:
        _metadata(model, key)  # refuses another model's file
    task = make_task("mask_rcnn", loaded, key=key)
    evaluation = evaluate_model(task, model, key, batch_size) if model else evaluate_results_file(task, str(predictions_file))
    console.echo(evaluation.report)
    files = write_report(evaluation, os.path.abspath(default_results_dir(spec, results_dir)))
    data = evaluation.to_dict()
    data["files"] = files
    m = evaluation.metrics
    summary = (f"bbox AP {m.get('AP', 0):.4f} AP50 {m.get('AP50', 0):.4f}"
               + (f"; mask AP {m['mask_AP']:.4f} AP50 {m['mask_AP50']:.4f}" if "mask_AP" in m else "")
               + f" over {evaluation.num_images} image(s); report {files['report']}")
    return CommandResult(summary, data)


@tltk_command("inference", help="Detect and segment objects in images; overlays and COCO-format labels.")
@click.option("-i", "--image_dir", "--input", "input_path", required=True, type=click.Path(),
              help="One image or a folder of images (.jpg .jpeg .png .ppm .bmp, any case, any size).")
@click.option("-o", "--out_image_path", "--output_dir", "output_dir", required=True,
              help="Folder for the annotated images.")
@click.option("-e", "--experiment_spec_file", "--experiment_spec", "spec", default=None,
              type=click.Path(dir_okay=False),
              help="Experiment spec (category ids of val_json_file); optional for a .tlt that records its classes.")
@click.option("-m", "--model", "--model_path", "model", required=True, type=click.Path(dir_okay=False),
              help="Model: .tlt/.keras/.hdf5, .onnx/.etlt or .engine.")
@key_option()
@click.option("-l", "--out_label_path", "--label_dir", "label_dir", default=None,
              help="Write COCO-format labels here: <image>.json per image and results.json for all.")
@click.option("-b", "--batch_size", type=int, default=1, show_default=True, help="Images per batch.")
@click.option("-t", "--threshold", type=float, default=0.6, show_default=True,
              help="Smallest score drawn and written (TAO's default 0.6).")
@click.option("--include_mask", is_flag=True, help="Draw the instance masks on the overlays.")
@click.option("-c", "--class_map", default=None, type=click.Path(dir_okay=False),
              help="Text file with one class name per line (class-index order) overriding the model's names.")
@click.option("--gpu_index", type=int, default=None, help="GPU to run on (sets CUDA_VISIBLE_DEVICES).")
@set_option()
def mask_rcnn_inference(input_path: str, output_dir: str, spec: str | None, model: str, key: str | None,
                        label_dir: str | None, batch_size: int, threshold: float, include_mask: bool,
                        class_map: str | None, gpu_index: int | None, overrides: tuple[str, ...]) -> CommandResult:
    from tltk.runtime.backends import backend_kind

    backend_kind(model)
    check_model_file(model, "-m", "backend")
    _gpu(gpu_index)
    from tltk.mask_rcnn.inference import run_inference
    from tltk.models import load_spec, make_task

    loaded = load_spec(spec, model="mask_rcnn", kind="experiment", overrides=overrides) if spec else None
    metadata = _metadata(model, key)
    if loaded is None and "input_shape" not in metadata:
        raise UsageError(f"-m {model}: not a model file that records its input shape (a .tlt written by tltk or an "
                         ".onnx/.etlt export)", hint="pass the experiment spec with -e")
    task = make_task("mask_rcnn", loaded, key=key, metadata=metadata)
    data = run_inference(task, model, input_path, output_dir, key=key, label_dir=label_dir, batch_size=batch_size,
                         threshold=threshold, include_mask=include_mask, class_map=class_map, metadata=metadata)
    summary = (f"{data['detections_total']} detection(s) in {data['images']} image(s) with {data['backend']}; "
               f"overlays in {data['annotated_dir']}" + (f"; labels in {data['labels_dir']}" if label_dir else ""))
    return CommandResult(summary, data)


def _metadata(model: str, key: str | None) -> dict:
    """A tltk container's metadata (classes, category map, input shape); the input shape of other files."""
    from tltk.modelfile.container import check_model_kind, container_info, read_metadata

    if os.path.isfile(model) and container_info(model) is not None:
        metadata = dict(read_metadata(model, key))
        check_model_kind(metadata, "mask_rcnn", f"-m {model}")
        return metadata
    if os.path.isfile(model) and model.lower().endswith((".onnx", ".etlt")):
        from tltk.runtime.backends import onnx_input_chw

        return {"input_shape": list(onnx_input_chw(model, key))}
    return {}
