"""``tltk detectnet_v2 dataset_convert`` and ``calibration_tensorfile`` end to end on synthetic KITTI data."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from tltk.cli.app import cli
from tltk.data.synthetic import synthesize_kitti

EXPERIMENT = """
random_seed: 42
dataset_config {
  data_sources { tfrecords_path: "tfrecords/kitti-*" image_directory_path: "syn" }
  image_extension: "png"
  target_class_mapping { key: "car" value: "car" }
  target_class_mapping { key: "pedestrian" value: "pedestrian" }
  target_class_mapping { key: "cyclist" value: "cyclist" }
  validation_fold: 0
}
augmentation_config {
  preprocessing { output_image_width: 160 output_image_height: 96 output_image_channel: 3
                  min_bbox_width: 1.0 min_bbox_height: 1.0 }
  spatial_augmentation { hflip_probability: 0.5 zoom_min: 1.0 zoom_max: 1.0 translate_max_x: 8.0 translate_max_y: 8.0 }
  color_augmentation { hue_rotation_max: 25.0 saturation_shift_max: 0.2 contrast_scale_max: 0.1 contrast_center: 0.5 }
}
postprocessing_config {
%(post)s
}
model_config {
  arch: "resnet"
  num_layers: 18
  objective_set { bbox { scale: 35.0 offset: 0.5 } cov {} }
}
evaluation_config {
  validation_period_during_training: 10
  first_validation_epoch: 10
  average_precision_mode: INTEGRATE
%(eval)s
}
cost_function_config {
%(cost)s
  enable_autoweighting: true
  max_objective_weight: 0.9999
  min_objective_weight: 0.0001
}
training_config {
  batch_size_per_gpu: 2
  num_epochs: 1
  learning_rate { soft_start_annealing_schedule { min_learning_rate: 5e-6 max_learning_rate: 5e-4 soft_start: 0.1 annealing: 0.7 } }
  regularizer { type: L1 weight: 3e-9 }
  optimizer { adam { epsilon: 1e-8 beta1: 0.9 beta2: 0.999 } }
  cost_scaling { enabled: false initial_exponent: 20.0 increment: 0.005 decrement: 1.0 }
}
bbox_rasterizer_config {
%(raster)s
  deadzone_radius: 0.67
}
"""

CLASSES = ("car", "pedestrian", "cyclist")


def _experiment_text() -> str:
    post = "\n".join(f'  target_class_config {{ key: "{c}" value {{ clustering_config {{ coverage_threshold: 0.005 '
                     f'dbscan_eps: 0.15 dbscan_min_samples: 1 minimum_bounding_box_height: 4 }} }} }}' for c in CLASSES)
    ev = "\n".join(f'  minimum_detection_ground_truth_overlap {{ key: "{c}" value: 0.5 }}\n'
                   f'  evaluation_box_config {{ key: "{c}" value {{ minimum_height: 4 maximum_height: 9999 '
                   f'minimum_width: 4 maximum_width: 9999 }} }}' for c in CLASSES)
    cost = "\n".join(f'  target_classes {{ name: "{c}" class_weight: 1.0 coverage_foreground_weight: 0.05 '
                     f'objectives {{ name: "cov" initial_weight: 1.0 weight_target: 1.0 }} '
                     f'objectives {{ name: "bbox" initial_weight: 10.0 weight_target: 10.0 }} }}' for c in CLASSES)
    raster = "\n".join(f'  target_class_config {{ key: "{c}" value {{ cov_center_x: 0.5 cov_center_y: 0.5 '
                       f'cov_radius_x: 0.4 cov_radius_y: 0.4 bbox_min_radius: 1.0 }} }}' for c in CLASSES)
    return EXPERIMENT % {"post": post, "eval": ev, "cost": cost, "raster": raster}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    synthesize_kitti(str(root / "syn"), num_images=10, image_size=(160, 96), seed=5, val_fraction=0.2)
    (root / "experiment.txt").write_text(_experiment_text())
    return root


@pytest.fixture(scope="module")
def converted(workdir):
    """Runs ``dataset_convert`` through the CLI once; returns its --json document."""
    result = CliRunner().invoke(cli, ["detectnet_v2", "dataset_convert", "-d",
                                      str(workdir / "syn" / "dataset_convert_spec.txt"),
                                      "-o", str(workdir / "tfrecords" / "kitti"), "-r", str(workdir / "res"), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_dataset_convert_json_report(workdir, converted):
    data = converted
    assert data["num_frames"] == 10
    assert [p["num_frames"] for p in data["partitions"]] == [2, 8]
    assert set(data["class_map"].values()) <= {"car", "pedestrian", "cyclist", "dontcare"}
    assert data["class_map"]["Car"] == "car"
    assert data["problems"]["total"] == 0
    assert [s.rsplit("/", 1)[1] for s in data["shards"]][0].startswith("kitti-fold-000-of-002")
    assert sum(data["total_counts"].values()) == sum(sum(p["class_counts"].values()) for p in data["partitions"])
    assert json.loads((workdir / "res" / "status.json").read_text())["num_frames"] == 10


def test_calibration_tensorfile_writes_tao_layout_and_refuses_overwrite(workdir, converted):
    runner = CliRunner()
    out = workdir / "cal" / "calibration.tensor"
    args = ["detectnet_v2", "calibration_tensorfile", "-e", str(workdir / "experiment.txt"), "-o", str(out)]
    result = runner.invoke(cli, args + ["-m", "3", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert data["batches"] == 3 and data["batch_shape"] == [2, 3, 96, 160] and data["split"] == "train"
    with h5py.File(out, "r") as f:
        assert int(f.attrs["count"]) == 3 and list(f.attrs["shape"]) == [2, 3, 96, 160]
        arr = f["_tensorfile_array_key__2"]["_tensorfile_array_key_"][()]
        assert arr.dtype == np.float32 and 0.0 <= arr.min() and arr.max() <= 1.0 and arr.std() > 0.01
    again = runner.invoke(cli, args + ["-m", "1"])
    assert again.exit_code == 2 and "already exists" in again.output
    forced = runner.invoke(cli, args + ["-m", "1", "--force", "--use_validation_set"])
    assert forced.exit_code == 0, forced.output
    with h5py.File(out, "r") as f:
        assert int(f.attrs["count"]) == 1
    # 8 training images / batch 2 = 4 batches at most.
    too_many = runner.invoke(cli, ["detectnet_v2", "calibration_tensorfile", "-e", str(workdir / "experiment.txt"),
                                   "-o", str(workdir / "cal" / "other.tensor"), "-m", "5"])
    assert too_many.exit_code == 2 and "4 batch(es)" in too_many.output
    assert not (workdir / "cal" / "other.tensor").exists()


def test_dataset_convert_bad_spec_exits_2(workdir):
    bad = workdir / "bad_convert.txt"
    bad.write_text('kitti_config { root_directory_path: "nowhere" image_dir_name: "i" label_dir_name: "l" '
                   'partition_mode: "random" val_split: 20 num_partitions: 2 }\n')
    result = CliRunner().invoke(cli, ["detectnet_v2", "dataset_convert", "-d", str(bad), "-o", str(workdir / "x" / "y")])
    assert result.exit_code == 2
