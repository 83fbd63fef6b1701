"""Shared battery for every backbone family: build, names, stride, training step, save/load, freezing."""

from __future__ import annotations

import logging
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tltk.backbones import BACKBONES, build_backbone, nchw_to_nhwc
from tltk.backbones.layers import BackboneConfig, conv2d, max_pool, unit_letter
from tltk.errors import SpecError

# (arch, num_layers, output channels, weight-carrying conv layers with all_projections False)
FAST = [
    ("resnet", 10, 512, 13),
    ("resnet", 18, 512, 21),
    ("resnet", 34, 512, 37),
    ("vgg", 16, 512, 13),
    ("mobilenet_v1", 0, 512, 23),
    ("mobilenet_v2", 0, 96, 39),
    ("googlenet", 0, 1024, 57),
]
SLOW = [
    ("resnet", 50, 2048, 53),
    ("resnet", 101, 2048, 104),
    ("vgg", 19, 512, 16),
]
FAMILIES = [pytest.param(*f, id=f"{f[0]}{f[1] or ''}") for f in FAST] + [
    pytest.param(*f, id=f"{f[0]}{f[1]}", marks=pytest.mark.slow) for f in SLOW
]

# A few TAO layer names per family (fact sheet 8.3) that must exist.
KEY_LAYERS = {
    ("resnet", 10): [
        "conv1",
        "bn_conv1",
        "block_1a_conv_1",
        "block_1a_bn_1",
        "block_1a_relu_1",
        "block_1a_conv_2",
        "block_1a_conv_shortcut",
        "block_1a_bn_shortcut",
        "block_1a_relu",
        "block_4a_relu",
    ],
    ("resnet", 18): ["conv1", "bn_conv1", "block_1b_conv_2", "block_2a_conv_shortcut", "block_4b_relu"],
    ("resnet", 34): ["block_2d_conv_2", "block_3f_relu", "block_4c_bn_2"],
    ("resnet", 50): ["block_1a_conv_3", "block_1a_bn_3", "block_1a_relu_2", "block_3f_relu", "block_4c_relu"],
    ("resnet", 101): ["block_3w_conv_3", "block_3w_relu", "block_3f_relu", "block_4c_relu"],
    ("vgg", 16): ["block_1a_conv_1", "block_1a_bn_1", "block_1a_relu", "block_1b_conv_1", "block_5c_conv_1"],
    ("vgg", 19): ["block_3d_conv_1", "block_5d_relu"],
    ("mobilenet_v1", 0): [
        "conv1",
        "conv1_bn",
        "conv_block_relu",
        "conv_dw_1",
        "conv_dw_1_bn",
        "conv_pw_1",
        "conv_pw_1_bn",
        "conv_pw_relu_1",
        "conv_dw_11",
        "conv_pw_11_bn",
    ],
    ("mobilenet_v2", 0): [
        "conv1",
        "bn_conv1",
        "re_lu_0",
        "expanded_conv_depthwise",
        "expanded_conv_project_bn",
        "block_1_expand",
        "block_1_expand_bn",
        "re_lu_2",
        "block_1_depthwise",
        "block_1_depthwise_bn",
        "block_1_project",
        "block_1_project_bn",
        "block_2_add",
        "block_12_add",
    ],
    ("googlenet", 0): [
        "conv1",
        "bn_conv1",
        "pool1",
        "conv2_reduce",
        "bn_conv2_reduce",
        "conv2",
        "bn_conv2",
        "pool2",
        "inception_3a_1x1",
        "inception_3a_1x1_bn",
        "inception_3a_3x3_reduce",
        "inception_3a_5x5",
        "inception_3a_pool",
        "inception_3a_pool_proj_bn",
        "inception_3a_output",
        "pool3",
        "inception_4e_output",
        "inception_5b_output",
    ],
}

# freeze_blocks -> (layers that must be frozen, conv layers that must stay trainable)
FREEZE_CASES = {
    "resnet": (
        [0, 2],
        ["conv1", "block_2a_conv_1", "block_2a_conv_shortcut"],
        ["block_1a_conv_1", "block_3a_conv_1"],
    ),
    "vgg": ([1], ["block_1a_conv_1", "block_1b_conv_1"], ["block_2a_conv_1"]),
    "mobilenet_v1": ([0, 3], ["conv1", "conv_dw_3", "conv_pw_3"], ["conv_dw_2", "conv_pw_4"]),
    "mobilenet_v2": (
        [0, 1, 3],
        [
            "conv1",
            "expanded_conv_depthwise",
            "expanded_conv_project",
            "block_2_expand",
            "block_2_depthwise",
            "block_2_project",
        ],
        ["block_1_expand", "block_3_project"],
    ),
    "googlenet": (
        [0, 2],
        ["conv1", "conv2_reduce", "conv2", "inception_3b_1x1", "inception_3b_5x5"],
        ["inception_3a_1x1", "inception_4a_3x3"],
    ),
}

