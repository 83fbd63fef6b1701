"""``tltk detectnet_v2 export``: a trained model to ONNX/.etlt, INT8 cache and Q/DQ model,
optionally a TensorRT engine and DeepStream files.

The work is done by the shared deployment core (:mod:`tltk.export.pipeline`,
:mod:`tltk.tensorrt`, :mod:`tltk.deepstream`); this module supplies DetectNet_v2's tensor names,
its preprocessing for calibration data and its DeepStream settings.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from tltk.errors import UsageError

log = logging.getLogger(__name__)

INPUT_NAME = "input_1"
OUTPUT_NAMES = {"output_cov": "output_cov/Sigmoid", "output_bbox": "output_bbox/BiasAdd"}


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
    batch_size: int = 16
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


def export_detectnet_v2(opts: ExportOptions) -> dict[str, Any]:
    """Run the whole export.

    Returns:
        The JSON report: ``onnx`` (path, names, parity), ``data_type`` and the INT8, engine and
        DeepStream outputs when produced.
    """
    from tltk.core.qat import is_quantized
    from tltk.data.images import preprocess_file
    from tltk.export.pipeline import export_model, prepare_calibration_batches
    from tltk.modelfile.container import load_keras_model

    if opts.data_type not in ("fp32", "fp16", "int8"):
        raise UsageError(f"--data_type must be fp32, fp16 or int8, not {opts.data_type!r}")
    output = default_output(opts.model, opts.output_file)
    for path in (output,):
        if os.path.exists(path) and not opts.overwrite:
            raise UsageError(f"{path} exists; refusing to overwrite it (pass --force to replace it)")
    if output.endswith(".etlt") and not opts.key:
        raise UsageError("an .etlt output needs a key: pass -k/--key (or set TLTK_KEY)")
    model, metadata = load_keras_model(opts.model, opts.key)
    input_chw = tuple(int(d) for d in model.inputs[0].shape[1:])
    experiment = _load_experiment(opts.experiment_spec)

    batches = None
    # A QAT model carries its ranges: export_model uses them unless --force_ptq asks to calibrate.
    if opts.data_type == "int8" and (opts.force_ptq or not is_quantized(model)):
        batches = prepare_calibration_batches(opts.cal_data_file or None, opts.cal_image_dir or None,
                                              opts.batch_size, opts.batches,
                                              preprocess=partial(preprocess_file, input_chw=input_chw))
        if batches is None:
            if experiment is None:
                raise UsageError("INT8 export needs calibration data: --cal_data_file, --cal_image_dir or "
                                 "-e <experiment spec> (its training data, without augmentation)")
            batches = _loader_batches(experiment, opts.batch_size, opts.batches)
    cache = opts.cal_cache_file or (os.path.join(os.path.dirname(os.path.abspath(output)), "cal.bin")
                                    if opts.data_type == "int8" else None)
    report = export_model(model, output, INPUT_NAME, OUTPUT_NAMES, key=opts.key, data_type=opts.data_type,
                          calibration_batches=batches, cal_method=opts.cal_method, cal_cache_file=cache,
                          trt_version=opts.trt_version, force_ptq=opts.force_ptq,
                          cal_json_file=opts.cal_json_file, max_batches=opts.batches,
                          opset=opts.opset, dynamic_batch=opts.static_batch_size <= 0,
                          static_batch_size=max(opts.static_batch_size, 1), overwrite=True)
    report["output"] = output
    class_names = list(metadata.get("class_names") or (_class_names(experiment) if experiment else []))
    if opts.engine_file:
        report["engine"] = _build_engine(opts, output, report, input_chw)
    if opts.gen_ds_config:
        report["deepstream"] = _deepstream(opts, output, report, input_chw, class_names, experiment)
    return report


def _load_experiment(path: str | None) -> Any:
    if not path:
        return None
    from tltk.spec import load_spec

    loaded = load_spec(path, model="detectnet_v2", kind="experiment")
    return loaded


def _class_names(loaded: Any) -> list[str]:
    from tltk.detectnet_v2.dataloader import target_class_names

    return list(target_class_names(loaded.message))


def _loader_batches(loaded: Any, batch_size: int, batches: int) -> Any:
    from tltk.detectnet_v2.dataloader import DetectNetV2Data

    data = DetectNetV2Data(loaded.message, spec_dir=loaded.spec_dir)
    ds = data.dataset("train", batch_size=batch_size, training=False, output="images", repeat=False,
                      shuffle=True).take(batches)
    return (np.asarray(b, np.float32) for b in ds.as_numpy_iterator())


def _build_engine(opts: ExportOptions, onnx_path: str, report: dict[str, Any],
                  input_chw: tuple[int, ...]) -> dict[str, Any]:
    from tltk.tensorrt.builder import build_onnx_engine
    from tltk.tensorrt.converter_args import settings_from_flags

    qdq = report.get("qdq_onnx")
    model_for_engine = qdq if opts.data_type == "int8" and qdq else onnx_path
    settings = settings_from_flags(engine_file=opts.engine_file, data_type=opts.data_type,
                                   cache_file=report.get("cal_cache_file"), calib_batch_size=opts.batch_size,
                                   max_batch_size=opts.max_batch_size, workspace=opts.max_workspace_size,
                                   input_dims=",".join(str(d) for d in input_chw),
                                   strict_types=opts.strict_type_constraints)
    return build_onnx_engine(str(model_for_engine), settings, model="detectnet_v2")


def _deepstream(opts: ExportOptions, output: str, report: dict[str, Any], input_chw: tuple[int, ...],
                class_names: list[str], experiment: Any) -> dict[str, str]:
    from tltk.deepstream.labels import detectnet_v2_labels
    from tltk.deepstream.nvinfer import detectnet_v2_nvinfer_config, write_deepstream_files

    if not class_names:
        raise UsageError("--gen_ds_config needs the class names: pass -e <experiment spec>")
    clustering = None
    if experiment is not None:
        from tltk.detectnet_v2.postprocess import params_from_postprocessing_config

        clustering = params_from_postprocessing_config(experiment.message.postprocessing_config)
    folder = os.path.dirname(os.path.abspath(output))
    qdq = report.get("qdq_onnx")
    model_file = qdq if (opts.data_type == "int8" and qdq and not output.endswith(".etlt")) else output
    config = detectnet_v2_nvinfer_config(
        model_file, class_names, input_chw, precision=opts.data_type, key=opts.key,
        calib_cache=report.get("cal_cache_file") if opts.data_type == "int8" and model_file == output else None,
        explicit_quantization=model_file != output, clustering=clustering, config_dir=folder,
        batch_size=max(opts.max_batch_size, 1))
    return write_deepstream_files(folder, config, detectnet_v2_labels(class_names))
