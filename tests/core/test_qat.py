"""Quantization-aware training: fake-quant numerics, range tracking, model rewriting, save/load."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from tltk.core.qat import (  # noqa: E402
    FakeQuant,
    QuantizedConv2D,
    QuantizedConv2DTranspose,
    QuantizedDense,
    QuantizedDepthwiseConv2D,
    ema_update,
    fake_quantize,
    fake_quantize_per_channel,
    is_quantized,
    quantize_model,
    strip_quantization,
)
from tltk.modelfile.container import load_keras_model, save_keras_model  # noqa: E402

# amax = 127 * 0.25, so the INT8 step is exactly 0.25 and every expected value below is exact.
AMAX = 31.75
STEP = 0.25


def _float_model() -> keras.Model:
    """NCHW input -> conv on the input, BN, ReLU feeding two convs, depthwise, transpose conv, dense."""
    keras.utils.set_random_seed(11)
    inp = keras.Input((3, 16, 16), name="input_1")
    x = keras.layers.Permute((2, 3, 1), name="input_nhwc")(inp)
    x = keras.layers.Conv2D(6, 3, padding="same", name="conv1")(x)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.Activation("relu", name="relu1")(x)
    a = keras.layers.Conv2D(6, 1, activation="relu", name="conv_a")(x)
    b = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = keras.layers.Add(name="add")([a, b])
    up = keras.layers.Conv2DTranspose(4, 2, strides=2, name="up")(x)
    pooled = keras.layers.GlobalAveragePooling2D(name="gap")(up)
    out = keras.layers.Dense(3, name="fc")(pooled)
    return keras.Model(inp, out, name="tiny")


def _images(n: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 3, 16, 16), dtype=np.float32)


# ---- numerics -------------------------------------------------------------------------------------

def test_fake_quantize_rounds_to_the_int8_grid_and_clips() -> None:
    x = np.array([0.0, 0.2, 0.125, 0.375, -0.375, -0.3, 10.1, 31.7, 40.0, -40.0], np.float32)
    # 0.2/0.25 = 0.8 -> 1; 0.5 -> 0 and 1.5 -> 2 (half to even); -1.2 -> -1; 40.4 -> 40;
    # 126.8 -> 127; beyond +-amax clipped to +-127 steps.
    expected = np.array([0.0, 0.25, 0.0, 0.5, -0.5, -0.25, 10.0, 31.75, 31.75, -31.75], np.float32)
    got = np.asarray(fake_quantize(tf.constant(x), tf.constant(AMAX)))
    np.testing.assert_array_equal(got, expected)
    levels = got / STEP
    assert np.array_equal(levels, np.round(levels)) and np.abs(levels).max() == 127


def test_fake_quantize_gradient_is_straight_through_inside_and_zero_outside() -> None:
    x = tf.Variable([0.3, -31.0, 5.1, 40.0, -32.0])
    with tf.GradientTape() as tape:
        y = fake_quantize(x, tf.constant(AMAX))
        loss = tf.reduce_sum(y * tf.constant([1.0, 2.0, 3.0, 4.0, 5.0]))
    np.testing.assert_array_equal(tape.gradient(loss, x).numpy(), [1.0, 2.0, 3.0, 0.0, 0.0])


def test_fake_quantize_passes_values_through_before_a_range_is_known() -> None:
    x = np.array([0.123, -7.5, 1e3], np.float32)
    np.testing.assert_array_equal(np.asarray(fake_quantize(tf.constant(x), tf.constant(0.0))), x)


def test_per_channel_weight_quantization_by_hand() -> None:
    kernel = np.zeros((1, 1, 2, 2), np.float32)  # Conv2D (kh, kw, cin, cout)
    kernel[0, 0, :, 0] = [63.5, 0.75]  # amax 63.5 -> step 0.5: 0.75 / 0.5 = 1.5 -> 2 -> 1.0
    kernel[0, 0, :, 1] = [-15.875, 0.3]  # amax 15.875 -> step 0.125: 2.4 -> 2 -> 0.25
    variable = tf.Variable(kernel)
    with tf.GradientTape() as tape:
        got = fake_quantize_per_channel(variable, (3,))
        loss = tf.reduce_sum(got)
    np.testing.assert_array_equal(np.asarray(got)[0, 0], [[63.5, -15.875], [1.0, 0.25]])
    np.testing.assert_array_equal(tape.gradient(loss, variable).numpy(), np.ones_like(kernel))
    zero = np.asarray(fake_quantize_per_channel(tf.zeros((3, 2)), (1,)))
    assert not np.isnan(zero).any() and not zero.any()


def test_ema_update_by_hand() -> None:
    assert float(ema_update(tf.constant(0.0), tf.constant(2.0), 0.9)) == pytest.approx(2.0)
    assert float(ema_update(tf.constant(2.0), tf.constant(4.0), 0.9)) == pytest.approx(0.9 * 2.0 + 0.1 * 4.0)


def test_fake_quant_layer_tracks_its_range_only_in_training() -> None:
    layer = FakeQuant(ema_decay=0.9, name="fq")
    first = np.array([[0.5, -2.0, 1.0]], np.float32)
    layer(first, training=True)
    assert float(layer.amax.numpy()) == pytest.approx(2.0)  # first batch sets the range
    second = np.array([[4.0, -1.0, 0.0]], np.float32)
    out = np.asarray(layer(second, training=True))
    assert float(layer.amax.numpy()) == pytest.approx(2.2)  # 0.9 * 2 + 0.1 * 4
    step = np.float32(2.2) / np.float32(127)
    np.testing.assert_allclose(out, [[127 * step, -round(1 / step) * step, 0.0]], rtol=1e-6)
    layer(np.full((1, 3), 100.0, np.float32), training=False)
    assert float(layer.amax.numpy()) == pytest.approx(2.2)
    assert layer.amax.trainable is False and layer.trainable_weights == []


def test_fake_quant_rejects_a_bad_decay() -> None:
    with pytest.raises(ValueError, match="ema_decay"):
        FakeQuant(ema_decay=1.0)


# ---- model rewriting ----------------------------------------------------------------------------

def test_quantize_model_keeps_names_and_weights_and_shares_one_quantizer_per_tensor() -> None:
    model = _float_model()
    quantized = quantize_model(model)
    assert is_quantized(quantized) and not is_quantized(model)
    names = [layer.name for layer in quantized.layers if not isinstance(layer, FakeQuant)]
    assert names == [layer.name for layer in model.layers]
    kinds = {layer.name: type(layer) for layer in quantized.layers}
    assert kinds["conv1"] is QuantizedConv2D and kinds["conv_a"] is QuantizedConv2D
    assert kinds["dw"] is QuantizedDepthwiseConv2D and kinds["up"] is QuantizedConv2DTranspose
    assert kinds["fc"] is QuantizedDense and kinds["bn1"] is keras.layers.BatchNormalization
    # conv_a and dw read the same tensor (relu1): one shared quantizer; the input, add and gap get one each.
    assert sorted(n for n, k in kinds.items() if k is FakeQuant) == ["add_qdq", "gap_qdq", "input_nhwc_qdq",
                                                                     "relu1_qdq"]
    assert quantized.get_layer("conv_a").input is quantized.get_layer("dw").input
    for layer in model.layers:
        for old, new in zip(layer.get_weights(), quantized.get_layer(layer.name).get_weights(), strict=True):
            np.testing.assert_array_equal(old, new)


def test_quantized_outputs_stay_close_to_the_float_model() -> None:
    model = _float_model()
    quantized = quantize_model(model)
    x = _images()
    quantized(x, training=True)  # observe the ranges once
    ref, got = np.asarray(model(x)), np.asarray(quantized(x))
    assert not np.array_equal(ref, got)  # quantization does change the values...
    assert np.abs(got - ref).max() < 0.05 * np.abs(ref).max() + 1e-3  # ...by a few INT8 steps only


def test_quantize_model_leaves_excluded_layers_in_float() -> None:
    quantized = quantize_model(_float_model(), excluded=("fc", "conv1"))
    kinds = {layer.name: type(layer) for layer in quantized.layers}
    assert kinds["fc"] is keras.layers.Dense and kinds["conv1"] is keras.layers.Conv2D
    assert "gap_qdq" not in kinds and "input_nhwc_qdq" not in kinds
    with pytest.raises(ValueError, match="not in model"):
        quantize_model(_float_model(), excluded=("nope",))


def test_quantize_model_refuses_a_quantized_model() -> None:
    with pytest.raises(ValueError, match="already"):
        quantize_model(quantize_model(_float_model()))


def test_training_updates_ranges_and_weights() -> None:
    quantized = quantize_model(_float_model())
    quantized.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    before = quantized.get_layer("conv1").get_weights()[0].copy()
    quantized.fit(_images(8), np.ones((8, 3), np.float32), batch_size=4, epochs=1, verbose=0)
    assert float(quantized.get_layer("input_nhwc_qdq").amax.numpy()) > 0.9  # images in [0, 1)
    assert float(quantized.get_layer("relu1_qdq").amax.numpy()) > 0
    assert not np.array_equal(before, quantized.get_layer("conv1").get_weights()[0])


def test_save_and_load_round_trip(tmp_path) -> None:
    quantized = quantize_model(_float_model())
    x = _images()
    quantized(x, training=True)
    path = tmp_path / "qat.tlt"
    save_keras_model(path, quantized, {"model_kind": "test"})
    loaded, _ = load_keras_model(path)
    assert is_quantized(loaded)
    assert [type(layer) for layer in loaded.layers] == [type(layer) for layer in quantized.layers]
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(quantized(x)))
    assert float(loaded.get_layer("relu1_qdq").amax.numpy()) == float(quantized.get_layer("relu1_qdq").amax.numpy())


def test_strip_quantization_gives_back_the_float_model_and_ranges() -> None:
    model = _float_model()
    quantized = quantize_model(model)
    x = _images()
    quantized(x, training=True)
    stripped, ranges = strip_quantization(quantized)
    assert not is_quantized(stripped)
    assert [(layer.name, type(layer)) for layer in stripped.layers] == [(layer.name, type(layer))
                                                                       for layer in model.layers]
    for layer in quantized.layers:
        if isinstance(layer, FakeQuant):
            continue
        for q_w, s_w in zip(layer.get_weights(), stripped.get_layer(layer.name).get_weights(), strict=True):
            np.testing.assert_array_equal(q_w, s_w)
    amax = {n: float(quantized.get_layer(n).amax.numpy()) for n in ("input_nhwc_qdq", "relu1_qdq", "add_qdq",
                                                                     "gap_qdq")}
    assert ranges == {"conv1": amax["input_nhwc_qdq"], "conv_a": amax["relu1_qdq"], "dw": amax["relu1_qdq"],
                      "up": amax["add_qdq"], "fc": amax["gap_qdq"]}
    assert amax["input_nhwc_qdq"] == pytest.approx(float(x.max()))
    # The BN statistics updated by the training-mode call are kept, so the float twin computes the
    # quantized model's function without quantization.
    np.testing.assert_allclose(np.asarray(stripped(x)), np.asarray(quantized(x)), atol=0.05)


def test_strip_quantization_leaves_out_ranges_never_observed() -> None:
    _, ranges = strip_quantization(quantize_model(_float_model()))
    assert ranges == {}
