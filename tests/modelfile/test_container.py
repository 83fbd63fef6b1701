"""tltk's .tlt container: round trips, keys, damage detection, atomic writes, Keras models."""

from __future__ import annotations

import io
import logging
import os
import struct
import zipfile
import zlib

import numpy as np
import pytest

from tltk.errors import ModelFileError, WrongKeyError
from tltk.modelfile import container as c
from tltk.modelfile import legacy as lc

MEMBERS = {"model.keras": b"PK\x03\x04 not really a keras file " + bytes(range(256)) * 4,
           "extra/labels.txt": b"car\npedestrian\n"}
METADATA = {"model": "detectnet_v2", "class_names": ["car", "pedestrian"], "input_shape": [3, 64, 96],
            "spec": "random_seed: 42\n", "custom": {"nested": [1, 2.5, None]}}


@pytest.fixture
def sealed(tmp_path):
    path = tmp_path / "model.tlt"
    c.write_container(path, MEMBERS, METADATA, key="s3cret")
    return path


@pytest.fixture
def unsealed(tmp_path):
    path = tmp_path / "plain.tlt"
    c.write_container(path, MEMBERS, METADATA)
    return path


def _not_wrong_key(exc: BaseException) -> bool:
    return isinstance(exc, ModelFileError) and not isinstance(exc, WrongKeyError)


# ---- round trips --------------------------------------------------------------------------------

def test_round_trip_without_key(unsealed):
    assert unsealed.read_bytes()[:2] == b"PK"
    members, meta = c.read_container(unsealed)
    assert members == MEMBERS
    assert {k: meta[k] for k in METADATA} == METADATA
    assert meta["tltk_version"] == c.__version__
    assert meta["created"].endswith("+00:00")
    block = meta["container"]
    assert block["format"] == "tltk-container" and block["format_version"] == 1
    assert block["members"]["extra/labels.txt"]["bytes"] == 15
    with zipfile.ZipFile(unsealed) as zf:
        assert zf.comment == c.ZIP_COMMENT
        assert sorted(zf.namelist()) == ["extra/labels.txt", "metadata.json", "model.keras"]


def test_round_trip_with_key(sealed):
    raw = sealed.read_bytes()
    assert raw[:5] == b"TLTK\x01"
    assert b"pedestrian" not in raw and b"detectnet_v2" not in raw  # nothing readable without the key
    members, meta = c.read_container(sealed, "s3cret")
    assert members == MEMBERS
    assert {k: meta[k] for k in METADATA} == METADATA
    assert c.read_metadata(sealed, "s3cret") == meta


def test_salt_and_nonce_are_fresh_on_every_write(tmp_path):
    a, b = tmp_path / "a.tlt", tmp_path / "b.tlt"
    c.write_container(a, MEMBERS, {"created": "fixed"}, key="k")
    c.write_container(b, MEMBERS, {"created": "fixed"}, key="k")
    ha, hb = a.read_bytes()[:c.HEADER_BYTES], b.read_bytes()[:c.HEADER_BYTES]
    assert ha[10:26] != hb[10:26] and ha[26:38] != hb[26:38]
    assert c.read_container(a, "k")[0] == c.read_container(b, "k")[0] == MEMBERS


def test_empty_key_means_unsealed(tmp_path):
    path = tmp_path / "m.tlt"
    c.write_container(path, MEMBERS, {}, key="")
    assert path.read_bytes()[:2] == b"PK"


def test_key_for_an_unsealed_file_is_ignored_with_a_warning(unsealed, caplog):
    with caplog.at_level(logging.WARNING, logger="tltk.modelfile.container"):
        members, _ = c.read_container(unsealed, "anything")
    assert members == MEMBERS
    assert "not encrypted" in caplog.text


def test_container_info(sealed, unsealed, tmp_path):
    info = c.container_info(sealed)
    assert info == {"sealed": True, "format_version": 1, "bytes": sealed.stat().st_size, "kdf": "scrypt",
                    "scrypt": {"n": 16384, "r": 8, "p": 1},
                    "payload_bytes": sealed.stat().st_size - c.HEADER_BYTES}
    assert c.container_info(unsealed) == {"sealed": False, "format_version": 1, "bytes": unsealed.stat().st_size}
    other = tmp_path / "other.zip"
    other.write_bytes(_plain_zip())
    assert c.container_info(other) is None


# ---- keys ---------------------------------------------------------------------------------------

def test_wrong_key(sealed):
    with pytest.raises(WrongKeyError, match="key does not open") as info:
        c.read_container(sealed, "s3cret ")
    assert str(sealed) in str(info.value)


def test_sealed_file_without_key(sealed):
    with pytest.raises(WrongKeyError, match="this model is encrypted; pass -k/--key or set TLTK_KEY"):
        c.read_container(sealed)


# ---- damage ---------------------------------------------------------------------------------------

