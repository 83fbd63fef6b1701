"""MaskRCNN ``evaluate`` and ``inference`` on any backend, and offline scoring of COCO results files.

* :func:`evaluate_model`: a model file (``.tlt``/``.keras``/``.hdf5`` Keras, ``.onnx``/``.etlt``
  ONNX Runtime, ``.engine`` TensorRT) over the spec's validation TFRecords, scored with
  pycocotools against ``val_json_file`` (bbox, and segm when the model has masks).
* :func:`evaluate_results_file`: a COCO results file (``image_id``, ``category_id``, ``bbox``,
  ``score``, ``segmentation``) as DeepStream, Triton or ``inference -l`` write it.
* :func:`run_inference`: images (a file or a folder, any size) letterboxed as in training;
  detections mapped back to original pixels; overlays with translucent masks; COCO-format
  labels for every backend (one JSON per image plus one combined results file).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tltk.errors import InvalidInputError, UsageError

log = logging.getLogger(__name__)

REPORT_FILE = "evaluation.json"
PR_CURVES_FILE = os.path.join("plots", "pr_curves.png")
RESULTS_FILE = "results.json"
"""Name of the combined COCO results file ``inference -l`` writes (ready for ``--predictions_file``)."""

#: TAO's default inference threshold.
DEFAULT_THRESHOLD = 0.6


@dataclass
class MaskRCNNEvaluation:
    """What one ``evaluate`` run found.

    Attributes:
        metrics: TAO's metric names (``AP`` ... ``ARl``, ``mask_AP`` ...) -> value in 0..1.
        report: the printable table.
        num_images: images evaluated.
        per_category: IoU type -> category name -> AP.
        source: what was evaluated.
        notes: extra facts for the JSON report.
    """

    metrics: dict[str, float]
    report: str
    num_images: int
    per_category: dict[str, dict[str, float]]
    source: dict[str, Any]
    notes: dict[str, Any] = field(default_factory=dict)
    coco: Any = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON document: every metric as a float in 0..1, ``num_images`` and the details."""
        return {**{k: float(v) for k, v in self.metrics.items()}, "num_images": int(self.num_images),
                "per_category": self.per_category, "source": self.source, **self.notes}


def evaluate_model(task: Any, model: str, key: str | None = None, batch_size: int | None = None) -> MaskRCNNEvaluation:
    """Evaluate a model file on the validation split through the Task and the shared backends."""
    if not os.path.isfile(model):
        raise InvalidInputError(f"-m: {model}: no such model file")
    if batch_size is not None and batch_size < 1:
        raise UsageError(f"--batch_size must be positive, got {batch_size}")
    signature_names = {"generate_detections", "mask_fcn_logits/BiasAdd"}
    with _open(model, key) as backend:
        _check_input(backend.input_shape_chw, task.input_shape, model)
        missing = [n for n in ("generate_detections",) if n not in backend.output_names]
        if missing:
            raise InvalidInputError(f"{model}: no output {missing[0]}; outputs are {backend.output_names}",
                                    hint="export the model with `tltk mask_rcnn export`")
        size = batch_size or int(task.experiment.eval_batch_size)
        if backend.max_batch_size:
            size = min(size, backend.max_batch_size)
        evaluation = task.evaluate(backend.run, "val", batch_size=size)
        kind = backend.kind
    source = {"model": os.path.abspath(model), "backend": kind, "batch_size": size,
              "outputs": sorted(signature_names & set(backend.output_names))}
    return MaskRCNNEvaluation(evaluation.metrics, evaluation.report, evaluation.num_images,
                              evaluation.details["per_category"], source,
                              {"seconds_per_image": evaluation.details["seconds_per_image"],
                               "num_detections": evaluation.details["num_detections"]},
                              coco=evaluation.details["coco"])


def _open(model: str, key: str | None) -> Any:
    """The model on its backend, outputs under TAO's names (Keras layer names mapped)."""
    from tltk.mask_rcnn.model import ONNX_OUTPUT_NAMES
    from tltk.runtime.backends import backend_kind, open_backend

    if backend_kind(model) == "keras":
        from tltk.modelfile.container import load_keras_model
        from tltk.runtime.backends import KerasBackend

        network, _ = load_keras_model(model, key)
        names = {k: v for k, v in ONNX_OUTPUT_NAMES.items() if k in network.output_names}
        return KerasBackend(model, output_names=names, model=network)
    return open_backend(model, key, model="mask_rcnn")


def _check_input(model_chw: tuple[int, ...], spec_chw: tuple[int, int, int], path: str) -> None:
    for got, want, name in zip(model_chw, spec_chw, ("channels", "height", "width"), strict=True):
        if got > 0 and got != want:
            raise InvalidInputError(f"{path}: the model's input {name} is {got} but the spec's image_size gives {want}",
                                    hint="evaluate with the spec the model was trained with")


