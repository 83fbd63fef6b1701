"""export_model end to end: ONNX + cache + Q/DQ from one range table; calibration data sources."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from tltk.errors import InvalidInputError, UsageError  # noqa: E402
from tltk.export.calibration_cache import ActivationRanges, read_calibration_cache  # noqa: E402
from tltk.export.pipeline import (  # noqa: E402
    calibration_batches_from_images,
    default_cpu_int8_path,
    default_qdq_path,
    export_model,
    prepare_calibration_batches,
)

NAMES = {"output_cov": "output_cov/Sigmoid", "output_bbox": "output_bbox/BiasAdd"}
CHW = (3, 16, 16)


@pytest.fixture(scope="module")
def model() -> keras.Model:
    keras.utils.set_random_seed(5)
    inp = keras.Input(CHW, name="input_1")
    x = keras.layers.Permute((2, 3, 1))(inp)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(x)
    cov = keras.layers.Permute((3, 1, 2))(keras.layers.Conv2D(2, 1, activation="sigmoid", name="output_cov")(x))
    bbox = keras.layers.Permute((3, 1, 2))(keras.layers.Conv2D(8, 1, name="output_bbox")(x))
    return keras.Model(inp, [cov, bbox])


def _batches(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.random((2, *CHW), dtype=np.float32) for _ in range(n)]


def test_int8_export_writes_onnx_cache_and_qdq(model: keras.Model, tmp_path) -> None:
    out = tmp_path / "model.onnx"
    report = export_model(model, out, "input_1", NAMES, data_type="int8", calibration_batches=_batches(3),
                          cal_method="minmax", cal_cache_file=tmp_path / "cal.bin", trt_version="8.6.1",
                          cal_json_file=tmp_path / "scales.json")
    assert report["calibration"] == {"method": "minmax", "tensors": report["calibration"]["tensors"],
                                     "images": 6, "batches": 3, "source": "calibration"}
    header, ranges = read_calibration_cache(tmp_path / "cal.bin")
    assert header.line == report["cache_header"] == "TRT-8601-EntropyCalibration2"
    graph = onnx.load(str(out)).graph
    tensors = {t for n in graph.node for t in n.output} | {"input_1"}
    assert "input_1" in ranges and "output_cov/Sigmoid" in ranges
    assert set(ranges) <= tensors
    assert ranges["input_1"] == pytest.approx(float(np.max(np.concatenate(_batches(3)))), rel=1e-6)
    assert report["qdq_onnx"] == default_qdq_path(out) and report["qdq"]["quantized_nodes"] == 3
    session = ort.InferenceSession(report["qdq_onnx"], providers=["CPUExecutionProvider"])
    x = _batches(1)[0]
    got = session.run(None, {"input_1": x})
    ref = [np.asarray(t) for t in model(x, training=False)]
    assert np.abs(got[0] - ref[0]).max() < 0.03
    assert ActivationRanges.from_tensor_scales_json(tmp_path / "scales.json").amax.keys() == ranges.amax.keys()
    # the ONNX Runtime CPU file, from the same ranges: conv1 runs as QLinearConv (the two heads keep
    # float32 outputs, so they stay float Conv on integer inputs), outputs stay close
    assert report["cpu_int8_onnx"] == default_cpu_int8_path(out) == str(tmp_path / "model_int8_cpu.onnx")
    assert report["cpu_int8"]["weighted_nodes"] == 3
    from tltk.export.cpu_int8 import optimized_node_counts

    assert optimized_node_counts(report["cpu_int8_onnx"]).get("QLinearConv", 0) == 1
    cpu = ort.InferenceSession(report["cpu_int8_onnx"], providers=["CPUExecutionProvider"]).run(None, {"input_1": x})
    assert np.abs(cpu[0] - ref[0]).max() < 0.03


def test_qat_ranges_skip_calibration(model: keras.Model, tmp_path) -> None:
    out = tmp_path / "model.etlt"
    plain = tmp_path / "plain.onnx"
    export_model(model, plain, "input_1", NAMES)
    conv_input = next(n.input[0] for n in onnx.load(str(plain)).graph.node if n.op_type == "Conv")
    assert conv_input == "input_1"
    relu = next(n.output[0] for n in onnx.load(str(plain)).graph.node if n.op_type == "Relu")
    qat = ActivationRanges({"input_1": 1.0, relu: 3.0}, method="qat")
    report = export_model(model, out, "input_1", NAMES, key="k", data_type="int8", qat_ranges=qat,
                          trt_version="10.3.0")
    assert report["calibration"]["source"] == "qat" and report["calibration"]["images"] == 0
    header, ranges = read_calibration_cache(report["cal_cache_file"])
    assert header.version == 100300 and list(ranges) == ["input_1", relu]
    with pytest.raises(UsageError, match="calibration data"):
        export_model(model, tmp_path / "x.onnx", "input_1", NAMES, data_type="int8", qat_ranges=qat, force_ptq=True)


def test_fp32_and_errors(model: keras.Model, tmp_path) -> None:
    report = export_model(model, tmp_path / "m.onnx", "input_1", NAMES, data_type="fp16")
    assert set(report) == {"onnx", "data_type"} and report["onnx"]["parity_max_abs_diff"] < 1e-4
    with pytest.raises(UsageError, match="data_type"):
        export_model(model, tmp_path / "m.onnx", "input_1", NAMES, data_type="int4")
    with pytest.raises(UsageError, match="calibration data"):
        export_model(model, tmp_path / "m2.onnx", "input_1", NAMES, data_type="int8")
    assert not (tmp_path / "m2.onnx").exists()


def _write_images(folder, count: int) -> None:
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(folder / f"img{i:02d}.png")
    (folder / "notes.txt").write_text("not an image")


def _preprocess(path: str) -> np.ndarray:
    from PIL import Image

    image = Image.open(path).convert("RGB").resize((CHW[2], CHW[1]), Image.LANCZOS)
    return np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0


def test_calibration_sources(tmp_path) -> None:
    images = tmp_path / "images"
    _write_images(images, 7)
    direct = list(calibration_batches_from_images(images, _preprocess, batch_size=2, batches=3))
    assert [b.shape for b in direct] == [(2, *CHW)] * 3
    assert all(0.0 <= b.min() and b.max() <= 1.0 for b in direct)
    # only 7 images: 3 full batches of 2 instead of 4
    assert len(list(calibration_batches_from_images(images, _preprocess, batch_size=2, batches=4))) == 3
    tensorfile = tmp_path / "cal.tensorfile"
    built = list(prepare_calibration_batches(tensorfile, images, batch_size=2, batches=3, preprocess=_preprocess))
    assert tensorfile.exists() and len(built) == 3
    for a, b in zip(built, direct, strict=True):
        np.testing.assert_array_equal(a, b)  # same seeded draw, stored and read back
    again = list(prepare_calibration_batches(tensorfile, None, batch_size=1, batches=2))
    assert [b.shape[0] for b in again] == [1, 1]
    assert prepare_calibration_batches(None, None, 2, 3) is None
    with pytest.raises(InvalidInputError, match="does not exist"):
        prepare_calibration_batches(tmp_path / "missing.h5", None, 2, 3)
    with pytest.raises(InvalidInputError, match="fewer than"):
        list(prepare_calibration_batches(tensorfile, None, batch_size=5, batches=1))
