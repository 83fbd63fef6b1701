"""``tltk <model> prune``: remove low-magnitude filters, write a smaller model to retrain.

``tltk <model> prune -m MODEL -o OUTPUT [-k KEY] [-n max|L2] [-eq CRITERION] [-pg GRANULARITY]
[-pth THRESHOLD] [-nf MIN_FILTERS] [-el LAYER ...]`` (TAO's flags; ``-pm`` is accepted for ``-m``).

The model is loaded from any file ``tltk.modelfile.container.load_keras_model`` reads, pruned by
``tltk.core.pruning.prune_model`` with the layers its Task protects (DetectNet_v2: the
``output_cov``/``output_bbox`` heads; MaskRCNN: the prediction layers and the FPN outputs), and
written atomically as a tltk ``.tlt`` (sealed with the same key when one is given) that keeps the
input's metadata plus a ``pruned`` entry.  Retrain it with the spec setting :data:`RETRAIN_WITH`
names (``specs/<model>/retrain_pruned.txt``).  See ``docs/pruning.md``.
"""

from __future__ import annotations

import os
from typing import Any

import click

from tltk.cli.common import CommandResult, check_model_file, key_option, tltk_command

_NOT_CONTAINERS = (".hdf5", ".h5", ".keras", ".onnx", ".etlt", ".engine", ".plan", ".trt", ".uff")
# Metadata entries that describe the file, not the model: rewritten by the container writer.
_FILE_METADATA = ("container", "created", "tltk_version", "keras_version", "keras_model")

#: The spec setting that retrains a pruned model, per model.
RETRAIN_WITH = {
    "detectnet_v2": "model_config { pretrained_model_file: OUTPUT load_graph: true }",
    "mask_rcnn": 'pruned_model_path: "OUTPUT"',
}


def make_prune_command(model_name: str) -> click.Command:
    """The ``prune`` command of one model (TAO's flags; the Task says which layers to keep)."""

    retrain = RETRAIN_WITH[model_name]

    @tltk_command("prune", help="Prune a trained model's filters (TAO's min_weight method) and write a smaller .tlt "
                                f"to retrain with {retrain}.")
    @click.option("-m", "-pm", "--model", "--pretrained_model", "model", required=True,
                  type=click.Path(dir_okay=False), help="Trained model (.tlt/.keras/.hdf5, or a legacy TAO .tlt with -k).")
    @click.option("-o", "--output_file", required=True, type=click.Path(dir_okay=False),
                  help="Pruned model to write (.tlt; added when the name has no extension).")
    @key_option()
    @click.option("-n", "--normalizer", default="max", show_default=True, metavar="max|L2",
                  help="Per-layer normalisation of the filter norms: max (divide by the layer's largest norm) or L2 "
                       "(n*v/||v||, TAO's formula).")
    @click.option("-eq", "--equalization_criterion", default="union", show_default=True,
                  metavar="union|intersection|arithmetic_mean|geometric_mean",
                  help="How tied layers (element-wise merges, depthwise convs) merge their statistics: union, "
                       "intersection, arithmetic_mean or geometric_mean.")
    @click.option("-pg", "--pruning_granularity", type=int, default=8, show_default=True,
                  help="Kept filter counts are multiples of this.")
    @click.option("-pth", "--pruning_threshold", type=float, default=0.1, show_default=True,
                  help="Normalised norm a filter must exceed to be kept, in [0, 1].")
    @click.option("-nf", "--min_num_filters", type=int, default=16, show_default=True,
                  help="Minimum number of filters kept per layer.")
    @click.option("-el", "--excluded_layers", multiple=True, metavar="LAYER",
                  help="Layer whose output channels are all kept (repeatable; TAO's `-el a b c` also works: the "
                       "LAYER arguments).")
    @click.option("--results_dir", default=None, hidden=True,
                  help="Accepted for TAO compatibility (TAO writes a status file there); prune writes none.")
    @click.argument("more_excluded_layers", nargs=-1, metavar="[LAYER]...")
    def command(model: str, output_file: str, key: str | None, normalizer: str,
                           equalization_criterion: str, pruning_granularity: int, pruning_threshold: float,
                           min_num_filters: int, excluded_layers: tuple[str, ...], results_dir: str | None,
                           more_excluded_layers: tuple[str, ...]) -> CommandResult:
        check_model_file(model, "-m", "keras", hint="prune takes the .tlt model that train wrote")
        from tltk import console
        from tltk.core.pruning import PruningOptions
        from tltk.errors import UsageError

        if more_excluded_layers and not excluded_layers:
            raise UsageError(f"unexpected argument(s) {' '.join(more_excluded_layers)}",
                             hint="layer names to keep go after -el/--excluded_layers")
        names = [name for item in (*excluded_layers, *more_excluded_layers) for name in item.split(",") if name]
        options = PruningOptions(
            normalizer={"l2": "L2", "max": "max"}.get(normalizer.lower(), normalizer),
            equalization_criterion=equalization_criterion.lower(),
            pruning_granularity=pruning_granularity,
            pruning_threshold=pruning_threshold,
            min_num_filters=min_num_filters,
            excluded_layers=tuple(dict.fromkeys(names)),
        )
        options.check()
        output = _output_path(output_file, model)
        report = _prune(model_name, model, output, key, options)
        for line in report.summary_lines():
            console.echo(line)
        data: dict[str, Any] = {"model": model, "output": output, **report.to_dict()}
        pruned = len(report.pruned_layers())
        summary = (f"{output}: {pruned} of {len(report.layers)} layers pruned, parameters {report.params_before:,} -> "
                   f"{report.params_after:,} (ratio {report.pruning_ratio:.4f}); retrain with "
                   f"{retrain.replace('OUTPUT', output)}")
        return CommandResult(summary, data)

    return command


