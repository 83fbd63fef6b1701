"""Shared fixtures: paths to the read-only corpus, tiny synthetic datasets, CLI runner."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path | None:
    """The read-only ../shared folder next to the checkout, or $TLTK_SHARED; None when absent."""
    env = os.environ.get("TLTK_SHARED")
    for candidate in ([Path(env)] if env else []) + [REPO_ROOT.parent / "shared"]:
        if candidate.is_dir():
            return candidate
    return None


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    """../shared/corpus; tests that use it are skipped where it is absent."""
    base = shared_dir()
    if base is None or not (base / "corpus").is_dir():
        pytest.skip("../shared/corpus is not available")
    return base / "corpus"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


def has_executable(name: str) -> bool:
    return shutil.which(name) is not None
