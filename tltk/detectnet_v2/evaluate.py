"""``tltk detectnet_v2 evaluate``: TAO's AP for a model on any backend, or for KITTI prediction files.

Two sources of detections, one report:

* **a model** (:func:`evaluate_model`): ``.tlt/.keras/.hdf5`` (Keras), ``.onnx/.etlt`` (ONNX
  Runtime) or a TensorRT engine, run over the validation split of the experiment spec (the
  training split with ``use_training_set``) through the spec's data loader, clustered with
  ``postprocessing_config`` and scored with ``evaluation_config``
  (:func:`tltk.detectnet_v2.evaluation.evaluate_split`).  The validation cost is computed from
  the outputs with the task's cost function for every backend.
* **prediction files** (:func:`evaluate_prediction_files`): KITTI files with a 16th confidence
  column (what ``inference`` writes), matched by file name to KITTI label files: those of a
  ``labels_dir``, or else the label files of the split's images (found next to the images,
  ``label_2`` beside ``image_2``).

Both print TAO's block (:func:`tltk.metrics.detection_ap.format_ap_table`) and write
``evaluation.json`` and ``plots/pr_curves.png`` to the results folder.
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
from tltk.metrics.detection_ap import EvaluationResult

log = logging.getLogger(__name__)

REPORT_FILE = "evaluation.json"
"""Name of the JSON report written to the results folder."""

PR_CURVES_FILE = os.path.join("plots", "pr_curves.png")
"""Path of the PR-curve plot inside the results folder."""

#: Folder names tried for the label files of an image folder, after ``image*`` -> ``label*``.
LABEL_FOLDER_NAMES = ("label_2", "labels")


@dataclass
class EvaluationReport:
    """Everything one ``evaluate`` run found.

    Attributes:
        result: AP per class, mAP, PR curves and counts.
        split: ``val`` or ``train``.
        source: what was evaluated (``model``, ``backend`` or ``predictions_dir``,
            ``labels``...).
        validation_cost: mean task cost over the split (model evaluation only).
        median_inference_time: median over batches of seconds per image (model evaluation only).
        notes: extra facts for the JSON report (skipped predictions...).
    """

    result: EvaluationResult
    split: str
    source: dict[str, Any]
    validation_cost: float | None = None
    median_inference_time: float | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON report: ``mAP`` and ``AP`` in [0, 1], ``num_images``, and the details."""
        r = self.result
        return {
            "mAP": float(r.mean_ap),
            "AP": {k: float(v) for k, v in r.ap_per_class.items()},
            "num_images": int(r.num_images),
            "mode": r.mode,
            "split": self.split,
            "validation_cost": self.validation_cost,
            "median_inference_time": self.median_inference_time,
            "counts": {k: vars(c).copy() for k, c in r.counts.items()},
            "source": dict(self.source),
            **self.notes,
        }


def _split(use_training_set: bool) -> str:
    return "train" if use_training_set else "val"


def evaluate_model(loaded: Any, model: str, key: str | None = None, framework: str | None = None,
                   use_training_set: bool = False, batch_size: int | None = None) -> EvaluationReport:
    """Evaluate a model file on the spec's validation (or training) split, through the Task.

    Args:
        loaded: the loaded experiment spec (:class:`tltk.spec.LoadedSpec`).
        model: the model file (backend by extension, or by ``framework``).
        key: key of sealed ``.tlt`` / ``.etlt`` files.
        framework: ``tlt``, ``onnx``, ``tensorrt`` or None.
        use_training_set: evaluate the training split instead of the validation split.
        batch_size: images per batch (default ``training_config.batch_size_per_gpu``; at most the
            engine's largest batch for TensorRT).

    Returns:
        The :class:`EvaluationReport`.

    Raises:
        InvalidInputError: missing model, or a model whose input size differs from the spec's
            ``augmentation_config.preprocessing``.
        UsageError: a framework that cannot run the file, or a non-positive batch size.
        MissingDependencyError: TensorRT needed and missing (exit code 3).
    """
    from tltk.models import make_task
    from tltk.runtime.backends import open_backend, resolve_framework

    resolve_framework(model, framework)
    if not os.path.isfile(model):
        raise InvalidInputError(f"-m: {model}: no such model file")
    if batch_size is not None and batch_size < 1:
        raise UsageError(f"--batch_size must be positive, got {batch_size}")
    metadata = _saved_metadata(model, key)
    task = make_task("detectnet_v2", loaded, key=key)
    split = _split(use_training_set)
    with open_backend(model, key, framework=framework, input_chw=task.input_shape, model="detectnet_v2") as backend:
        _check_input(backend.input_shape_chw, task.input_shape, model)
        size = batch_size or task.data.batch_size
        if backend.max_batch_size:
            size = min(size, backend.max_batch_size)
        seconds_per_image: list[float] = []

        def predict(images: np.ndarray) -> Any:
            started = time.perf_counter()
            out = backend.run(images)
            seconds_per_image.append((time.perf_counter() - started) / max(len(images), 1))
            return out

        evaluation = task.evaluate(predict, split, batch_size=size, model_metadata=metadata)
        kind = backend.kind
    source = {"model": os.path.abspath(model), "backend": kind, "batch_size": size}
    median = float(np.median(seconds_per_image)) if seconds_per_image else None
    return EvaluationReport(evaluation.details["result"], split, source, evaluation.details["validation_cost"], median)


