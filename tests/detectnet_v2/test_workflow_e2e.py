"""The whole DetectNet_v2 workflow on a short real training (slow; runs in CI).

synthesize -> dataset_convert -> train (the shipped quickstart spec, shortened) -> evaluate the
.tlt -> export INT8 (ONNX, cache, Q/DQ, DeepStream files) -> evaluate the ONNX and the Q/DQ ONNX
-> inference through ONNX Runtime -> offline evaluation of the KITTI files it wrote -> prune ->
retrain the pruned model with the shipped retrain spec.

To fit CI, the run is shrunk with --set overrides: a 240x144 network (the quickstart is 480x272),
batch 4, 24 epochs of 128 images and a higher peak learning rate; that reached 53% mAP in
2.4 minutes here.  The images are synthesized at the network's input size, so model-input pixels
and original pixels coincide and the offline evaluation must give the model's mAP up to the 3
decimals of the KITTI files.
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from tltk.cli.app import cli

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SPECS = ROOT / "specs" / "detectnet_v2"
EPOCHS = 24
WIDTH, HEIGHT = 240, 144
# What this short run reaches (measured: see the issue note); the bar leaves room for the
# run-to-run spread of TensorFlow's threaded CPU kernels.
MIN_MAP = 0.30


def _invoke(*args: str) -> dict:
    result = CliRunner().invoke(cli, [*args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def _short(epochs: int) -> list[str]:
    overrides = {
        "training_config.num_epochs": epochs,
        "training_config.checkpoint_interval": epochs,
        "evaluation_config.first_validation_epoch": epochs,
        "training_config.batch_size_per_gpu": 4,
        "training_config.learning_rate.soft_start_annealing_schedule.max_learning_rate": 5e-3,
        "augmentation_config.preprocessing.output_image_width": WIDTH,
        "augmentation_config.preprocessing.output_image_height": HEIGHT,
    }
    return [arg for field, value in overrides.items() for arg in ("--set", f"{field}={value}")]


@pytest.fixture(scope="module")
def workflow(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("workflow")
    cwd = os.getcwd()
    os.chdir(work)  # the shipped specs use data/... relative to the current folder
    try:
        out: dict = {"work": work}
        _invoke("dataset", "synthesize", "--format", "kitti", "--output", "data/kitti", "--num_images", "160",
                "--image_size", f"{WIDTH}x{HEIGHT}", "--seed", "7")
        _invoke("detectnet_v2", "dataset_convert", "-d", "data/kitti/dataset_convert_spec.txt",
                "-o", "data/tfrecords/kitti")
        spec = str(SPECS / "quickstart_train.txt")
        out["train"] = _invoke("detectnet_v2", "train", "-e", spec, "-r", "results/train", *_short(EPOCHS))
        size = _short(EPOCHS)[-4:]
        out["eval_tlt"] = _invoke("detectnet_v2", "evaluate", "-e", spec, "-m", "results/train/model.tlt",
                                  "-r", "results/eval_tlt", *size)
        out["export"] = _invoke("detectnet_v2", "export", "-m", "results/train/model.tlt", "-o",
                                "results/export/model.onnx", "-e", spec, "--data_type", "int8", "--batches", "4",
                                "--batch_size", "8", "--gen_ds_config", "--cal_image_dir", "data/kitti/image_2")
        out["eval_onnx"] = _invoke("detectnet_v2", "evaluate", "-e", spec, "-m", "results/export/model.onnx",
                                   "-r", "results/eval_onnx", *size)
        out["eval_int8"] = _invoke("detectnet_v2", "evaluate", "-e", spec, "-m",
                                   "results/export/model_int8_qdq.onnx", "-r", "results/eval_int8", *size)
        # Inference over every image; the offline evaluation scores the validation split's files.
        val_dir = work / "images"
        shutil.copytree(work / "data/kitti/image_2", val_dir)
        (work / "inference_spec.txt").write_text(_inference_spec(work / "results/export/model.onnx"))
        out["inference"] = _invoke("detectnet_v2", "inference", "-e", "inference_spec.txt", "-i", str(val_dir),
                                   "-o", "results/inference")
        out["eval_offline"] = _invoke("detectnet_v2", "evaluate", "-e", spec, "--predictions_dir",
                                      "results/inference/labels", "-r", "results/eval_offline", *size)
        out["prune"] = _invoke("detectnet_v2", "prune", "-m", "results/train/model.tlt", "-o",
                               "results/prune/model_pruned.tlt", "-pth", "0.95")
        out["retrain"] = _invoke("detectnet_v2", "train", "-e", str(SPECS / "retrain_pruned.txt"), "-r",
                                 "results/retrain", "-n", "retrained", *_short(2))
        yield out
    finally:
        os.chdir(cwd)


def _inference_spec(model: Path) -> str:
    clustering = ("clustering_config { clustering_algorithm: NMS coverage_threshold: 0.005 nms_iou_threshold: 0.5 "
                  "nms_confidence_threshold: 0.1 minimum_bounding_box_height: 4 }")
    return f"""
