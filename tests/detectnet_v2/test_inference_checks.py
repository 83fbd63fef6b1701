"""DetectNet_v2 inference: classes matched by name with the model's, unreadable images skipped,
boxes without area dropped, TAO's overlay label, memory bounded by the batch."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tltk.cli.app import cli
from tltk.detectnet_v2.inference import align_class_names, run_inference
from tltk.detectnet_v2.postprocess import Detection, scale_detections
from tltk.errors import InvalidInputError
from tltk.models import load_spec
from tltk.runtime.backends import open_backend

CAR_FIRST = 'target_classes: "car"\n  target_classes: "pedestrian"'


def _spec(toy, folder, name: str, classes: str = CAR_FIRST, model: str = "model.tlt"):
    text = toy["inference_template"] % {"width": 64, "height": 64,
                                        "model": f'tlt_config {{ model: "{toy["root"] / model}" }}'}
    path = folder / name
    path.write_text(text.replace(CAR_FIRST, classes))
    return load_spec(str(path), model="detectnet_v2", kind="inference")


def _labels(folder) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((folder / "labels").iterdir())}


def test_spec_listing_the_classes_in_another_order_labels_them_by_name(detectnet_v2_toy, tmp_path) -> None:
    """TAO's tutorial spec lists car, cyclist, pedestrian; the model was trained with another order."""
    images = detectnet_v2_toy["images"]
    normal = run_inference(_spec(detectnet_v2_toy, tmp_path, "a.txt"), images, tmp_path / "a")
    swapped = run_inference(_spec(detectnet_v2_toy, tmp_path, "b.txt",
                                  'target_classes: "pedestrian"\n  target_classes: "car"'), images, tmp_path / "b")
    assert normal["detections"] == {"car": 7, "pedestrian": 5}
    assert swapped["class_names"] == ["car", "pedestrian"]  # the network's order, from the model file
    assert swapped["detections"] == normal["detections"]
    assert _labels(tmp_path / "b") == _labels(tmp_path / "a")


def test_spec_classes_that_differ_from_the_model_stop_with_exit_2(detectnet_v2_toy, tmp_path) -> None:
    spec = tmp_path / "c.txt"
    spec.write_text((detectnet_v2_toy["inference_template"] % {
        "width": 64, "height": 64, "model": f'tlt_config {{ model: "{detectnet_v2_toy["tlt"]}" }}'})
        .replace(CAR_FIRST, 'target_classes: "car"\n  target_classes: "cyclist"'))
    res = CliRunner().invoke(cli, ["detectnet_v2", "inference", "-e", str(spec), "-i", str(detectnet_v2_toy["images"]),
                                   "-o", str(tmp_path / "out"), "--json"])
    assert res.exit_code == 2, res.output
    error = json.loads(res.stdout)["error"]
    assert "the model's class(es) 'pedestrian' are missing from the spec" in error
    assert "the spec's class(es) 'cyclist' are not classes of the model" in error
    assert not (tmp_path / "out" / "labels").exists()


def test_align_class_names_by_hand() -> None:
    assert align_class_names(["Car", "cyclist", "pedestrian"], ["car", "pedestrian", "cyclist"], "m.tlt") == [
        "Car", "pedestrian", "cyclist"]
    assert align_class_names(["a", "b"], None, "m.onnx", num_channels=2) == ["a", "b"]
    with pytest.raises(InvalidInputError, match="lists 3 class.*has 2 coverage channel"):
        align_class_names(["a", "b", "c"], None, "m.onnx", num_channels=2)
    with pytest.raises(InvalidInputError, match="lists a class twice"):
        align_class_names(["a", "A"], ["a", "b"], "m.tlt")


def test_exported_onnx_records_the_classes_and_inference_matches_them(detectnet_v2_toy, tmp_path) -> None:
    with open_backend(detectnet_v2_toy["onnx"]) as backend:
        assert backend.class_names == ("car", "pedestrian")
    swapped = _spec(detectnet_v2_toy, tmp_path, "e.txt", 'target_classes: "pedestrian"\n  target_classes: "car"',
                    "model.onnx")
    summary = run_inference(swapped, detectnet_v2_toy["images"], tmp_path / "out")
    assert summary["backend"] == "onnxruntime" and summary["detections"] == {"car": 7, "pedestrian": 5}


