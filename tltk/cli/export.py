"""``tltk <model> export``: ONNX/.etlt, INT8 cache + Q/DQ ONNX, TensorRT engine, DeepStream files."""

from __future__ import annotations

import click

from tltk.cli.common import CommandResult, check_model_file, key_option, set_option, tltk_command


def make_export_command(model_name: str) -> click.Command:
    """The ``export`` command of one model (the same flags for every model)."""

    @tltk_command("export", help="Export a trained model to ONNX (or .etlt), with INT8 calibration, a TensorRT "
                                 "engine and DeepStream files on request.")
    @click.option("-m", "--model", required=True, type=click.Path(dir_okay=False), help="Trained model (.tlt/.keras/.hdf5).")
    @key_option()
    @click.option("-o", "--output_file", default=None, help="Output .onnx or .etlt (default <model>.onnx).")
    @click.option("-e", "--experiment_spec", "--experiment_spec_file", "spec", default=None,
                  help="Experiment spec: class names, postprocessing for DeepStream, calibration data loader.")
    @click.option("--data_type", type=click.Choice(["fp32", "fp16", "int8"], case_sensitive=False), default="fp32",
                  show_default=True, help="Target precision.")
    @click.option("--cal_data_file", default=None, help="TensorFile of calibration batches (written from --cal_image_dir when both are given).")
    @click.option("--cal_image_dir", default=None, help="Folder of calibration images.")
    @click.option("--cal_cache_file", default=None, help="TensorRT calibration cache to write (default cal.bin next to the output).")
    @click.option("--cal_json_file", default=None, help="Also write TAO's tensor_scales JSON.")
    @click.option("--cal_method", type=click.Choice(["entropy", "minmax", "percentile"]), default="entropy",
                  show_default=True, help="INT8 calibration algorithm.")
    @click.option("--batches", type=int, default=10, show_default=True, help="Calibration batches.")
    @click.option("--batch_size", type=int, default=8, show_default=True, help="Calibration batch size (TAO: 8).")
    @click.option("--max_batch_size", type=int, default=16, show_default=True, help="Engine / DeepStream max batch.")
    @click.option("--max_workspace_size", type=int, default=2 << 30, show_default=True, help="TensorRT workspace, bytes.")
    @click.option("--engine_file", default=None, help="Also build a TensorRT engine here (needs TensorRT).")
    @click.option("-s", "--strict_type_constraints", is_flag=True, help="Obey the requested precision strictly.")
    @click.option("--force_ptq", is_flag=True, help="Calibrate even if the model was trained with QAT.")
    @click.option("--gen_ds_config", is_flag=True, help="Write nvinfer_config.txt/.yml and labels.txt next to the output.")
    @click.option("--trt_version", default=None, help="TensorRT version for the cache header, e.g. 8.6.1 or 10.3.0.")
    @click.option("--static_batch_size", type=int, default=-1, show_default=True, help="-1 = dynamic batch.")
    @click.option("--target_opset", type=int, default=17, show_default=True, help="ONNX opset.")
    @click.option("--force", is_flag=True, help="Replace existing output files.")
    @click.option("--min_batch_size", "--opt_batch_size", "_profile_batch", type=int, default=None, hidden=True,
                  help="Accepted for TAO compatibility; the engine profile runs from 1 to --max_batch_size.")
    @click.option("--onnx_route", default=None, hidden=True,
                  help="Accepted for TAO compatibility; tltk always converts with tf2onnx.")
    @click.option("--results_dir", default=None, hidden=True,
                  help="Accepted for TAO compatibility (TAO writes a status file there); export writes none.")
    @set_option()
    def command(model: str, key: str | None, output_file: str | None, spec: str | None, data_type: str,
                            cal_data_file: str | None, cal_image_dir: str | None, cal_cache_file: str | None,
                            cal_json_file: str | None, cal_method: str, batches: int, batch_size: int,
                            max_batch_size: int, max_workspace_size: int, engine_file: str | None,
                            strict_type_constraints: bool, force_ptq: bool, gen_ds_config: bool,
                            trt_version: str | None, static_batch_size: int, target_opset: int,
                            force: bool, _profile_batch: int | None, onnx_route: str | None,
                            results_dir: str | None, overrides: tuple[str, ...]) -> CommandResult:
        check_model_file(model, "-m", "keras", hint="export takes the .tlt model that train wrote (an .onnx is "
                                                     "already exported)")
        from tltk.export.subtask import ExportOptions, run_export
        from tltk.models import load_spec, task_for_model_file

        if overrides and not spec:
            from tltk.errors import UsageError

            raise UsageError("--set overrides fields of the experiment spec: give it with -e")
        loaded = load_spec(spec, model=model_name, kind="experiment", overrides=overrides) if spec else None
        task, network, metadata = task_for_model_file(model_name, model, key, loaded)
        report = run_export(task, network, metadata, ExportOptions(
            model=model, output_file=output_file, key=key, experiment_spec=spec, data_type=data_type.lower(),
            cal_data_file=cal_data_file, cal_image_dir=cal_image_dir, cal_cache_file=cal_cache_file,
            cal_json_file=cal_json_file, cal_method=cal_method, batches=batches, batch_size=batch_size,
            max_batch_size=max_batch_size, max_workspace_size=max_workspace_size, engine_file=engine_file,
            strict_type_constraints=strict_type_constraints, force_ptq=force_ptq, gen_ds_config=gen_ds_config,
            trt_version=trt_version, static_batch_size=static_batch_size, opset=target_opset, overwrite=force),
            model_name)
        parity = report.get("onnx", {}).get("parity_max_abs_diff")
        summary = f"{report['output']} ({report['data_type']})"
        if parity is not None:
            summary += f"; Keras vs ONNX Runtime max |diff| {parity:.2e}"
        if report.get("qdq_onnx"):
            summary += f"; Q/DQ model {report['qdq_onnx']} (TensorRT); cache {report.get('cal_cache_file')}"
        if report.get("cpu_int8_onnx"):
            summary += f"; CPU INT8 model {report['cpu_int8_onnx']} (ONNX Runtime)"
        if report.get("deepstream"):
            summary += f"; DeepStream config {report['deepstream']['config']}"
        return CommandResult(summary, report)

    return command


detectnet_v2_export = make_export_command("detectnet_v2")
mask_rcnn_export = make_export_command("mask_rcnn")