inferencer_config {{
  target_classes: "car" target_classes: "pedestrian" target_classes: "cyclist"
  image_width: {WIDTH} image_height: {HEIGHT} image_channels: 3 batch_size: 8
  tensorrt_config {{ etlt_model: "{model}" backend_data_type: FP32 }}
}}
bbox_handler_config {{
  kitti_dump: true disable_overlay: false overlay_linewidth: 2
  classwise_bbox_handler_config {{ key: "default" value {{ confidence_model: "aggregate_cov"
    bbox_color {{ R: 0 G: 255 B: 0 }} {clustering} }} }}
}}
"""


def test_short_training_learns_to_detect(workflow) -> None:
    train = workflow["train"]
    assert train["epochs"] == EPOCHS
    assert train["metrics"]["val_mAP"] >= MIN_MAP
    ev = workflow["eval_tlt"]
    assert ev["num_images"] == 32
    assert ev["mAP"] >= MIN_MAP
    assert ev["mAP"] == pytest.approx(train["metrics"]["val_mAP"], abs=1e-6)
    # evaluate uses the auto-weighted objective weights stored in the .tlt, as training did.
    assert ev["validation_cost"] == pytest.approx(train["metrics"]["val_validation_cost"], rel=1e-3)
    for name in ("car", "pedestrian", "cyclist"):
        assert ev["AP"][name] > 0.0


def test_tlt_and_onnx_give_the_same_map(workflow) -> None:
    assert workflow["eval_onnx"]["num_images"] == workflow["eval_tlt"]["num_images"]
    assert workflow["eval_onnx"]["mAP"] == pytest.approx(workflow["eval_tlt"]["mAP"], abs=2e-3)
    assert workflow["export"]["onnx"]["parity_max_abs_diff"] < 1e-3


def test_int8_qdq_model_stays_close_to_fp32(workflow) -> None:
    fp32, int8 = workflow["eval_onnx"]["mAP"], workflow["eval_int8"]["mAP"]
    assert int8 >= fp32 - 0.05, (fp32, int8)
    work = workflow["work"]
    cache = (work / "results/export/cal.bin").read_text().splitlines()
    assert cache[0].startswith("TRT-") and any(line.startswith("input_1: ") for line in cache[1:])
    ini = configparser.ConfigParser()
    ini.read(work / "results/export/nvinfer_config.txt")
    prop = ini["property"]
    assert prop["infer-dims"] == f"3;{HEIGHT};{WIDTH}"
    assert prop["num-detected-classes"] == "3"
    assert (work / "results/export/labels.txt").read_text().split() == ["car", "pedestrian", "cyclist"]


def test_offline_evaluation_of_inference_files_matches_the_model(workflow) -> None:
    inference, offline = workflow["inference"], workflow["eval_offline"]
    assert offline["num_images"] == workflow["eval_tlt"]["num_images"]
    assert offline["mAP"] == pytest.approx(workflow["eval_onnx"]["mAP"], abs=5e-3)
    labels = sorted((workflow["work"] / "results/inference/labels").glob("*.txt"))
    assert inference["images"] == 160 and len(labels) == 160
    line = next(line for f in labels for line in f.read_text().splitlines() if line.strip())
    assert len(line.split()) == 16


def test_prune_and_retrain(workflow) -> None:
    prune = workflow["prune"]
    assert prune["params_after"] < prune["params_before"]
    retrain = workflow["retrain"]
    assert retrain["epochs"] == 2
    assert Path(retrain["model"]).is_file()
    assert "val_mAP" in retrain["metrics"]
