"""The committed tltk/_proto modules are exactly what scripts/compile_protos.py generates."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from tltk._proto import common_pb2, detectnet_v2_pb2, mask_rcnn_pb2


def test_generated_modules_are_up_to_date(repo_root: Path, tmp_path: Path) -> None:
    if importlib.util.find_spec("grpc_tools") is None:
        pytest.skip("grpcio-tools is not installed")
    subprocess.run([sys.executable, str(repo_root / "scripts" / "compile_protos.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)
    generated = sorted(p.name for p in tmp_path.glob("*_pb2.py*"))
    assert generated == ["common_pb2.py", "common_pb2.pyi", "detectnet_v2_pb2.py", "detectnet_v2_pb2.pyi",
                         "mask_rcnn_pb2.py", "mask_rcnn_pb2.pyi"]
    for name in generated:
        committed = (repo_root / "tltk" / "_proto" / name).read_text()
        assert (tmp_path / name).read_text() == committed, f"{name} is stale: run `make protos`"
        assert "from tltk import" not in committed


def test_schema_names_and_numbers_match_tao() -> None:
    exp = detectnet_v2_pb2.Experiment.DESCRIPTOR
    assert exp.full_name == "tltk.detectnet_v2.Experiment"
    assert {f.name: f.number for f in exp.fields} == {
        "random_seed": 1, "dataset_config": 2, "augmentation_config": 3, "postprocessing_config": 4,
        "model_config": 5, "evaluation_config": 6, "cost_function_config": 8, "training_config": 9,
        "bbox_rasterizer_config": 10, "loss_mask_label_filter": 11, "dataset_export_config": 12}
    oneofs = {o.name: [f.name for f in o.fields] for o in detectnet_v2_pb2.DatasetConfig.DESCRIPTOR.oneofs}
    assert oneofs == {"dataset_split_type": ["validation_fold", "validation_data_source"]}
    clustering = detectnet_v2_pb2.ClusteringConfig.DESCRIPTOR.fields_by_name
    assert clustering["dbscan_min_samples"].number == 5
    assert clustering["dbscan_min_samples"].cpp_type == clustering["dbscan_eps"].cpp_type  # float
    mrcnn = mask_rcnn_pb2.MaskRCNNConfig.DESCRIPTOR.fields_by_name
    assert (mrcnn["freeze_blocks"].number, mrcnn["aspect_ratios"].number, mrcnn["nlayers"].number) == (35, 6, 34)
    assert mask_rcnn_pb2.Experiment.DESCRIPTOR.fields_by_name["wandb_config"].message_type is \
        common_pb2.WandBConfig.DESCRIPTOR
    # proto2 defaults: unset is distinguishable from the default value
    tc = detectnet_v2_pb2.TrainingConfig()
    assert tc.checkpoint_interval == 10 and not tc.HasField("checkpoint_interval")


def test_spec_reference_page_is_up_to_date(repo_root: Path) -> None:
    if importlib.util.find_spec("grpc_tools") is None:
        pytest.skip("grpcio-tools is not installed")
    result = subprocess.run([sys.executable, str(repo_root / "scripts" / "gen_spec_reference.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    page = (repo_root / "docs" / "spec_reference.md").read_text()
    assert "| `dbscan_min_samples` | 5 | `float` | `0.05` |" in page
    assert "### `tltk.mask_rcnn.MaskRCNNConfig`" in page