detectnet_v2_prune = make_prune_command("detectnet_v2")
mask_rcnn_prune = make_prune_command("mask_rcnn")


def _output_path(output_file: str, model: str) -> str:
    from tltk.errors import UsageError

    stem, ext = os.path.splitext(output_file)
    if not ext:
        output_file += ".tlt"
    elif ext.lower() in _NOT_CONTAINERS:
        raise UsageError(f"-o {output_file}: prune writes a tltk .tlt container, not a {ext} file",
                         hint=f"use {stem}.tlt")
    if os.path.abspath(output_file) == os.path.abspath(model):
        raise UsageError(f"-o {output_file} is the input model; write the pruned model to a new file")
    if os.path.isdir(output_file):
        raise UsageError(f"-o {output_file} is a folder; give a file name such as {output_file}/model_pruned.tlt")
    return output_file


def _prune(model_name: str, model_path: str, output: str, key: str | None, options: Any) -> Any:
    """Load through the model's Task, prune with the layers it protects, save with its metadata."""
    from tltk.core.pruning import prune_model
    from tltk.modelfile.container import save_keras_model
    from tltk.models import task_for_model_file

    task, model, info = task_for_model_file(model_name, model_path, key)
    pruned, report = prune_model(model, options, protected_layers=task.pruning_protected_layers(model))
    if isinstance(info.get("container"), dict):  # a tltk container: keep its metadata
        metadata = {k: v for k, v in info.items() if k not in _FILE_METADATA}
    else:
        signature = task.export_signature(model)
        metadata = {"model_kind": model_name, "input_name": signature.input_name,
                    "input_shape": list(signature.input_chw)}
    metadata.setdefault("model_kind", model_name)
    summary = report.to_dict()
    metadata["pruned"] = {"source": os.path.basename(model_path), **{k: v for k, v in summary.items() if k != "layers"},
                          "filters": {layer["name"]: [layer["filters_before"], layer["filters_after"]]
                                      for layer in summary["layers"]}}
    save_keras_model(output, pruned, metadata, key=key)
    return report