WEIGHT_TYPES = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)


def make_model(arch: str, num_layers: int, channels: int = 3, height: int = 64, width: int = 96, **kwargs):
    inputs = keras.Input((channels, height, width), name="input_1")
    out = build_backbone(arch, num_layers, nchw_to_nhwc(inputs), **kwargs)
    return keras.Model(inputs, out.output, name=out.name), out


def conv_layers(model):
    return [layer for layer in model.layers if isinstance(layer, WEIGHT_TYPES)]


_BUILT: dict[tuple[str, int], tuple] = {}


def cached_model(arch: str, num_layers: int):
    """One 3x64x96 model per family, shared by the build and training tests of this module."""
    if (arch, num_layers) not in _BUILT:
        _BUILT[(arch, num_layers)] = make_model(arch, num_layers)
    return _BUILT[(arch, num_layers)]


@pytest.mark.parametrize("arch,num_layers,out_channels,n_convs", FAMILIES)
def test_build_shapes_names_and_stride(arch, num_layers, out_channels, n_convs):
    gray, _ = make_model(arch, num_layers, channels=1)
    model, out = cached_model(arch, num_layers)
    for channels, m in ((3, model), (1, gray)):
        assert m.inputs[0].shape[1:] == (channels, 64, 96)
        assert tuple(m.output.shape[1:]) == (64 // 16, 96 // 16, out_channels)
        first_conv = conv_layers(m)[0]
        assert first_conv.name == ("block_1a_conv_1" if arch == "vgg" else "conv1")
        assert first_conv.kernel.shape[2] == channels
    assert out.output_stride == 16
    names = {layer.name for layer in model.layers}
    missing = [n for n in KEY_LAYERS[(arch, num_layers)] if n not in names]
    assert not missing
    assert len(conv_layers(model)) == n_convs
    assert len(names) == len(model.layers)  # unique names
    # one BN per conv
    n_bn = sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
    assert n_bn == n_convs
    # levels C1..C4 at strides 2..16
    for level, stride in (("C1", 2), ("C2", 4), ("C3", 8), ("C4", 16)):
        assert tuple(out.levels[level].shape[1:3]) == (64 // stride, 96 // stride), level


@pytest.mark.parametrize("arch,num_layers,out_channels,n_convs", FAMILIES)
def test_training_step_and_save_load(arch, num_layers, out_channels, n_convs, tmp_path):
    model, _ = cached_model(arch, num_layers)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(2, 3, 64, 96)).astype("float32")
    conv1 = conv_layers(model)[0]
    before = conv1.kernel.numpy().copy()
    bn = next(layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization))
    mean_before = bn.moving_mean.numpy().copy()
    optimizer = keras.optimizers.SGD(learning_rate=0.1)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(model(x, training=True) - 1.0))
    grads = tape.gradient(loss, model.trainable_variables)
    assert all(g is not None for g in grads)
    optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
    assert np.abs(conv1.kernel.numpy() - before).max() > 0
    assert np.abs(bn.moving_mean.numpy() - mean_before).max() > 0

    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path, compile=False)
    expected = model(x, training=False).numpy()
    np.testing.assert_array_equal(loaded(x, training=False).numpy(), expected)
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]


@pytest.mark.parametrize("arch", list(FREEZE_CASES))
def test_freeze_blocks(arch):
    num_layers = {"resnet": 18, "vgg": 16}.get(arch, 0)
    ids, frozen, trainable = FREEZE_CASES[arch]
    model, _ = make_model(arch, num_layers, height=32, width=32, freeze_blocks=[float(i) for i in ids])
    for name in frozen:
        layer = model.get_layer(name)
        assert not layer.trainable, name
        assert not layer.trainable_weights, name
    for name in trainable:
        assert model.get_layer(name).trainable, name
    # BN layers of frozen blocks stay trainable (TAO); only freeze_bn freezes them
    assert all(
        layer.trainable for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)
    )
    n_frozen = sum(not layer.trainable for layer in conv_layers(model))
    assert n_frozen >= len(frozen)


