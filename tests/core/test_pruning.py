"""Channel pruning: statistics, kept sets by hand, slicing across Add/Depthwise/Concatenate/Dense,
exact outputs when only zero filters go, and the real backbones end to end."""

from __future__ import annotations

from types import SimpleNamespace

import keras
import numpy as np
import pytest

from tltk.backbones import nchw_to_nhwc, nhwc_to_nchw
from tltk.core.pruning import (
    EQUALIZATION_CRITERIA,
    PruningOptions,
    count_flops,
    equalize,
    filter_norms,
    kept_filter_count,
    normalize_norms,
    prune_model,
    select_filters,
)
from tltk.detectnet_v2.model import HEAD_NAMES, build_detectnet_v2_model
from tltk.errors import InvalidInputError, UsageError

# Keep exactly the filters whose normalised statistic is above the threshold.
EXACT = dict(pruning_granularity=1, min_num_filters=0)


def set_filter_norms(layer: keras.layers.Layer, norms: list[float]) -> None:
    """Give each output filter of a Conv2D/Dense (or channel of a DepthwiseConv2D) an exact L2 norm."""
    kernel = np.zeros(tuple(layer.kernel.shape), np.float32)
    for i, norm in enumerate(norms):
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            kernel[0, 0, i, 0] = norm
        elif isinstance(layer, keras.layers.Conv2DTranspose):  # (kh, kw, out, in)
            kernel[0, 0, i, i % kernel.shape[3]] = norm
        elif isinstance(layer, keras.layers.Dense):
            kernel[i % kernel.shape[0], i] = norm
        else:
            kernel[0, 0, i % kernel.shape[2], i] = norm
    weights = [kernel] + [np.zeros(tuple(w.shape), np.float32) for w in layer.weights[1:]]
    layer.set_weights(weights)


def randomize(model: keras.Model, seed: int = 0) -> None:
    """Random weights everywhere, BN statistics positive and non-trivial."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if not layer.weights:
            continue
        arrays = []
        for w in layer.weights:
            shape = tuple(w.shape)
            if w.name in ("gamma", "moving_variance"):
                arrays.append(rng.uniform(0.5, 1.5, shape).astype(np.float32))
            else:
                arrays.append(rng.normal(0.0, 0.3, shape).astype(np.float32))
        layer.set_weights(arrays)


def nchw_input(channels: int = 3, size: int = 16) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """tltk's input layout: NCHW ``input_1`` and a Permute to NHWC."""
    inputs = keras.Input((channels, size, size), name="input_1")
    return inputs, nchw_to_nhwc(inputs)


def head(x: keras.KerasTensor, filters: int = 2) -> keras.KerasTensor:
    return nhwc_to_nchw(keras.layers.Conv2D(filters, 1, name="output_cov")(x), name="output_cov_nchw")


def kernel_of(model: keras.Model, name: str) -> np.ndarray:
    return np.asarray(model.get_layer(name).kernel.numpy())


# ---- statistics ---------------------------------------------------------------------------------

def test_filter_norms_use_the_output_axis_of_each_kernel_layout():
    conv = np.zeros((3, 3, 2, 4), np.float32)
    conv[1, 1, 0, 2], conv[0, 0, 1, 2] = 3.0, 4.0
    assert np.allclose(filter_norms(conv, 3), [0, 0, 5, 0])
    transpose = np.zeros((3, 3, 4, 2), np.float32)  # (kh, kw, out, in)
    transpose[0, 0, 1, :] = [1.0, 1.0]
    assert np.allclose(filter_norms(transpose, 2), [0, np.sqrt(2), 0, 0])
    dense = np.arange(6, dtype=np.float32).reshape(2, 3)  # (in, out)
    assert np.allclose(filter_norms(dense, 1), [3.0, np.sqrt(17), np.sqrt(29)])


def test_normalizers_max_and_l2():
    norms = np.array([1.0, 2.0, 4.0, 0.0])
    assert np.allclose(normalize_norms(norms, "max"), [0.25, 0.5, 1.0, 0.0])
    # TAO's L2: n * v / ||v||, so n equal filters score sqrt(n)
    assert np.allclose(normalize_norms(norms, "L2"), 4 * norms / np.sqrt(21.0))
    assert np.allclose(normalize_norms(np.full(64, 0.3), "L2"), 8.0)
    assert np.allclose(normalize_norms(np.zeros(3), "max"), 0.0)
    assert np.allclose(normalize_norms(np.zeros(3), "L2"), 0.0)
    with pytest.raises(UsageError):
        normalize_norms(norms, "l1")


