"""Shared click plumbing: command/group classes, common options and the error boundary.

Every subtask is declared with :func:`tltk_command`, which adds the global options
(``--log_file``, ``-v/--verbose``, ``--json``), accepts TAO's ``snake_case`` flag spellings as
well as ``kebab-case`` ones, and converts exceptions into documented exit codes.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import click

from tltk import console
from tltk.errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, TltkError

log = logging.getLogger("tltk")


@dataclass
class CommandResult:
    """What a subtask hands back to the CLI.

    Attributes:
        summary: one human sentence for the final summary line.
        data: the machine-readable document printed by ``--json``.
        exit_code: process exit code (0 unless the command reports a negative verdict, such as
            ``validate_spec`` on an invalid file).
    """

    summary: str
    data: dict[str, Any] = field(default_factory=dict)
    exit_code: int = EXIT_OK


def _normalise_flag(arg: str, known: set[str]) -> str:
    if not arg.startswith("--") or arg == "--":
        return arg
    name, sep, value = arg.partition("=")
    if name in known:
        return arg
    for candidate in ("--" + name[2:].replace("-", "_"), "--" + name[2:].replace("_", "-")):
        if candidate in known:
            return candidate + sep + value
    return arg


class TltkCommand(click.Command):
    """A click command that accepts ``--flag_name`` and ``--flag-name`` interchangeably."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        known: set[str] = set()
        for param in self.get_params(ctx):
            known.update(o for o in getattr(param, "opts", []) if o.startswith("--"))
            known.update(o for o in getattr(param, "secondary_opts", []) if o.startswith("--"))
        return super().parse_args(ctx, [_normalise_flag(a, known) for a in args])


class TltkGroup(click.Group):
    """A click group whose commands load lazily from ``"module:attribute"`` strings.

    Command names accept ``_`` and ``-`` interchangeably (``dataset_convert`` == ``dataset-convert``).
    """

    def __init__(self, *args: Any, lazy: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        for name in (cmd_name, cmd_name.replace("-", "_")):
            cmd = super().get_command(ctx, name)
            if cmd is not None:
                return cmd
            if name in self.lazy:
                module_name, _, attr = self.lazy[name].partition(":")
                cmd = getattr(importlib.import_module(module_name), attr)
                if not isinstance(cmd, click.Command):
                    raise TypeError(f"{self.lazy[name]} is not a click command")
                return cmd
        return None

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        name, cmd, rest = super().resolve_command(ctx, args)
        return (cmd.name if cmd else name), cmd, rest


def _emit(result: CommandResult, started: float, name: str) -> None:
    elapsed = time.monotonic() - started
    if console.json_mode():
        sys.stdout.write(json.dumps(result.data, indent=None, sort_keys=False, default=_json_default) + "\n")
        sys.stdout.flush()
    status = "OK" if result.exit_code == EXIT_OK else f"FAILED (exit {result.exit_code})"
    console.echo(f"tltk {name}: {status} in {elapsed:.1f}s. {result.summary}".rstrip())


def _json_default(value: Any) -> Any:
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    except ImportError:  # pragma: no cover - numpy is a hard dependency
        pass
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def tltk_command(name: str, help: str, **command_kwargs: Any) -> Callable[[Callable[..., CommandResult]], click.Command]:
    """Declare a subtask: adds the global options and the error boundary.

    The decorated function receives the command's own options (not the global ones) and
    returns a :class:`CommandResult`.

    Args:
        name: the subtask name as typed (``dataset_convert``).
        help: the first line is the short help shown by ``tltk <model> --help``.
        **command_kwargs: passed to :func:`click.command`.
    """

    def decorator(fn: Callable[..., CommandResult]) -> click.Command:
        @functools.wraps(fn)
        def callback(log_file: str | None, verbose: bool, json_output: bool, **kwargs: Any) -> None:
            console.configure(verbose=verbose, log_file=log_file, json_mode=json_output)
            ctx = click.get_current_context()
            full_name = ctx.command_path.partition(" ")[2] or name
            started = time.monotonic()
            try:
                result = fn(**kwargs)
            except TltkError as exc:
                _fail(full_name, str(exc), exc.exit_code, started)
            except KeyboardInterrupt:
                _fail(full_name, "interrupted", EXIT_INTERRUPTED, started)
            except click.exceptions.Exit:
                raise
            except click.ClickException:
                raise
            except Exception as exc:  # the error boundary: report, never hide
                if verbose:
                    log.exception("unexpected error")
                detail = f"{type(exc).__name__}: {exc}"
                if not verbose:
                    detail += "\n  (run again with --verbose for the full traceback)"
                _fail(full_name, detail, EXIT_FAILURE, started)
            _emit(result, started, full_name)
            if result.exit_code != EXIT_OK:
                sys.exit(result.exit_code)

        command = click.command(name=name, help=help, cls=TltkCommand, **command_kwargs)(callback)
        command.params.extend(_global_options())
        return command

    return decorator


def _fail(name: str, message: str, code: int, started: float) -> None:
    elapsed = time.monotonic() - started
    console.echo(f"ERROR: {message}")
    if console.json_mode():
        sys.stdout.write(json.dumps({"error": message, "exit_code": code}) + "\n")
        sys.stdout.flush()
    console.echo(f"tltk {name}: FAILED (exit {code}) in {elapsed:.1f}s.")
    sys.exit(code)


def _global_options() -> list[click.Parameter]:
    return [
        click.Option(["--log_file"], type=click.Path(dir_okay=False), default=None,
                     help="Also append the log to this file."),
        click.Option(["-v", "--verbose", "--verbosity"], is_flag=True, default=False,
                     help="Log at DEBUG level and show tracebacks."),
        click.Option(["--json", "json_output"], is_flag=True, default=False,
                     help="Print one JSON document on stdout (logs stay on stderr)."),
    ]


# ---- options shared by several subtasks -------------------------------------------------------

def key_option(required: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``-k/--key``: the model encryption key; also read from ``TLTK_KEY``."""
    return click.option("-k", "--key", envvar="TLTK_KEY", default=None, required=required,
                        help="Key of encrypted .tlt/.etlt files (or set TLTK_KEY).")


def set_option() -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--set a.b=c`` (repeatable): override spec fields from the command line."""
    return click.option("--set", "overrides", multiple=True, metavar="FIELD=VALUE",
                        help="Override a spec field, e.g. --set training_config.num_epochs=5 (repeatable).")


def default_results_dir(spec_path: str | None, results_dir: str | None) -> str:
    """The results folder: as given, else ``results/<spec stem>``, else ``results/run``."""
    if results_dir:
        return results_dir
    stem = os.path.splitext(os.path.basename(spec_path))[0] if spec_path else "run"
    return os.path.join("results", stem)
