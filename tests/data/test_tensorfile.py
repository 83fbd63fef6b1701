"""TensorFile: TAO's HDF5 layout (keys, attributes, gzip), round trips, refusal to overwrite."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from tltk.data.tensorfile import ARRAY_KEY, TensorFileWriter, count_batches, read_tensorfile, record_name
from tltk.errors import InvalidInputError


def test_layout_matches_tao_and_reads_back(tmp_path):
    path = tmp_path / "cal.tensor"
    batches = [np.random.default_rng(i).random((2, 3, 4, 5)).astype(np.float32) for i in range(3)]
    with TensorFileWriter(path) as writer:
        for b in batches:
            writer.write_batch(b)
    with h5py.File(path, "r") as f:
        assert int(f.attrs["count"]) == 3
        assert list(f.attrs["shape"]) == [2, 3, 4, 5]
        assert sorted(f.keys()) == ["_tensorfile_array_key__0", "_tensorfile_array_key__1", "_tensorfile_array_key__2"]
        ds = f["_tensorfile_array_key__1"]["_tensorfile_array_key_"]
        assert ds.compression == "gzip" and ds.dtype == np.float32
        np.testing.assert_array_equal(ds[()], batches[1])
    assert record_name(7) == "_tensorfile_array_key__7" and ARRAY_KEY == "_tensorfile_array_key_"
    assert count_batches(path) == 3
    for got, want in zip(read_tensorfile(path), batches, strict=True):
        np.testing.assert_array_equal(got, want)


def test_reads_a_file_written_the_way_tao_writes_it(tmp_path):
    # Built with h5py directly, as TAO's TensorFile does (float64 from its image generator).
    path = tmp_path / "tao.tensor"
    with h5py.File(path, "w") as f:
        for i in range(2):
            g = f.create_group(f"_tensorfile_array_key__{i}")
            g.create_dataset("_tensorfile_array_key_", data=np.full((1, 3, 2, 2), i, np.float64), compression="gzip")
        f.attrs["count"] = 2
        f.attrs["shape"] = (1, 3, 2, 2)
    out = list(read_tensorfile(path))
    assert len(out) == 2 and out[1].dtype == np.float64 and float(out[1].sum()) == 12.0


def test_dict_records_and_shape_mismatch(tmp_path):
    path = tmp_path / "d.tensor"
    with TensorFileWriter(path) as writer:
        writer.write_batch({"a": np.ones(2), "nested": {"b": np.zeros(3)}})
    rec = next(read_tensorfile(path))
    assert rec["a"].tolist() == [1.0, 1.0] and rec["nested"]["b"].tolist() == [0.0, 0.0, 0.0]
    other = tmp_path / "m.tensor"
    writer = TensorFileWriter(other)
    writer.write_batch(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="Shape mismatch"):
        writer.write_batch(np.zeros((3, 3)))
    writer.close()
    assert count_batches(other) == 1


def test_refuses_overwrite_and_interrupted_write_leaves_nothing(tmp_path):
    path = tmp_path / "x.tensor"
    path.write_bytes(b"old")
    with pytest.raises(InvalidInputError, match="already exists"):
        TensorFileWriter(path)
    fresh = tmp_path / "y.tensor"
    with pytest.raises(RuntimeError):
        with TensorFileWriter(fresh) as writer:
            writer.write_batch(np.zeros((1, 3, 2, 2), np.float32))
            raise RuntimeError("interrupted")
    assert not fresh.exists() and [p.name for p in tmp_path.iterdir()] == ["x.tensor"]
    with pytest.raises(InvalidInputError, match="not a TensorFile"):
        count_batches(path)