def _check_input(model_chw: tuple[int, ...], spec_chw: tuple[int, int, int], path: str) -> None:
    mismatch = [i for i in range(3) if model_chw[i] > 0 and model_chw[i] != spec_chw[i]]
    if mismatch:
        shown = "x".join("?" if d < 0 else str(d) for d in model_chw)
        raise InvalidInputError(
            f"{path}: the model's input is {shown} (C x H x W) but the spec's augmentation_config.preprocessing "
            f"gives {spec_chw[0]}x{spec_chw[1]}x{spec_chw[2]}",
            hint="evaluate with the spec the model was trained with, or export the model at the spec's size")


def label_candidates(image_path: str) -> list[str]:
    """Where the KITTI label file of an image may be, in the order they are tried.

    The image's folder name with ``image`` replaced by ``label`` (``image_2`` -> ``label_2``,
    ``images`` -> ``labels``), then ``label_2`` and ``labels`` beside the image folder; the label
    file is ``<image stem>.txt``.

    Args:
        image_path: the image path, with or without its extension.

    Returns:
        Candidate label file paths.
    """
    folder = os.path.dirname(os.path.abspath(image_path))
    parent, name = os.path.dirname(folder), os.path.basename(folder)
    stem = os.path.splitext(os.path.basename(image_path))[0]
    names = []
    lower = name.lower()
    if "image" in lower:
        at = lower.index("image")
        names.append(name[:at] + ("LABEL" if name[at:at + 5].isupper() else "label") + name[at + 5:])
    names += [n for n in LABEL_FOLDER_NAMES if n not in names]
    return [os.path.join(parent, n, stem + ".txt") for n in names]


def split_label_files(data: Any, split: str) -> tuple[list[tuple[str, str]], list[str]]:
    """The label files of a split's images, found from the TFRecords' frame ids.

    ``dataset_convert`` records ``frame/id`` = ``<image folder name>/<stem>`` relative to the
    data source's ``image_directory_path``; the label file is looked for with
    :func:`label_candidates`.

    Args:
        data: the spec's :class:`tltk.detectnet_v2.dataloader.DetectNetV2Data`.
        split: ``val`` or ``train``.

    Returns:
        ``(frames, label_folders)``: ``(stem, label path)`` per image in split order, and the
        folders the labels were found in.

    Raises:
        InvalidInputError: label files are missing (the first ones are named with the places
            looked in).
    """
    from tltk.data.tfrecord import frame_ids

    frames: list[tuple[str, str]] = []
    folders: list[str] = []
    missing: list[str] = []
    for src in data.sources(split):
        for frame_id in frame_ids(src.tfrecords):
            image = os.path.join(src.image_directory, frame_id)
            candidates = label_candidates(image)
            found = next((c for c in candidates if os.path.isfile(c)), None)
            if found is None:
                missing.append(f"{frame_id}: looked for {', '.join(candidates)}")
                continue
            frames.append((os.path.basename(frame_id), found))
            folder = os.path.dirname(found)
            if folder not in folders:
                folders.append(folder)
    if missing:
        listed = "\n".join(f"  {m}" for m in missing[:10])
        raise InvalidInputError(f"{len(missing)} image(s) of the {split} split have no KITTI label file:\n{listed}",
                                hint="pass the label folder with --labels_dir")
    return frames, folders


