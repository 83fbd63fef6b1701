"""``tltk detectnet_v2 prune``: a smaller .tlt, --json numbers, retraining with load_graph, bad inputs."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from tltk.cli.app import cli
from tltk.detectnet_v2.model import HEAD_NAMES, build_detectnet_v2_model, build_or_load_detectnet_v2_model
from tltk.modelfile.container import load_keras_model, save_keras_model

KEY = "tltk-test-key"
CLASSES = ["car", "pedestrian", "cyclist"]


def model_config(**fields) -> SimpleNamespace:
    base = dict(arch="resnet", num_layers=10, use_batch_norm=True, all_projections=False,
                objective_set=SimpleNamespace(cov=SimpleNamespace(input=""), bbox=SimpleNamespace(input="")))
    base.update(fields)
    return SimpleNamespace(**base)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, keras.Model]:
    """A sealed resnet10 DetectNet_v2 .tlt whose conv/BN channels in the upper half are all zero."""
    model = build_detectnet_v2_model(model_config(), len(CLASSES), (3, 32, 32))
    for layer in model.layers:
        if layer.name in HEAD_NAMES or not layer.weights:
            continue
        arrays = layer.get_weights()
        half = arrays[0].shape[-1] // 2
        arrays[0][..., half:] = 0.0  # conv kernel filters, or BN gamma
        arrays[1][half:] = 0.0  # conv bias, or BN beta
        layer.set_weights(arrays)
    path = tmp_path_factory.mktemp("trained") / "model.tlt"
    save_keras_model(path, model, {"model_kind": "detectnet_v2", "class_names": CLASSES,
                                   "input_shape": [3, 32, 32], "spec": "random_seed: 1\n"}, key=KEY)
    return path, model


def run(*args: str):
    return CliRunner().invoke(cli, ["detectnet_v2", "prune", *args])


def last_json(result) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_prune_writes_a_smaller_model_that_retrains_with_load_graph(trained, tmp_path, repo_root):
    source, original = trained
    out = tmp_path / "prune" / "model_pruned.tlt"
    result = run("-m", str(source), "-o", str(out), "-k", KEY, "-pth", "0.0", "--json")
    assert result.exit_code == 0, result.output
    data = last_json(result)
    assert data["output"] == str(out)
    assert isinstance(data["params_before"], int) and isinstance(data["flops_before"], int)
    assert data["params_before"] == original.count_params()
    assert data["params_after"] < data["params_before"] and data["flops_after"] < data["flops_before"]
    assert data["pruning_ratio"] == pytest.approx(data["params_after"] / data["params_before"])
    assert data["options"] == {"normalizer": "max", "equalization_criterion": "union", "pruning_granularity": 8,
                               "pruning_threshold": 0.0, "min_num_filters": 16, "excluded_layers": []}
    filters = {layer["name"]: (layer["filters_before"], layer["filters_after"]) for layer in data["layers"]}
    assert filters["conv1"] == (64, 32) and filters["block_4a_conv_2"] == (512, 256)
    assert filters["output_cov"] == (3, 3) and filters["output_bbox"] == (12, 12)
    assert "parameters:" in result.stderr and "block_4a_conv_2" in result.stderr

    pruned, metadata = load_keras_model(out, KEY)
    assert metadata["class_names"] == CLASSES and metadata["spec"] == "random_seed: 1\n"
    assert metadata["pruned"]["params_after"] == data["params_after"] == pruned.count_params()
    assert metadata["pruned"]["filters"]["conv1"] == [64, 32]
    x = np.random.default_rng(0).random((1, 3, 32, 32), dtype=np.float32)
    want = original(x, training=False)
    for name, value in pruned(x, training=False).items():
        np.testing.assert_allclose(value, want[name], atol=1e-5, rtol=1e-5)

    # retrain: the shipped retrain spec with its pretrained_model_file pointed at the pruned model
    from tltk.models import load_spec

    spec = load_spec(repo_root / "specs" / "detectnet_v2" / "retrain_pruned.txt", model="detectnet_v2", kind="experiment",
                     overrides=[f"model_config.pretrained_model_file={out}"])
    assert spec.message.model_config.load_graph
    network, report = build_or_load_detectnet_v2_model(spec.message.model_config, len(CLASSES), (3, 272, 480),
                                                       key=KEY)
    assert report is None and network.count_params() == data["params_after"]
    outputs = network(x, training=False)
    assert tuple(outputs["output_cov"].shape) == (1, 3, 2, 2)
    assert tuple(outputs["output_bbox"].shape) == (1, 12, 2, 2)


def test_tao_flags_and_excluded_layers(trained, tmp_path):
    source, _ = trained
    out = tmp_path / "pruned"  # ".tlt" is added
    result = run("-pm", str(source), "--output_file", str(out), "--key", KEY, "--pruning_threshold", "0.0",
                 "-n", "L2", "-eq", "intersection", "-pg", "16", "-nf", "48",
                 "-el", "conv1", "block_1a_conv_1", "--json")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "pruned.tlt").is_file()
    data = last_json(result)
    assert data["options"]["excluded_layers"] == ["conv1", "block_1a_conv_1"]
    assert data["options"]["normalizer"] == "L2" and data["options"]["equalization_criterion"] == "intersection"
    filters = {layer["name"]: (layer["filters_before"], layer["filters_after"]) for layer in data["layers"]}
    assert filters["conv1"] == (64, 64) and filters["block_1a_conv_1"] == (64, 64)
    assert filters["block_2a_conv_1"] == (128, 64)  # the zero half goes, a multiple of 16
    assert filters["block_1a_conv_2"] == (64, 48)  # 32 non-zero filters, raised to -nf 48


@pytest.mark.parametrize("args, message", [
    (["-m", "{missing}", "-k", KEY], "no such model file"),
    (["-k", "not-the-key"], "key"),
    (["-k", KEY, "-pth", "1.5"], "pruning_threshold"),
    (["-k", KEY, "-el", "block_1a_conv_11"], "did you mean 'block_1a_conv_1'"),
    (["-k", KEY, "-eq", "average"], "equalization_criterion"),
    (["-k", KEY, "-n", "l1"], "normalizer"),
    (["-k", KEY, "-o", "{out_dir}/model.hdf5"], ".tlt"),
    (["-k", KEY, "conv1"], "unexpected argument"),
])
def test_bad_inputs_exit_2_and_leave_no_output(trained, tmp_path, args, message):
    source, _ = trained
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    args = [a.format(missing=tmp_path / "missing.tlt", out_dir=out_dir) for a in args]
    if "-m" not in args:
        args = ["-m", str(source), *args]
    if "-o" not in args:
        args += ["-o", str(out_dir / "model_pruned.tlt")]
    result = run(*args, "--json")
    assert result.exit_code == 2, result.output
    error = last_json(result)["error"]
    assert message in error
    assert list(out_dir.iterdir()) == []
