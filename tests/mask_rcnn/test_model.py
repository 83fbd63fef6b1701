"""The MaskRCNN models on a tiny config: names, shapes, outputs, freezing, decay, training, save/load."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from tltk.backbones.layers import FrozenStatsBatchNormalization  # noqa: E402
from tltk.mask_rcnn.losses import LOSS_NAMES, mask_rcnn_loss  # noqa: E402
from tltk.mask_rcnn.model import (  # noqa: E402
    ONNX_OUTPUT_NAMES,
    build_mask_rcnn,
    tao_weight_decay,
    training_inputs,
)

_spec = importlib.util.spec_from_file_location("_tiny_model", Path(__file__).with_name("_tiny_model.py"))
assert _spec is not None and _spec.loader is not None
tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny)

TAO_LAYERS = ["conv1", "bn_conv1", "block_1a_conv_1", "block_1a_bn_1", "block_4a_relu", "l2", "l5", "FPN_up_2",
              "FPN_add_4", "post_hoc_d2", "post_hoc_d5", "p6", "rpn", "rpn-class", "rpn-box", "fc6", "fc7",
              "class-predict", "box-predict", "mask-conv-l0", "mask-conv-l3", "conv5-mask", "mask_fcn_logits",
              "generate_detections", "multilevel_crop_resize", "multilevel_crop_resize_1"]


@pytest.fixture(scope="module")
def models():
    params = tiny.tiny_params(freeze_bn=True, freeze_blocks=(0,))  # TAO's usual settings
    inference, training = build_mask_rcnn(params)
    return params, inference, training


def test_names_shapes_and_shared_weights(models) -> None:
    params, inference, training = models
    names = {layer.name for layer in inference.layers}
    assert not [n for n in TAO_LAYERS if n not in names]
    assert inference.input.shape == (None, 3, 128, 128) and inference.input.name == "Input"
    assert list(inference.output_names) == list(ONNX_OUTPUT_NAMES)
    assert inference.get_layer("rpn-class").kernel.shape == (1, 1, 256, 3)
    assert inference.get_layer("rpn-box").kernel.shape == (1, 1, 256, 12)
    assert inference.get_layer("fc6").kernel.shape == (256 * 7 * 7, 64)
    assert inference.get_layer("box-predict").kernel.shape == (64, 4 * 3)
    assert inference.get_layer("conv5-mask").kernel.shape == (2, 2, 256, 256)
    assert inference.get_layer("mask_fcn_logits").kernel.shape == (1, 1, 256, 3)
    assert not [layer for layer in inference.layers if type(layer).__name__ == "Lambda"]
    # the training graph reuses the very same variables
    inference_ids = {id(v) for v in inference.weights}
    assert {id(v) for v in training.trainable_weights} <= inference_ids
    assert len(training.trainable_weights) == len(inference.trainable_weights)


def test_inference_outputs_follow_tao_contract(models) -> None:
    params, inference, _ = models
    images, _ = tiny.synthetic_batch(params)
    out = inference(images)
    det = out["generate_detections"].numpy()
    masks = out["mask_fcn_logits"].numpy()
    assert det.shape == (2, 10, 6) and masks.shape == (2, 10, 3, 28, 28)
    scores = det[..., 5]
    assert np.all(np.diff(scores, axis=1) <= 0)
    valid = scores > 0
    assert valid.any()
    assert set(np.unique(det[..., 4][valid])) <= {1.0, 2.0}
    assert np.all(det[..., :4][valid] >= 0) and np.all(det[..., :4][valid] <= 127)
    assert np.all(det[~valid] == [0, 0, 0, 0, -1, 0])


def test_training_outputs(models) -> None:
    params, _, training = models
    images, targets = tiny.synthetic_batch(params)
    out = training(training_inputs(images, targets), training=True)
    assert out["rpn_score_2"].shape == (2, 32, 32, 3) and out["rpn_box_6"].shape == (2, 2, 2, 12)
    assert out["class_outputs"].shape == (2, 32, 3) and out["box_outputs"].shape == (2, 32, 12)
    assert out["mask_outputs"].shape == (2, 8, 28, 28) and out["mask_targets"].shape == (2, 8, 28, 28)
    fg = out["class_targets"].numpy() > 0
    assert fg.sum(axis=1).min() >= 1  # the ground-truth boxes are candidates themselves
    assert fg.sum(axis=1).max() <= 8  # floor(0.25 * 32)
    np.testing.assert_array_equal(out["mask_weights"].numpy(), fg[:, :8].astype(np.float32))
    total, parts = mask_rcnn_loss(out, targets, params)
    assert set(parts) == set(LOSS_NAMES) and np.isfinite(total.numpy())


def test_freezing() -> None:
    params = tiny.tiny_params(freeze_blocks=(0, 1), freeze_bn=True, include_mask=False)
    inference, training = build_mask_rcnn(params)
    assert not inference.get_layer("conv1").trainable
    assert not inference.get_layer("block_1a_conv_1").trainable
    assert inference.get_layer("block_2a_conv_1").trainable
    bn = inference.get_layer("block_1a_bn_1")
    assert isinstance(bn, FrozenStatsBatchNormalization) and bn.trainable
    assert {w.name for w in bn.trainable_weights} == {"gamma", "beta"}
    assert list(inference.output_names) == ["generate_detections"]
    images, targets = tiny.synthetic_batch(params)
    before = bn.moving_mean.numpy().copy()
    training(training_inputs(images, targets), training=True)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), before)


def test_weight_decay_covers_trainable_kernels_and_gammas() -> None:
    assert tao_weight_decay(0.0, 0.0) is None
    params = tiny.tiny_params(freeze_blocks=(0,))
    inference, training = build_mask_rcnn(params, kernel_regularizer=tao_weight_decay(0.0, 1e-4))
    decayed = [w for w in training.trainable_weights if w.name in ("kernel", "gamma")]
    assert len(training.losses) == len(decayed)
    expected = sum(0.5 * 1e-4 * float(np.sum(np.square(w.numpy()))) for w in decayed)
    assert float(sum(loss.numpy() for loss in training.losses)) == pytest.approx(expected, rel=1e-4)
    assert "conv1" not in {w.path.split("/")[0] for w in decayed}


def test_gradient_steps_decrease_the_loss() -> None:
    keras.utils.set_random_seed(0)
    params = tiny.tiny_params(train_rpn_post_nms_topn=28)
    _, training = build_mask_rcnn(params)
    images, targets = tiny.synthetic_batch(params)
    inputs = training_inputs(images, targets)
    optimizer = keras.optimizers.SGD(learning_rate=0.005, momentum=0.9)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            total, _ = mask_rcnn_loss(training(inputs, training=True), targets, params)
        grads = tape.gradient(total, training.trainable_variables)
        optimizer.apply_gradients(zip(grads, training.trainable_variables))
        return total

    losses = [float(step()) for _ in range(10)]
    assert np.all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.7 * losses[0], losses


def test_save_load_round_trip(models, tmp_path) -> None:
    params, inference, _ = models
    path = tmp_path / "mask_rcnn.keras"
    inference.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    images, _ = tiny.synthetic_batch(params)
    ref = inference(images)
    got = loaded(images)
    for key in ref:
        np.testing.assert_array_equal(got[key].numpy(), ref[key].numpy())


@pytest.mark.parametrize("nlayers, taps", [
    (18, ("block_1b_relu", "block_2b_relu", "block_3b_relu", "block_4b_relu")),
    (50, ("block_1c_relu", "block_2d_relu", "block_3f_relu", "block_4c_relu")),
    (101, ("block_1c_relu", "block_2d_relu", "block_3f_relu", "block_4c_relu")),  # TAO's C4 quirk
])
def test_resnets_feed_tao_taps_to_the_fpn(nlayers: int, taps: tuple[str, ...]) -> None:
    inference, _ = build_mask_rcnn(tiny.tiny_params(nlayers=nlayers, include_mask=False))
    fed = tuple(inference.get_layer(f"l{level}").input._keras_history.operation.name for level in (2, 3, 4, 5))
    assert fed == taps
    assert inference.get_layer("l2").kernel.shape[-1] == 256
