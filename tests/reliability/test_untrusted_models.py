"""Issue 16, item 5: loading an untrusted model file never runs code from it.

Every crafted file below would, if its content were executed or unpickled, create a marker
file; each must be refused with a message that names the file and what was found, and the
marker must not exist afterwards.  Also: archive members with absolute paths or ``..`` are
refused, a tampered sealed ``.tlt`` is reported as tampered (nothing of it is parsed), and a
sealed header that asks for an absurd key-derivation cost is refused at once.
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import time
import zipfile
import zlib
from pathlib import Path

import pytest

from tltk.errors import ModelFileError


class _Touch:
    """Unpickling this creates ``path`` (the proof that a pickle was loaded)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):  # noqa: ANN204
        return (Path.touch, (Path(self.path),))


def _lambda_model(marker: Path):
    import keras

    marker_text = str(marker)
    inputs = keras.Input((3, 8, 8), name="input_1")
    outputs = keras.layers.Lambda(lambda x: (open(marker_text, "w").close(), x)[1], name="evil")(inputs)  # noqa: SIM115
    return keras.Model(inputs, outputs)


def _keras_with(source: Path, target: Path, replace: dict[str, bytes | None]) -> Path:
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as out:
        for name in src.namelist():
            if name in replace:
                continue
            out.writestr(name, src.read(name))
        for name, data in replace.items():
            if data is not None:
                out.writestr(name, data)
    return target


@pytest.fixture(scope="module")
def crafted(tmp_path_factory):
    """Crafted model files and the marker each would create if its code ran."""
    import keras
    import numpy as np

    from tltk.modelfile.container import write_container
    from tltk.modelfile.legacy import encode_tlt

    root = tmp_path_factory.mktemp("untrusted")
    marker = root / "CODE_RAN"
    files: dict[str, Path] = {}
    model = _lambda_model(marker)
    marker.unlink(missing_ok=True)  # building the model called the lambda once, here, on purpose
    model.save(root / "lambda.keras")
    model.save(root / "lambda.h5")
    files["Lambda layer (.keras)"] = root / "lambda.keras"
    files["Lambda layer (Keras HDF5)"] = root / "lambda.h5"
    keras_bytes = (root / "lambda.keras").read_bytes()
    write_container(root / "lambda.tlt", {"model.keras": keras_bytes}, {"model_kind": "detectnet_v2"})
    files["Lambda layer (tltk .tlt)"] = root / "lambda.tlt"
    (root / "lambda_legacy.tlt").write_bytes(encode_tlt((root / "lambda.h5").read_bytes(), "tlt_encode"))
    files["Lambda layer (legacy TAO .tlt, key tlt_encode)"] = root / "lambda_legacy.tlt"

    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="dense")])
    plain.save(root / "plain.keras")
    config = json.loads(zipfile.ZipFile(root / "plain.keras").read("config.json"))
    layer = config["config"]["layers"][-1]
    layer.update({"module": "pathlib", "class_name": "Path", "registered_name": None,
                  "config": {"args": [str(marker)]}})
    files["a Python module in the config"] = _keras_with(root / "plain.keras", root / "module.keras",
                                                          {"config.json": json.dumps(config).encode()})
    buf = io.BytesIO()
    np.savez(buf, evil=np.array([_Touch(str(marker))], dtype=object))
    files["a pickled object in the weights"] = _keras_with(
        root / "plain.keras", root / "pickle.keras",
        {"model.weights.h5": None, "model.weights.npz": buf.getvalue()})
    assert pickle.loads(pickle.dumps(_Touch(str(marker)))) is None and marker.exists()  # the payload is live
    marker.unlink()
    return {"root": root, "marker": marker, "files": files, "plain": root / "plain.keras"}


@pytest.mark.parametrize("what", ["Lambda layer (.keras)", "Lambda layer (Keras HDF5)", "Lambda layer (tltk .tlt)",
                                  "Lambda layer (legacy TAO .tlt, key tlt_encode)", "a Python module in the config",
                                  "a pickled object in the weights"])
def test_model_carrying_code_is_refused(what, crafted, rel):
    from tltk.modelfile.container import load_keras_model

    path = crafted["files"][what]
    key = "tlt_encode" if "legacy" in what else None
    with pytest.raises(ModelFileError) as info:
        load_keras_model(path, key)
    message = str(info.value)
    assert str(path) in message and "refused" in message, message
    assert not crafted["marker"].exists(), f"code from {path.name} ran"
    rel.STATS["untrusted model files refused"] += 1


def test_refusal_through_the_cli(crafted, rel, tmp_path):
    for path in (crafted["files"]["Lambda layer (.keras)"], crafted["files"]["a pickled object in the weights"]):
        result = rel.run_inprocess(["detectnet_v2", "export", "-m", str(path), "-o", str(tmp_path / "out.onnx")])
        rel.assert_clean_failure(result, 2, str(path), "refused", what=f"export -m {path.name}")
    assert not crafted["marker"].exists()


def test_plain_model_still_loads(crafted):
    from tltk.modelfile.container import load_keras_model

    model, _ = load_keras_model(crafted["plain"])
    assert [layer.name for layer in model.layers] == ["dense"]


