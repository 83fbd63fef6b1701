"""Run the tltk CLI in this process with one injected fault, for the reliability tests.

Usage: ``python faultrun.py tltk-args...``; without ``TLTK_FAULT`` it is plain ``tltk``.

``TLTK_FAULT``
    ``ACTION|EVENT|REGEX[|N[|DELAY]]``: when the ``N``-th (default 1) event ``EVENT`` whose
    subject matches ``REGEX`` (``re.search``) is about to happen, wait ``DELAY`` seconds
    (default 0; the program keeps running meanwhile) and do ``ACTION``.

    ACTION: ``kill`` (SIGKILL this process: nothing after it runs, as with ``kill -9`` or a
    preempted machine), ``sigint`` (deliver SIGINT, as Ctrl-C) or ``enospc`` (the operation
    fails with ``OSError(ENOSPC)`` naming the path, as on a full disk, and so does every later
    matching event; no delay).

    EVENT (and its subject):

    * ``write``: a file is opened for writing (``open``/``os.open`` with a write mode or flags;
      subject: the path);
    * ``read``: a file is opened for reading only (subject: the path);
    * ``rename``: ``os.rename``/``os.replace`` (subject: the destination);
    * ``mkdir``: ``os.mkdir`` (subject: the path);
    * ``step``: a training step ended (Keras' ``CallbackList.on_train_batch_end``; the subject
      is empty, ``N`` counts the steps of this process);
    * ``stderr``: a line is written to stderr (subject: the text written).

``TLTK_FAULT_MARK``
    A file that receives one line ``EVENT SUBJECT`` when the fault point is reached, so the test
    knows that (and where) it fired.

File events come from a Python audit hook (:func:`sys.addaudithook`), which sees every file
opened from Python (``open``, ``os.open``, ``zipfile``, ``numpy.savez``...) but not the files
that C libraries open themselves (HDF5, TensorFlow's TFRecord writer); the tests choose events
that bracket those writes.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import sys
import threading
from typing import Any

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


class _Fault:
    def __init__(self, spec: str, mark: str | None) -> None:
        parts = spec.split("|")
        self.action, self.event, self.pattern = parts[0], parts[1], re.compile(parts[2])
        self.nth = int(parts[3]) if len(parts) > 3 and parts[3] else 1
        self.delay = float(parts[4]) if len(parts) > 4 and parts[4] else 0.0
        self.mark = mark
        self.seen = 0
        self.fired = False
        if self.action not in ("kill", "sigint", "enospc"):
            raise SystemExit(f"faultrun: unknown action {self.action!r}")

    def offer(self, event: str, subject: str) -> None:
        """Count an event; fire the fault when it is the chosen one."""
        if event != self.event or not self.pattern.search(subject):
            return
        if self.fired:
            if self.action == "enospc":  # a full disk stays full: every later matching write fails too
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), subject)
            return
        self.seen += 1
        if self.seen < self.nth:
            return
        self.fired = True
        if self.mark:
            with open(self.mark, "a", encoding="utf-8") as fh:  # not offered again: fired is set
                fh.write(f"{event} {subject.strip()}\n")
        if self.action == "enospc":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), subject)
        signum = signal.SIGKILL if self.action == "kill" else signal.SIGINT
        if self.delay > 0:
            timer = threading.Timer(self.delay, os.kill, (os.getpid(), signum))
            timer.daemon = True
            timer.start()
        else:
            os.kill(os.getpid(), signum)


def _is_write(mode: object, flags: object) -> bool:
    if isinstance(mode, str):
        return any(c in mode for c in "wax+")
    return isinstance(flags, int) and bool(flags & _WRITE_FLAGS)


def _audit(fault: _Fault) -> Any:
    def hook(name: str, args: tuple[Any, ...]) -> None:
        if fault.fired and fault.action != "enospc":
            return
        if name == "open":
            path, mode, flags = (tuple(args) + (None, None, None))[:3]
            event = "write" if _is_write(mode, flags) else "read"
        elif name == "os.rename":
            path, event = args[1], "rename"
        elif name == "os.mkdir":
            path, event = args[0], "mkdir"
        else:
            return
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if isinstance(path, (str, os.PathLike)):
            fault.offer(event, os.fspath(path))

    return hook


class _StderrTap:
    def __init__(self, stream: Any, fault: _Fault) -> None:
        self._stream = stream
        self._fault = fault

    def write(self, text: str) -> int:
        written = self._stream.write(text)
        self._stream.flush()
        self._fault.offer("stderr", text)
        return written

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _install() -> None:
    spec = os.environ.get("TLTK_FAULT")
    if not spec:
        return
    fault = _Fault(spec, os.environ.get("TLTK_FAULT_MARK"))
    if fault.event in ("write", "read", "rename", "mkdir"):
        sys.addaudithook(_audit(fault))
    elif fault.event == "stderr":
        sys.stderr = _StderrTap(sys.stderr, fault)
    elif fault.event == "step":
        import keras

        original = keras.callbacks.CallbackList.on_train_batch_end

        def on_train_batch_end(self: Any, batch: int, logs: Any = None) -> None:
            original(self, batch, logs)
            fault.offer("step", "")

        keras.callbacks.CallbackList.on_train_batch_end = on_train_batch_end
    else:
        raise SystemExit(f"faultrun: unknown event {fault.event!r}")


if __name__ == "__main__":
    # A shell without job control starts background jobs (`make test &`) with SIGINT ignored, and
    # Python then installs no KeyboardInterrupt handler: Ctrl-C semantics must not depend on how
    # the suite was launched.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if "--enable_determinism" in sys.argv:
        # before _install() imports Keras: oneDNN can only be switched off before TensorFlow loads
        from tltk.cli.train import request_determinism

        request_determinism()
    _install()
    from tltk.cli.app import main

    main(sys.argv[1:])