def test_freeze_blocks_exact_count_resnet18():
    # blocks 0 and 1 of resnet18: conv1 + block_1a (2 convs + shortcut) + block_1b (2 convs) = 6 convs
    model, _ = make_model("resnet", 18, height=32, width=32, freeze_blocks=[0, 1])
    frozen = sorted(layer.name for layer in conv_layers(model) if not layer.trainable)
    assert frozen == sorted(
        [
            "conv1",
            "block_1a_conv_1",
            "block_1a_conv_2",
            "block_1a_conv_shortcut",
            "block_1b_conv_1",
            "block_1b_conv_2",
        ]
    )


def test_frozen_block_does_not_train():
    model, _ = make_model("resnet", 10, height=32, width=32, freeze_blocks=[1])
    x = np.random.default_rng(1).uniform(size=(2, 3, 32, 32)).astype("float32")
    frozen_before = model.get_layer("block_1a_conv_1").kernel.numpy().copy()
    free_before = model.get_layer("block_2a_conv_1").kernel.numpy().copy()
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(model(x, training=True)))
    grads = tape.gradient(loss, model.trainable_variables)
    keras.optimizers.SGD(0.5).apply_gradients(zip(grads, model.trainable_variables, strict=True))
    np.testing.assert_array_equal(model.get_layer("block_1a_conv_1").kernel.numpy(), frozen_before)
    assert np.abs(model.get_layer("block_2a_conv_1").kernel.numpy() - free_before).max() > 0


def test_freeze_bn_uses_moving_statistics():
    model, _ = make_model("resnet", 10, height=32, width=32, freeze_bn=True)
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(bns) == 13
    assert all(not layer.trainable for layer in bns)
    x = np.random.default_rng(2).uniform(size=(2, 3, 32, 32)).astype("float32")
    np.testing.assert_allclose(
        model(x, training=True).numpy(), model(x, training=False).numpy(), rtol=1e-6, atol=1e-6
    )
    mean_before = bns[0].moving_mean.numpy().copy()
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(model(x, training=True))
    tape.gradient(loss, model.trainable_variables)
    np.testing.assert_array_equal(bns[0].moving_mean.numpy(), mean_before)
    # convs stay trainable
    assert model.get_layer("conv1").trainable


def test_invalid_freeze_ids_warn_and_freeze_nothing(caplog):
    with caplog.at_level(logging.WARNING, logger="tltk.backbones"):
        model, _ = make_model("resnet", 10, height=32, width=32, freeze_blocks=[7.0, 1.5])
    assert all(layer.trainable for layer in conv_layers(model))
    assert "7 is not a block of resnet" in caplog.text
    assert "1.5 is not a block of resnet" in caplog.text


def test_all_projections_adds_shortcut_on_every_unit():
    plain, _ = make_model("resnet", 18, height=32, width=32)
    proj, _ = make_model("resnet", 18, height=32, width=32, all_projections=True)
    plain_shortcuts = sorted(layer.name for layer in plain.layers if layer.name.endswith("conv_shortcut"))
    proj_shortcuts = sorted(layer.name for layer in proj.layers if layer.name.endswith("conv_shortcut"))
    assert plain_shortcuts == [f"block_{b}a_conv_shortcut" for b in range(1, 5)]
    assert proj_shortcuts == sorted(f"block_{b}{u}_conv_shortcut" for b in range(1, 5) for u in "ab")
    # 4 extra 1x1 convs (64, 128, 256, 512 squared + bias) and their BNs (4 * channels)
    extra = sum(c * c + c + 4 * c for c in (64, 128, 256, 512))
    assert proj.count_params() - plain.count_params() == extra


def test_use_batch_norm_false_has_no_bn_and_biases():
    model, _ = make_model("resnet", 10, height=32, width=32, use_batch_norm=False)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
    assert model.get_layer("conv1").use_bias
    assert model.name == "resnet10_nopool"
    mnv1, _ = make_model("mobilenet_v1", 0, height=32, width=32, use_batch_norm=False)
    assert not mnv1.get_layer("conv1").use_bias  # TAO's MobileNets never use conv bias


def test_use_pooling_keeps_stride_16():
    model, out = make_model("resnet", 18, use_pooling=True)
    assert model.name == "resnet18_bn"
    assert "pool1" in {layer.name for layer in model.layers}
    assert tuple(model.output.shape[1:3]) == (4, 6)
    vgg, _ = make_model("vgg", 16, use_pooling=True)
    names = {layer.name for layer in vgg.layers}
    assert {"block1_pool", "block2_pool", "block3_pool", "block4_pool"} <= names
    assert "block5_pool" not in names
    assert tuple(vgg.output.shape[1:3]) == (4, 6)


