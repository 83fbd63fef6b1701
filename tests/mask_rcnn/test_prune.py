"""MaskRCNN pruning: tied FPN laterals, the shared RPN head, protected layers, retraining from
``pruned_model_path`` and the ``tltk mask_rcnn prune`` command."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from google.protobuf import text_format

from tltk.core.pruning import PruningOptions, prune_model
from tltk.errors import SpecError
from tltk.mask_rcnn.model import build_mask_rcnn, rebuild_mask_rcnn, training_inputs
from tltk.mask_rcnn.task import PROTECTED_LAYERS, MaskRCNNTask
from tltk.modelfile.container import load_keras_model, save_keras_model

_spec = importlib.util.spec_from_file_location("_tiny_model", Path(__file__).with_name("_tiny_model.py"))
assert _spec is not None and _spec.loader is not None
tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny)

EXACT = PruningOptions(pruning_threshold=0.0, pruning_granularity=1, min_num_filters=0)
#: Filters zeroed (kernel and bias) before pruning; all of them feed a ReLU or a linear consumer,
#: so they contribute nothing and pruning them must not change any output.
ZEROED = {"l2": [3, 7], "l3": [3, 7], "l4": [3, 7], "l5": [3, 7, 9], "rpn": [0, 5], "fc6": [1, 2, 3], "fc7": [4],
          "mask-conv-l1": [9], "conv5-mask": [2, 3]}


def _zero(model: keras.Model, name: str, filters: list[int]) -> None:
    layer = model.get_layer(name)
    kernel, bias = layer.get_weights()
    if isinstance(layer, keras.layers.Conv2DTranspose):  # (kh, kw, out, in)
        kernel[:, :, filters, :] = 0.0
    else:
        kernel[..., filters] = 0.0
    bias[filters] = 0.0
    layer.set_weights([kernel, bias])


@pytest.fixture(scope="module")
def pruned_pair() -> tuple[keras.Model, keras.Model, object]:
    inference, _ = build_mask_rcnn(tiny.tiny_params())
    for name, filters in ZEROED.items():
        _zero(inference, name, filters)
    pruned, report = prune_model(inference, EXACT, protected_layers=PROTECTED_LAYERS)
    return inference, pruned, report


def test_zero_filters_go_and_nothing_else_changes(pruned_pair) -> None:
    inference, pruned, report = pruned_pair
    after = {layer.name: (layer.filters_before, layer.filters_after) for layer in report.pruned_layers()}
    # the laterals are tied through the top-down adds: only the channels zero in all four go (3, 7)
    assert after == {"l2": (256, 254), "l3": (256, 254), "l4": (256, 254), "l5": (256, 254), "rpn": (256, 254),
                     "fc6": (64, 61), "fc7": (64, 63), "mask-conv-l1": (256, 255), "conv5-mask": (256, 254)}
    # the RPN head shared by the 5 levels is one layer with one kernel, its predictions stay whole
    assert pruned.get_layer("rpn").kernel.shape == (3, 3, 256, 254)
    assert pruned.get_layer("rpn-class").kernel.shape == (1, 1, 254, 3)
    for name in ("post_hoc_d2", "post_hoc_d5", "rpn-box", "class-predict", "box-predict", "mask_fcn_logits"):
        assert pruned.get_layer(name).get_weights()[0].shape[-1] == inference.get_layer(name).get_weights()[0].shape[-1]
    assert pruned.get_layer("post_hoc_d3").kernel.shape == (3, 3, 254, 256)
    removed = {
        "l2..l5 (1x1, inputs 64/128/256/512)": 2 * (65 + 129 + 257 + 513),
        "post_hoc_d2..d5 inputs": 4 * 9 * 2 * 256,
        "rpn (3x3x256)": 2 * (9 * 256 + 1),
        "rpn-class, rpn-box inputs": 2 * 3 + 2 * 12,
        "fc6 (7*7*256 inputs)": 3 * (7 * 7 * 256 + 1),
        "fc7 (64x64 -> 61x63)": (64 * 64 + 64) - (61 * 63 + 63),
        "class-predict, box-predict inputs": 3 + 12,
        "mask-conv-l1 and mask-conv-l2's inputs": (9 * 256 + 1) + 9 * 256,
        "conv5-mask (2x2x256) and mask_fcn_logits inputs": 2 * (4 * 256 + 1) + 2 * 3,
    }
    assert report.params_before - report.params_after == sum(removed.values()) == 69569
    images, _ = tiny.synthetic_batch(tiny.tiny_params(), batch=2)
    want, got = inference(images), pruned(images)
    for key in want:
        np.testing.assert_allclose(np.asarray(got[key]), np.asarray(want[key]), atol=1e-4)


def test_rebuilt_graphs_reuse_the_pruned_layers(pruned_pair) -> None:
    inference, pruned, _ = pruned_pair
    params = tiny.tiny_params()
    rebuilt, training = rebuild_mask_rcnn(pruned, params, kernel_regularizer=keras.regularizers.L2(1e-4))
    assert rebuilt.count_params() == pruned.count_params()
    assert rebuilt.get_layer("fc6") is pruned.get_layer("fc6")
    images, targets = tiny.synthetic_batch(params, batch=2)
    want, got = inference(images), rebuilt(images)
    np.testing.assert_allclose(np.asarray(got["generate_detections"]), np.asarray(want["generate_detections"]),
                               atol=1e-4)
    outputs = training(training_inputs(images, targets), training=True)
    assert outputs["class_outputs"].shape[-1] == params.num_classes
    assert outputs["mask_outputs"].shape[-2:] == (28, 28)
    # the spec's weight decay is on every kernel and BN gamma of the reused layers
    assert len(training.losses) == sum(1 for layer in rebuilt.layers for w in ("kernel", "gamma")
                                       if getattr(layer, w, None) is not None and getattr(layer, w).trainable)
    with pytest.raises(SpecError, match="num_classes is 5 in the spec but 3 in the model"):
        rebuild_mask_rcnn(pruned, params.replace(num_classes=5))
    with pytest.raises(SpecError, match="image_size"):
        rebuild_mask_rcnn(pruned, params.replace(image_size=(128, 192)))


def _spec_file(tmp_path: Path, pruned_model: str, **changes: object) -> Path:
    exp = tiny.tiny_experiment()
    exp.pruned_model_path = pruned_model
    for name, value in changes.items():
        setattr(exp.data_config, name, value)
    path = tmp_path / "retrain.txt"
    path.write_text(text_format.MessageToString(exp))
    return path


def test_task_retrains_from_pruned_model_path(pruned_pair, tmp_path: Path) -> None:
    from tltk.models import load_spec

    _, pruned, _ = pruned_pair
    save_keras_model(tmp_path / "pruned.tlt", pruned, {"model_kind": "mask_rcnn", "input_shape": [3, 128, 128]})
    task = MaskRCNNTask(load_spec(str(_spec_file(tmp_path, "pruned.tlt")), model="mask_rcnn", kind="experiment"))
    network = task.build_network()
    assert network.count_params() == pruned.count_params()
    assert network.get_layer("l2").filters == 254
    images, targets = tiny.synthetic_batch(task.params, batch=2)
    outputs = task.training_forward(network, images, targets, training=True)
    loss, parts = task.compute_loss(outputs, targets)
    assert np.isfinite(float(loss)) and "mask_loss" in parts

    bad = MaskRCNNTask(load_spec(str(_spec_file(tmp_path, "pruned.tlt", num_classes=6)), model="mask_rcnn",
                                 kind="experiment"))
    with pytest.raises(SpecError, match="pruned_model_path .*pruned.tlt: data_config.num_classes is 6"):
        bad.build_network()


def test_prune_command_writes_a_smaller_model(pruned_pair, tmp_path: Path) -> None:
    from tltk.cli.app import cli

    inference, _, _ = pruned_pair
    source = tmp_path / "model.tlt"
    save_keras_model(source, inference, {"model_kind": "mask_rcnn", "input_shape": [3, 128, 128],
                                         "class_names": ["a", "b"]})
    out = tmp_path / "pruned.tlt"
    result = CliRunner().invoke(cli, ["mask_rcnn", "prune", "-m", str(source), "-o", str(out), "-pth", "0.0",
                                      "-pg", "1", "-nf", "0", "-el", "fc7", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert data["params_after"] < data["params_before"]
    filters = {layer["name"]: layer["filters_after"] for layer in data["layers"]}
    assert filters["fc6"] == 61 and filters["fc7"] == 64  # fc7 excluded with -el
    model, metadata = load_keras_model(out)
    assert metadata["model_kind"] == "mask_rcnn" and metadata["class_names"] == ["a", "b"]
    assert metadata["pruned"]["filters"]["rpn"] == [256, 254]
    assert model.get_layer("rpn").filters == 254
    assert f'retrain with pruned_model_path: "{out}"' in result.stderr


def test_frozen_statistics_batch_norm_is_pruned_with_its_convolution() -> None:
    """TAO's default freeze_bn: the backbone BNs are FrozenStatsBatchNormalization, sliced like any BN."""
    from tltk.backbones.layers import FrozenStatsBatchNormalization

    params = tiny.tiny_params(freeze_bn=True, freeze_blocks=(0, 1))
    inference, _ = build_mask_rcnn(params)
    assert isinstance(inference.get_layer("bn_conv1"), FrozenStatsBatchNormalization)
    for name in ("conv1", "bn_conv1"):  # channel 5 of the stem contributes nothing
        layer = inference.get_layer(name)
        weights = layer.get_weights()
        if name == "conv1":
            weights[0][..., 5] = 0.0
        else:
            weights[0][5] = weights[1][5] = 0.0  # gamma, beta
        layer.set_weights(weights)
    pruned, report = prune_model(inference, EXACT, protected_layers=PROTECTED_LAYERS)
    assert {(r.name, r.filters_after) for r in report.pruned_layers()} == {("conv1", 63)}
    bn = pruned.get_layer("bn_conv1")
    assert isinstance(bn, FrozenStatsBatchNormalization) and bn.gamma.shape == (63,)
    assert pruned.get_layer("conv1").trainable is False  # freeze_blocks 0 stays frozen
    images, _ = tiny.synthetic_batch(params, batch=1)
    want, got = inference(images), pruned(images)
    for key in want:
        np.testing.assert_allclose(np.asarray(got[key]), np.asarray(want[key]), atol=1e-4)