def test_truncated_sealed_file_at_many_lengths(sealed, tmp_path):
    raw = sealed.read_bytes()
    damaged = tmp_path / "cut.tlt"
    lengths = [0, 2, 4, 10, c.HEADER_BYTES - 1, c.HEADER_BYTES, c.HEADER_BYTES + 1, len(raw) // 2,
               len(raw) - 16, len(raw) - 1]
    for n in lengths:
        damaged.write_bytes(raw[:n])
        with pytest.raises(ModelFileError) as info:
            c.read_container(damaged, "s3cret")
        assert _not_wrong_key(info.value), n
        assert str(damaged) in str(info.value)
        assert ("truncated" in str(info.value)) or ("empty" in str(info.value)), (n, str(info.value))


def test_trailing_bytes_are_damage(sealed):
    sealed.write_bytes(sealed.read_bytes() + b"\0")
    with pytest.raises(ModelFileError, match="unexpected bytes") as info:
        c.read_container(sealed, "s3cret")
    assert _not_wrong_key(info.value)


@pytest.mark.parametrize("offset,fragment", [
    (0, "not a tltk model container"),  # magic
    (4, "header"), (6, "header"), (12, "header"), (30, "header"), (40, "header"), (56, "header"),
    (63, "header"),  # version, log2 N, salt, nonce, key check, length, CRC
    (c.HEADER_BYTES, "integrity"), (c.HEADER_BYTES + 200, "integrity"),  # ciphertext
    (-1, "integrity"), (-16, "integrity"),  # tag
])
def test_any_flipped_byte_in_a_sealed_file_is_detected(sealed, offset, fragment):
    raw = bytearray(sealed.read_bytes())
    raw[offset] ^= 0x01
    sealed.write_bytes(bytes(raw))
    with pytest.raises(ModelFileError, match=fragment) as info:
        c.read_container(sealed, "s3cret")
    assert _not_wrong_key(info.value)


def test_flipped_byte_in_an_unsealed_member_is_detected(unsealed):
    raw = bytearray(unsealed.read_bytes())
    at = raw.index(b"not really a keras file")
    raw[at + 3] ^= 0x20
    unsealed.write_bytes(bytes(raw))
    with pytest.raises(ModelFileError, match="damaged") as info:
        c.read_container(unsealed)
    assert _not_wrong_key(info.value)


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.9, 0.999])
def test_truncated_unsealed_file(unsealed, fraction):
    raw = unsealed.read_bytes()
    unsealed.write_bytes(raw[:int(len(raw) * fraction)])
    with pytest.raises(ModelFileError) as info:
        c.read_container(unsealed)
    assert _not_wrong_key(info.value)


def test_newer_format_version_is_refused_with_an_upgrade_hint(sealed):
    raw = bytearray(sealed.read_bytes())
    raw[4] = 2
    head = bytes(raw[:c.HEADER_BYTES - 4])
    raw[c.HEADER_BYTES - 4:c.HEADER_BYTES] = struct.pack("<I", zlib.crc32(head))
    sealed.write_bytes(bytes(raw))
    with pytest.raises(ModelFileError, match="format version 2") as info:
        c.read_container(sealed, "s3cret")
    assert "upgrade tltk" in str(info.value)


def _plain_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("model.ckpt-5.index", b"x")
    return buf.getvalue()


def test_not_a_container(tmp_path):
    other = tmp_path / "other.tlt"
    other.write_bytes(_plain_zip())
    with pytest.raises(ModelFileError, match="not a tltk model container"):
        c.read_container(other)
    other.write_bytes(os.urandom(500))
    with pytest.raises(ModelFileError, match="not a tltk model container"):
        c.read_container(other)
    from tltk.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="no such model file"):
        c.read_container(tmp_path / "missing.tlt")


# ---- atomic writes --------------------------------------------------------------------------------

def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    target = tmp_path / "model.tlt"
    with pytest.raises(OSError, match="No space left"):
        c.write_container(target, MEMBERS, METADATA, key="k")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_previous_file(unsealed, monkeypatch):
    before = unsealed.read_bytes()

    def broken_replace(src, dst):
        raise OSError(5, "I/O error")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        c.write_container(unsealed, {"model.keras": b"new"}, {})
    assert unsealed.read_bytes() == before
    assert [p.name for p in unsealed.parent.iterdir()] == [unsealed.name]


def test_invalid_members_and_metadata_are_refused_before_writing(tmp_path):
    for name in ["metadata.json", "../evil", "/abs", "a//b", ""]:
        with pytest.raises(ValueError):
            c.write_container(tmp_path / "m.tlt", {name: b"x"}, {})
    with pytest.raises(TypeError, match="bytes"):
        c.write_container(tmp_path / "m.tlt", {"a": "text"}, {})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="JSON"):
        c.write_container(tmp_path / "m.tlt", {"a": b"x"}, {"bad": object()})
    assert list(tmp_path.iterdir()) == []


