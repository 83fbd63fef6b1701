"""DetectNet_v2 inference: model choice, backend parity, boxes in original-image pixels, image lists."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from tltk.data.images import list_images
from tltk.detectnet_v2.inference import InferenceConfig, model_from_spec, run_inference, split_outputs
from tltk.detectnet_v2.postprocess import params_from_bbox_handler_config, postprocess
from tltk.errors import EXIT_MISSING_DEPENDENCY, InvalidInputError, MissingDependencyError, UsageError
from tltk.models import load_spec
from tltk.runtime.backends import open_backend


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _spec(toy, folder, model_line: str, width: int = 64, height: int = 64):
    path = folder / "infer.txt"
    path.write_text(toy["inference_template"] % {"width": width, "height": height, "model": model_line})
    return load_spec(str(path), model="detectnet_v2", kind="inference")


def _read_rows(path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


def test_list_images_filters_by_extension_and_sorts(tmp_path) -> None:
    for name in ("b.PNG", "a.jpg", "c.JPEG", "d.ppm", "e.bmp", "notes.txt", "f.gif"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.png").mkdir()
    assert [p.rsplit("/", 1)[1] for p in list_images(tmp_path)] == ["a.jpg", "b.PNG", "c.JPEG", "d.ppm", "e.bmp"]
    assert list_images(tmp_path / "a.jpg") == [str(tmp_path / "a.jpg")]
    with pytest.raises(InvalidInputError, match="no such image file or folder"):
        list_images(tmp_path / "missing")
    (tmp_path / "a.png").write_bytes(b"x")
    with pytest.raises(InvalidInputError, match="a.jpg and a.png"):
        list_images(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InvalidInputError, match="holds no image"):
        list_images(empty)


def test_split_outputs_by_name_then_by_channel_count() -> None:
    cov, bbox = np.zeros((1, 2, 3, 4)), np.ones((1, 8, 3, 4))
    got = split_outputs({"output_bbox/BiasAdd": bbox, "output_cov/Sigmoid": cov})
    assert got[0].shape == (1, 2, 3, 4) and got[1].shape == (1, 8, 3, 4) and got[1].dtype == np.float32
    got = split_outputs({"a": bbox, "b": cov})
    assert got[0].shape[1] == 2 and float(got[1].min()) == 1.0
    with pytest.raises(InvalidInputError, match="not DetectNet_v2's"):
        split_outputs({"a": np.zeros((1, 3, 3, 4)), "b": np.zeros((1, 8, 3, 4))})


def test_inference_config_uses_class_entry_then_default(detectnet_v2_toy) -> None:
    loaded = load_spec(str(detectnet_v2_toy["inference"]), model="detectnet_v2", kind="inference")
    config = InferenceConfig.from_spec(loaded.message)
    assert config.class_names == ["car", "pedestrian"] and config.input_chw == (3, 64, 64)
    assert (config.outputs["car"].label, config.outputs["car"].color) == ("car", (0, 255, 0))
    assert (config.outputs["pedestrian"].label, config.outputs["pedestrian"].color) == ("pedestrian", (255, 0, 255))
    assert config.kitti_dump and not config.disable_overlay and config.overlay_linewidth == 2
    assert config.params["default"].algorithm == "NMS" and config.postproc_classes == ["car", "pedestrian"]


def test_keras_and_onnxruntime_give_the_same_boxes(detectnet_v2_toy) -> None:
    toy_image, layout = detectnet_v2_toy["make_image"], detectnet_v2_toy["layout"]
    images = np.stack([toy_image(blocks) for blocks, _ in layout]).transpose(0, 3, 1, 2).astype(np.float32) / 255
    loaded = load_spec(str(detectnet_v2_toy["inference"]), model="detectnet_v2", kind="inference")
    params = params_from_bbox_handler_config(loaded.message.bbox_handler_config)
    found = {}
    for kind, path in (("keras", detectnet_v2_toy["tlt"]), ("onnxruntime", detectnet_v2_toy["onnx"])):
        with open_backend(path) as runner:
            assert runner.kind == kind and runner.input_shape_chw == (3, 64, 64)
            cov, bbox = split_outputs(runner.run(images))
        assert cov.shape == (8, 2, 4, 4) and bbox.shape == (8, 8, 4, 4)
        found[kind] = postprocess(cov, bbox, ["car", "pedestrian"], params, image_size=(64, 64))
    for keras_dets, onnx_dets in zip(found["keras"], found["onnxruntime"], strict=True):
        assert [d.class_name for d in keras_dets] == [d.class_name for d in onnx_dets]
        np.testing.assert_allclose([d.box for d in keras_dets], [d.box for d in onnx_dets], atol=1e-3)
        np.testing.assert_allclose([d.confidence for d in keras_dets], [d.confidence for d in onnx_dets], atol=1e-5)
    # ... and those boxes are the blocks, with the coverage the toy network is built to give.
    for (blocks, _), dets in zip(layout, found["keras"], strict=True):
        expected = sorted((("car", "pedestrian")[c], (16 * x, 16 * y, 16 * x + 16, 16 * y + 16),
                           _sigmoid(detectnet_v2_toy["gain"] * (round(v * 255) / 255 - 0.5))) for x, y, c, v, _ in blocks)
        got = sorted((d.class_name, tuple(round(v, 3) for v in d.box), d.confidence) for d in dets)
        assert [(n, b) for n, b, _ in got] == [(n, b) for n, b, _ in expected]
        np.testing.assert_allclose([c for *_, c in got], [c for *_, c in expected], atol=1e-4)


def test_boxes_are_written_in_original_image_pixels(detectnet_v2_toy, tmp_path) -> None:
    # A 128x96 image is resized to the 64x64 network: x / 2, y / 1.5.  The red block covers
    # x 32..64, y 48..72, i.e. network cell (1, 2) = (16, 32, 32, 48), scaled back by hand to
    # (32, 48, 64, 72).
    image = np.zeros((96, 128, 3), np.uint8)
    image[48:72, 32:64, 0] = 255
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(image).save(inputs / "wide.png")
    loaded = _spec(detectnet_v2_toy, detectnet_v2_toy["root"], 'tlt_config { model: "model.tlt" }')
    summary = run_inference(loaded, inputs / "wide.png", tmp_path / "out")
    assert summary["images"] == 1 and summary["detections"] == {"car": 1, "pedestrian": 0}
    rows = _read_rows(tmp_path / "out" / "labels" / "wide.txt")
    assert len(rows) == 1 and len(rows[0]) == 16 and rows[0][0] == "car"
    assert [float(v) for v in rows[0][4:8]] == [32.0, 48.0, 64.0, 72.0]
    assert 0.9 < float(rows[0][15]) <= 1.0 and len(rows[0][15].split(".")[1]) == 3
    overlay = np.asarray(Image.open(tmp_path / "out" / "images_annotated" / "wide.png").convert("RGB"))
    assert overlay.shape == (96, 128, 3)
    assert tuple(overlay[60, 32]) == (0, 255, 0) and tuple(overlay[60, 31]) == (0, 255, 0)  # 2-pixel border


def test_keras_model_runs_at_the_spec_size_and_onnx_refuses(detectnet_v2_toy, tmp_path) -> None:
    blocks = [(5, 4, 1, 1.0)]  # a green block on cell (5, 4) of a 128x96 image: no resizing
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(detectnet_v2_toy["make_image"](blocks, width=128, height=96)).save(inputs / "big.png")
    root = detectnet_v2_toy["root"]
    loaded = _spec(detectnet_v2_toy, tmp_path, f'tlt_config {{ model: "{root / "model.tlt"}" }}', width=128, height=96)
    summary = run_inference(loaded, inputs, tmp_path / "out", batch_size=1)
    assert summary["input_shape_chw"] == [3, 96, 128] and summary["detections"] == {"car": 0, "pedestrian": 1}
    rows = _read_rows(tmp_path / "out" / "labels" / "big.txt")
    assert rows[0][0] == "pedestrian" and [float(v) for v in rows[0][4:8]] == [80.0, 64.0, 96.0, 80.0]
    onnx_spec = _spec(detectnet_v2_toy, tmp_path, f'tlt_config {{ model: "{root / "model.onnx"}" }}', width=128, height=96)
    with pytest.raises(InvalidInputError, match="run at the size they were exported"):
        run_inference(onnx_spec, inputs, tmp_path / "out2")


def test_tensorrt_config_without_tensorrt(detectnet_v2_toy, tmp_path) -> None:
    from tltk.tensorrt.availability import status

    if status().problem is None:
        pytest.skip("TensorRT is installed here; this checks the machines without it")
    root = detectnet_v2_toy["root"]
    loaded = _spec(detectnet_v2_toy, tmp_path, f'tensorrt_config {{ etlt_model: "{root / "model.onnx"}" backend_data_type: INT8 '
                             f'save_engine: true trt_engine: "{tmp_path / "x.engine"}" }}')
    choice = model_from_spec(loaded)
    assert choice.framework == "onnx" and choice.path == str(root / "model.onnx")
    assert any("INT8" in n for n in choice.notes) and any("save_engine" in n for n in choice.notes)
    summary = run_inference(loaded, detectnet_v2_toy["images"] / "000000.png", tmp_path / "out")
    assert summary["backend"] == "onnxruntime" and summary["detections"] == {"car": 2, "pedestrian": 1}
    assert not (tmp_path / "x.engine").exists()
    # An existing engine needs TensorRT to run: exit code 3 with a clear message.
    (tmp_path / "y.engine").write_bytes(b"not really an engine")
    engine_spec = _spec(detectnet_v2_toy, tmp_path, f'tensorrt_config {{ trt_engine: "{tmp_path / "y.engine"}" }}')
    with pytest.raises(MissingDependencyError) as info:
        run_inference(engine_spec, detectnet_v2_toy["images"] / "000000.png", tmp_path / "out3")
    assert info.value.exit_code == EXIT_MISSING_DEPENDENCY
    # -f tensorrt on a Keras model is a usage error.
    with pytest.raises(UsageError, match="tensorrt"):
        open_backend(detectnet_v2_toy["tlt"], framework="tensorrt")
