"""The legacy TAO .etlt/.tlt codec: published test vectors, five real NVIDIA-made files, round trips."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import subprocess
import sys
import zipfile

import pytest

from tltk.errors import ModelFileError, WrongKeyError
from tltk.modelfile import legacy as lc

VECTOR_NONCE = bytes(range(16))
VECTOR_PLAINTEXT = b"tltk etlt test vector: 0123456789abcdef"
VECTOR_CIPHERTEXT = bytes.fromhex("c337176d8a7cc1ce087af62aaef5360a39d74d7f591baf0f8caffe074f822b0b4b8e5bf106b8c0")


def _manifest(corpus_dir):
    with open(corpus_dir / "etlt" / "MANIFEST.tsv", newline="") as fh:
        return [row for row in csv.DictReader(fh, delimiter="\t") if row["kind"] == "etlt"]


@pytest.fixture(scope="module")
def real_files(corpus_dir):
    rows = _manifest(corpus_dir)
    assert len(rows) == 5
    return [(corpus_dir / "etlt" / row["file"], row) for row in rows]


def tiny_onnx() -> bytes:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, producer_name="tltk-test", opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _ld(field: int, payload: bytes) -> bytes:
    assert len(payload) < 128
    return bytes([(field << 3) | 2, len(payload)]) + payload


def tiny_uff() -> bytes:
    """A UFF-shaped MetaGraph: version 1, core version 1, a descriptor, a graph named 'main'."""
    descriptor = _ld(1, b"tensorflow_extension") + b"\x10\x01"
    graph = _ld(1, b"main") + _ld(2, _ld(1, b"input_1") + _ld(2, b"Input"))
    return b"\x08\x01\x10\x01" + _ld(3, descriptor) + _ld(4, graph)


def tiny_hdf5() -> bytes:
    import h5py
    import numpy as np

    buf = io.BytesIO()
    with h5py.File(buf, "w") as h5:
        h5.attrs["keras_version"] = "2.2.4"
        h5.create_dataset("w", data=np.arange(12, dtype="float32").reshape(3, 4))
    return buf.getvalue()


def tiny_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("model.ckpt-10.index", b"index bytes")
        zf.writestr("checkpoint", b'model_checkpoint_path: "model.ckpt-10"\n')
    return buf.getvalue()


# ---- deploy_facts.md section 1.4 test vectors ---------------------------------------------------

@pytest.mark.parametrize("key,hexkey", [
    ("tlt_encode", "5c192ece6a4278fb0d791cce8178a21760a0c93f79e5ba4d2d96644af294e185"),
    ("nvidia_tlt", "ea82d654e0bf5d97af42c4dcd6bff6cc69143a97e343b6ae8d12c6bb18be5410"),
])
def test_pbkdf2_key_vectors(key, hexkey):
    assert lc.derive_legacy_key(key).hex() == hexkey


def test_derived_key_is_cached_per_password():
    assert lc.derive_legacy_key("cache me") is lc.derive_legacy_key("cache me")


def test_aes_ctr_vector_both_directions():
    assert len(VECTOR_PLAINTEXT) == 39
    blob = lc.encrypt_payload(VECTOR_PLAINTEXT, "tlt_encode", VECTOR_NONCE)
    assert blob == VECTOR_NONCE + VECTOR_CIPHERTEXT
    assert lc.decrypt_payload(blob, "tlt_encode") == VECTOR_PLAINTEXT


def test_etlt_layout_vectors():
    onnx_style = lc.encode_etlt(VECTOR_PLAINTEXT, "tlt_encode", "", VECTOR_NONCE, check_payload=False)
    assert onnx_style == bytes.fromhex("00000000") + VECTOR_NONCE + VECTOR_CIPHERTEXT
    uff_style = lc.encode_etlt(VECTOR_PLAINTEXT, "tlt_encode", "input_1", VECTOR_NONCE, check_payload=False)
    assert uff_style == bytes.fromhex("07000000696e7075745f31") + VECTOR_NONCE + VECTOR_CIPHERTEXT
    assert lc.read_etlt_header(onnx_style) == ("", 4)
    assert lc.read_etlt_header(uff_style) == ("input_1", 11)
    assert lc.decrypt_payload(uff_style[11:], "tlt_encode") == VECTOR_PLAINTEXT


def test_counter_carries_over_all_128_bits():
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    nonce = bytes.fromhex("00000000000000ffffffffffffffffff")
    blob = lc.encrypt_payload(bytes(32), "tlt_encode", nonce)
    ecb = Cipher(algorithms.AES(lc.derive_legacy_key("tlt_encode")), modes.ECB()).encryptor()
    assert blob[16:32] == ecb.update(nonce)
    assert blob[32:48] == ecb.update(bytes.fromhex("00000000000001000000000000000000"))


def test_zero_length_payload_is_just_the_nonce_and_is_reported_as_empty():
    blob = lc.encrypt_payload(b"", "tlt_encode", VECTOR_NONCE)
    assert blob == VECTOR_NONCE
    with pytest.raises(ModelFileError, match="no model") as info:
        lc.decode_legacy(blob, "tlt_encode", source="empty.tlt")
    assert not isinstance(info.value, WrongKeyError)


@pytest.mark.parametrize("size", [0, 1, 15])
def test_input_shorter_than_the_nonce_is_rejected(size):
    with pytest.raises(ModelFileError):
        lc.decrypt_payload(b"\x01" * size, "tlt_encode")
    with pytest.raises(ModelFileError) as info:
        lc.decode_legacy(b"\x01" * size, "tlt_encode")
    assert not isinstance(info.value, WrongKeyError)


def test_nonce_must_be_16_bytes():
    with pytest.raises(ValueError, match="16 bytes"):
        lc.encrypt_payload(b"abc", "k", b"short")


# ---- the five real NVIDIA-made files ------------------------------------------------------------

def test_real_files_decode_to_the_manifest_payloads(real_files):
    for path, row in real_files:
        data = path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == row["file_sha256"]
        result = lc.decode_legacy_file(path, row["key"])
        assert result.layout == "etlt"
        assert result.kind == row["payload"]
        assert result.input_name == row["header_input_name"]
        assert len(result.payload) == int(row["plaintext_bytes"]) == len(data) - 20 - len(row["header_input_name"])
        assert hashlib.sha256(result.payload).hexdigest() == row["plaintext_sha256"]


def test_real_files_reencoded_with_their_nonce_are_byte_identical(real_files):
    for path, row in real_files:
        data = path.read_bytes()
        result = lc.decode_legacy(data, row["key"], source=str(path))
        assert lc.encode_etlt(result.payload, row["key"], result.input_name or "", result.nonce) == data


def test_every_other_usual_key_is_a_wrong_key(real_files):
    checked = 0
    for path, row in real_files:
        for key in lc.USUAL_KEYS:
            if key == row["key"]:
                continue
            with pytest.raises(WrongKeyError, match="key does not open") as info:
                lc.decode_legacy_file(path, key)
            assert str(path) in str(info.value)
            assert f"-k {row['key']}" in str(info.value)  # the hint names the published key that works
            checked += 1
    assert checked == 10


def test_find_published_key(real_files):
    for path, row in real_files:
        assert lc.find_published_key(path.read_bytes(), str(path)) == row["key"]


@pytest.mark.parametrize("cut", [1, 17, 1000])
def test_truncated_real_file_with_the_right_key_is_damage_not_wrong_key(real_files, cut):
    for path, row in real_files:
        data = path.read_bytes()
        with pytest.raises(ModelFileError, match="truncated") as info:
            lc.decode_legacy(data[:-cut], row["key"], source=str(path))
        assert not isinstance(info.value, WrongKeyError)
        with pytest.raises(WrongKeyError):
            lc.decode_legacy(data[:-cut], "not the key", source=str(path))


# ---- round trips --------------------------------------------------------------------------------

def test_onnx_etlt_round_trip_with_a_unicode_key():
    payload = tiny_onnx()
    key = "clé secrète"
    a = lc.encode_etlt(payload, key)
    b = lc.encode_etlt(payload, key)
    assert a[:4] == b"\0\0\0\0" and len(a) == 4 + 16 + len(payload)
    assert a != b  # a fresh random nonce every time
    result = lc.decode_legacy(a, key)
    assert (result.kind, result.payload, result.input_name, result.layout) == ("onnx", payload, "", "etlt")
    assert result.nonce == a[4:20]


def test_uff_etlt_round_trip():
    payload = tiny_uff()
    assert lc.sniff_payload(payload) == "uff"
    data = lc.encode_etlt(payload, "tlt_encode", "input_1")
    assert data[:11] == b"\x07\0\0\0input_1"
    result = lc.decode_legacy(data, "tlt_encode")
    assert (result.kind, result.payload, result.input_name) == ("uff", payload, "input_1")


@pytest.mark.parametrize("maker,kind", [(tiny_hdf5, "hdf5"), (tiny_zip, "zip")])
def test_tlt_round_trip(tmp_path, maker, kind):
    payload = maker()
    path = tmp_path / "model.tlt"
    lc.write_legacy_tlt(path, payload, "nvidia_tao")
    assert path.stat().st_size == 16 + len(payload)
    result = lc.decode_legacy_file(path, "nvidia_tao")
    assert (result.kind, result.payload, result.layout, result.input_name) == (kind, payload, "tlt", None)
    with pytest.raises(WrongKeyError):
        lc.decode_legacy_file(path, "tlt_encode")


def test_write_etlt_file(tmp_path):
    path = tmp_path / "out" / "model.etlt"
    lc.write_etlt(path, tiny_onnx(), "tlt_encode")
    assert lc.decode_legacy_file(path, "tlt_encode").payload == tiny_onnx()
    assert [p.name for p in path.parent.iterdir()] == ["model.etlt"]


def test_encode_etlt_refuses_inconsistent_inputs():
    from tltk.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="empty input name"):
        lc.encode_etlt(tiny_onnx(), "k", "input_1")
    with pytest.raises(InvalidInputError, match="input-node name"):
        lc.encode_etlt(tiny_uff(), "k", "")
    with pytest.raises(InvalidInputError, match="ONNX or UFF"):
        lc.encode_etlt(tiny_hdf5(), "k", "")


def test_twenty_random_keys_are_all_wrong_keys():
    payloads = [lc.encode_etlt(tiny_onnx(), "right"), lc.encode_etlt(tiny_uff(), "right", "input_1"),
                lc.encode_tlt(tiny_hdf5(), "right"), lc.encode_tlt(tiny_zip(), "right")]
    for i in range(20):
        key = os.urandom(6).hex() + str(i)
        for data in payloads:
            with pytest.raises(WrongKeyError):
                lc.decode_legacy(data, key)


def test_explicit_etlt_layout_with_an_impossible_header():
    data = b"\xff\x00\x00\x00" + os.urandom(40)  # name length 255 in a 44-byte file
    with pytest.raises(ModelFileError, match="not a valid .etlt header") as info:
        lc.decode_legacy(data, "k", layout="etlt")
    assert not isinstance(info.value, WrongKeyError)


# ---- payload sniffing --------------------------------------------------------------------------

def test_sniff_payload_kinds():
    assert lc.sniff_payload(tiny_onnx()) == "onnx"
    assert lc.sniff_payload(tiny_uff()) == "uff"
    assert lc.sniff_payload(tiny_hdf5()) == "hdf5"
    assert lc.sniff_payload(tiny_zip()) == "zip"
    assert lc.sniff_payload(b"") is None
    assert lc.sniff_payload(os.urandom(4096)) is None
    assert lc.sniff_payload(tiny_onnx()[:-3]) is None  # cut short: does not parse to the end
    assert lc.sniff_payload(tiny_uff()[:-1]) is None
    assert lc.sniff_payload(tiny_zip()[:-10]) is None  # central directory damaged


def test_codec_does_not_import_tensorflow(corpus_dir):
    path = corpus_dir / "etlt" / "05_raokost__NvidiaFramework__heartrate.etlt"
    code = (
        "import sys\n"
        "from tltk.modelfile.legacy import decode_legacy_file\n"
        f"r = decode_legacy_file({str(path)!r}, 'nvidia_tlt')\n"
        "assert r.kind == 'onnx'\n"
        "print('TF' if any(m in sys.modules for m in ('tensorflow', 'keras')) else 'CLEAN')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "CLEAN"