def test_equalization_criteria():
    a, b = np.array([1.0, 0.25, 0.0]), np.array([0.5, 1.0, 0.5])
    assert np.allclose(equalize([a, b], "union"), [1.0, 1.0, 0.5])
    assert np.allclose(equalize([a, b], "intersection"), [0.5, 0.25, 0.0])
    assert np.allclose(equalize([a, b], "arithmetic_mean"), [0.75, 0.625, 0.25])
    assert np.allclose(equalize([a, b], "geometric_mean"), [np.sqrt(0.5), 0.5, 0.0])
    with pytest.raises(UsageError, match="unknown value"):
        equalize([a, b], "median")


def test_kept_count_threshold_minimum_granularity():
    stat = np.array([0.9, 0.05, 0.5, 0.2, 0.0, 0.3, 0.11, 0.1, 1.0, 0.0])
    assert kept_filter_count(stat, 0.1, 1, 0) == 6  # strictly above the threshold
    assert kept_filter_count(stat, 0.1, 4, 0) == 8  # rounded up to a multiple of 4
    assert kept_filter_count(stat, 0.1, 8, 0) == 8
    assert kept_filter_count(stat, 0.1, 16, 0) == 10  # capped at n
    assert kept_filter_count(stat, 0.95, 1, 3) == 3  # raised to min_num_filters
    assert kept_filter_count(stat, 0.95, 1, 16) == 10  # min(min_num_filters, n)
    assert kept_filter_count(np.zeros(5), 0.5, 1, 0) == 1  # never zero filters
    options = PruningOptions(pruning_threshold=0.1, **EXACT)
    assert select_filters(stat, options).tolist() == [0, 2, 3, 5, 6, 8]
    # ties go to the lower index; the result is in the original order
    tied = PruningOptions(pruning_threshold=0.9, pruning_granularity=1, min_num_filters=2)
    assert select_filters(np.array([0.2, 0.5, 0.5, 0.5]), tied).tolist() == [1, 2]


@pytest.mark.parametrize("changes, message", [
    (dict(normalizer="l1"), "normalizer"),
    (dict(equalization_criterion="unoin"), "did you mean 'union'"),
    (dict(pruning_granularity=0), "pruning_granularity"),
    (dict(min_num_filters=-1), "min_num_filters"),
    (dict(pruning_threshold=1.5), r"outside \[0, 1\]"),
    (dict(pruning_threshold=-0.1), r"outside \[0, 1\]"),
])
def test_invalid_options(changes, message):
    with pytest.raises(UsageError, match=message):
        PruningOptions(**changes).check()


# ---- hand-made models -----------------------------------------------------------------------------

NORMS = [1.0, 2.0, 3.0, 4.0, 8.0, 0.5, 6.0, 7.0]


def chain_model() -> keras.Model:
    inputs, x = nchw_input()
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv_a")(x)
    x = keras.layers.BatchNormalization(name="bn_a")(x)
    x = keras.layers.ReLU(name="relu_a")(x)
    x = keras.layers.ZeroPadding2D(1, name="pad")(x)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv_b")(x)
    return keras.Model(inputs, head(x), name="chain")


@pytest.mark.parametrize("normalizer, expected", [
    # max: NORMS / 8 > 0.3  <=>  norm > 2.4
    ("max", [2, 3, 4, 6, 7]),
    # L2: 8 * NORMS / ||NORMS|| > 0.3  <=>  norm > 0.502 (sqrt(179.25) = 13.39)
    ("L2", [0, 1, 2, 3, 4, 6, 7]),
])
def test_kept_filters_by_normalizer_and_weights_sliced(normalizer, expected):
    model = chain_model()
    randomize(model)
    set_filter_norms(model.get_layer("conv_a"), NORMS)
    model.get_layer("conv_a").bias.assign(np.arange(8, dtype=np.float32))
    options = PruningOptions(normalizer=normalizer, pruning_threshold=0.3, excluded_layers=("conv_b",), **EXACT)
    pruned, report = prune_model(model, options, protected_layers=HEAD_NAMES)
    assert [layer.name for layer in pruned.layers] == [layer.name for layer in model.layers]
    assert np.array_equal(kernel_of(pruned, "conv_a"), kernel_of(model, "conv_a")[..., expected])
    assert pruned.get_layer("conv_a").bias.numpy().tolist() == [float(i) for i in expected]
    for old, new in zip(model.get_layer("bn_a").get_weights(), pruned.get_layer("bn_a").get_weights()):
        assert np.array_equal(new, old[expected])
    assert np.array_equal(kernel_of(pruned, "conv_b"), kernel_of(model, "conv_b")[:, :, expected, :])
    filters = {layer.name: (layer.filters_before, layer.filters_after) for layer in report.layers}
    assert filters["conv_a"] == (8, len(expected))
    assert filters["conv_b"] == (4, 4) and filters["output_cov"] == (2, 2)
    assert pruned.output_shape == model.output_shape