# ---- load_any_model_file --------------------------------------------------------------------------

def _tiny_onnx() -> bytes:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()


def test_load_any_model_file_sniffs_content_not_extension(tmp_path, sealed):
    onnx_bytes = _tiny_onnx()
    plain = tmp_path / "looks_like.tlt"
    plain.write_bytes(onnx_bytes)
    assert c.load_any_model_file(plain) == ("onnx", onnx_bytes, {"container": "plain", "encrypted": False,
                                                                 "input_name": None})
    legacy = tmp_path / "model.bin"
    lc.write_etlt(legacy, onnx_bytes, "tlt_encode")
    kind, content, info = c.load_any_model_file(legacy, "tlt_encode")
    assert (kind, content, info) == ("onnx", onnx_bytes, {"container": "legacy-etlt", "encrypted": True,
                                                          "input_name": ""})
    kind, content, info = c.load_any_model_file(sealed, "s3cret")
    assert kind == "tltk" and content == MEMBERS and info["model"] == "detectnet_v2"


def test_load_any_model_file_errors(tmp_path):
    legacy = tmp_path / "model.etlt"
    lc.write_etlt(legacy, _tiny_onnx(), "nvidia_tlt")
    with pytest.raises(WrongKeyError, match="needs its key") as info:
        c.load_any_model_file(legacy)
    assert "-k nvidia_tlt" in str(info.value)  # the hint finds the published key
    with pytest.raises(WrongKeyError, match="key does not open"):
        c.load_any_model_file(legacy, "tlt_encode")
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelFileError, match="empty") as exc:
        c.load_any_model_file(empty)
    assert _not_wrong_key(exc.value)
    broken = tmp_path / "broken.keras"
    broken.write_bytes(_plain_zip()[:-5])
    with pytest.raises(ModelFileError, match="damaged or truncated") as exc:
        c.load_any_model_file(broken)
    assert _not_wrong_key(exc.value)


def test_load_any_model_file_reads_legacy_hdf5_tlt(tmp_path):
    import h5py

    buf = io.BytesIO()
    with h5py.File(buf, "w") as h5:
        h5.create_dataset("w", data=np.ones(3))
    legacy = tmp_path / "model.tlt"
    lc.write_legacy_tlt(legacy, buf.getvalue(), "tlt_encode")
    kind, content, info = c.load_any_model_file(legacy, "tlt_encode")
    assert (kind, content, info["container"], info["input_name"]) == ("hdf5", buf.getvalue(), "legacy-tlt", None)


# ---- Keras models ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def keras_model():
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(3)
    inp = keras.Input((8, 8, 3), name="input_1")
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv1")(inp)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    out = keras.layers.Dense(2, name="output_cov")(x)
    return keras.Model(inp, out, name="tiny")


def _batch():
    return np.random.default_rng(0).random((2, 8, 8, 3), dtype=np.float32)


@pytest.mark.parametrize("key", [None, "model key"])
def test_keras_model_round_trip_predicts_identically(tmp_path, keras_model, key):
    path = tmp_path / "model.tlt"
    c.save_keras_model(path, keras_model, {"model": "detectnet_v2", "class_names": ["car", "person"],
                                           "input_shape": [3, 8, 8]}, key=key)
    loaded, meta = c.load_keras_model(path, key)
    assert meta["class_names"] == ["car", "person"] and meta["keras_model"] == "model.keras"
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in keras_model.layers]
    np.testing.assert_array_equal(loaded.predict(_batch(), verbose=0), keras_model.predict(_batch(), verbose=0))


def test_load_keras_model_accepts_keras_hdf5_and_legacy_tlt(tmp_path, keras_model):
    expected = keras_model.predict(_batch(), verbose=0)
    keras_path = tmp_path / "m.keras"
    keras_model.save(keras_path)
    h5_path = tmp_path / "m.h5"
    keras_model.save(h5_path)
    legacy = tmp_path / "legacy.tlt"
    lc.write_legacy_tlt(legacy, h5_path.read_bytes(), "tlt_encode")
    for path, key, container in [(keras_path, None, "plain"), (h5_path, None, "plain"),
                                 (legacy, "tlt_encode", "legacy-tlt")]:
        loaded, info = c.load_keras_model(path, key)
        assert info["container"] == container
        np.testing.assert_array_equal(loaded.predict(_batch(), verbose=0), expected)


def test_load_keras_model_refuses_non_keras_payloads(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(_tiny_onnx())
    with pytest.raises(ModelFileError, match="not a Keras model"):
        c.load_keras_model(path)
    sealed = tmp_path / "nokeras.tlt"
    c.write_container(sealed, {"weights.bin": b"123"}, {})
    with pytest.raises(ModelFileError, match="holds no Keras model"):
        c.load_keras_model(sealed)