def test_a_model_without_recorded_classes_must_have_as_many_channels(detectnet_v2_toy, tmp_path) -> None:
    import onnx

    proto = onnx.load(str(detectnet_v2_toy["onnx"]))
    del proto.metadata_props[:]  # as TAO's exports: no class names
    onnx.save(proto, str(tmp_path / "bare.onnx"))
    loaded = _spec(detectnet_v2_toy, tmp_path, "d.txt",
                   'target_classes: "car"\n  target_classes: "pedestrian"\n  target_classes: "cyclist"',
                   str(tmp_path / "bare.onnx"))
    with pytest.raises(InvalidInputError, match="lists 3 class.*has 2 coverage channel"):
        run_inference(loaded, detectnet_v2_toy["images"], tmp_path / "out")


def test_a_corrupt_image_is_skipped_named_and_counted(detectnet_v2_toy, tmp_path) -> None:
    folder = tmp_path / "in"
    shutil.copytree(detectnet_v2_toy["images"], folder)
    good = (folder / "000002.png").read_bytes()
    (folder / "000002.png").write_bytes(good[: len(good) // 2])  # truncated
    res = CliRunner().invoke(cli, ["detectnet_v2", "inference", "-e", str(detectnet_v2_toy["inference"]),
                                   "-i", str(folder), "-o", str(tmp_path / "out"), "--json"])
    assert res.exit_code == 2, res.output
    doc = json.loads(res.stdout)
    assert doc["images"] == 7 and [s["path"] for s in doc["skipped"]] == [str(folder / "000002.png")]
    assert "truncated" in doc["skipped"][0]["reason"]
    assert "1 unreadable image(s) skipped: 000002.png" in res.stderr
    written = sorted(p.name for p in (tmp_path / "out" / "labels").iterdir())
    assert written == [f"{i:06d}.txt" for i in range(8) if i != 2]


def test_boxes_left_without_area_by_clipping_are_dropped() -> None:
    # Model 64x32: (70, 5, 90, 20) lies right of the frame -> clipped to (64, 5, 64, 20): no width.
    inside = Detection("car", 10.0, 4.0, 30.0, 20.0, 0.8)
    outside = Detection("car", 70.0, 5.0, 90.0, 20.0, 0.9)
    below = Detection("car", 10.0, 40.0, 30.0, 50.0, 0.7)
    kept = scale_detections([outside, inside, below], (64, 32), (128, 64))
    assert [d.box for d in kept] == [(20.0, 8.0, 60.0, 40.0)]


def test_overlay_labels_are_tao_class_colon_confidence(detectnet_v2_toy, tmp_path, monkeypatch) -> None:
    from PIL import ImageDraw

    texts: list[str] = []
    original = ImageDraw.ImageDraw.text

    def spy(self, xy, text, *args, **kwargs):
        texts.append(text)
        return original(self, xy, text, *args, **kwargs)

    monkeypatch.setattr(ImageDraw.ImageDraw, "text", spy)
    run_inference(detectnet_v2_toy["inference"], detectnet_v2_toy["images"], tmp_path / "out")
    assert len(texts) == 12 and all(re.fullmatch(r"(car|pedestrian):0\.\d{3}", t) for t in texts), texts


def test_keras_backend_runs_every_batch_size_through_one_graph(detectnet_v2_toy) -> None:
    """Eager Keras calls held about twice the memory of a graph for the same batch (item 11)."""
    with open_backend(detectnet_v2_toy["tlt"]) as backend:
        for n in (3, 3, 2, 1, 3):
            out = backend.run(np.zeros((n, 3, 64, 64), np.float32))
            assert [v.shape[0] for v in out.values()] == [n, n]
        assert backend._forward.experimental_get_tracing_count() <= 2


def test_corrupt_image_alone_is_an_error(detectnet_v2_toy, tmp_path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(InvalidInputError, match="none of the 1 image"):
        run_inference(detectnet_v2_toy["inference"], folder, tmp_path / "out")
    Image.new("RGB", (64, 64)).save(folder / "good.png")
    summary = run_inference(detectnet_v2_toy["inference"], folder, tmp_path / "out")
    assert summary["images"] == 1 and len(summary["skipped"]) == 1
