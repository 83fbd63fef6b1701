"""Atomic file output: a file with its final name is always complete.

Every writer in tltk that produces a file a user (or a later run) reads goes through this
module: whole-buffer writes use :func:`atomic_write_bytes`/:func:`atomic_write_text`, streamed
writes (TFRecord shards, TensorFiles, checkpoint folders) use :func:`atomic_output`, which hands
out a temporary path in the destination folder and renames it over the final name only when
the block finishes without an exception.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_output", "temporary_name", "fsync_folder", "folder_lock",
           "remove_stale_temporaries"]


def temporary_name(path: str | os.PathLike[str], suffix: str = ".tmp") -> str:
    """A hidden, unique sibling of ``path`` (same folder, so the final rename is atomic)."""
    target = os.path.abspath(os.fspath(path))
    folder, base = os.path.split(target)
    return os.path.join(folder, f".{base}.{uuid.uuid4().hex[:12]}{suffix}")


def fsync_folder(folder: str | os.PathLike[str]) -> None:
    """Flush a folder's entries to disk (best effort; some file systems refuse)."""
    try:
        dfd = os.open(os.fspath(folder), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


_TEMPORARY = re.compile(r"^\..+\.[0-9a-f]{12}(\.tmp|\.partial|\.tltk-partial)$")


def remove_stale_temporaries(folder: str | os.PathLike[str], older_than: float | None = None) -> list[str]:
    """Delete the hidden temporaries (:func:`temporary_name`) that killed writers left under ``folder``.

    Only names of the form ``.<name>.<12 hex digits>.tmp|.partial|.tltk-partial`` are touched, and
    only those last modified before ``older_than`` (a ``time.time()`` value; default now), so a
    writer that started after the caller took its lock keeps its file.  Call it while holding the
    folder's lock.

    Returns:
        The removed paths.
    """
    limit = time.time() if older_than is None else older_than
    removed = []
    for root, dirs, files in os.walk(os.fspath(folder)):
        for name in [*dirs, *files]:
            path = os.path.join(root, name)
            if _TEMPORARY.match(name) and os.lstat(path).st_mtime < limit:
                _remove(path)
                removed.append(path)
        dirs[:] = [d for d in dirs if not _TEMPORARY.match(d)]
    return removed


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], directory: bool = False, suffix: str = ".partial") -> Iterator[str]:
    """Yield a temporary path to write; rename it to ``path`` when the block succeeds.

    On an exception (including ``KeyboardInterrupt``) the temporary file or folder is removed
    and an existing ``path`` is left untouched.  A kill leaves at most a hidden ``.partial``
    sibling, never a file with the final name.

    Args:
        path: the final file (or folder when ``directory``); its parent is created.
        directory: hand out an (already created) temporary folder instead of a file path.
        suffix: suffix of the temporary name.

    Yields:
        The temporary path (same folder as ``path``).
    """
    target = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(target)
    os.makedirs(folder, exist_ok=True)
    tmp = temporary_name(target, suffix)
    if directory:
        os.makedirs(tmp)
    try:
        yield tmp
        if directory and os.path.isdir(target):
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        _remove(tmp)
        raise
    fsync_folder(folder)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write a file so that it is either complete or absent, never half written.

    The bytes go to a temporary file in the same folder, which is flushed, fsync'ed and then
    renamed over ``path``; on any failure the temporary file is removed and an existing ``path``
    is left untouched.

    Args:
        path: destination file; its folder is created when missing.
        data: the complete file content.
    """
    with atomic_output(path, suffix=".tmp") as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    """:func:`atomic_write_bytes` for text (``encoding``, newlines written as given)."""
    atomic_write_bytes(path, text.encode(encoding))


LOCK_FILE = ".tltk.lock"
"""Name of the lock file a training run holds in its results folder."""


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike[str], what: str = "a run") -> Iterator[str]:
    """Hold an exclusive lock on ``folder`` for the duration of the block.

    The lock is an ``fcntl`` lock on ``<folder>/.tltk.lock`` (holding the owner's pid), so the
    operating system releases it when the owner dies, even on SIGKILL; a stale lock file never
    blocks a later run.

    Args:
        folder: the folder (created when missing).
        what: what holds the lock, for the message.

    Yields:
        The lock file path.

    Raises:
        UsageError: another process holds the lock (exit code 2).
    """
    import fcntl

    from tltk.errors import UsageError

    os.makedirs(os.fspath(folder), exist_ok=True)
    path = os.path.join(os.fspath(folder), LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            raise UsageError(f"{os.fspath(folder)} is locked by {what} (pid {owner}) using the same results folder",
                             hint="wait for it to finish, or give this run another results folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield path
    finally:
        os.close(fd)