def test_params_and_flops_counted_by_hand():
    model = chain_model()
    randomize(model)
    set_filter_norms(model.get_layer("conv_a"), NORMS)
    options = PruningOptions(pruning_threshold=0.3, excluded_layers=("conv_b",), **EXACT)
    pruned, report = prune_model(model, options, protected_layers=HEAD_NAMES)
    kept_a, b, size = 5, 4, 16
    conv_a = size * size * 3 * 3 * 3 * kept_a
    conv_b = 9 * 9 * 3 * 3 * kept_a * b  # after the 1-pixel pad and the 2x2 pool: 9x9
    heads = 9 * 9 * b * 2
    assert report.flops_after == count_flops(pruned) == conv_a + conv_b + heads
    assert report.flops_before == size * size * 27 * 8 + 81 * 9 * 8 * b + heads
    params = (27 * kept_a + kept_a) + 4 * kept_a + (9 * kept_a * b + b) + (b * 2 + 2)
    assert report.params_after == pruned.count_params() == params
    assert report.params_before == model.count_params()
    assert report.pruning_ratio == pytest.approx(params / model.count_params())


A_STATS = [1.0, 0.3, 0.9, 0.1, 0.8, 0.0]
B_STATS = [0.2, 0.9, 0.95, 0.15, 0.7, 1.0]
CRITERIA_KEPT = {
    "union": [0, 1, 2, 4, 5],  # max
    "intersection": [2, 4],  # min
    "arithmetic_mean": [0, 1, 2, 4],  # (0 + 1) / 2 = 0.5 is not above 0.5
    "geometric_mean": [1, 2, 4],  # sqrt(0.2) = 0.447, sqrt(0.27) = 0.52
}


def residual_model() -> keras.Model:
    """resnet-style: conv_1 -> bn -> relu -> conv_2 -> bn, plus a 1x1 shortcut conv, added."""
    inputs, x = nchw_input()
    y = keras.layers.Conv2D(6, 3, padding="same", name="block_conv_1")(x)
    y = keras.layers.BatchNormalization(name="block_bn_1")(y)
    y = keras.layers.ReLU(name="block_relu_1")(y)
    y = keras.layers.Conv2D(6, 3, padding="same", name="block_conv_2")(y)
    y = keras.layers.BatchNormalization(name="block_bn_2")(y)
    s = keras.layers.Conv2D(6, 1, name="block_conv_shortcut")(x)
    z = keras.layers.Add(name="block_add")([y, s])
    z = keras.layers.ReLU(name="block_relu")(z)
    z = keras.layers.Conv2D(4, 3, padding="same", name="next_conv")(z)
    return keras.Model(inputs, head(z), name="residual")