def evaluate_results_file(task: Any, predictions_file: str) -> MaskRCNNEvaluation:
    """Score a COCO results file against the spec's ``val_json_file`` (offline scoring)."""
    from tltk.metrics.coco import evaluate_coco, format_coco_table, load_ground_truth, validate_results
    from tltk.spec import resolve_spec_path

    try:
        with open(predictions_file, encoding="utf-8") as fh:
            results = json.load(fh)
    except FileNotFoundError:
        raise InvalidInputError(f"--predictions_file {predictions_file}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"--predictions_file {predictions_file}: not a JSON file ({exc})",
                                hint="give a COCO results file: a list of {image_id, category_id, bbox, score, "
                                     "segmentation}") from None
    if not isinstance(results, list):
        raise InvalidInputError(f"--predictions_file {predictions_file}: expected a JSON list of results, found "
                                f"{type(results).__name__}")
    gt_path = resolve_spec_path(task.spec, str(task.experiment.data_config.val_json_file))
    gt = load_ground_truth(gt_path)
    has_masks = any(isinstance(r, dict) and "segmentation" in r for r in results)
    iou_types = ("bbox", "segm") if has_masks else ("bbox",)
    try:
        validate_results(results, gt, iou_types=iou_types)
    except InvalidInputError as exc:
        raise InvalidInputError(f"--predictions_file {predictions_file}: {exc.message}", hint=exc.hint) from None
    image_ids = sorted(gt.getImgIds())
    eval_samples = int(task.experiment.data_config.eval_samples)
    if eval_samples > 0:
        image_ids = image_ids[:eval_samples] if not results else sorted(
            set(image_ids) & {int(r["image_id"]) for r in results} or set(image_ids[:eval_samples]))
    coco = evaluate_coco(gt, results, iou_types=iou_types, image_ids=image_ids)
    return MaskRCNNEvaluation(dict(coco.metrics), format_coco_table(coco), len(image_ids), coco.per_category,
                              {"predictions_file": os.path.abspath(predictions_file),
                               "ground_truth": os.path.abspath(gt_path)},
                              {"num_results": len(results)}, coco=coco)


def write_report(evaluation: MaskRCNNEvaluation, results_dir: str) -> dict[str, str]:
    """``evaluation.json`` and ``plots/pr_curves.png`` under ``results_dir``; returns their paths."""
    from types import SimpleNamespace

    from tltk.fileio import atomic_write_text
    from tltk.viz.plots import plot_pr_curves

    os.makedirs(results_dir, exist_ok=True)
    report_path = os.path.join(results_dir, REPORT_FILE)
    atomic_write_text(report_path, json.dumps(evaluation.to_dict(), indent=2) + "\n")
    files = {"report": report_path}
    if evaluation.coco is not None:
        curves = SimpleNamespace(pr_curves=evaluation.coco.pr_curves("bbox"),
                                 ap_per_class=evaluation.coco.per_category["bbox"],
                                 mean_ap=evaluation.metrics.get("AP", 0.0), mode="COCO")
        files["pr_curves"] = str(plot_pr_curves(curves, os.path.join(results_dir, PR_CURVES_FILE),
                                                title="bbox precision-recall at IoU 0.5 (legend: AP@[.5:.95])"))
    return files


# ---------------------------------------------------------------------------------------------
# inference


def _class_names(task: Any, metadata: dict[str, Any], class_map: str | None, model: str) -> list[str]:
    """Names by class index 1..C-1 (index 0 is the background)."""
    names = list(task.class_names)
    if class_map:
        try:
            with open(class_map, encoding="utf-8") as fh:
                lines = [line.strip() for line in fh if line.strip()]
        except OSError as exc:
            raise InvalidInputError(f"-c {class_map}: cannot read it ({exc.strerror or exc})") from None
        except UnicodeDecodeError:
            raise InvalidInputError(f"-c {class_map}: not a text file (it is not UTF-8 text)",
                                    hint="one class name per line in class-index order") from None
        if lines and lines[0].lower() in ("bg", "background", "_background_"):
            lines = lines[1:]
        if names and len(lines) != len(names):
            raise InvalidInputError(f"-c {class_map}: {len(lines)} class names for a model with {len(names)} classes",
                                    hint="one name per line in class-index order (a first 'BG' line is allowed)")
        names = lines
    if not names:
        raise UsageError(f"-m {model}: the model file records no class names (exported ONNX files keep none)",
                         hint="pass -e <experiment spec> or -c <class map file>")
    return names


def _dataset_image_ids(task: Any) -> dict[str, int]:
    """File name -> COCO image id from the spec's ``val_json_file`` (empty without a spec).

    Labels of validation images then carry the dataset's image ids, so the combined results file
    scores with ``evaluate --predictions_file``; other images keep their file name as ``image_id``.
    """
    if task.spec is None or not task.experiment.data_config.val_json_file:
        return {}
    from tltk.spec import resolve_spec_path

    path = resolve_spec_path(task.spec, str(task.experiment.data_config.val_json_file))
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        log.warning("%s: cannot read it; labels use file names as image_id", path)
        return {}
    return {os.path.basename(str(img.get("file_name", ""))): int(img["id"])
            for img in data.get("images", []) if isinstance(img, dict) and "id" in img}


