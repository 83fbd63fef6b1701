"""``tltk <model> validate_spec``: check a spec file without running anything.

Exit codes: 0 when the spec is valid (warnings allowed), 2 when it is invalid or cannot be
read.  ``--json`` prints ``{"kind": str, "valid": bool, "errors": [str], "warnings": [str]}``.
"""

from __future__ import annotations

from collections.abc import Callable

import click

from tltk import console
from tltk.cli.common import CommandResult, set_option, tltk_command
from tltk.errors import EXIT_OK, EXIT_USAGE

KIND_CHOICES = ("experiment", "inference", "dataset_convert")


def _run(model: str, experiment_spec_file: str, kind: str | None, check_paths: bool,
         overrides: tuple[str, ...]) -> CommandResult:
    from tltk.models import check_spec

    report = check_spec(experiment_spec_file, model=model, kind=kind, overrides=overrides,
                        check_paths=check_paths)
    for error in report.errors:
        console.echo(f"ERROR: {error}")
    for warning in report.warnings:
        console.echo(f"WARNING: {warning}")
    n_err, n_warn = len(report.errors), len(report.warnings)
    what = f"{model} {report.kind} spec" if report.kind else f"{model} spec"
    plural = "s" if n_warn != 1 else ""
    if report.valid:
        summary = f"{experiment_spec_file}: valid {what} ({n_warn} warning{plural})."
    else:
        summary = (f"{experiment_spec_file}: invalid {what}: {n_err} error{'s' if n_err != 1 else ''}, "
                   f"{n_warn} warning{plural}.")
    return CommandResult(summary, report.to_dict(), EXIT_OK if report.valid else EXIT_USAGE)


def _make(model: str, pretty: str, kinds: tuple[str, ...]) -> click.Command:
    def decorate(fn: Callable[..., CommandResult]) -> Callable[..., CommandResult]:
        fn = set_option()(fn)
        fn = click.option("--check_paths", is_flag=True, default=False,
                          help="Treat missing data files and folders as errors (default: warnings).")(fn)
        fn = click.option("--kind", type=click.Choice(kinds), default=None,
                          help="Spec kind; recognised from the file's fields when omitted.")(fn)
        fn = click.option("-e", "--experiment_spec_file", "--experiment_spec", "--spec", "experiment_spec_file",
                          required=True, type=click.Path(dir_okay=True),
                          help="The spec file to check.")(fn)
        return fn

    @tltk_command("validate_spec", help=f"Check a {pretty} spec file and list every problem.\n\n"
                                         "Exit code 0 when valid (warnings allowed), 2 when invalid. "
                                         "--json prints {kind, valid, errors, warnings}.")
    @decorate
    def command(experiment_spec_file: str, kind: str | None, check_paths: bool,
                overrides: tuple[str, ...]) -> CommandResult:
        return _run(model, experiment_spec_file, kind, check_paths, overrides)

    return command


detectnet_v2_validate_spec = _make("detectnet_v2", "DetectNet_v2 (experiment, inference or dataset_convert)",
                                   KIND_CHOICES)
mask_rcnn_validate_spec = _make("mask_rcnn", "MaskRCNN experiment", ("experiment",))