@pytest.mark.parametrize("criterion", EQUALIZATION_CRITERIA)
def test_residual_add_equalization(criterion):
    model = residual_model()
    randomize(model)
    set_filter_norms(model.get_layer("block_conv_2"), A_STATS)
    set_filter_norms(model.get_layer("block_conv_shortcut"), B_STATS)
    options = PruningOptions(equalization_criterion=criterion, pruning_threshold=0.5,
                             excluded_layers=("next_conv",), **EXACT)
    pruned, report = prune_model(model, options, protected_layers=HEAD_NAMES)
    kept = CRITERIA_KEPT[criterion]
    assert np.array_equal(kernel_of(pruned, "block_conv_2"), kernel_of(model, "block_conv_2")[..., kept])
    assert np.array_equal(kernel_of(pruned, "block_conv_shortcut"),
                          kernel_of(model, "block_conv_shortcut")[..., kept])
    assert np.array_equal(pruned.get_layer("block_bn_2").get_weights()[0],
                          model.get_layer("block_bn_2").get_weights()[0][kept])
    assert np.array_equal(kernel_of(pruned, "next_conv"), kernel_of(model, "next_conv")[:, :, kept, :])
    # block_conv_1 is not tied to anything: its random filters survive 0.5 of the max or not on their own
    assert pruned.get_layer("block_conv_2").kernel.shape[2] == pruned.get_layer("block_conv_1").kernel.shape[3]
    x = np.random.default_rng(1).random((2, 3, 16, 16), dtype=np.float32)
    assert pruned(x).shape == model(x).shape
    assert {r.name: r.filters_after for r in report.layers}["block_conv_shortcut"] == len(kept)


def test_excluding_one_member_keeps_the_whole_tied_group():
    model = residual_model()
    randomize(model)
    set_filter_norms(model.get_layer("block_conv_2"), A_STATS)
    set_filter_norms(model.get_layer("block_conv_shortcut"), B_STATS)
    options = PruningOptions(pruning_threshold=0.5, excluded_layers=("block_conv_shortcut",), **EXACT)
    pruned, _ = prune_model(model, options, protected_layers=HEAD_NAMES)
    assert pruned.get_layer("block_conv_2").kernel.shape[3] == 6
    assert pruned.get_layer("block_conv_shortcut").kernel.shape[3] == 6


def depthwise_model() -> keras.Model:
    """mobilenet-style: expand (1x1) -> bn -> relu6 -> depthwise -> bn -> relu -> project (1x1)."""
    inputs, x = nchw_input()
    x = keras.layers.Conv2D(6, 1, use_bias=False, name="expand")(x)
    x = keras.layers.BatchNormalization(name="expand_bn")(x)
    x = keras.layers.ReLU(6.0, name="expand_relu")(x)
    x = keras.layers.ZeroPadding2D(1, name="depthwise_pad")(x)
    x = keras.layers.DepthwiseConv2D(3, strides=2, use_bias=True, name="depthwise")(x)
    x = keras.layers.BatchNormalization(name="depthwise_bn")(x)
    x = keras.layers.Activation("relu", name="depthwise_relu")(x)
    x = keras.layers.Conv2D(4, 1, use_bias=False, name="project")(x)
    return keras.Model(inputs, head(x), name="depthwise_block")


@pytest.mark.parametrize("criterion", EQUALIZATION_CRITERIA)
def test_depthwise_channels_follow_their_producer(criterion):
    model = depthwise_model()
    randomize(model)
    set_filter_norms(model.get_layer("expand"), A_STATS)
    set_filter_norms(model.get_layer("depthwise"), B_STATS)
    model.get_layer("depthwise").bias.assign(np.arange(6, dtype=np.float32))
    options = PruningOptions(equalization_criterion=criterion, pruning_threshold=0.5,
                             excluded_layers=("project",), **EXACT)
    pruned, report = prune_model(model, options, protected_layers=HEAD_NAMES)
    kept = CRITERIA_KEPT[criterion]
    assert np.array_equal(kernel_of(pruned, "expand"), kernel_of(model, "expand")[..., kept])
    assert np.array_equal(kernel_of(pruned, "depthwise"), kernel_of(model, "depthwise")[:, :, kept, :])
    assert pruned.get_layer("depthwise").bias.numpy().tolist() == [float(i) for i in kept]
    for bn in ("expand_bn", "depthwise_bn"):
        for old, new in zip(model.get_layer(bn).get_weights(), pruned.get_layer(bn).get_weights()):
            assert np.array_equal(new, old[kept])
    assert np.array_equal(kernel_of(pruned, "project"), kernel_of(model, "project")[:, :, kept, :])
    assert {r.name: r.filters_after for r in report.layers}["depthwise"] == len(kept)