def test_resnet_stride_32_levels_for_feature_pyramids():
    model, out = make_model(
        "resnet", 50, height=128, width=192, use_pooling=True, output_stride=32, use_bias=False
    )
    assert out.output_stride == 32
    shapes = {k: tuple(v.shape[1:]) for k, v in out.levels.items()}
    assert shapes == {
        "C1": (64, 96, 64),
        "C2": (32, 48, 256),
        "C3": (16, 24, 512),
        "C4": (8, 12, 1024),
        "C5": (4, 6, 2048),
    }
    # MaskRCNN's resnet50 taps by name, bottleneck unit names
    for name in ("block_1c_relu", "block_2d_relu", "block_3f_relu", "block_4c_relu"):
        assert name in out.endpoints
    assert "block_1a_relu_2" in {layer.name for layer in model.layers}
    assert out.endpoints["block_4c_relu"] is out.output
    conv3 = model.get_layer("block_1a_conv_3")
    assert not conv3.use_bias and tuple(conv3.kernel.shape) == (1, 1, 64, 256)
    assert tuple(model.get_layer("block_1a_conv_shortcut").kernel.shape) == (1, 1, 64, 256)


def test_unknown_arch_and_depth():
    inputs = keras.Input((32, 32, 3))
    with pytest.raises(SpecError) as err:
        build_backbone("resnt", 18, inputs)
    assert "did you mean 'resnet'" in str(err.value)
    assert "mobilenet_v2" in str(err.value)
    with pytest.raises(SpecError) as err:
        build_backbone("resnet", 20, inputs)
    assert "did you mean 18" in str(err.value) and "10, 18, 34, 50, 101" in str(err.value)
    with pytest.raises(SpecError) as err:
        build_backbone("vgg", 18, inputs)
    assert "16, 19" in str(err.value)
    with pytest.raises(SpecError):
        build_backbone("resnet", 18, inputs, dropout_rate=1.5)
    assert set(BACKBONES) == {"resnet", "vgg", "mobilenet_v1", "mobilenet_v2", "googlenet"}


def test_dropout_rate_adds_dropout_on_output():
    model, _ = make_model("resnet", 10, height=32, width=32, dropout_rate=0.1)
    assert isinstance(model.layers[-1], keras.layers.Dropout)
    assert model.layers[-1].rate == pytest.approx(0.1)


def test_symmetric_padding_matches_tao():
    # 4x4 ones, 3x3 ones kernel, stride 2. TAO pads 1 on every side: the top-left window covers 2x2 ones = 4
    # and the bottom-right covers rows/cols 1..3 = 9.  TF "same" would pad only bottom/right (top-left = 9).
    inputs = keras.Input((4, 4, 1))
    y = conv2d(inputs, 1, 3, strides=2, name="c", config=BackboneConfig(), use_bias=False)
    model = keras.Model(inputs, y)
    model.get_layer("c").kernel.assign(np.ones((3, 3, 1, 1), "float32"))
    out = model(np.ones((1, 4, 4, 1), "float32")).numpy()[0, :, :, 0]
    np.testing.assert_array_equal(out, [[4.0, 6.0], [6.0, 9.0]])
    # 7x7 stride 2 pads 3 each side: top-left window covers 4x4 ones of an 8x8 input
    inputs = keras.Input((8, 8, 1))
    y = conv2d(inputs, 1, 7, strides=2, name="c7", config=BackboneConfig(), use_bias=False)
    model = keras.Model(inputs, y)
    model.get_layer("c7").kernel.assign(np.ones((7, 7, 1, 1), "float32"))
    out = model(np.ones((1, 8, 8, 1), "float32")).numpy()[0, :, :, 0]
    assert out.shape == (4, 4)
    assert out[0, 0] == 16.0 and out[3, 3] == 25.0
    # 3x3/2 max-pool pads one zero on each side
    inputs = keras.Input((4, 4, 1))
    model = keras.Model(inputs, max_pool(inputs, 3, 2, name="p"))
    x = np.arange(16, dtype="float32").reshape(1, 4, 4, 1)
    np.testing.assert_array_equal(model(x).numpy()[0, :, :, 0], [[5.0, 7.0], [13.0, 15.0]])


def test_unit_letters():
    assert [unit_letter(i) for i in (0, 1, 22, 25, 26, 27)] == ["a", "b", "w", "z", "aa", "ab"]
