"""Console behaviour shared by every subtask: logging, progress bars, quiet/JSON mode.

Human-readable output (logs, tables, progress) goes to stderr so that ``--json`` can keep
stdout for exactly one machine-readable document.  Progress bars are drawn only when stderr
is a terminal and JSON mode is off.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_STATE = {"json": False, "verbose": False}

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
    root.setLevel(level)
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