def concat_model() -> keras.Model:
    """googlenet-style: two branches concatenated on the channel axis, then BN and a 1x1 conv."""
    inputs, x = nchw_input()
    a = keras.layers.Conv2D(6, 1, name="branch_a")(x)
    b = keras.layers.Conv2D(6, 3, padding="same", name="branch_b")(x)
    p = keras.layers.MaxPooling2D(3, strides=1, padding="same", name="branch_pool")(x)
    p = keras.layers.Conv2D(2, 1, name="branch_pool_proj")(p)
    c = keras.layers.Concatenate(axis=-1, name="concat")([a, b, p])
    c = keras.layers.BatchNormalization(name="concat_bn")(c)
    c = keras.layers.Conv2D(4, 1, name="after_concat")(c)
    return keras.Model(inputs, head(c), name="inception")


def test_concatenate_slices_consumers_at_channel_offsets():
    model = concat_model()
    randomize(model)
    set_filter_norms(model.get_layer("branch_a"), A_STATS)
    set_filter_norms(model.get_layer("branch_b"), B_STATS)
    set_filter_norms(model.get_layer("branch_pool_proj"), [1.0, 0.1])
    options = PruningOptions(pruning_threshold=0.5, excluded_layers=("after_concat",), **EXACT)
    pruned, _ = prune_model(model, options, protected_layers=HEAD_NAMES)
    kept_a, kept_b = [0, 2, 4], [1, 2, 4, 5]
    expected = kept_a + [6 + i for i in kept_b] + [12]
    assert np.array_equal(kernel_of(pruned, "branch_a"), kernel_of(model, "branch_a")[..., kept_a])
    assert np.array_equal(kernel_of(pruned, "branch_b"), kernel_of(model, "branch_b")[..., kept_b])
    assert np.array_equal(kernel_of(pruned, "after_concat"), kernel_of(model, "after_concat")[:, :, expected, :])
    assert np.array_equal(pruned.get_layer("concat_bn").get_weights()[2],
                          model.get_layer("concat_bn").get_weights()[2][expected])


def test_dense_after_global_pooling_and_conv_transpose():
    inputs, x = nchw_input(size=8)
    x = keras.layers.Conv2D(6, 3, padding="same", name="conv")(x)
    t = keras.layers.Conv2DTranspose(6, 3, strides=2, padding="same", name="up")(x)
    t = keras.layers.Conv2D(2, 1, name="seg")(t)
    g = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    d = keras.layers.Dense(6, name="fc")(g)
    d = keras.layers.Dropout(0.5, name="drop")(d)
    out = keras.layers.Dense(3, name="logits")(d)
    model = keras.Model(inputs, {"logits": out, "seg": t}, name="classifier")
    randomize(model)
    set_filter_norms(model.get_layer("conv"), A_STATS)
    set_filter_norms(model.get_layer("up"), B_STATS)
    set_filter_norms(model.get_layer("fc"), [0.0, 1.0, 0.2, 0.9, 0.0, 0.6])
    pruned, report = prune_model(model, PruningOptions(pruning_threshold=0.5, **EXACT), protected_layers=["logits"])
    kept_conv, kept_up, kept_fc = [0, 2, 4], [1, 2, 4, 5], [1, 3, 5]
    assert np.array_equal(kernel_of(pruned, "fc"), kernel_of(model, "fc")[kept_conv][:, kept_fc])
    assert np.array_equal(kernel_of(pruned, "logits"), kernel_of(model, "logits")[kept_fc])
    # Conv2DTranspose kernels are (kh, kw, out, in)
    assert np.array_equal(kernel_of(pruned, "up"), kernel_of(model, "up")[:, :, kept_up][..., kept_conv])
    assert np.array_equal(kernel_of(pruned, "seg"), kernel_of(model, "seg")[:, :, kept_up, :])
    assert set(pruned.output) == {"logits", "seg"}
    x = np.random.default_rng(2).random((1, 3, 8, 8), dtype=np.float32)
    assert pruned(x)["seg"].shape == (1, 16, 16, 2)
    assert {r.name: r.filters_after for r in report.layers}["logits"] == 3


def test_boundaries_and_model_outputs_keep_every_channel():
    inputs, x = nchw_input(size=8)
    a = keras.layers.Conv2D(6, 3, padding="same", name="to_flatten")(x)
    f = keras.layers.Flatten(name="flatten")(a)
    f = keras.layers.Dense(2, name="fc")(f)
    b = keras.layers.Conv2D(6, 3, padding="same", name="returned")(x)
    s = keras.layers.Conv2D(6, 1, name="to_softmax")(x)
    s = keras.layers.Softmax(name="softmax")(s)
    s = keras.layers.Conv2D(2, 1, name="after_softmax")(s)
    model = keras.Model(inputs, [f, b, s], name="boundaries")
    for name in ("to_flatten", "returned", "to_softmax"):
        set_filter_norms(model.get_layer(name), A_STATS)
    pruned, report = prune_model(model, PruningOptions(pruning_threshold=0.5, **EXACT))
    assert report.pruned_layers() == []
    assert pruned.count_params() == model.count_params()


