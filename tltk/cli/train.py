"""``tltk <model> train``: train from an experiment spec, resuming from the newest checkpoint."""

from __future__ import annotations

import os
from typing import Any

import click

from tltk.cli.common import CommandResult, default_results_dir, key_option, set_option, tltk_command


def _gpu_index(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> list[int] | None:
    if not value:
        return None
    ids: list[int] = []
    for item in value:
        for part in item.replace(",", " ").split():
            try:
                ids.append(int(part))
            except ValueError as exc:
                raise click.BadParameter(f"{part!r} is not a GPU id") from exc
    return ids


def request_determinism() -> None:
    """Ask TensorFlow for run-to-run reproducible training; must run before TensorFlow is imported.

    Three sources make two CPU runs with the same seed differ (measured on MaskRCNN's tiny
    reliability spec, separate processes): oneDNN's multi-threaded kernels; Grappler, whose graph
    rewrites (the arithmetic optimizer's AddN trees among them) come out in a per-process order, so
    sums such as the gradient of a layer shared by the FPN levels change in the last bit (1 step:
    one tensor 1 ulp apart in every pair of runs; 4 steps: ~1e-6 with oneDNN off); and, on GPUs,
    non-deterministic kernels.  With oneDNN and Grappler off, 4-step runs end bit-identical.
    MaskRCNN's discrete choices (top-k proposals, IoU thresholds) amplify any last-bit difference
    within a few steps, so it needs all three.
    """
    import sys

    too_late = "tensorflow" in sys.modules and os.environ.get("TF_ENABLE_ONEDNN_OPTS") != "0"
    os.environ["TF_DETERMINISTIC_OPS"] = "1"
    os.environ["TF_CUDNN_DETERMINISTIC"] = "1"
    os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"
    if too_late:
        import logging

        logging.getLogger(__name__).warning("--enable_determinism: TensorFlow was imported before the flag was read; "
                                            "oneDNN stays on and CPU results may still vary in the last digits")
    import tensorflow as tf

    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})


def _make_train_command(model: str) -> click.Command:
    @tltk_command("train", help=f"Train a {model} model from an experiment spec (resumes automatically).")
    @click.option("-e", "--experiment_spec_file", "--experiment_spec", "spec", required=True,
                  type=click.Path(dir_okay=False), help="Experiment spec (TAO text format).")
    @click.option("-r", "-d", "--results_dir", "--model_dir", "results_dir", default=None,
                  help="Output folder (default results/<spec stem>); -d/--model_dir as TAO's MaskRCNN.")
    @click.option("-n", "--model_name", default="model", show_default=True, help="Final model file stem.")
    @key_option()
    @click.option("--gpus", type=int, default=1, show_default=True, help="Number of GPUs (MirroredStrategy).")
    @click.option("--gpu_index", multiple=True, callback=_gpu_index, help="GPU ids to use, e.g. --gpu_index 0 1.")
    @click.option("--use_amp", is_flag=True, help="Mixed precision (float16 compute with loss scaling).")
    @click.option("--enable_determinism", is_flag=True,
                  help="Reproducible training: deterministic TensorFlow ops, TensorFlow's own CPU kernels instead of "
                       "oneDNN's and no Grappler graph rewrites (both vary from run to run); slower.")
    @click.option("--no_resume", is_flag=True,
                  help="Start from scratch even if checkpoints exist (the earlier run's checkpoints are removed).")
    @click.option("-np", "--num_processes", type=int, default=-1, hidden=True,
                  help="Accepted for TAO compatibility: one process drives every GPU here (--gpus); several "
                       "machines use TF_CONFIG (docs/training.md).")
    @click.option("--launch_cuda_blocking", is_flag=True, hidden=True, help="Set CUDA_LAUNCH_BLOCKING=1 (debugging).")
    @set_option()
    def command(spec: str, results_dir: str | None, model_name: str, key: str | None, gpus: int,
                gpu_index: list[int] | None, use_amp: bool, enable_determinism: bool, no_resume: bool,
                num_processes: int, launch_cuda_blocking: bool, overrides: tuple[str, ...]) -> CommandResult:
        if enable_determinism:
            request_determinism()
        from tltk.models import load_spec
        from tltk.spec import write_resolved_spec

        loaded = load_spec(spec, model=model, kind="experiment", overrides=overrides)
        out = os.path.abspath(default_results_dir(spec, results_dir))
        os.makedirs(out, exist_ok=True)
        resolved = os.path.join(out, "experiment_spec.txt")
        earlier = open(resolved, encoding="utf-8").read() if os.path.isfile(resolved) else None
        write_resolved_spec(loaded.message, resolved)
        if launch_cuda_blocking:
            os.environ["CUDA_LAUNCH_BLOCKING"] = "1"
        if num_processes > 1:
            import logging

            logging.getLogger(__name__).info("-np %d: tltk runs one process per machine; it uses the GPUs given by "
                                             "--gpus/--gpu_index", num_processes)
        from tltk.models import make_task

        task = make_task(model, loaded, key=key)
        import keras

        keras.utils.set_random_seed(task.random_seed())
        from tltk.console import native_log_to_debug
        from tltk.core.checkpoints import CheckpointMismatchError
        from tltk.core.trainer import train

        try:
            with native_log_to_debug():
                report = train(task, out, model_name=model_name, key=key, use_amp=use_amp, gpus=gpus,
                               gpu_index=gpu_index, resume=not no_resume)
        except CheckpointMismatchError:
            if earlier is not None:  # the folder keeps describing the run its checkpoints belong to
                from tltk.fileio import atomic_write_text

                atomic_write_text(resolved, earlier)
            raise
        data: dict[str, Any] = {
            "results_dir": report.results_dir,
            "model": report.model_path,
            "resumed_from_epoch": report.resumed_from,
            "epochs": report.cycles,
            "steps": report.steps,
            "seconds": round(report.seconds, 1),
            "metrics": report.final_metrics,
        }
        m = report.final_metrics
        summary = f"model: {report.model_path}"
        if "val_mAP" in m:
            summary += f"; validation mAP {100 * m['val_mAP']:.2f}%"
        if "val_AP50" in m:
            summary += f"; validation bbox AP50 {m['val_AP50']:.4f}"
            if "val_mask_AP50" in m:
                summary += f", mask AP50 {m['val_mask_AP50']:.4f}"
        return CommandResult(summary, data)

    return command


detectnet_v2_train = _make_train_command("detectnet_v2")
mask_rcnn_train = _make_train_command("mask_rcnn")
