"""``tltk detectnet_v2 evaluate``: a model on any backend, offline prediction files, hand-worked AP, errors."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from click.testing import CliRunner

from tltk.cli.app import cli
from tltk.data.synthetic import synthesize_kitti

# AP of the toy project's validation images (conftest TOY_IMAGES, images 0-3), worked out by hand.
# car: 5 ground truths; predictions by confidence TP, TP, TP, FP -> recalls .2 .4 .6 .6.
#   INTEGRATE: P(.2) = P(.4) = 1, P(.6) = 0 -> AP = 1 * .2 + 1 * .2 = 0.4
# pedestrian: 3 ground truths (one is shifted 10 px off its block); TP, TP, FP, FP -> recalls 1/3, 2/3.
#   INTEGRATE: AP = 1 * (2/3 - 1/3) = 1/3
TOY_AP = {"car": 0.4, "pedestrian": 1 / 3}


def _run(*args: str):
    return CliRunner().invoke(cli, ["detectnet_v2", "evaluate", *args])


def _json(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def model_results(detectnet_v2_toy, tmp_path_factory) -> dict:
    """evaluate --json of the .tlt (batch 3: 4 images in batches of 3 and 1) and of the .onnx."""
    out = tmp_path_factory.mktemp("eval")
    spec = str(detectnet_v2_toy["experiment"])
    tlt = _run("-e", spec, "-m", str(detectnet_v2_toy["tlt"]), "-r", str(out / "tlt"), "--json")
    onnx = _run("-e", spec, "-m", str(detectnet_v2_toy["onnx"]), "-f", "onnx", "--batch_size", "2",
                "-r", str(out / "onnx"), "--json")
    return {"out": out, "tlt": _json(tlt), "onnx": _json(onnx), "tlt_output": tlt.output}


def test_model_evaluation_counts_every_image_once_and_matches_the_hand_worked_ap(model_results) -> None:
    data = model_results["tlt"]
    assert data["num_images"] == 4 and data["split"] == "val" and data["mode"] == "INTEGRATE"
    assert data["AP"] == pytest.approx(TOY_AP, abs=1e-9)
    assert data["mAP"] == pytest.approx(sum(TOY_AP.values()) / 2, abs=1e-9)
    assert data["counts"]["car"] == {"ground_truths": 5, "predictions": 4, "true_positives": 3, "false_positives": 1}
    assert data["validation_cost"] is not None and data["validation_cost"] > 0
    assert data["source"]["backend"] == "keras"
    out = model_results["out"] / "tlt"
    assert json.loads((out / "evaluation.json").read_text())["mAP"] == data["mAP"]
    assert (out / "plots" / "pr_curves.png").stat().st_size > 0
    text = model_results["tlt_output"]
    assert "Validation cost: " in text and "Mean average_precision (in %): 36.6667" in text
    assert "| class name | average precision (in %) |" in text and "Median Inference Time: " in text


def test_tlt_and_onnx_give_the_same_map(model_results) -> None:
    tlt, onnx = model_results["tlt"], model_results["onnx"]
    assert onnx["source"]["backend"] == "onnxruntime" and onnx["num_images"] == 4
    assert onnx["mAP"] == pytest.approx(tlt["mAP"], abs=1e-12)
    assert onnx["AP"] == pytest.approx(tlt["AP"], abs=1e-12)
    assert onnx["validation_cost"] == pytest.approx(tlt["validation_cost"], rel=1e-4)


def test_offline_evaluation_of_inference_output_matches_the_model(detectnet_v2_toy, model_results, tmp_path) -> None:
    runner = CliRunner()
    infer = runner.invoke(cli, ["detectnet_v2", "inference", "-e", str(detectnet_v2_toy["inference"]),
                                "-i", str(detectnet_v2_toy["images"]), "-o", str(tmp_path / "inf")])
    assert infer.exit_code == 0, infer.output
    data = _json(_run("-e", str(detectnet_v2_toy["experiment"]), "--predictions_dir", str(tmp_path / "inf" / "labels"),
                      "-r", str(tmp_path / "r"), "--json"))
    # The spec's validation images only; inference also wrote the 4 training images' files.
    assert data["num_images"] == 4 and data["predictions_outside_split"] == 4
    assert data["mAP"] == pytest.approx(model_results["tlt"]["mAP"], abs=1e-12)
    assert data["AP"] == pytest.approx(model_results["tlt"]["AP"], abs=1e-12)
    assert data["validation_cost"] is None and (tmp_path / "r" / "plots" / "pr_curves.png").exists()
    # With --labels_dir every label file is an image (8), and a missing prediction file means no detections.
    (tmp_path / "inf" / "labels" / "000007.txt").unlink()
    everything = _json(_run("-e", str(detectnet_v2_toy["experiment"]), "--predictions_dir",
                            str(tmp_path / "inf" / "labels"), "--labels_dir", str(detectnet_v2_toy["labels"]),
                            "-r", str(tmp_path / "r2"), "--json"))
    assert everything["num_images"] == 8 and everything["images_without_predictions"] == 1


def test_perfect_predictions_give_map_one(detectnet_v2_toy, tmp_path) -> None:
    report = synthesize_kitti(str(tmp_path / "syn"), num_images=6, image_size=(160, 96), seed=1)
    labels, predictions = tmp_path / "syn" / "label_2", tmp_path / "pred"
    predictions.mkdir()
    for label in sorted(labels.iterdir()):
        lines = [line.strip() + " 1.000" for line in label.read_text().splitlines() if line.strip()]
        (predictions / label.name).write_text("\n".join(lines) + "\n")
    assert report.objects_per_class["Car"] and report.objects_per_class["Pedestrian"]
    spec = str(detectnet_v2_toy["experiment_sample"])  # SAMPLE: perfect predictions give exactly 1
    data = _json(_run("-e", spec, "--predictions_dir", str(predictions), "--labels_dir", str(labels),
                      "-r", str(tmp_path / "r"), "--json"))
    assert data["num_images"] == 6 and data["mAP"] == 1.0 and data["AP"] == {"car": 1.0, "pedestrian": 1.0}
    assert data["unknown_prediction_classes"]["Cyclist"] == report.objects_per_class["Cyclist"]
    # Without one image's predictions its objects become misses: the mAP drops, the image still counts.
    shutil.copy(labels / "000000.txt", tmp_path / "keep.txt")
    (predictions / "000000.txt").unlink()
    partial = _json(_run("-e", spec, "--predictions_dir", str(predictions), "--labels_dir", str(labels),
                         "-r", str(tmp_path / "r"), "--json"))
    assert partial["num_images"] == 6 and partial["mAP"] < 1.0


HAND_LABELS = {
    "a": ["Car 0 0 0 10 10 40 40 0 0 0 0 0 0 0", "car 0 0 0 50 10 80 40 0 0 0 0 0 0 0",
          "Pedestrian 0 0 0 10 50 30 90 0 0 0 0 0 0 0", "DontCare -1 -1 -10 0 0 5 5 0 0 0 0 0 0 0"],
    "b": ["Car 0 0 0 5 5 35 35 0 0 0 0 0 0 0"],
}
HAND_PREDICTIONS = {
    "a": ["car 0 0 0 10 10 40 40 0 0 0 0 0 0 0 0.9", "car 0 0 0 100 100 130 130 0 0 0 0 0 0 0 0.8",
          "car 0 0 0 50 10 80 40 0 0 0 0 0 0 0 0.7", "pedestrian 0 0 0 10 50 30 90 0 0 0 0 0 0 0 0.6"],
}


def _write(folder, files: dict[str, list[str]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for stem, lines in files.items():
        (folder / f"{stem}.txt").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(("spec_key", "car", "pedestrian"), [
    # car: 3 ground truths, predictions TP (0.9), FP (0.8), TP (0.7): precision 1, 1/2, 2/3; recall 1/3, 1/3, 2/3.
    # SAMPLE: levels 0 .. 0.3 reach recall 1/3 (best precision 1), 0.4 .. 0.6 reach 2/3 (2/3), 0.7 .. 1 none:
    # (4 * 1 + 3 * 2/3) / 11 = 6/11.  The single pedestrian is found: 11 levels at precision 1 -> 1.
    ("experiment_sample", 6 / 11, 1.0),
    # INTEGRATE: recalls 1/3 and 2/3 -> 1 * (2/3 - 1/3) = 1/3; one recall level only -> 0.
    ("experiment", 1 / 3, 0.0),
])
def test_hand_worked_average_precision(detectnet_v2_toy, tmp_path, spec_key, car, pedestrian) -> None:
    _write(tmp_path / "labels", HAND_LABELS)
    _write(tmp_path / "pred", HAND_PREDICTIONS)  # image "b" has no prediction file: no detections
    data = _json(_run("-e", str(detectnet_v2_toy[spec_key]), "--predictions_dir", str(tmp_path / "pred"),
                      "--labels_dir", str(tmp_path / "labels"), "-r", str(tmp_path / "r"), "--json"))
    assert data["num_images"] == 2 and data["images_without_predictions"] == 1
    assert data["AP"] == pytest.approx({"car": car, "pedestrian": pedestrian}, abs=1e-12)
    assert data["mAP"] == pytest.approx((car + pedestrian) / 2, abs=1e-12)


def test_errors_exit_2_with_file_and_line(detectnet_v2_toy, tmp_path) -> None:
    spec = str(detectnet_v2_toy["experiment"])
    _write(tmp_path / "labels", HAND_LABELS)
    _write(tmp_path / "bad", {"a": [HAND_PREDICTIONS["a"][0], "car 0 0 0 10 10 40 40 0 0 0 0 0 0 0 high"]})
    bad = _run("-e", spec, "--predictions_dir", str(tmp_path / "bad"), "--labels_dir", str(tmp_path / "labels"))
    assert bad.exit_code == 2 and f"{tmp_path / 'bad' / 'a.txt'}:2:" in bad.output and "16 columns" in bad.output
    _write(tmp_path / "short", {"a": ["car 0 0 0 10 10 40 40 0 0 0 0 0 0 0"]})
    short = _run("-e", spec, "--predictions_dir", str(tmp_path / "short"), "--labels_dir", str(tmp_path / "labels"))
    assert short.exit_code == 2 and f"{tmp_path / 'short' / 'a.txt'}:1:" in short.output and "found 15" in short.output
    _write(tmp_path / "orphan", {"a": HAND_PREDICTIONS["a"], "zz": HAND_PREDICTIONS["a"][:1]})
    orphan = _run("-e", spec, "--predictions_dir", str(tmp_path / "orphan"), "--labels_dir", str(tmp_path / "labels"))
    assert orphan.exit_code == 2 and str(tmp_path / "orphan" / "zz.txt") in orphan.output
    assert "no label file zz.txt" in orphan.output
    missing = _run("-e", spec, "-m", str(tmp_path / "nope.tlt"))
    assert missing.exit_code == 2 and "nope.tlt" in missing.output
    both = _run("-e", spec, "-m", str(detectnet_v2_toy["tlt"]), "--predictions_dir", str(tmp_path / "bad"))
    assert both.exit_code == 2 and "not both" in both.output
    wrong_framework = _run("-e", spec, "-m", str(detectnet_v2_toy["tlt"]), "-f", "onnx")
    assert wrong_framework.exit_code == 2 and "-f onnx" in wrong_framework.output
    other_size = _run("-e", spec, "-m", str(detectnet_v2_toy["onnx"]),
                      "--set", "augmentation_config.preprocessing.output_image_width=128")
    assert other_size.exit_code == 2 and "model's input is 3x64x64" in other_size.output


def test_gpu_index_selects_the_visible_device(monkeypatch) -> None:
    from tltk.cli.evaluate import select_gpu
    from tltk.errors import UsageError

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "untouched")
    select_gpu(None)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "untouched"
    select_gpu(1)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"
    with pytest.raises(UsageError, match="--gpu_index"):
        select_gpu(-2)
