"""One home for each DetectNet_v2 default: the proto's ``[default = ...]`` plus the spec rule tables.

Fields left out of a spec resolve to the proto's defaults; an explicit 0 that TAO reads as "use
the default" resolves to the same value (the ``zero_means_default`` table clears it at load); an
explicit 0 that TAO forbids is a spec error naming the field.  Code further down has no fallbacks
of its own, so the values below are what the consumers see.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace as NS

import numpy as np
import pytest

from tltk._proto import detectnet_v2_pb2 as pb
from tltk.data.augment import AugmentationParams, preprocessing_matrix
from tltk.detectnet_v2.dataset_convert import SampleModifier
from tltk.detectnet_v2.inference import InferenceConfig
from tltk.detectnet_v2.model import resolved_arch
from tltk.detectnet_v2.rasterizer import ClassRasterParams, RasterizerParams
from tltk.detectnet_v2.spec import kitti_image_extension
from tltk.errors import SpecError
from tltk.models import parse_spec_text

F32 = np.float32


def _without(text: str, *fields: str) -> str:
    """``text`` with every ``field: value`` line of the named fields removed (they must be there)."""
    for name in fields:
        text, n = re.subn(rf"^\s*{name}: .*\n", "", text, flags=re.MULTILINE)
        assert n, name
    return text


def _set(text: str, block: str, field: str) -> str:
    """``text`` with ``field`` (``name: value``) added as the first line of ``block { ...``."""
    assert f"{block} {{\n" in text, block
    return text.replace(f"{block} {{\n", f"{block} {{\n  {field}\n", 1)


def _experiment(text: str) -> pb.Experiment:
    return parse_spec_text(text, pb.Experiment, validate=True)


@pytest.fixture()
def base(repo_root: Path) -> str:
    return (repo_root / "specs" / "detectnet_v2" / "sample_ap_experiment.txt").read_text()


@pytest.fixture()
def inference_base(repo_root: Path) -> str:
    return (repo_root / "specs" / "detectnet_v2" / "hybrid_inference.txt").read_text()


def test_unset_experiment_fields_read_the_proto_defaults(base: str) -> None:
    text = _without(base, "arch", "num_layers", "checkpoint_interval", "deadzone_radius")
    text = re.sub(r"value \{ cov_center_x: [^}]*\}", "value { }", text)  # every rasterizer class unset
    exp = _experiment(text)
    assert resolved_arch(exp.model_config) == ("resnet", 18)
    assert exp.training_config.checkpoint_interval == 10
    assert exp.dataset_config.image_cache_mb == 2048
    pre = AugmentationParams.from_config(exp.augmentation_config).preprocessing
    assert (pre.scale_width, pre.scale_height) == (1.0, 1.0)
    raster = RasterizerParams.from_config(exp.bbox_rasterizer_config, ["car", "pedestrian"], 640, 384)
    assert raster.classes == (ClassRasterParams(F32(0.5), F32(0.5), F32(0.4), F32(0.4), 1.0),) * 2
    assert raster.deadzone_radius == F32(0.67)
    # The unscaled canvas is the image itself: identity matrix, size unchanged.
    matrix, width, height = preprocessing_matrix(640, 384, pre)
    np.testing.assert_array_equal(matrix.numpy(), np.eye(3, dtype=np.float32))
    assert (float(width), float(height)) == (640.0, 384.0)


def test_explicit_zero_where_tao_means_the_default(base: str) -> None:
    text = base.replace("num_layers: 18", "num_layers: 0").replace("checkpoint_interval: 10", "checkpoint_interval: 0")
    text = _set(text, "preprocessing", "scale_width: 0 scale_height: 0")
    exp = _experiment(text)
    assert resolved_arch(exp.model_config) == ("resnet", 18)
    assert exp.training_config.checkpoint_interval == 10
    pre = AugmentationParams.from_config(exp.augmentation_config).preprocessing
    assert (pre.scale_width, pre.scale_height) == (1.0, 1.0)
    # A real scale still applies: canvas 640 x 384 scaled by (2, 0.5).
    scaled = AugmentationParams.from_config(
        _experiment(_set(base, "preprocessing", "scale_width: 2 scale_height: 0.5")).augmentation_config).preprocessing
    _, width, height = preprocessing_matrix(640, 384, scaled)
    assert (float(width), float(height)) == (1280.0, 192.0)


@pytest.mark.parametrize(("old", "new", "field"), [
    ('arch: "resnet"', 'arch: ""', "model_config.arch"),
    ("output_image_channel: 3", "output_image_channel: 0", "augmentation_config.preprocessing.output_image_channel"),
    ("batch_size_per_gpu: 8", "batch_size_per_gpu: 0", "training_config.batch_size_per_gpu"),
])
def test_explicit_zero_where_tao_forbids_it_names_the_field(base: str, old: str, new: str, field: str) -> None:
    assert old in base
    with pytest.raises(SpecError) as err:
        _experiment(base.replace(old, new, 1))
    assert any(field in problem for problem in err.value.problems), err.value.problems


def test_inference_spec_defaults_and_zeros(inference_base: str) -> None:
    unset = _without(inference_base, "stride", "batch_size")
    config = InferenceConfig.from_spec(parse_spec_text(unset, pb.Inference, validate=True))
    assert (config.stride, config.batch_size, config.input_chw) == (16, 1, (3, 384, 640))
    zero_stride = inference_base.replace("stride: 16", "stride: 0")
    assert InferenceConfig.from_spec(parse_spec_text(zero_stride, pb.Inference, validate=True)).stride == 16
    for old, new, field in (("batch_size: 4", "batch_size: 0", "inferencer_config.batch_size"),
                            ("image_channels: 3", "image_channels: 0", "inferencer_config.image_channels")):
        with pytest.raises(SpecError) as err:
            parse_spec_text(inference_base.replace(old, new), pb.Inference, validate=True)
        assert any(field in problem for problem in err.value.problems), err.value.problems


def test_dataset_convert_defaults_and_zeros() -> None:
    kitti = ('kitti_config { root_directory_path: "data" image_dir_name: "image_2" label_dir_name: "label_2" '
             'partition_mode: "random" %s }')
    cfg = parse_spec_text(kitti % "", pb.DatasetExportConfig, validate=True).kitti_config
    assert (cfg.num_partitions, cfg.num_shards, cfg.val_split) == (2, 10, 20.0)
    assert kitti_image_extension(cfg) == ".png"
    # TAO reads "" as .png; the loader clears it, so the converter sees the default.
    cleared = parse_spec_text(kitti % 'image_extension: ""', pb.DatasetExportConfig, validate=True).kitti_config
    assert kitti_image_extension(cleared) == ".png"
    assert kitti_image_extension(NS(image_extension="jpg")) == ".jpg"
    with pytest.raises(SpecError, match=r"kitti_config\.image_extension"):
        kitti_image_extension(NS(image_extension=""))  # built in code, not loaded: no hidden default
    coco = ('coco_config { root_directory_path: "c" img_dir_names: ["a"] annotation_files: ["a.json"] %s }')
    with pytest.raises(SpecError) as err:
        parse_spec_text(coco % "", pb.DatasetExportConfig, validate=True)  # TAO needs it to match the lists
    assert any("coco_config.num_partitions" in p for p in err.value.problems), err.value.problems
    assert parse_spec_text(coco % "num_partitions: 1", pb.DatasetExportConfig,
                           validate=True).coco_config.num_partitions == 1


def test_sample_modifier_without_a_block_uses_the_proto_defaults() -> None:
    absent = SampleModifier(None, 2, validation_fold=0)
    empty = SampleModifier(pb.DatasetExportConfig.SampleModifierConfig(), 2, validation_fold=0)
    for modifier in (absent, empty):
        assert (modifier.num_duplicates, modifier.cap, modifier.mapping, modifier.dominant) == (0, 0, {}, [])
    capped = SampleModifier(pb.DatasetExportConfig.SampleModifierConfig(max_training_samples=9), 4, validation_fold=0)
    assert capped.cap == 3  # 9 samples over the 3 training folds


def test_model_config_namespaces_get_the_proto_defaults_not_a_hidden_zero_rule() -> None:
    assert resolved_arch(NS()) == ("resnet", 18)
    assert resolved_arch(NS(arch="vgg", num_layers=16)) == ("vgg", 16)
    # 0 -> 18 is TAO's spec-file rule, applied when a spec is loaded; code passing 0 gets 0.
    assert resolved_arch(NS(num_layers=0)) == ("resnet", 0)
