"""Shared click plumbing: command/group classes, common options and the error boundary.

Every subtask is declared with :func:`tltk_command`, which adds the global options
(``--log_file``, ``-v/--verbose``, ``--json``), accepts TAO's ``snake_case`` flag spellings as
well as ``kebab-case`` ones, and converts exceptions into documented exit codes.
"""

from __future__ import annotations

import difflib
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


class _ContractMain:
    """``main`` of tltk's commands and groups: usage errors keep the ``--json`` contract."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        """Run the command line; usage errors keep the ``--json`` and exit-code contract.

        Click reports an unknown subtask, an unknown flag or a bad flag value itself, before
        any tltk code runs; here such errors print click's message, then (with ``--json``) the
        one JSON document ``{"ok": false, "error", "exit_code"}`` on stdout, and the summary
        line on stderr, with exit code 2.
        """
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        argv = [str(a) for a in (sys.argv[1:] if args is None else args)]
        started = time.monotonic()
        try:
            code = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as exc:
            _usage_failure(exc, argv, started)
        except click.exceptions.Abort:
            _fail_document("interrupted", EXIT_INTERRUPTED, json_requested(argv))
            sys.exit(EXIT_INTERRUPTED)
        sys.exit(code if isinstance(code, int) else EXIT_OK)


class TltkCommand(_ContractMain, click.Command):
    """A click command that accepts ``--flag_name`` and ``--flag-name`` interchangeably."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        known: set[str] = set()
        for param in self.get_params(ctx):
            known.update(o for o in getattr(param, "opts", []) if o.startswith("--"))
            known.update(o for o in getattr(param, "secondary_opts", []) if o.startswith("--"))
        return super().parse_args(ctx, [_normalise_flag(a, known) for a in args])


class TltkGroup(_ContractMain, click.Group):
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
        typed = args[0] if args else ""
        if typed and not typed.startswith("-") and self.get_command(ctx, typed) is None:
            known = self.list_commands(ctx)
            close = difflib.get_close_matches(typed.replace("-", "_"), known, n=1)
            ctx.fail(f"No such command {typed!r}." + (f" Did you mean {close[0]!r}?" if close else "")
                     + f" Commands: {', '.join(known)}.")
        name, cmd, rest = super().resolve_command(ctx, args)
        return (cmd.name if cmd else name), cmd, rest

def json_requested(argv: list[str]) -> bool:
    """Whether ``--json`` is among the command-line arguments (before a ``--``)."""
    return "--json" in (argv[:argv.index("--")] if "--" in argv else argv)


def _fail_document(message: str, code: int, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps({"ok": False, "error": message, "exit_code": code}) + "\n")
        sys.stdout.flush()


def _usage_failure(exc: click.ClickException, argv: list[str], started: float) -> None:
    exc.show()
    ctx = getattr(exc, "ctx", None)
    name = ctx.command_path.partition(" ")[2] if ctx is not None else ""
    _fail_document(exc.format_message(), exc.exit_code, json_requested(argv))
    elapsed = time.monotonic() - started
    click.echo(f"tltk{' ' + name if name else ''}: FAILED (exit {exc.exit_code}) in {elapsed:.1f}s.", err=True)
    sys.exit(exc.exit_code)


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
    _fail_document(message, code, console.json_mode())
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
    return click.option("-k", "--key", "--enc_key", "key", envvar="TLTK_KEY", default=None, required=required,
                        help="Key of encrypted .tlt/.etlt files (or set TLTK_KEY); --enc_key is the same.")


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


# ---- model files checked before TensorFlow is imported ------------------------------------------

_KERAS_EXTENSIONS = (".tlt", ".keras", ".hdf5", ".h5")
_ENGINE_EXTENSIONS = (".engine", ".plan", ".trt")
_CONTENT_NAMES = {"onnx": "an ONNX model", "uff": "a UFF model", "zip": "a zip archive that holds no model",
                  "hdf5": "a Keras HDF5 model", "keras": "a Keras model", "tltk": "a tltk .tlt model",
                  "tltk-sealed": "an encrypted tltk .tlt model"}


