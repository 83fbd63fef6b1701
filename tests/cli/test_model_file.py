"""``tltk model decode`` and ``tltk model inspect`` on the real NVIDIA .etlt files and tltk containers."""

from __future__ import annotations

import csv
import hashlib
import json

import pytest
from click.testing import CliRunner

from tltk.cli.app import cli
from tltk.modelfile import container as c
from tltk.modelfile import legacy as lc

FACIAL = "04_raokost__NvidiaFramework__faciallandmarks.etlt"
LPD = "01_twlawrenceko__deepstream_lpr_gpio_app__usa_pruned.etlt"


@pytest.fixture(scope="module")
def etlt(corpus_dir):
    with open(corpus_dir / "etlt" / "MANIFEST.tsv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh, delimiter="\t") if r["kind"] == "etlt"]
    return {r["file"]: (corpus_dir / "etlt" / r["file"], r) for r in rows}


def run(*args, env=None):
    return CliRunner().invoke(cli, ["model", *map(str, args)], env=env or {"TLTK_KEY": ""})


def test_decode_every_real_file_into_a_folder(etlt, tmp_path):
    for name, (path, row) in etlt.items():
        res = run("decode", path, "-k", row["key"], "-o", tmp_path, "--json")
        assert res.exit_code == 0, res.stderr
        doc = json.loads(res.stdout)
        out = tmp_path / (name[:-len(".etlt")] + "." + row["payload"])
        assert doc["output"] == str(out)
        assert hashlib.sha256(out.read_bytes()).hexdigest() == row["plaintext_sha256"] == doc["output_sha256"]
        assert doc["output_bytes"] == int(row["plaintext_bytes"])
        assert doc["input_sha256"] == row["file_sha256"]
        assert (doc["kind"], doc["input_name"], doc["container"]) == (row["payload"], row["header_input_name"],
                                                                      "legacy-etlt")
    assert len(list(tmp_path.iterdir())) == 5


def test_decode_names_and_overwrite_rules(etlt, tmp_path):
    path, row = etlt[FACIAL]
    res = run("decode", path, "-k", "nvidia_tlt", "-o", tmp_path / "fpenet")
    assert res.exit_code == 0
    assert (tmp_path / "fpenet.onnx").is_file()
    assert "trtexec --onnx=" in res.stderr
    res = run("decode", path, "-k", "nvidia_tlt", "-o", tmp_path / "fpenet.uff", "--json")  # says another format
    assert res.exit_code == 2 and json.loads(res.stdout)["exit_code"] == 2
    assert "the payload is ONNX, but the name ends in .uff" in res.stderr and "fpenet.onnx" in res.stderr
    assert not (tmp_path / "fpenet.uff").exists()
    (tmp_path / "fpenet.onnx").write_bytes(b"old")
    res = run("decode", path, "-k", "nvidia_tlt", "-o", tmp_path / "fpenet.onnx", "--json")
    assert res.exit_code == 2
    assert "already exists; pass --force" in json.loads(res.stdout)["error"]
    assert (tmp_path / "fpenet.onnx").read_bytes() == b"old"
    res = run("decode", path, "-k", "nvidia_tlt", "-o", tmp_path / "fpenet.onnx", "--force")
    assert res.exit_code == 0
    assert hashlib.sha256((tmp_path / "fpenet.onnx").read_bytes()).hexdigest() == row["plaintext_sha256"]


def test_decode_uff_etlt_to_onnx_name_is_refused(etlt, tmp_path):
    """The README's `decode old.etlt -o model.onnx` on a real TAO UFF .etlt must not write UFF into .onnx."""
    path, row = etlt[LPD]
    assert row["payload"] == "uff"
    res = run("decode", path, "-k", row["key"], "-o", tmp_path / "model.onnx")
    assert res.exit_code == 2, res.output
    assert "the payload is UFF, but the name ends in .onnx" in res.stderr and "model.uff" in res.stderr
    assert not (tmp_path / "model.onnx").exists()
    res = run("decode", path, "-k", row["key"], "-o", tmp_path / "model", "--json")
    assert res.exit_code == 0
    doc = json.loads(res.stdout)
    assert doc["output"] == str(tmp_path / "model.uff") and "TensorRT 8.6 or older" in doc["next_step"]
    assert hashlib.sha256((tmp_path / "model.uff").read_bytes()).hexdigest() == row["plaintext_sha256"]


def test_decode_wrong_or_missing_key_exits_2_and_writes_nothing(etlt, tmp_path):
    path, _ = etlt[LPD]
    res = run("decode", path, "-k", "tlt_encode", "-o", tmp_path / "x", "--json")
    assert res.exit_code == 2
    doc = json.loads(res.stdout)
    assert doc["exit_code"] == 2 and "key does not open" in doc["error"] and "-k nvidia_tlt" in doc["error"]
    res = run("decode", path, "-o", tmp_path / "x")
    assert res.exit_code == 2 and "needs its key" in res.stderr
    assert list(tmp_path.iterdir()) == []
    res = run("decode", path, "-o", tmp_path / "x", env={"TLTK_KEY": "nvidia_tlt"})
    assert res.exit_code == 0 and (tmp_path / "x.uff").is_file()


def test_decode_truncated_file_is_damage(etlt, tmp_path):
    path, row = etlt[FACIAL]
    cut = tmp_path / "cut.etlt"
    cut.write_bytes(path.read_bytes()[:100_000])
    res = run("decode", cut, "-k", row["key"], "-o", tmp_path / "out")
    assert res.exit_code == 2 and "truncated" in res.stderr
    assert not (tmp_path / "out.onnx").exists()


def test_decode_refuses_plain_files(etlt, tmp_path):
    path, row = etlt[FACIAL]
    plain = tmp_path / "m.onnx"
    plain.write_bytes(lc.decode_legacy_file(path, row["key"]).payload)
    res = run("decode", plain, "-o", tmp_path / "again")
    assert res.exit_code == 2 and "nothing to decode" in res.stderr


def test_decode_tltk_container_writes_its_keras_member(tmp_path):
    member = b"PK\x03\x04 stand-in for a .keras archive"
    src = tmp_path / "model.tlt"
    c.write_container(src, {"model.keras": member}, {"keras_model": "model.keras"}, key="k1")
    res = run("decode", src, "-k", "k1", "-o", tmp_path / "out", "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert (doc["container"], doc["kind"], doc["member"]) == ("tltk-sealed", "keras", "model.keras")
    assert (tmp_path / "out.keras").read_bytes() == member
    res = run("decode", src, "-k", "k2", "-o", tmp_path / "out2")
    assert res.exit_code == 2


def test_inspect_onnx_etlt_reports_inputs_and_outputs(etlt):
    path, row = etlt[FACIAL]
    res = run("inspect", path, "-k", row["key"], "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert (doc["format"], doc["payload_kind"], doc["input_name"]) == ("legacy-etlt", "onnx", "")
    assert doc["payload_sha256"] == row["plaintext_sha256"]
    details = doc["details"]
    assert details["ir_version"] == 5 and details["opset"] == {"ai.onnx": 10} and details["nodes"] == 64
    assert details["parameters"] == 584809
    assert details["inputs"] == [{"name": "input_face_images", "shape": ["N", 1, 80, 80], "dtype": "float"}]
    assert [o["name"] for o in details["outputs"]] == ["softargmax", "softargmax:1", "conv_keypoints_m80"]
    assert details["outputs"][2]["shape"] == ["N", 80, 80, 80]


def test_inspect_uff_etlt(etlt):
    path, row = etlt[LPD]
    res = run("inspect", path, "-k", row["key"], "--json")
    assert res.exit_code == 0
    doc = json.loads(res.stdout)
    assert (doc["format"], doc["payload_kind"], doc["input_name"], doc["payload_bytes"]) == (
        "legacy-etlt", "uff", "input_1", 978307)


def test_inspect_wrong_key_and_missing_file_exit_2(etlt, tmp_path):
    path, _ = etlt[LPD]
    assert run("inspect", path, "-k", "nvidia_tao").exit_code == 2
    assert run("inspect", path).exit_code == 2
    assert run("inspect", tmp_path / "missing.tlt").exit_code == 2
    empty = tmp_path / "empty.tlt"
    empty.write_bytes(b"")
    assert run("inspect", empty).exit_code == 2


def test_inspect_tltk_container(tmp_path):
    src = tmp_path / "model.tlt"
    c.write_container(src, {"weights.bin": b"123"}, {"model": "mask_rcnn", "class_names": ["person"]}, key="k1")
    res = run("inspect", src, "--json")  # no key: what the header says, exit 0
    assert res.exit_code == 0
    doc = json.loads(res.stdout)
    assert doc["format"] == "tltk" and doc["sealed"] is True and "metadata" not in doc
    assert doc["container"]["scrypt"] == {"n": 16384, "r": 8, "p": 1}
    res = run("inspect", src, "-k", "k1", "--json")
    doc = json.loads(res.stdout)
    assert res.exit_code == 0 and doc["metadata"]["class_names"] == ["person"]
    assert doc["members"] == [{"name": "weights.bin", "bytes": 3}]
    assert run("inspect", src, "-k", "k2").exit_code == 2
    src.write_bytes(src.read_bytes()[:-1])
    res = run("inspect", src, "-k", "k1")
    assert res.exit_code == 2 and "truncated" in res.stderr


def test_decode_legacy_hdf5_tlt(tmp_path):
    import io

    import h5py
    import numpy as np

    buf = io.BytesIO()
    with h5py.File(buf, "w") as h5:
        h5.create_dataset("w", data=np.arange(4.0))
    src = tmp_path / "resnet18.tlt"
    lc.write_legacy_tlt(src, buf.getvalue(), "nvidia_tlt")
    res = run("decode", src, "-k", "nvidia_tlt", "-o", tmp_path, "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert (doc["container"], doc["kind"], doc["input_name"]) == ("legacy-tlt", "hdf5", None)
    assert (tmp_path / "resnet18.hdf5").read_bytes() == buf.getvalue()
