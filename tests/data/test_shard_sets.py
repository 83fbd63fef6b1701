"""Incomplete TFRecord shard sets: refused when a conversion was cut, logged when a glob picks part."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tltk.data.tfrecord import check_shard_sets
from tltk.errors import InvalidInputError


def _touch(folder: Path, *names: str) -> list[str]:
    for name in names:
        (folder / name).write_bytes(b"")
    return sorted(str(folder / n) for n in names if not n.startswith("."))


def test_complete_sets_of_both_naming_schemes_pass(tmp_path: Path) -> None:
    files = _touch(tmp_path, "train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord",
                   "kitti-fold-000-of-002-shard-00000-of-00001", "kitti-fold-001-of-002-shard-00000-of-00001")
    check_shard_sets(files, "data_config.training_file_pattern")


def test_a_set_cut_between_renames_names_the_missing_shard(tmp_path: Path) -> None:
    files = _touch(tmp_path, "train-00000-of-00003.tfrecord", ".train-00002-of-00003.tfrecord.0123abcd.tltk-partial",
                   ".train-00001-of-00003.tfrecord.4567ef01.tltk-partial")
    with pytest.raises(InvalidInputError) as err:
        check_shard_sets(files, "data_config.training_file_pattern")
    message = str(err.value)
    assert "1 of 3 shards" in message
    assert "train-00001-of-00003.tfrecord, train-00002-of-00003.tfrecord" in message
    assert message.startswith("data_config.training_file_pattern")


def test_a_partial_glob_without_leftovers_only_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    files = _touch(tmp_path, "kitti-fold-000-of-001-shard-00003-of-00010")
    with caplog.at_level(logging.WARNING):
        check_shard_sets(files, "tfrecords_path")
    assert "1 of 10 shards" in caplog.text and "shard-00000-of-00010" in caplog.text