def _text_files(folder: str, flag: str) -> dict[str, str]:
    if not os.path.isdir(folder):
        raise InvalidInputError(f"{flag}: {folder}: no such folder")
    return {os.path.splitext(f)[0]: os.path.join(folder, f) for f in sorted(os.listdir(folder))
            if f.lower().endswith(".txt") and os.path.isfile(os.path.join(folder, f))}


def evaluate_prediction_files(loaded: Any, predictions_dir: str, labels_dir: str | None = None,
                              use_training_set: bool = False) -> EvaluationReport:
    """Score KITTI prediction files (offline evaluation; a tltk addition).

    The images are the label files of ``labels_dir`` (every ``.txt``), or else those of the
    spec's validation (training) split.  A prediction file ``<stem>.txt`` belongs to the image
    of the same stem.  Classes are mapped with the spec's ``target_class_mapping``
    (case-insensitively); ``evaluation_config`` gives the overlaps, box filters and AP mode.

    Args:
        loaded: the loaded experiment spec.
        predictions_dir: folder of ``<stem>.txt`` prediction files (16 columns).
        labels_dir: folder of KITTI label files; None: the split's label files.
        use_training_set: use the training split's images (without ``labels_dir``).

    Returns:
        The :class:`EvaluationReport`.

    Raises:
        InvalidInputError: a missing folder, a prediction file without a label file, or a
            malformed line (``file:line``).
    """
    from tltk.detectnet_v2.dataloader import DetectNetV2Data
    from tltk.detectnet_v2.evaluation import class_resolvers, evaluate_kitti_files
    from tltk.metrics.detection_ap import EvaluationParams

    experiment = loaded.message
    data = DetectNetV2Data(experiment, spec_dir=loaded.spec_dir)
    predictions = _text_files(predictions_dir, "--predictions_dir")
    split = _split(use_training_set)
    notes: dict[str, Any] = {}
    source: dict[str, Any]
    if labels_dir:
        frames = sorted(_text_files(labels_dir, "--labels_dir").items())
        source = {"predictions_dir": os.path.abspath(predictions_dir), "labels": os.path.abspath(labels_dir)}
        split = "labels_dir"
    else:
        frames, folders = split_label_files(data, split)
        in_split = {stem for stem, _ in frames}
        outside = sorted(s for s in predictions if s not in in_split
                         and any(os.path.isfile(os.path.join(f, s + ".txt")) for f in folders))
        if outside:
            log.info("%d prediction file(s) are for images outside the %s split and are ignored", len(outside), split)
            for stem in outside:
                del predictions[stem]
        notes["predictions_outside_split"] = len(outside)
        source = {"predictions_dir": os.path.abspath(predictions_dir), "labels": folders}
    if not predictions:
        log.warning("no prediction file matches an image in %s; every image counts as one without detections",
                    predictions_dir)
    resolve_gt, resolve_pred = class_resolvers(data.class_names, data.class_mapping)
    params = EvaluationParams.from_config(experiment.evaluation_config)
    scored = evaluate_kitti_files(frames, predictions, data.class_names, params, resolve_gt, resolve_pred)
    notes["images_without_predictions"] = len(scored.images_without_predictions)
    notes["unknown_prediction_classes"] = scored.unknown_prediction_classes
    return EvaluationReport(scored.result, split, source, notes=notes)


def write_report(report: EvaluationReport, results_dir: str) -> dict[str, str]:
    """Write ``evaluation.json`` and ``plots/pr_curves.png`` to the results folder.

    Args:
        report: the evaluation report.
        results_dir: the results folder (created).

    Returns:
        ``{"report": path, "pr_curves": path}``.
    """
    from tltk.fileio import atomic_write_bytes
    from tltk.viz.plots import plot_pr_curves

    os.makedirs(results_dir, exist_ok=True)
    report_path = os.path.join(results_dir, REPORT_FILE)
    plot_path = str(plot_pr_curves(report.result, os.path.join(results_dir, PR_CURVES_FILE)))
    atomic_write_bytes(report_path, (json.dumps(report.to_dict(), indent=2) + "\n").encode("utf-8"))
    return {"report": report_path, "pr_curves": plot_path}


def _saved_metadata(model: str, key: str | None) -> dict[str, Any]:
    """The metadata of a tltk container (trained objective weights...); empty for other files."""
    from tltk.modelfile.container import container_info, read_metadata

    if container_info(model) is None:
        return {}
    return dict(read_metadata(model, key))
