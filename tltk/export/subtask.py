"""The ``export`` subtask for any model: a trained model to ONNX/.etlt, INT8 cache and Q/DQ model,
optionally a TensorRT engine and DeepStream files.

The model is seen only through its :class:`~tltk.core.task.Task`: the export signature (TAO's
tensor names), the preprocessing of calibration images, the training data for calibration,
and the DeepStream settings.  The work is done by :mod:`tltk.export.pipeline`,
:mod:`tltk.tensorrt` and :mod:`tltk.deepstream`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tltk.console import native_log_to_debug
from tltk.core.task import DeepStreamRequest, Task
from tltk.errors import InvalidInputError, UsageError
from tltk.fileio import atomic_write_text

log = logging.getLogger(__name__)


@dataclass
class ExportOptions:
    """The export flags (names as TAO's ``export``)."""

    model: str
    output_file: str | None = None
    key: str | None = None
    experiment_spec: str | None = None
    data_type: str = "fp32"
    cal_data_file: str | None = None
    cal_image_dir: str | None = None
    cal_cache_file: str | None = None
    cal_json_file: str | None = None
    cal_method: str = "entropy"
    batches: int = 10
    batch_size: int = 8
    max_batch_size: int = 16
    max_workspace_size: int = 2 << 30
    engine_file: str | None = None
    strict_type_constraints: bool = False
    force_ptq: bool = False
    gen_ds_config: bool = False
    trt_version: str | None = None
    static_batch_size: int = -1
    opset: int = 17
    overwrite: bool = False


def default_output(model_path: str, output_file: str | None) -> str:
    """``<model without extension>.onnx`` unless ``-o`` is given (``.etlt`` keeps its extension)."""
    if output_file:
        return output_file
    return os.path.splitext(model_path)[0] + ".onnx"


def run_export(task: Task, network: Any, metadata: Mapping[str, Any], opts: ExportOptions,
               model_name: str) -> dict[str, Any]:
    """Run the whole export of one model.

    Args:
        task: the model's Task (with the experiment spec when one was given).
        network: the loaded Keras network.
        metadata: the model file's metadata.
        opts: the flags.
        model_name: the model name (``detectnet_v2``), for hints and the engine builder.

    A failed export removes the files it had written (those that did not exist before it
    started), so the corrected command runs again without ``--force``.

    Returns:
        The JSON report: ``onnx`` (path, names, parity), ``data_type`` and the INT8, engine and
        DeepStream outputs when produced.
    """
    if opts.data_type not in ("fp32", "fp16", "int8"):
        raise UsageError(f"--data_type must be fp32, fp16 or int8, not {opts.data_type!r}")
    output = default_output(opts.model, opts.output_file)
    marker = unfinished_marker(output)
    unfinished = os.path.isfile(marker)
    planned = _planned_outputs(opts, output)
    for path in planned:
        if os.path.isdir(path):
            raise InvalidInputError(f"{path}: is a folder; export writes a file there",
                                    hint="give a file path (or remove the folder)")
    if os.path.exists(output) and not opts.overwrite and not unfinished:
        raise UsageError(f"{output} exists; refusing to overwrite it (pass --force to replace it)")
    if output.endswith(".etlt") and not opts.key:
        raise UsageError("an .etlt output needs a key: pass -k/--key (or set TLTK_KEY)")
    if unfinished:
        log.warning("an earlier export to %s was stopped before it finished; its files are replaced", output)
    existing = {path for path in planned if os.path.exists(path) and not unfinished}
    os.makedirs(os.path.dirname(marker), exist_ok=True)
    atomic_write_text(marker, "export in progress; a killed export leaves this file and the next one replaces "
                              "the outputs it had written\n")
    try:
        report = _export(task, network, metadata, opts, model_name, output)
    except BaseException:
        removed = [path for path in planned if path not in existing and os.path.isfile(path)]
        for path in removed:
            os.remove(path)
        if removed:
            log.info("export failed; removed the files it had written: %s", ", ".join(removed))
        os.remove(marker)
        raise
    os.remove(marker)
    return report


def unfinished_marker(output: str) -> str:
    """The hidden file that marks an export to ``output`` as running (left behind by a killed one)."""
    folder, base = os.path.split(os.path.abspath(output))
    return os.path.join(folder, f".{base}.export-unfinished")


def _planned_outputs(opts: ExportOptions, output: str) -> list[str]:
    """Every file this export may write."""
    from tltk.export.pipeline import default_cache_path, default_cpu_int8_path, default_qdq_path

    folder = os.path.dirname(os.path.abspath(output))
    paths = [output]
    if opts.data_type == "int8":
        paths += [opts.cal_cache_file or default_cache_path(output), default_qdq_path(output),
                  default_cpu_int8_path(output)]
        if opts.cal_json_file:
            paths.append(opts.cal_json_file)
        if opts.cal_data_file and opts.cal_image_dir:
            paths.append(opts.cal_data_file)
    if opts.engine_file:
        paths.append(opts.engine_file)
    if opts.gen_ds_config:
        paths += [os.path.join(folder, name) for name in ("nvinfer_config.txt", "nvinfer_config.yml", "labels.txt")]
    return paths


def _export(task: Task, network: Any, metadata: Mapping[str, Any], opts: ExportOptions, model_name: str,
            output: str) -> dict[str, Any]:
    from tltk.core.qat import is_quantized
    from tltk.export.pipeline import export_model, prepare_calibration_batches

    signature = task.export_signature(network)
    preprocessing = task.preprocessing()
    if tuple(preprocessing.input_chw) != tuple(signature.input_chw):
        # Calibration images feed the exported network: they take its input size, whatever
        # size the spec's augmentation_config names.
        log.info("calibration images are resized to the model's input %s (the spec says %s)",
                 "x".join(map(str, signature.input_chw)), "x".join(map(str, preprocessing.input_chw)))
        preprocessing = dataclasses.replace(preprocessing, input_chw=tuple(signature.input_chw))

    batches = None
    if opts.force_ptq and not is_quantized(network):
        log.info("--force_ptq: the %s model %s has no QAT (no learned INT8 ranges to replace); its INT8 ranges "
                 "come from calibration, as without the flag", model_name, opts.model)
    # A QAT model carries its ranges: export_model uses them unless --force_ptq asks to calibrate.
    if opts.data_type == "int8" and (opts.force_ptq or not is_quantized(network)):
        def loader(batch_size: int, count: int) -> Any:
            if opts.experiment_spec is None:
                raise UsageError("INT8 export needs calibration data: --cal_data_file, --cal_image_dir or "
                                 "-e <experiment spec> (its training data, without augmentation)")
            return task.calibration_batches(batch_size, count)

        batches = prepare_calibration_batches(opts.cal_data_file or None, opts.cal_image_dir or None,
                                              opts.batch_size, opts.batches,
                                              preprocess=lambda path: preprocessing.load(path)[0], loader=loader)
    cache = opts.cal_cache_file or (os.path.join(os.path.dirname(os.path.abspath(output)), "cal.bin")
                                    if opts.data_type == "int8" else None)
    with native_log_to_debug():
        report = export_model(network, output, signature.input_name, signature.output_names, key=opts.key,
                              data_type=opts.data_type, calibration_batches=batches, cal_method=opts.cal_method,
                              cal_cache_file=cache, trt_version=opts.trt_version, force_ptq=opts.force_ptq,
                              cal_json_file=opts.cal_json_file, max_batches=opts.batches,
                              opset=opts.opset, dynamic_batch=opts.static_batch_size <= 0,
                              static_batch_size=max(opts.static_batch_size, 1), overwrite=True)
    report["output"] = output
    class_names = [str(n) for n in (metadata.get("class_names") or task.class_names)]
    for path in (output, report.get("qdq_onnx"), report.get("cpu_int8_onnx")):
        if path and str(path).lower().endswith(".onnx") and class_names:
            _record_class_names(str(path), class_names)
    if opts.engine_file:
        report["engine"] = _build_engine(opts, output, report, signature.input_chw, model_name)
    if opts.gen_ds_config:
        report["deepstream"] = _deepstream(task, opts, output, report, class_names)
    return report


def _record_class_names(path: str, class_names: list[str]) -> None:
    """Store the class names (network output order) in an ONNX model's ``class_names`` metadata property.

    Inference reads them back (:attr:`tltk.runtime.backends.InferenceBackend.class_names`) to
    match a spec's ``target_classes`` by name.
    """
    import json

    import onnx

    from tltk.export.onnx_export import save_onnx

    proto = onnx.load(path)
    kept = [p for p in proto.metadata_props if p.key != "class_names"]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    proto.metadata_props.add(key="class_names", value=json.dumps(class_names))
    save_onnx(proto, path)


def _build_engine(opts: ExportOptions, onnx_path: str, report: dict[str, Any],
                  input_chw: tuple[int, ...], model_name: str) -> dict[str, Any]:
    from tltk.tensorrt.builder import build_onnx_engine
    from tltk.tensorrt.converter_args import settings_from_flags

    qdq = report.get("qdq_onnx")
    model_for_engine = qdq if opts.data_type == "int8" and qdq else onnx_path
    settings = settings_from_flags(engine_file=opts.engine_file, data_type=opts.data_type,
                                   cache_file=report.get("cal_cache_file"), calib_batch_size=opts.batch_size,
                                   max_batch_size=opts.max_batch_size, workspace=opts.max_workspace_size,
                                   input_dims=",".join(str(d) for d in input_chw),
                                   strict_types=opts.strict_type_constraints)
    return build_onnx_engine(str(model_for_engine), settings, model=model_name)


def _deepstream(task: Task, opts: ExportOptions, output: str, report: dict[str, Any],
                class_names: list[str]) -> dict[str, str]:
    from tltk.deepstream.nvinfer import write_deepstream_files

    if not class_names:
        raise UsageError("--gen_ds_config needs the class names: pass -e <experiment spec>")
    folder = os.path.dirname(os.path.abspath(output))
    qdq = report.get("qdq_onnx")
    model_file = qdq if (opts.data_type == "int8" and qdq and not output.endswith(".etlt")) else output
    request = DeepStreamRequest(
        model_file=model_file, precision=opts.data_type, key=opts.key,
        calib_cache=report.get("cal_cache_file") if opts.data_type == "int8" and model_file == output else None,
        explicit_quantization=model_file != output, config_dir=folder, batch_size=max(opts.max_batch_size, 1),
        class_names=tuple(class_names))
    config, labels = task.deepstream_config(request)
    return write_deepstream_files(folder, config, labels)
