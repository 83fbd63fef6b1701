"""Inference backends: choice by extension, Keras vs ONNX Runtime parity, TensorRT absent -> exit 3."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
onnx = pytest.importorskip("onnx")

from tltk.errors import EXIT_MISSING_DEPENDENCY, InvalidInputError, MissingDependencyError  # noqa: E402
from tltk.runtime import KerasBackend, OnnxRuntimeBackend, backend_kind, open_backend  # noqa: E402
from tltk.runtime.backends import tao_name  # noqa: E402

NAMES = {"output_cov": "output_cov/Sigmoid", "output_bbox": "output_bbox/BiasAdd"}
CHW = (3, 32, 32)


def _model() -> keras.Model:
    keras.utils.set_random_seed(11)
    inp = keras.Input(CHW, name="input_1")
    x = keras.layers.Permute((2, 3, 1))(inp)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="conv1")(x)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.Activation("relu")(x)
    cov = keras.layers.Permute((3, 1, 2))(keras.layers.Conv2D(3, 1, activation="sigmoid", name="output_cov")(x))
    bbox = keras.layers.Permute((3, 1, 2))(keras.layers.Conv2D(12, 1, name="output_bbox")(x))
    model = keras.Model(inp, [cov, bbox])
    bn = model.get_layer("bn1")
    rng = np.random.default_rng(1)
    bn.set_weights([rng.uniform(0.5, 1.5, 8), rng.normal(0, 0.2, 8), rng.normal(0, 0.3, 8), rng.uniform(0.5, 2, 8)])
    return model


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from tltk.export.onnx_export import export_keras_to_onnx
    from tltk.modelfile.container import save_keras_model

    folder = tmp_path_factory.mktemp("backends")
    model = _model()
    paths = {"keras": str(folder / "m.keras"), "tlt": str(folder / "m.tlt"), "onnx": str(folder / "m.onnx"),
             "etlt": str(folder / "m.etlt")}
    model.save(paths["keras"])
    save_keras_model(paths["tlt"], model, {"model": "detectnet_v2"}, key="secret")
    export_keras_to_onnx(model, paths["onnx"], "input_1", NAMES, check_parity=False)
    export_keras_to_onnx(model, paths["etlt"], "input_1", NAMES, key="tlt_encode", check_parity=False)
    return paths


def test_kind_by_extension() -> None:
    assert [backend_kind(p) for p in ("a.tlt", "a.keras", "a.hdf5", "A.H5")] == ["keras"] * 4
    assert [backend_kind(p) for p in ("a.onnx", "a.etlt")] == ["onnxruntime"] * 2
    assert [backend_kind(p) for p in ("a.engine", "a.plan", "a.trt")] == ["tensorrt"] * 3
    with pytest.raises(InvalidInputError, match="unknown model file extension '.pb'") as info:
        backend_kind("frozen.pb")
    assert ".onnx" in str(info.value) and info.value.exit_code == 2
    with pytest.raises(InvalidInputError, match="UFF"):
        backend_kind("model.uff")


def test_keras_and_onnxruntime_give_the_same_outputs(files: dict[str, str]) -> None:
    x = np.random.default_rng(0).random((3, *CHW), dtype=np.float32)
    results = {}
    for kind, key in (("keras", None), ("tlt", "secret"), ("onnx", None), ("etlt", "tlt_encode")):
        with open_backend(files[kind], key=key, output_names=NAMES) as backend:
            assert backend.output_names == ["output_cov/Sigmoid", "output_bbox/BiasAdd"]
            assert backend.input_shape_chw == CHW
            out = backend.run(x)
            assert {k: v.shape for k, v in out.items()} == {"output_cov/Sigmoid": (3, 3, 16, 16),
                                                            "output_bbox/BiasAdd": (3, 12, 16, 16)}
            results[kind] = out
    assert isinstance(open_backend(files["onnx"]), OnnxRuntimeBackend)
    for kind in ("tlt", "onnx", "etlt"):
        for name in NAMES.values():
            assert np.max(np.abs(results[kind][name] - results["keras"][name])) < 1e-4, (kind, name)
    # and they really are detector outputs: the same boxes (argmax cells) on the same images
    cov_k, cov_o = results["keras"]["output_cov/Sigmoid"], results["onnx"]["output_cov/Sigmoid"]
    np.testing.assert_array_equal(cov_k > 0.5, cov_o > 0.5)


def test_keras_backend_splits_large_batches() -> None:
    model = _model()
    x = np.random.default_rng(2).random((5, *CHW), dtype=np.float32)
    whole = KerasBackend(model=model, output_names=NAMES).run(x)
    split = KerasBackend(model=model, output_names=NAMES, max_batch_size=2).run(x)
    for name in whole:
        np.testing.assert_allclose(split[name], whole[name], atol=1e-6)


def test_static_batch_onnx_is_split_and_padded(tmp_path) -> None:
    from tltk.export.onnx_export import export_keras_to_onnx

    model = _model()
    export_keras_to_onnx(model, tmp_path / "static.onnx", "input_1", NAMES, dynamic_batch=False,
                         static_batch_size=2, check_parity=False)
    backend = OnnxRuntimeBackend(tmp_path / "static.onnx")
    x = np.random.default_rng(4).random((3, *CHW), dtype=np.float32)
    out = backend.run(x)
    ref = [np.asarray(t) for t in model(x, training=False)]
    assert out["output_cov/Sigmoid"].shape[0] == 3
    assert np.max(np.abs(out["output_bbox/BiasAdd"] - ref[1])) < 1e-4


def test_tao5_suffixes_are_stripped(tmp_path, files: dict[str, str]) -> None:
    from tltk.export.onnx_export import rename_tensors

    proto = onnx.load(files["onnx"])
    rename_tensors(proto, {"output_cov/Sigmoid": "output_cov/Sigmoid:0", "output_bbox/BiasAdd": "output_bbox/BiasAdd:0",
                           "input_1": "input_1:0"})
    onnx.save(proto, str(tmp_path / "tao5.onnx"))
    backend = open_backend(tmp_path / "tao5.onnx", output_names=NAMES)
    assert backend.input_name == "input_1:0"
    assert backend.output_names == ["output_cov/Sigmoid", "output_bbox/BiasAdd"]
    assert tao_name("x:0") == "x" and tao_name("x:1") == "x:1"


def test_input_checks(files: dict[str, str]) -> None:
    backend = open_backend(files["onnx"])
    with pytest.raises(InvalidInputError, match="expects H=32"):
        backend.run(np.zeros((1, 3, 16, 32), np.float32))
    with pytest.raises(InvalidInputError, match=r"\[N, C, H, W\]"):
        backend.run(np.zeros((3, 32, 32), np.float32))
    with pytest.raises(InvalidInputError, match="no output"):
        open_backend(files["onnx"], output_names={"x": "output_cov/Sigmoid:0"})
    with pytest.raises(InvalidInputError, match="no such model file"):
        open_backend(files["onnx"] + ".missing.onnx")


def test_tensorrt_backend_exits_3_without_tensorrt(tmp_path) -> None:
    from tltk.tensorrt.availability import status

    if status().problem is None:
        pytest.skip("TensorRT and a GPU are available here")
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not really an engine")
    with pytest.raises(MissingDependencyError) as info:
        open_backend(engine)
    assert info.value.exit_code == EXIT_MISSING_DEPENDENCY == 3