def test_zero_filters_removed_give_identical_outputs():
    """Residual add, depthwise and concatenate in one model; only all-zero channels are removed."""
    inputs, x = nchw_input()
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(x)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    y = keras.layers.Conv2D(8, 3, padding="same", name="res_conv")(x)
    y = keras.layers.BatchNormalization(name="res_bn")(y)
    x = keras.layers.Add(name="res_add")([x, y])
    d = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    d = keras.layers.BatchNormalization(name="dw_bn")(d)
    c = keras.layers.Conv2D(8, 1, name="side")(x)
    x = keras.layers.Concatenate(name="concat")([d, c])
    x = keras.layers.AveragePooling2D(2, name="avg")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", name="last")(x)
    model = keras.Model(inputs, head(x), name="mixed")
    randomize(model)
    zero = {"stem": [1, 4, 6], "res_conv": [1, 4, 6], "side": [0, 3], "last": [2, 5, 7]}
    zero["stem_bn"] = zero["res_bn"] = zero["dw_bn"] = zero["dw"] = zero["stem"]
    for name, channels in zero.items():
        layer = model.get_layer(name)
        arrays = layer.get_weights()
        if isinstance(layer, keras.layers.BatchNormalization):
            arrays[0][channels] = 0.0  # gamma
            arrays[1][channels] = 0.0  # beta
        elif isinstance(layer, keras.layers.DepthwiseConv2D):  # (kh, kw, channels, 1)
            arrays[0][:, :, channels, :] = 0.0
            arrays[1][channels] = 0.0
        else:
            arrays[0][..., channels] = 0.0
            arrays[1][channels] = 0.0
        layer.set_weights(arrays)
    for criterion in EQUALIZATION_CRITERIA:
        options = PruningOptions(equalization_criterion=criterion, pruning_threshold=0.0, **EXACT)
        pruned, report = prune_model(model, options, protected_layers=HEAD_NAMES)
        after = {r.name: r.filters_after for r in report.layers}
        assert after == {"stem": 5, "res_conv": 5, "dw": 5, "side": 6, "last": 5, "output_cov": 2}
        x = np.random.default_rng(3).random((2, 3, 16, 16), dtype=np.float32)
        np.testing.assert_allclose(pruned(x, training=False), model(x, training=False), atol=1e-5, rtol=1e-5)


def test_bad_inputs():
    model = chain_model()
    with pytest.raises(InvalidInputError, match="did you mean 'conv_a'"):
        prune_model(model, PruningOptions(excluded_layers=("conv_aa",)))
    with pytest.raises(UsageError, match="pruning_threshold"):
        prune_model(model, PruningOptions(pruning_threshold=2.0))
    sequential = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 1)])
    with pytest.raises(InvalidInputError, match="functional"):
        prune_model(sequential)


def zero_filters(layer: keras.layers.Layer, filters: list[int]) -> None:
    """Zero some output filters (kernel and bias) of a Conv2D."""
    kernel, bias = layer.get_weights()
    kernel[..., filters] = 0.0
    bias[filters] = 0.0
    layer.set_weights([kernel, bias])


