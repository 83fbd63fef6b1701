"""to_channels_last: TAO's channels-first graphs computed in NHWC with the same numbers."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tltk.backbones import to_channels_last


def _channels_first_graph() -> keras.Model:
    cf = {"data_format": "channels_first"}
    inputs = keras.Input((3, 16, 24), name="input_1")
    x = keras.layers.ZeroPadding2D(1, name="conv1_pad", **cf)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, name="conv1", **cf)(x)
    x = keras.layers.BatchNormalization(axis=1, name="bn_conv1")(x)
    x = keras.layers.Activation("relu", name="relu1")(x)
    y = keras.layers.DepthwiseConv2D(3, padding="same", name="dw", **cf)(x)
    x = keras.layers.Add(name="add")([x, y])
    x = keras.layers.MaxPooling2D(2, name="pool", **cf)(x)
    skip = keras.layers.AveragePooling2D(4, name="skip_pool", **cf)(inputs)  # the input read twice
    x = keras.layers.Concatenate(axis=1, name="concat")([x, skip])
    up = keras.layers.Conv2DTranspose(5, 2, strides=2, name="up", **cf)(x)
    head = keras.layers.Conv2D(2, 1, activation="sigmoid", name="output_cov", **cf)(x)
    return keras.Model(inputs, [head, up], name="tao_like")


def _randomize(model: keras.Model) -> None:
    rng = np.random.default_rng(7)
    for layer in model.layers:
        weights = layer.get_weights()
        if isinstance(layer, keras.layers.BatchNormalization):  # gamma, beta, mean, variance
            weights = [rng.uniform(0.5, 1.5, w.shape).astype("float32") if i in (0, 3)
                       else rng.normal(0, 0.5, w.shape).astype("float32") for i, w in enumerate(weights)]
        else:
            weights = [rng.normal(0, 0.3, w.shape).astype("float32") for w in weights]
        layer.set_weights(weights)


def test_same_outputs_names_weights_and_input():
    model = _channels_first_graph()
    _randomize(model)
    converted = to_channels_last(model)
    assert converted is not None
    assert tuple(converted.inputs[0].shape) == (None, 3, 16, 24)
    assert {layer.name for layer in model.layers} < {layer.name for layer in converted.layers}
    assert not any(getattr(layer, "data_format", "channels_last") == "channels_first" for layer in converted.layers)
    assert converted.get_layer("bn_conv1").axis in (-1, 3, [3])
    x = np.random.default_rng(3).uniform(size=(2, 3, 16, 24)).astype("float32")
    # XLA runs NCHW convolutions on any CPU: the channels-first reference.
    expected = tf.function(lambda t: model(t, training=False), jit_compile=True)(x)
    got = converted(x, training=False)
    assert got[0].shape == (2, 4, 6, 2) and got[1].shape == (2, 8, 12, 5)
    for want, have in zip(expected, got, strict=True):
        np.testing.assert_allclose(np.transpose(have.numpy(), (0, 3, 1, 2)), want.numpy(), rtol=1e-5, atol=1e-5)


def test_layout_dependent_layers_are_refused():
    inputs = keras.Input((3, 8, 8))
    x = keras.layers.Conv2D(4, 3, data_format="channels_first")(inputs)
    flat = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(x)))
    assert to_channels_last(flat) is None
    bn_on_width = keras.Model(inputs, keras.layers.BatchNormalization(axis=2)(x))
    assert to_channels_last(bn_on_width) is None
