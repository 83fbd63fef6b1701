"""Shared fixtures: paths to the read-only corpus, tiny synthetic datasets, CLI runner."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path | None:
    """The read-only ../shared folder next to the checkout, or $TLTK_SHARED; None when absent."""
    env = os.environ.get("TLTK_SHARED")
    for candidate in ([Path(env)] if env else []) + [REPO_ROOT.parent / "shared"]:
        if candidate.is_dir():
            return candidate
    return None


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    """../shared/corpus; tests that use it are skipped where it is absent."""
    base = shared_dir()
    if base is None or not (base / "corpus").is_dir():
        pytest.skip("../shared/corpus is not available")
    return base / "corpus"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


def has_executable(name: str) -> bool:
    return shutil.which(name) is not None


# ---- DetectNet_v2 toy project: hand-made KITTI images and a network with known outputs -----------
#
# 64x64 images with solid blocks exactly on 16x16 output cells: red blocks are cars, green blocks
# pedestrians.  The toy network averages each channel over each 16x16 cell (one 16x16/16 conv), so
# a block of value v gives coverage sigmoid(8 (v - 0.5)) in its class channel and ~0.018 elsewhere,
# and its bbox head always outputs the cell's own box: detection boxes are exactly the blocks.

TOY_CLASSES = ("car", "pedestrian")
TOY_SIZE = 64
TOY_GAIN = 8.0

# Per image: blocks (column, row, class index, value, labelled) and extra labels (class, box).
# Images 0-3 are the validation fold (dataset_convert's first 50 % in sorted order).
TOY_IMAGES: tuple[tuple[tuple[tuple[int, int, int, float, bool], ...], tuple[tuple[str, tuple[int, ...]], ...]], ...] = (
    (((1, 1, 0, 1.00, True), (2, 2, 1, 0.95, True), (3, 0, 0, 0.62, False)), ()),
    (((0, 2, 0, 0.90, True), (1, 3, 1, 0.66, False)), (("Car", (48, 48, 64, 64)), ("Pedestrian", (26, 48, 42, 64)))),
    (((0, 0, 1, 0.85, True), (2, 1, 0, 0.80, True)), (("DontCare", (40, 40, 60, 60)),)),
    (((3, 2, 1, 0.75, False),), (("car", (16, 16, 32, 32)),)),
    (((1, 1, 0, 0.70, True),), ()),
    (((2, 2, 1, 0.90, True), (0, 0, 0, 0.85, True)), ()),
    (((3, 3, 0, 0.95, True),), (("Pedestrian", (0, 16, 16, 32)),)),
    ((), (("Car", (32, 0, 48, 16)),)),
)

TOY_EXPERIMENT = """
random_seed: 3
dataset_config {
  data_sources { tfrecords_path: "tfrecords/toy-*" image_directory_path: "kitti" }
  image_extension: "png"
  target_class_mapping { key: "car" value: "car" }
  target_class_mapping { key: "pedestrian" value: "pedestrian" }
  validation_fold: 0
}
augmentation_config {
  preprocessing { output_image_width: 64 output_image_height: 64 output_image_channel: 3
                  min_bbox_width: 1.0 min_bbox_height: 1.0 }
  spatial_augmentation { hflip_probability: 0.0 zoom_min: 1.0 zoom_max: 1.0 }
  color_augmentation { hue_rotation_max: 0.0 saturation_shift_max: 0.0 contrast_scale_max: 0.0 contrast_center: 0.5 }
}
postprocessing_config {
  target_class_config { key: "car" value { clustering_config { clustering_algorithm: NMS coverage_threshold: 0.1
    nms_iou_threshold: 0.3 nms_confidence_threshold: 0.1 } } }
  target_class_config { key: "pedestrian" value { clustering_config { clustering_algorithm: NMS
    coverage_threshold: 0.1 nms_iou_threshold: 0.3 nms_confidence_threshold: 0.1 } } }
}
model_config { arch: "resnet" num_layers: 18 objective_set { bbox { scale: 35.0 offset: 0.5 } cov {} } }
evaluation_config {
  validation_period_during_training: 1
  first_validation_epoch: 1
  average_precision_mode: %(mode)s
  minimum_detection_ground_truth_overlap { key: "car" value: 0.5 }
  minimum_detection_ground_truth_overlap { key: "pedestrian" value: 0.5 }
  evaluation_box_config { key: "car" value { minimum_height: 4 maximum_height: 9999 minimum_width: 4 maximum_width: 9999 } }
  evaluation_box_config { key: "pedestrian" value { minimum_height: 4 maximum_height: 9999 minimum_width: 4
    maximum_width: 9999 } }
}
cost_function_config {
  target_classes { name: "car" class_weight: 1.0 coverage_foreground_weight: 0.05
    objectives { name: "cov" initial_weight: 1.0 weight_target: 1.0 }
    objectives { name: "bbox" initial_weight: 10.0 weight_target: 10.0 } }
  target_classes { name: "pedestrian" class_weight: 1.0 coverage_foreground_weight: 0.05
    objectives { name: "cov" initial_weight: 1.0 weight_target: 1.0 }
    objectives { name: "bbox" initial_weight: 10.0 weight_target: 10.0 } }
  enable_autoweighting: false
  max_objective_weight: 0.9999
  min_objective_weight: 0.0001
}
training_config {
  batch_size_per_gpu: 3
  num_epochs: 1
  learning_rate { soft_start_annealing_schedule { min_learning_rate: 5e-6 max_learning_rate: 5e-4 soft_start: 0.1
    annealing: 0.7 } }
  regularizer { type: L1 weight: 3e-9 }
  optimizer { adam { epsilon: 1e-8 beta1: 0.9 beta2: 0.999 } }
  cost_scaling { enabled: false initial_exponent: 20.0 increment: 0.005 decrement: 1.0 }
}
bbox_rasterizer_config {
  target_class_config { key: "car" value { cov_center_x: 0.5 cov_center_y: 0.5 cov_radius_x: 0.4 cov_radius_y: 0.4
    bbox_min_radius: 1.0 } }
  target_class_config { key: "pedestrian" value { cov_center_x: 0.5 cov_center_y: 0.5 cov_radius_x: 0.4
    cov_radius_y: 0.4 bbox_min_radius: 1.0 } }
  deadzone_radius: 0.67
}
"""

TOY_INFERENCE = """
inferencer_config {
  target_classes: "car"
  target_classes: "pedestrian"
  image_width: %(width)d
  image_height: %(height)d
  image_channels: 3
  batch_size: 3
  %(model)s
}
bbox_handler_config {
  kitti_dump: true
  disable_overlay: false
  overlay_linewidth: 2
  classwise_bbox_handler_config {
    key: "car"
    value {
      confidence_model: "aggregate_cov"
      output_map: "car"
      bbox_color { R: 0 G: 255 B: 0 }
      clustering_config { clustering_algorithm: NMS coverage_threshold: 0.1 nms_iou_threshold: 0.3
                          nms_confidence_threshold: 0.1 }
    }
  }
  classwise_bbox_handler_config {
    key: "default"
    value {
      confidence_model: "aggregate_cov"
      bbox_color { R: 255 G: 0 B: 255 }
      clustering_config { clustering_algorithm: NMS coverage_threshold: 0.1 nms_iou_threshold: 0.3
                          nms_confidence_threshold: 0.1 }
    }
  }
}
"""


def toy_network():
    """The toy DetectNet_v2 network (input_1 NCHW 3x64x64, outputs output_cov / output_bbox)."""
    import keras
    import numpy as np

    inp = keras.Input((3, TOY_SIZE, TOY_SIZE), name="input_1")
    x = keras.layers.Permute((2, 3, 1), name="input_nhwc")(inp)
    feat = keras.layers.Conv2D(2, 16, strides=16, name="cell_mean")(x)
    cov = keras.layers.Conv2D(2, 1, activation="sigmoid", name="output_cov")(feat)
    bbox = keras.layers.Conv2D(8, 1, name="output_bbox")(feat)
    model = keras.Model(inp, {"output_cov": keras.layers.Permute((3, 1, 2), name="output_cov_nchw")(cov),
                              "output_bbox": keras.layers.Permute((3, 1, 2), name="output_bbox_nchw")(bbox)})
    kernel = np.zeros((16, 16, 3, 2), np.float32)
    kernel[:, :, 0, 0] = 1.0 / 256  # channel 0 (car): mean red
    kernel[:, :, 1, 1] = 1.0 / 256  # channel 1 (pedestrian): mean green
    model.get_layer("cell_mean").set_weights([kernel, np.zeros(2, np.float32)])
    model.get_layer("output_cov").set_weights([np.eye(2, dtype=np.float32).reshape(1, 1, 2, 2) * TOY_GAIN,
                                               np.full(2, -TOY_GAIN / 2, np.float32)])
    # L, T, R, B such that each cell's box is the cell itself: anchor (16 i + 0.5, 16 j + 0.5).
    ltrb = np.array([0.5, 0.5, 15.5, 15.5], np.float32) / 35.0
    model.get_layer("output_bbox").set_weights([np.zeros((1, 1, 2, 8), np.float32), np.tile(ltrb, 2)])
    return model


def toy_image(blocks, width: int = TOY_SIZE, height: int = TOY_SIZE, cell: float = 16.0):
    """A uint8 RGB image with solid blocks: (column, row, class index, value) in ``cell``-pixel units."""
    import numpy as np

    image = np.zeros((height, width, 3), np.uint8)
    for col, row, cls, value, *_ in blocks:
        image[round(row * cell):round((row + 1) * cell), round(col * cell):round((col + 1) * cell), cls] = round(
            value * 255)
    return image


def _toy_label_lines(blocks, extra) -> list[str]:
    lines = []
    for col, row, cls, _, labelled in blocks:
        if labelled:
            box = (16 * col, 16 * row, 16 * col + 16, 16 * row + 16)
            lines.append(("Car", "Pedestrian")[cls] + " 0.00 0 0.00 " + " ".join(f"{v:.2f}" for v in box)
                         + " 0.00 0.00 0.00 0.00 0.00 0.00 0.00")
    for name, box in extra:
        lines.append(name + " 0.00 0 0.00 " + " ".join(f"{v:.2f}" for v in box) + " 0.00 0.00 0.00 0.00 0.00 0.00 0.00")
    return lines


@pytest.fixture(scope="session")
def detectnet_v2_toy(tmp_path_factory) -> dict:
    """A converted toy KITTI dataset, its experiment spec, the toy network as .tlt and .onnx, and an
    inference spec.  Keys: root, experiment, experiment_sample, inference, tlt, onnx, images, labels,
    val_stems (the validation images' stems)."""
    from PIL import Image

    from tltk.detectnet_v2.dataset_convert import convert_dataset
    from tltk.export.subtask import ExportOptions, run_export
    from tltk.modelfile.container import save_keras_model
    from tltk.models import load_spec, task_for_model_file

    root = tmp_path_factory.mktemp("dnv2_toy")
    images, labels = root / "kitti" / "image_2", root / "kitti" / "label_2"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    for index, (blocks, extra) in enumerate(TOY_IMAGES):
        Image.fromarray(toy_image(blocks)).save(images / f"{index:06d}.png")
        (labels / f"{index:06d}.txt").write_text("\n".join(_toy_label_lines(blocks, extra)) + "\n")
    (root / "convert.txt").write_text(
        'kitti_config { root_directory_path: "kitti" image_dir_name: "image_2" label_dir_name: "label_2" '
        'image_extension: ".png" partition_mode: "random" num_partitions: 2 val_split: 50 num_shards: 1 }\n'
        'image_directory_path: "kitti"\n')
    convert = load_spec(str(root / "convert.txt"), model="detectnet_v2", kind="dataset_convert")
    convert_dataset(convert.message, str(root / "tfrecords" / "toy"), base_dir=str(root))
    (root / "experiment.txt").write_text(TOY_EXPERIMENT % {"mode": "INTEGRATE"})
    (root / "experiment_sample.txt").write_text(TOY_EXPERIMENT % {"mode": "SAMPLE"})
    save_keras_model(str(root / "model.tlt"), toy_network(), {"model_kind": "detectnet_v2",
                                                               "class_names": list(TOY_CLASSES),
                                                               "input_shape": [3, TOY_SIZE, TOY_SIZE]})
    task, network, metadata = task_for_model_file("detectnet_v2", str(root / "model.tlt"))
    run_export(task, network, metadata, ExportOptions(model=str(root / "model.tlt"), output_file=str(root / "model.onnx")),
               "detectnet_v2")
    (root / "inference.txt").write_text(TOY_INFERENCE % {"width": TOY_SIZE, "height": TOY_SIZE,
                                                         "model": 'tlt_config { model: "model.tlt" }'})
    return {"root": root, "experiment": root / "experiment.txt", "experiment_sample": root / "experiment_sample.txt",
            "inference": root / "inference.txt", "tlt": root / "model.tlt", "onnx": root / "model.onnx",
            "images": images, "labels": labels, "val_stems": [f"{i:06d}" for i in range(4)],
            "layout": TOY_IMAGES, "gain": TOY_GAIN, "inference_template": TOY_INFERENCE, "make_image": toy_image}
