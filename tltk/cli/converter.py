"""``tltk <model> converter``: tao-converter's command line, building TensorRT engines.

``tltk detectnet_v2 converter INPUT_FILE -k KEY -d DIMS -o OUTPUTS [-c CACHE] [-e ENGINE] [-b BATCH]
[-m MAX_BATCH] [-t fp32|fp16|int8] [-w WORKSPACE] [-i nchw|nhwc|nc] [-p PROFILE ...] [-s] [-u DLA_CORE]``

``INPUT_FILE`` is an ``.etlt`` (decoded with ``-k``; the plain model is written next to the engine
so the printed ``trtexec`` command can use it) or a plain ``.onnx``.  Where TensorRT is missing the
command stops with exit code 3 and prints the equivalent ``trtexec`` command for the target machine.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import click

from tltk.cli.common import CommandResult, tltk_command

_HELP = ("Build a TensorRT engine from an .etlt or .onnx model (tao-converter's flags); without TensorRT, "
         "print the equivalent trtexec command (exit code 3).")


def _options(fn: Callable[..., Any]) -> Callable[..., Any]:
    decorators = [
        click.argument("input_file", type=click.Path(dir_okay=False)),
        click.option("-k", "--key", "--enc_key", "key", envvar="TLTK_KEY", default=None,
                     help="Key of the .etlt file (or set TLTK_KEY); ignored for .onnx."),
        click.option("-d", "--input_dims", default=None, metavar="C,H,W",
                     help="Input dims without batch, comma separated (required for UFF .etlt files)."),
        click.option("-o", "--outputs", default=None, metavar="NAME[,NAME]",
                     help="Output node names, comma separated (required for UFF; checked for ONNX)."),
        click.option("-c", "--cal_cache_file", default=None,
                     help="INT8 calibration cache (default ./cal.bin); not used for Q/DQ models."),
        click.option("-e", "--engine_file", default=None, help="Engine to write (default ./saved.engine)."),
        click.option("-b", "--batch_size", type=int, default=None,
                     help="Calibration batch size (default 8)."),
        click.option("-m", "--max_batch_size", type=int, default=None,
                     help="Max batch of the default optimization profile (default 16)."),
        click.option("-t", "--data_type", default=None, metavar="fp32|fp16|int8",
                     help="Engine precision (default fp32)."),
        click.option("-w", "--max_workspace_size", default=None, metavar="BYTES",
                     help="Builder workspace limit in bytes (default 1073741824)."),
        click.option("-i", "--input_order", default=None, metavar="nchw|nhwc|nc",
                     help="Input dimension order (default nchw)."),
        click.option("-p", "--profile", "profiles", multiple=True, metavar="NAME,MIN,OPT,MAX",
                     help="Optimization profile, e.g. input_1,1x3x544x960,8x3x544x960,16x3x544x960 (repeat per input)."),
        click.option("-s", "--strict_type_constraints", is_flag=True, default=False,
                     help="Obey layer precision constraints (no FP16 fallback in INT8 mode)."),
        click.option("-u", "--dla_core", type=int, default=None, help="Build for this DLA core (Jetson)."),
        click.option("--timing_cache", default=None, help="TensorRT timing cache to load and update."),
    ]
    for decorator in reversed(decorators):
        fn = decorator(fn)
    return fn


def make_converter_command(model: str) -> click.Command:
    """The ``converter`` click command for one model group.

    Args:
        model: ``detectnet_v2`` or ``mask_rcnn`` (used in messages).

    Returns:
        The click command.
    """

    @tltk_command("converter", help=_HELP)
    @_options
    def converter(**kwargs: Any) -> CommandResult:
        return run_converter(model, **kwargs)

    return converter


def run_converter(model: str, input_file: str, key: str | None = None, input_dims: str | None = None,
                  outputs: str | None = None, cal_cache_file: str | None = None, engine_file: str | None = None,
                  batch_size: int | None = None, max_batch_size: int | None = None, data_type: str | None = None,
                  max_workspace_size: str | None = None, input_order: str | None = None,
                  profiles: tuple[str, ...] = (), strict_type_constraints: bool = False,
                  dla_core: int | None = None, timing_cache: str | None = None) -> CommandResult:
    """Run the converter (the click command's body; also callable from Python).

    Args:
        model: the model group, for messages.
        input_file: the ``.etlt`` or ``.onnx`` model.
        key .. timing_cache: the command-line flags (see ``tltk <model> converter --help``).

    Returns:
        The command result: the engine path and size, precision and the trtexec equivalent.

    Raises:
        UsageError: bad flag values (exit code 2).
        InvalidInputError, ModelFileError, WrongKeyError: unreadable input (exit code 2).
        MissingDependencyError: TensorRT or a GPU is missing (exit code 3, with the command).
    """
    import logging

    from tltk.errors import InvalidInputError, ModelFileError, UsageError
    from tltk.fileio import atomic_write_bytes
    from tltk.tensorrt.converter_args import settings_from_flags, trtexec_command

    log = logging.getLogger("tltk.cli.converter")
    settings = settings_from_flags(
        engine_file=engine_file, data_type=data_type, cache_file=cal_cache_file, calib_batch_size=batch_size,
        max_batch_size=max_batch_size, workspace=max_workspace_size, input_order=input_order,
        input_dims=input_dims, outputs=outputs, profiles=profiles, strict_types=strict_type_constraints,
        dla_core=dla_core, timing_cache_file=timing_cache, verbose=logging.getLogger().isEnabledFor(logging.DEBUG))
    if not os.path.isfile(input_file):
        raise InvalidInputError(f"{input_file}: no such model file")
    extension = os.path.splitext(input_file)[1].lower()
    uff_input_name = None
    if extension == ".etlt":
        if not key:
            raise UsageError(f"-k: {input_file} is encrypted; give the key it was exported with (-k KEY or TLTK_KEY)")
        from tltk.modelfile.legacy import PAYLOAD_EXTENSIONS, decode_legacy_file

        payload = decode_legacy_file(input_file, key, layout="etlt")
        if payload.kind not in ("onnx", "uff"):
            raise ModelFileError(f"{input_file}: holds a {payload.kind.upper()} payload, not an ONNX or UFF model")
        kind = payload.kind
        model_path = os.path.splitext(settings.engine_file)[0] + PAYLOAD_EXTENSIONS[kind]
        if os.path.abspath(model_path) == os.path.abspath(input_file):
            raise UsageError(f"-e: the engine path {settings.engine_file} would put the decoded model over the input")
        atomic_write_bytes(model_path, payload.payload)
        uff_input_name = payload.input_name
        log.info("decoded %s (%s payload) to %s", input_file, kind.upper(), model_path)
    elif extension == ".onnx":
        kind, model_path = "onnx", input_file
    else:
        raise InvalidInputError(f"{input_file}: converter takes an .etlt or .onnx model, not '{extension or 'no extension'}'")

    if kind == "uff":
        # Whether TensorRT is installed here does not matter: TensorRT 9 and newer have no UFF
        # parser, so installing a current TensorRT would not help.
        command = trtexec_command(settings, model_path, "uff", uff_input_name=uff_input_name)
        raise ModelFileError(
            f"{input_file} holds a UFF graph (an old TAO export); TensorRT 9 and newer cannot parse UFF, so no "
            f"current TensorRT can build it. The decoded UFF model is {model_path}; on a machine with TensorRT 8.x "
            f"(8.6 is the last with UFF) this builds the engine:\n\n    {command}\n",
            hint=f"for TensorRT 10, export the trained .tlt model to ONNX with `tltk {model} export -m MODEL.tlt` "
                 "(a TAO .tlt/.hdf5 model loads with its key), or retrain and export with tltk")

    from tltk.tensorrt.builder import build_onnx_engine

    result = build_onnx_engine(model_path, settings, model=model)
    return CommandResult(summary=f"Engine written to {settings.engine_file} ({result['engine_bytes'] / 1e6:.1f} MB).",
                         data=result)


detectnet_v2_converter = make_converter_command("detectnet_v2")
mask_rcnn_converter = make_converter_command("mask_rcnn")