_NOT_KERAS_EXTENSIONS = {".onnx": "an ONNX model", ".uff": "a UFF model", ".etlt": "an exported .etlt model",
                         ".engine": "a TensorRT engine", ".plan": "a TensorRT engine", ".trt": "a TensorRT engine"}


def _keras_like(data: bytes) -> bool:
    """Starts like a tltk container, a zip (.keras) or an HDF5 file."""
    from tltk.modelfile.container import MAGIC
    from tltk.modelfile.legacy import HDF5_MAGIC

    return data.startswith((MAGIC, HDF5_MAGIC, b"PK\x03\x04", b"PK\x05\x06"))


def check_model_file(path: str, flag: str = "-m", needs: str = "keras", hint: str | None = None) -> None:
    """Stop at once, before TensorFlow is imported, when a model file cannot be what a command needs.

    Only what the file's name and first bytes tell for sure is checked: a folder, a missing or
    empty file, a damaged zip, an ONNX/UFF model where a trained Keras model is needed, or a file
    whose content contradicts its extension.  Encrypted legacy TAO files and engines cannot be
    told apart without their key or TensorRT and are left to the loaders.

    Args:
        path: the model file given on the command line.
        flag: the flag that named it, for the message.
        needs: ``"keras"`` (a trained model: ``.tlt``/``.keras``/``.hdf5``, what export, prune
            and retraining read) or ``"backend"`` (any file an inference backend opens, chosen by
            its extension).
        hint: what to do instead, for the message.

    Raises:
        InvalidInputError, ModelFileError: the file cannot serve (exit code 2).
    """
    from tltk.errors import InvalidInputError, ModelFileError
    from tltk.modelfile.container import sniff_model_file
    from tltk.modelfile.reading import read_model_bytes

    data = read_model_bytes(path)  # names a missing file or a folder
    ext = os.path.splitext(path)[1].lower()
    if needs == "keras" and ext in _NOT_KERAS_EXTENSIONS and data and not _keras_like(data):
        # Named and shaped like a deployable model: say so without parsing it (parsing ONNX
        # imports the onnx package, which alone takes most of a second).
        raise InvalidInputError(f"{flag} {path}: {_NOT_KERAS_EXTENSIONS[ext]}; this command needs the trained model "
                                "(.tlt, .keras or .hdf5)", hint=hint or "give the .tlt file that train wrote")
    found = sniff_model_file(data)
    if found == "empty":
        raise ModelFileError(f"{flag} {path}: the file is empty (0 bytes); it is not a model")
    if found == "damaged-zip":
        raise ModelFileError(f"{flag} {path}: damaged or truncated (it starts like a zip archive but cannot be read)")
    keras_content = found in ("tltk", "tltk-sealed", "keras", "hdf5")
    if needs == "keras":
        if found in ("onnx", "uff", "zip") or ext in _ENGINE_EXTENSIONS:
            what = _CONTENT_NAMES.get(found, "a TensorRT engine")
            raise InvalidInputError(f"{flag} {path}: {what}; this command needs the trained model (.tlt, .keras or "
                                    ".hdf5)", hint=hint or "give the .tlt file that train wrote")
        return
    if ext == ".onnx" and found != "onnx":
        raise InvalidInputError(f"{flag} {path}: named .onnx but it is {_CONTENT_NAMES.get(found, 'not an ONNX model')}",
                                hint=hint or "rename it after what it is, or give the exported ONNX model")
    if ext in _KERAS_EXTENSIONS and not keras_content and found != "unknown":
        raise InvalidInputError(f"{flag} {path}: named {ext} but it is {_CONTENT_NAMES.get(found, 'not a Keras model')}",
                                hint=hint or "rename it after what it is (.onnx models run with ONNX Runtime)")
