"""Root command ``tltk <model> <subtask>``.

Model groups come from the model table (:data:`tltk.models.MODELS`: each package lists its
subtasks as ``module:attribute`` of their click commands); the utility groups are the literal
tables below.  Command modules
import only click at module level, so ``tltk --help`` never imports TensorFlow.
"""

from __future__ import annotations

import sys

import click

from tltk import __version__
from tltk.cli.common import TltkGroup
from tltk.errors import EXIT_INTERRUPTED
from tltk.models import MODELS

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

#: One group per model of the model table, then the utility groups.
GROUPS: dict[str, tuple[str, dict[str, str]]] = {
    **{name: (package.HELP, package.COMMANDS) for name, package in MODELS.items()},
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
