"""Root command ``tltk <model> <subtask>``.

The tables below are the only place where commands are wired: one literal dict per group,
mapping a subtask name to the ``module:attribute`` of its click command.  Command modules
import only click at module level, so ``tltk --help`` never imports TensorFlow.
"""

from __future__ import annotations

import sys

import click

from tltk import __version__
from tltk.cli.common import TltkGroup
from tltk.errors import EXIT_INTERRUPTED

DETECTNET_V2_COMMANDS: dict[str, str] = {
    "validate_spec": "tltk.cli.validate_spec:detectnet_v2_validate_spec",
    "train": "tltk.cli.train:detectnet_v2_train",
    "export": "tltk.cli.export:detectnet_v2_export",
    "converter": "tltk.cli.converter:detectnet_v2_converter",
    "dataset_convert": "tltk.cli.detectnet_v2_data:dataset_convert",
    "calibration_tensorfile": "tltk.cli.detectnet_v2_data:calibration_tensorfile",
    "prune": "tltk.cli.prune:detectnet_v2_prune",
    "evaluate": "tltk.cli.evaluate:detectnet_v2_evaluate",
    "inference": "tltk.cli.inference:detectnet_v2_inference",
}

MASK_RCNN_COMMANDS: dict[str, str] = {
    "validate_spec": "tltk.cli.validate_spec:mask_rcnn_validate_spec",
    "converter": "tltk.cli.converter:mask_rcnn_converter",
}

DATASET_COMMANDS: dict[str, str] = {
    "synthesize": "tltk.cli.dataset:synthesize",
}

MODEL_FILE_COMMANDS: dict[str, str] = {
    "decode": "tltk.cli.model_file:decode",
    "inspect": "tltk.cli.model_file:inspect",
}

ROOT_COMMANDS: dict[str, str] = {
    "info": "tltk.cli.info:info",
}

GROUPS: dict[str, tuple[str, dict[str, str]]] = {
    "detectnet_v2": ("DetectNet_v2 object detection (KITTI data).", DETECTNET_V2_COMMANDS),
    "mask_rcnn": ("MaskRCNN instance segmentation (COCO data).", MASK_RCNN_COMMANDS),
    "dataset": ("Dataset utilities: synthetic KITTI/COCO data.", DATASET_COMMANDS),
    "model": ("Model-file utilities: decode legacy TAO .etlt/.tlt files, inspect containers.", MODEL_FILE_COMMANDS),
}


def _make_group(name: str, help_text: str, table: dict[str, str]) -> click.Group:
    return TltkGroup(name=name, help=help_text, lazy=table, no_args_is_help=True,
                     context_settings={"help_option_names": ["-h", "--help"]})


@click.group(cls=TltkGroup, lazy=ROOT_COMMANDS, no_args_is_help=True,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="tltk")
def cli() -> None:
    """tltk: TAO-compatible DetectNet_v2 and MaskRCNN, without Docker.

    Usage: tltk <model> <subtask> [OPTIONS].  Every subtask accepts --log_file, --verbose and
    --json.  Exit codes: 0 ok, 1 failure, 2 invalid usage/spec/input, 3 missing optional
    dependency, 130 interrupted (docs/exit_codes.md).
    """


for _name, (_help, _table) in GROUPS.items():
    cli.add_command(_make_group(_name, _help, _table))


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    try:
        cli.main(args=argv, prog_name="tltk", standalone_mode=True)
    except KeyboardInterrupt:
        print("tltk: interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
