"""DetectNet_v2 rule tables and cross-section checks (tltk/detectnet_v2/spec.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tltk.detectnet_v2 import spec as dn
from tltk.models import check_spec, load_spec


@pytest.fixture()
def base(repo_root: Path) -> str:
    return (repo_root / "specs" / "detectnet_v2" / "sample_ap_experiment.txt").read_text()


def _check(tmp_path: Path, text: str, **kw):
    path = tmp_path / "spec.txt"
    path.write_text(text)
    return check_spec(path, model="detectnet_v2", **kw)


def test_base_spec_is_valid_and_accessors(base: str, tmp_path: Path) -> None:
    report = _check(tmp_path, base)
    assert report.valid, report.errors
    loaded = load_spec(tmp_path / "spec.txt", model="detectnet_v2")
    exp = loaded.message
    assert dn.cost_function_classes(exp) == ["car", "pedestrian"]
    assert dn.image_extension(exp.dataset_config) == ".png"
    which, sched = dn.learning_rate_schedule(exp.training_config)
    assert which == "soft_start_annealing_schedule" and sched.annealing == pytest.approx(0.7)
    assert exp.evaluation_config.average_precision_mode == exp.evaluation_config.SAMPLE


def test_cross_section_problems_are_all_reported(base: str, tmp_path: Path) -> None:
    text = (base
            .replace('target_class_mapping { key: "van" value: "car" }',
                     'target_class_mapping { key: "van" value: "truck" }\n'
                     '  target_class_mapping { key: "Bus" value: "car" }')
            .replace('minimum_detection_ground_truth_overlap { key: "pedestrian" value: 0.5 }', "")
            .replace('objectives { name: "bbox" initial_weight: 10.0 weight_target: 10.0 }\n  }\n  enable',
                     'objectives { name: "box" initial_weight: 10.0 weight_target: 10.0 }\n  }\n  enable')
            .replace("output_image_width: 640", "output_image_width: 650")
            .replace("enabled: False", "enabled: false"))
    report = _check(tmp_path, text)
    errors = "\n".join(report.errors)
    assert "maps 'van' to 'truck', which is not a cost-function class (car, pedestrian)" in errors
    assert "minimum_detection_ground_truth_overlap: no entry for cost-function class(es) 'pedestrian'" in errors
    assert "objectives must be exactly cov and bbox (once each); found cov, box" in errors
    assert "objectives[1].name: 'box' is invalid: must be one of bbox, cov" in errors
    assert len(report.errors) == 4
    warnings = "\n".join(report.warnings)
    assert "650 should be a multiple of 16" in warnings
    assert "tltk matches 'Bus' to 'bus' (it ignores case), TAO compares exactly" in warnings


def test_rules_follow_tao_without_its_bugs(base: str, tmp_path: Path) -> None:
    # cost scaling disabled: its values are not checked (TAO requires them > 0 anyway)
    disabled = base.replace("training_config {", "training_config {\n  cost_scaling { enabled: false "
                                                 "initial_exponent: 0 increment: 0 }", 1)
    assert _check(tmp_path, disabled).valid
    enabled = disabled.replace("enabled: false", "enabled: true")
    report = _check(tmp_path, enabled)
    assert len(report.errors) == 2 and all("when enabled" in e for e in report.errors)
    # dbscan_min_samples is a weight, not an int in [0, 1]
    assert _check(tmp_path, base.replace("dbscan_min_samples: 0.05", "dbscan_min_samples: 3.5")).valid
    # dbscan_eps must be > 0 only where DBSCAN runs
    zero_eps = base.replace("dbscan_eps: 0.15", "dbscan_eps: 0")
    assert len(_check(tmp_path, zero_eps).errors) == 2
    assert _check(tmp_path, zero_eps.replace("clustering_algorithm: DBSCAN", "clustering_algorithm: NMS")).valid


def test_schedule_and_model_checks(base: str, tmp_path: Path) -> None:
    text = (base.replace("soft_start: 0.1", "soft_start: 0.8")
                .replace("min_learning_rate: 5e-6", "min_learning_rate: 5e-3")
                .replace("num_layers: 18", "num_layers: 20")
                .replace("zoom_max: 1.0", "zoom_max: 0.5"))
    errors = "\n".join(_check(tmp_path, text).errors)
    assert "annealing (0.7) must not come before soft_start (0.8)" in errors
    assert "min_learning_rate (0.005) is above max_learning_rate (0.0005)" in errors
    assert "resnet supports num_layers 10, 18, 34, 50, 101; got 20" in errors
    assert "zoom_min (1) is above zoom_max (0.5)" in errors


def test_label_filter_checks(repo_root: Path, tmp_path: Path) -> None:
    text = (repo_root / "specs" / "detectnet_v2" / "label_filter_experiment.txt").read_text()
    loaded = load_spec(repo_root / "specs" / "detectnet_v2" / "label_filter_experiment.txt", model="detectnet_v2")
    cfgs = loaded.message.loss_mask_label_filter.objective_label_filter_configs
    assert [c.label_filter.WhichOneof("label_filter_params") for c in cfgs] == [
        "bbox_dimensions_label_filter", "bbox_crop_label_filter", "source_class_label_filter"]
    bad = text.replace('target_class_names: "pedestrian"\n    objective_names: "bbox"',
                       'target_class_names: "cyclist"\n    objective_names: "boxes"')
    errors = "\n".join(_check(tmp_path, bad).errors)
    assert "'cyclist' is not a cost-function class" in errors
    assert "'boxes' is invalid: must be one of bbox, cov" in errors


def test_inference_checks(repo_root: Path, tmp_path: Path) -> None:
    text = (repo_root / "specs" / "detectnet_v2" / "hybrid_inference.txt").read_text()
    loaded = load_spec(repo_root / "specs" / "detectnet_v2" / "hybrid_inference.txt", model="detectnet_v2")
    assert dn.classwise_config(loaded.message, "pedestrian").confidence_model == "mean_cov"
    assert dn.classwise_config(loaded.message, "car").clustering_config.clustering_algorithm == 2  # HYBRID
    bad = (text.replace('key: "default"', 'key: "truck"')
               .replace('confidence_model: "mean_cov"', 'confidence_model: "max_cov"')
               .replace("R: 255", "R: 256"))
    report = _check(tmp_path, bad)
    errors = "\n".join(report.errors)
    assert "no entry for class(es) 'pedestrian' and no \"default\" entry" in errors
    assert "'max_cov' is invalid: must be one of aggregate_cov, mean_cov" in errors
    assert "bbox_color.R: 256 is invalid: must be in [0, 255]" in errors
    assert any("'truck' is not in inferencer_config.target_classes" in w for w in report.warnings)


def test_dataset_convert_checks(tmp_path: Path) -> None:
    report = _check(tmp_path, 'coco_config { root_directory_path: "r" img_dir_names: ["a", "b"] '
                              'annotation_files: ["a.json"] num_partitions: 3 num_shards: [1, 2, 3] }')
    errors = "\n".join(report.errors)
    assert "1 annotation file(s) for 2 image folder(s)" in errors
    assert "is 3 but 2 img_dir_names are listed" in errors
    assert "one value for all partitions or one per partition (2); got 3" in errors
    kitti = _check(tmp_path, 'kitti_config { root_directory_path: "r" image_dir_name: "i" label_dir_name: "l" '
                             'partition_mode: "sequence" val_split: 100 }')
    errors = "\n".join(kitti.errors)
    assert "needs the JSON file that maps sequences to frames" in errors
    assert "val_split: 100 is invalid: must be in [0, 100)" in errors
    assert "choose the input format" in _check(tmp_path, 'image_directory_path: "x"').errors[0]


def test_defaults_live_in_the_proto_and_the_rules(base: str, tmp_path: Path) -> None:
    from tltk.detectnet_v2.postprocess import params_from_postprocessing_config

    # dbscan_eps left out -> the proto's 0.3 (before, the proto said 0.0 and the rule rejected it);
    # an explicit NMS threshold of 0 reads as the default, as TAO's inference path does.
    text = (base.replace("        dbscan_eps: 0.15\n", "", 1)
                .replace("        minimum_bounding_box_height: 10\n",
                         "        minimum_bounding_box_height: 10\n        nms_iou_threshold: 0\n"
                         "        nms_confidence_threshold: 0.0\n", 1))
    assert text.count("dbscan_eps") == 1 and "nms_iou_threshold: 0\n" in text
    report = _check(tmp_path, text)
    assert report.valid, report.errors
    params = params_from_postprocessing_config(load_spec(tmp_path / "spec.txt", model="detectnet_v2")
                                               .message.postprocessing_config)
    assert params["car"].dbscan_eps == pytest.approx(0.3) and params["pedestrian"].dbscan_eps == pytest.approx(0.15)
    assert params["car"].nms_iou_threshold == pytest.approx(0.3)
    assert params["car"].nms_confidence_threshold == pytest.approx(0.1)


def test_preprocessing_and_clustering_are_validated_once_by_the_rules(base: str, repo_root: Path,
                                                                      tmp_path: Path) -> None:
    text = (base.replace("output_image_channel: 3", "output_image_channel: 2\n    output_image_min: 320")
                .replace("hflip_probability: 0.5", "hflip_probability: 1.5")
                .replace("zoom_min: 1.0", "zoom_min: 2.0")
                .replace("hue_rotation_max: 25.0", "hue_rotation_max: 400.0"))
    errors = "\n".join(_check(tmp_path, text).errors)
    for needle in ("preprocessing.output_image_channel: 2 is invalid: must be one of 1, 3",
                   "preprocessing.output_image_min: 320 is invalid: must be 0",
                   "spatial_augmentation.hflip_probability: 1.5 is invalid: must be in [0, 1]",
                   "zoom_min (2) is above zoom_max (1)",
                   "color_augmentation.hue_rotation_max: 400 is invalid: must be in [0, 360]"):
        assert needle in errors, needle
    inference = (repo_root / "specs" / "detectnet_v2" / "hybrid_inference.txt").read_text()
    bad = inference.replace("dbscan_eps: 0.3", "dbscan_eps: 1.5", 1).replace("coverage_threshold: 0.005",
                                                                               "coverage_threshold: -0.1", 1)
    errors = "\n".join(_check(tmp_path, bad).errors)
    assert "clustering_config.dbscan_eps: 1.5 is invalid: must be in (0, 1]" in errors
    assert "clustering_config.coverage_threshold: -0.1 is invalid: must be in [0, 1]" in errors
