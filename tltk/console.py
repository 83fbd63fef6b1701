"""Console behaviour shared by every subtask: logging, progress bars, quiet/JSON mode.

Human-readable output (logs, tables, progress) goes to stderr so that ``--json`` can keep
stdout for exactly one machine-readable document.  Progress bars are drawn only when stderr
is a terminal and JSON mode is off.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from types import ModuleType
from typing import Any, TypeVar

T = TypeVar("T")

_STATE = {"json": False, "verbose": False}

_log = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s [%(levelname)s] %(name)s: %(message)s"


def configure(verbose: bool = False, log_file: str | None = None, json_mode: bool = False) -> None:
    """Set up logging for one CLI invocation.

    Args:
        verbose: log at DEBUG instead of INFO.
        log_file: also append every log record to this file (created with its folder).
        json_mode: the command prints one JSON document on stdout; progress bars are disabled.
    """
    _STATE["json"] = json_mode
    _STATE["verbose"] = verbose
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    level = logging.DEBUG if verbose else logging.INFO
    # The log file gets DEBUG records even when the console shows INFO.
    root.setLevel(logging.DEBUG if log_file else level)
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("%(levelname)s: %(message)s" if not verbose else LOG_FORMAT))
    console.setLevel(level)
    root.addHandler(console)
    if log_file:
        folder = os.path.dirname(os.path.abspath(log_file))
        os.makedirs(folder, exist_ok=True)
        fh = logging.FileHandler(log_file, mode="a", encoding="utf-8")
        fh.setFormatter(logging.Formatter(LOG_FORMAT))
        fh.setLevel(logging.DEBUG)
        root.addHandler(fh)
    # TensorFlow and absl are noisy at INFO; keep their warnings only.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1" if verbose else "2")
    if not os.path.exists("/dev/nvidiactl") and sys.platform.startswith("linux"):
        # No NVIDIA driver: stop TensorFlow's CUDA build from probing for one (and logging an error).
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")
    for noisy in ("tensorflow", "absl", "tf2onnx", "h5py", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING if not verbose else logging.INFO)
    if not verbose:
        quiet_tensorflow_import()


# ---- TensorFlow's start-up noise --------------------------------------------------------------
#
# TensorFlow's CUDA build writes a dozen C++ log lines to stderr when it is imported and when it
# first looks for devices ("Unable to register cuDNN factory", "failed call to cuInit", ...),
# before TF_CPP_MIN_LOG_LEVEL is read.  On a CPU machine they are noise that looks like failure.
# The first ``import tensorflow`` of a non-verbose run therefore happens with file descriptor 2
# pointed at a temporary file; what it captured is logged at DEBUG (and so in --log_file).
# Python exceptions raised by the import are not affected.

class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
                  ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "tensorflow":
            return None
        _remove_finder()
        module = _import_with_stderr_captured(fullname)
        return importlib.util.spec_from_loader(fullname, _AlreadyLoaded(module))


class _AlreadyLoaded(importlib.abc.Loader):
    def __init__(self, module: ModuleType) -> None:
        self.module = module

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return self.module

    def exec_module(self, module: ModuleType) -> None:
        return None


def _remove_finder() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _QuietTensorFlowFinder)]


def _import_with_stderr_captured(name: str) -> ModuleType:
    sys.stderr.flush()
    saved = os.dup(2)
    captured = tempfile.TemporaryFile()
    failed = True
    try:
        os.dup2(captured.fileno(), 2)
        module = importlib.import_module(name)
        tf: Any = module
        tf.config.list_physical_devices()  # device discovery logs its CUDA probing here too
        failed = False
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        captured.seek(0)
        text = captured.read().decode("utf-8", "replace").strip()
        captured.close()
        if text and failed:  # the import failed: its C++ output may say why
            sys.stderr.write(text + "\n")
        elif text:
            _log.debug("TensorFlow start-up output:\n%s", text)
    return module


def quiet_tensorflow_import() -> None:
    """Capture TensorFlow's C++ start-up log lines on its first import (see above).

    Does nothing when TensorFlow is already imported or the hook is already installed.
    """
    if "tensorflow" in sys.modules or any(isinstance(f, _QuietTensorFlowFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _QuietTensorFlowFinder())


def json_mode() -> bool:
    """Whether the current invocation prints a JSON document on stdout."""
    return bool(_STATE["json"])


def progress_enabled() -> bool:
    """Progress bars are drawn only on an interactive stderr outside JSON mode."""
    if _STATE["json"] or os.environ.get("TLTK_NO_PROGRESS"):
        return False
    return sys.stderr.isatty()


def progress(iterable: Iterable[T], total: int | None = None, desc: str = "", unit: str = "it") -> Iterator[T]:
    """Wrap ``iterable`` in a progress bar when the console allows it.

    Args:
        iterable: items to iterate over.
        total: number of items, when ``iterable`` has no ``len``.
        desc: short label shown left of the bar.
        unit: name of one item (``img``, ``batch``...).

    Returns:
        An iterator over the same items.
    """
    if not progress_enabled():
        yield from iterable
        return
    from tqdm import tqdm

    yield from tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=False)


def echo(message: str = "") -> None:
    """Print a human-readable line on stderr (stdout is reserved for ``--json``)."""
    print(message, file=sys.stderr, flush=True)


#: TensorFlow's native (absl) log lines: ``I0000 00:00:1796635829.969807    2697 devices.cc:67] ...``.
NATIVE_LOG_LINE = re.compile(rb"^[IWEF]\d{4} [\d:.]+\s+\d+ [\w./+-]+:\d+\] |^WARNING: All log messages before absl::")


@contextlib.contextmanager
def native_log_to_debug() -> Iterator[None]:
    """Keep TensorFlow's native log lines off the console while the block runs.

    Grappler writes them while it optimizes a graph (``Error in PredictCost()`` during training,
    ``single_machine.cc`` during the ONNX conversion): warnings about its cost model, not about
    the user's run.

    They come from C++ through absl, which ignores ``TF_CPP_MIN_LOG_LEVEL``.  File descriptor 2
    goes through a pipe while the block runs: native log lines are kept and logged at DEBUG
    afterwards (so ``--verbose`` and ``--log_file`` still have them), everything else (tltk's
    log, progress bars) passes through at once.
    """
    console_debug = any(type(h) is logging.StreamHandler and h.level <= logging.DEBUG
                        for h in logging.getLogger().handlers)
    if console_debug:  # --verbose shows them as they come
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    native: list[str] = []

    def pump() -> None:
        pending = b""
        while chunk := os.read(read_end, 65536):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if NATIVE_LOG_LINE.match(line):
                    native.append(line.decode("utf-8", "replace"))
                else:
                    os.write(saved, line + b"\n")
            if pending and not NATIVE_LOG_LINE.match(pending) and b"\r" in pending:
                os.write(saved, pending)  # a progress bar redrawing its line
                pending = b""
        if pending:
            os.write(saved, pending)

    thread = threading.Thread(target=pump, name="tltk-native-log", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last write end: the pump sees the end
        thread.join(timeout=10)
        os.close(read_end)
        os.close(saved)
        if native:
            _log.debug("TensorFlow native log:\n%s", "\n".join(native))