def test_find_code_reports_every_kind_of_code():
    from tltk.modelfile.safety import find_code

    config = {"class_name": "Functional", "module": "keras.src.models.functional", "config": {"layers": [
        {"class_name": "Dense", "module": "keras.layers", "config": {"name": "ok"}},
        {"class_name": "Lambda", "config": {"name": "l1", "function": {"class_name": "__lambda__", "config": {}}}},
        {"class_name": "Lambda", "config": {"name": "l2", "function": ["4wEA", None, None], "function_type": "lambda"}},
        {"class_name": "FakeQuant", "module": "tltk.core.qat", "config": {"name": "q"}},
        {"class_name": "system", "module": "os", "config": "echo"},
    ]}}
    found = find_code(config)
    assert any("'l1' is a Lambda layer" in f for f in found)
    assert any("'l2' is a Lambda layer" in f for f in found)
    assert any("Python lambda" in f for f in found)
    assert any("Keras 2 Lambda bytecode" in f for f in found)
    assert any("module 'os'" in f for f in found)
    assert not any("'ok'" in f or "tltk.core.qat" in f for f in found)
    assert find_code({"class_name": "Dense", "module": "keras.layers", "config": {"name": "ok"}}) == []


# ---- archive member names ---------------------------------------------------------------------------

@pytest.mark.parametrize("member", ["../escape.txt", "/etc/escape.txt", "a/../../escape.txt", "C:/escape.txt",
                                    "a\\..\\escape.txt"])
def test_container_member_outside_the_archive_is_refused(member, tmp_path, rel):
    from tltk.modelfile.container import read_container

    path = tmp_path / "crafted.tlt"
    content = b"x"
    import hashlib

    table = {member: {"bytes": 1, "sha256": hashlib.sha256(content).hexdigest()}}
    meta = {"container": {"format": "tltk-container", "format_version": 1, "members": table}}
    with zipfile.ZipFile(path, "w") as zf:
        zf.comment = b"tltk model container v1"
        zf.writestr("metadata.json", json.dumps(meta))
        zf.writestr(zipfile.ZipInfo(member), content)
    with pytest.raises(ModelFileError) as info:
        read_container(path)
    assert "refused" in str(info.value) and repr(member) in str(info.value), str(info.value)
    assert not (tmp_path.parent / "escape.txt").exists()
    rel.STATS["untrusted model files refused"] += 1


def test_keras_archive_member_outside_the_archive_is_refused(crafted, tmp_path):
    from tltk.modelfile.container import load_keras_model

    path = _keras_with(crafted["plain"], tmp_path / "escape.keras", {"../escape.txt": b"x"})
    with pytest.raises(ModelFileError) as info:
        load_keras_model(path)
    assert "'../escape.txt'" in str(info.value) and "refused" in str(info.value)


def test_writer_refuses_unsafe_member_names(tmp_path):
    from tltk.modelfile.container import write_container

    for name in ("../x", "/x", "a//b", "a/./b", "a\\b", "dir/"):
        with pytest.raises(ValueError):
            write_container(tmp_path / "x.tlt", {name: b"x"}, {})


# ---- tampering ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sealed(tmp_path_factory):
    from tltk.modelfile.container import write_container

    root = tmp_path_factory.mktemp("sealed")
    path = root / "sealed.tlt"
    write_container(path, {"model.keras": b"PK\x03\x04" + bytes(2000)}, {"model_kind": "detectnet_v2"}, key="k")
    return path


@pytest.mark.parametrize(("where", "word"), [(0.5, "tampered"), (-1, "tampered"), (-10, "tampered"),
                                             (70, "tampered"), (20, "damaged"), (5, "damaged")])
def test_tampered_sealed_container_is_reported_not_parsed(where, word, sealed, tmp_path, monkeypatch, rel):
    from tltk.modelfile import container

    data = bytearray(sealed.read_bytes())
    index = int(len(data) * where) if isinstance(where, float) else where
    data[index] ^= 0x01
    path = tmp_path / "tampered.tlt"
    path.write_bytes(bytes(data))

    def no_parsing(*args, **kwargs):
        raise AssertionError("a tampered file reached the zip parser")

    monkeypatch.setattr(container, "_parse_zip", no_parsing)
    with pytest.raises(ModelFileError) as info:
        container.read_container(path, key="k")
    assert word in str(info.value) and str(path) in str(info.value), str(info.value)
    rel.STATS["tampered files reported"] += 1


def test_header_asking_for_absurd_key_derivation_is_refused_at_once(sealed, tmp_path):
    from tltk.modelfile.container import HEADER_BYTES, read_container

    data = bytearray(sealed.read_bytes())
    data[6], data[7] = 22, 32  # log2(N) = 22, r = 32: 16 GiB of scrypt memory
    head = bytes(data[:HEADER_BYTES - 4])
    data[HEADER_BYTES - 4:HEADER_BYTES] = struct.pack("<I", zlib.crc32(head))
    path = tmp_path / "costly.tlt"
    path.write_bytes(bytes(data))
    started = time.monotonic()
    with pytest.raises(ModelFileError) as info:
        read_container(path, key="k")
    assert time.monotonic() - started < 2.0
    assert "key-derivation" in str(info.value)


@pytest.mark.reliability_long
def test_pickled_checkpoint_is_not_unpickled(model, prepared, reference, rel, tmp_path):
    """A checkpoint whose optimizer file carries a pickle: the run must not unpickle it."""
    import shutil

    import numpy as np

    results = tmp_path / "results"
    shutil.copytree(reference.results, results, ignore=shutil.ignore_patterns("events", "plots", "model.tlt"))
    marker = tmp_path / "CODE_RAN"
    newest = sorted((results / "checkpoints").iterdir())[-1]
    np.savez(newest / "optimizer.npz", v00000=np.array([_Touch(str(marker))], dtype=object))
    result = rel.run(prepared.train_argv(results), prepared.root)
    assert not marker.exists(), "a pickle from a checkpoint was loaded"
    assert rel.TRACEBACK not in result.stderr
    assert result.returncode in (0, 1, 2), result.returncode