def run_inference(task: Any, model: str, input_path: str, output_dir: str, key: str | None = None,
                  label_dir: str | None = None, batch_size: int = 1, threshold: float = DEFAULT_THRESHOLD,
                  include_mask: bool = False, class_map: str | None = None,
                  metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run a MaskRCNN model on images (see the module docstring).

    Args:
        task: the MaskRCNN Task (with the spec, or built from the model's metadata).
        model: the model file (any backend).
        input_path: one image or a folder of images.
        output_dir: annotated images go here.
        key: key of sealed files.
        label_dir: COCO-format labels go here (one JSON per image and :data:`RESULTS_FILE`).
        batch_size: images per batch.
        threshold: detections below this score are not drawn nor written.
        include_mask: draw the instance masks on the overlays.
        class_map: a text file with one class name per line overriding the model's names.
        metadata: the model file's metadata (class names, category map).

    Returns:
        A JSON-able summary.
    """
    from tltk import console
    from tltk.data.images import list_images, load_image
    from tltk.fileio import atomic_write_text
    from tltk.mask_rcnn.results import image_results
    from tltk.viz.overlay import DEFAULT_PALETTE, MASK_RCNN_LABEL_FORMAT, OverlayBox, save_overlay

    if batch_size < 1:
        raise UsageError(f"-b/--batch_size must be positive, got {batch_size}")
    if not 0.0 <= threshold <= 1.0:
        raise UsageError(f"-t/--threshold must be in [0, 1], got {threshold}")
    images = list_images(input_path)
    names = _class_names(task, metadata or {}, class_map, model)
    category_map = task.category_map if (task.spec is not None or task._category_map is not None) else None

    def category_id_of(index: int) -> int:
        return int(category_map.category_id_of(index)) if category_map is not None else int(index)

    names_by_id = {category_id_of(i + 1): n for i, n in enumerate(names)}
    image_ids = _dataset_image_ids(task)
    preprocessing = task.preprocessing()
    out = os.path.abspath(output_dir)
    os.makedirs(out, exist_ok=True)
    if label_dir:
        os.makedirs(label_dir, exist_ok=True)
    combined: list[dict[str, Any]] = []
    counts: dict[str, int] = {n: 0 for n in names}
    started = time.perf_counter()
    with _open(model, key) as backend:
        _check_input(backend.input_shape_chw, preprocessing.input_chw, model)
        for start in console.progress(range(0, len(images), batch_size), desc="inference", unit="batch"):
            chunk = images[start:start + batch_size]
            originals = [load_image(p, 3) for p in chunk]
            prepared = [preprocessing.apply(img) for img in originals]
            outputs = backend.run(np.stack([chw for chw, _ in prepared]))
            dets = np.asarray(outputs["generate_detections"])
            masks = outputs.get("mask_fcn_logits/BiasAdd")
            for i, (path, image, (_, transform)) in enumerate(zip(chunk, originals, prepared, strict=True)):
                name = os.path.basename(path)
                image_id = image_ids.get(name, name)
                rows, pasted = image_results(dets[i], None if masks is None else np.asarray(masks[i]), image_id,
                                             transform.scale_yx[0], transform.original_hw, category_id_of,
                                             score_threshold=threshold)
                boxes = []
                for row, mask in zip(rows, pasted if pasted else [None] * len(rows), strict=True):
                    label = names_by_id.get(row["category_id"], str(row["category_id"]))
                    counts[label] = counts.get(label, 0) + 1
                    x, y, w, h = row["bbox"]
                    index = list(names_by_id).index(row["category_id"]) if row["category_id"] in names_by_id else 0
                    boxes.append(OverlayBox(label, x, y, x + w, y + h, row["score"],
                                            DEFAULT_PALETTE[index % len(DEFAULT_PALETTE)],
                                            mask=mask if include_mask else None))
                save_overlay(image, boxes, os.path.join(out, name), linewidth=2, label_format=MASK_RCNN_LABEL_FORMAT)
                if label_dir:
                    labelled = [{**row, "id": k, "area": round(row["bbox"][2] * row["bbox"][3], 2), "iscrowd": 0}
                                for k, row in enumerate(rows)]
                    atomic_write_text(os.path.join(label_dir, os.path.splitext(name)[0] + ".json"),
                                      json.dumps(labelled, indent=2) + "\n")
                    combined.extend(rows)
        kind = backend.kind
    results_file = None
    if label_dir:
        results_file = os.path.join(label_dir, RESULTS_FILE)
        atomic_write_text(results_file, json.dumps(combined) + "\n")
    return {"images": len(images), "detections": counts, "detections_total": int(sum(counts.values())),
            "annotated_dir": out, "labels_dir": label_dir, "results_file": results_file, "backend": kind,
            "model": model, "threshold": threshold, "seconds": round(time.perf_counter() - started, 2)}