def test_shared_layer_prunes_once_for_every_call():
    """A head called on two feature maps (an FPN's shared RPN): its filters go once, its inputs are tied."""
    inputs = keras.Input((8, 8, 3))
    level_a = keras.layers.Conv2D(4, 1, activation="relu", name="level_a")(inputs)
    level_b = keras.layers.Conv2D(4, 1, activation="relu", name="level_b")(
        keras.layers.MaxPooling2D(2, name="down")(inputs))
    head = keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="head")
    predict = keras.layers.Conv2D(2, 1, name="predict")
    model = keras.Model(inputs, [predict(head(level_a)), predict(head(level_b))])
    zero_filters(model.get_layer("head"), [1, 3])  # head filters 1 and 3 always output 0
    for name in ("level_a", "level_b"):  # channel 2 is zero on both levels: the tied set drops it
        zero_filters(model.get_layer(name), [2])
    zero_filters(model.get_layer("level_a"), [0])  # zero on one level only: union keeps it
    options = PruningOptions(pruning_threshold=0.0, **EXACT)
    pruned, report = prune_model(model, options, protected_layers=("predict",))
    after = {r.name: (r.filters_before, r.filters_after) for r in report.layers}
    assert after == {"level_a": (4, 3), "level_b": (4, 3), "head": (5, 3), "predict": (2, 2)}
    assert pruned.get_layer("head").kernel.shape == (3, 3, 3, 3)
    x = np.random.default_rng(5).random((2, 8, 8, 3), dtype=np.float32)
    for got, want in zip(pruned(x), model(x), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)
    # the shared layer's multiply-adds count at both levels: 8x8 and 4x4 positions
    assert report.flops_before == 64 * 12 + 16 * 12 + (64 + 16) * 9 * 4 * 5 + (64 + 16) * 10
    # a layer fed its own output: its filters are tied to the image channels, nothing goes
    shared = keras.layers.Conv2D(3, 1, name="shared")
    x_in = keras.Input((8, 8, 3))
    _, twice = prune_model(keras.Model(x_in, shared(shared(x_in))), options)
    assert [(r.filters_before, r.filters_after) for r in twice.layers] == [(3, 3)]


# ---- the real backbones ---------------------------------------------------------------------------

def detectnet_config(arch: str, num_layers: int) -> SimpleNamespace:
    return SimpleNamespace(arch=arch, num_layers=num_layers, use_batch_norm=True, all_projections=False,
                           objective_set=SimpleNamespace(cov=SimpleNamespace(input=""),
                                                         bbox=SimpleNamespace(input="")))


def zero_upper_half(model: keras.Model, keep: tuple[str, ...]) -> None:
    """Zero the upper half of the channels of every conv, depthwise and BN layer (not ``keep``)."""
    for layer in model.layers:
        if layer.name in keep or not layer.weights:
            continue
        arrays = layer.get_weights()
        if isinstance(layer, keras.layers.BatchNormalization):
            half = arrays[0].shape[0] // 2
            arrays[0][half:] = 0.0
            arrays[1][half:] = 0.0
        elif isinstance(layer, keras.layers.Conv2D | keras.layers.DepthwiseConv2D):
            half = arrays[0].shape[2 if isinstance(layer, keras.layers.DepthwiseConv2D) else 3] // 2
            if isinstance(layer, keras.layers.DepthwiseConv2D):
                arrays[0][:, :, half:, :] = 0.0
            else:
                arrays[0][..., half:] = 0.0
            if len(arrays) > 1:
                arrays[1][half:] = 0.0
        layer.set_weights(arrays)


@pytest.mark.parametrize("arch, num_layers", [("resnet", 10), ("resnet", 18), ("mobilenet_v2", 0),
                                              ("googlenet", 0)])
def test_real_backbones_end_to_end(arch, num_layers):
    model = build_detectnet_v2_model(detectnet_config(arch, num_layers), 2, (3, 32, 32))
    zero_upper_half(model, HEAD_NAMES)
    pruned, report = prune_model(model, PruningOptions(pruning_threshold=0.0), protected_layers=HEAD_NAMES)
    assert [layer.name for layer in pruned.layers] == [layer.name for layer in model.layers]
    assert report.params_after < report.params_before and report.flops_after < report.flops_before
    for layer in report.layers:
        if layer.name in HEAD_NAMES:
            assert layer.filters_after == layer.filters_before
        else:
            # TAO defaults: granularity 8, at least 16 filters; only the zero upper half goes
            n, k = layer.filters_before, layer.filters_after
            assert k == n or k % 8 == 0
            assert k >= min(16, n) and k >= n // 2
    for name in HEAD_NAMES:
        old, new = model.get_layer(name), pruned.get_layer(name)
        assert new.kernel.shape[3] == old.kernel.shape[3]
        assert np.array_equal(new.bias.numpy(), old.bias.numpy())
    x = np.random.default_rng(4).random((2, 3, 32, 32), dtype=np.float32)
    got, want = pruned(x, training=False), model(x, training=False)
    for name in HEAD_NAMES:
        np.testing.assert_allclose(got[name], want[name], atol=1e-5, rtol=1e-5)
