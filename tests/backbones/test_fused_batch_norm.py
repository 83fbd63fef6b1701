"""FusedBatchNormalization: the same numbers as Keras' BatchNormalization, on the fused kernel."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tltk.backbones.fused_batch_norm import FusedBatchNormalization


def _pair(shape: tuple[int, ...], **kwargs: object) -> tuple[keras.layers.Layer, keras.layers.Layer]:
    reference = keras.layers.BatchNormalization(**kwargs)
    fused = FusedBatchNormalization(**kwargs)
    reference.build(shape)
    fused.build(shape)
    rng = np.random.default_rng(3)
    weights = [rng.uniform(0.5, 2.0, shape[-1]).astype(np.float32),  # gamma
               rng.normal(size=shape[-1]).astype(np.float32),  # beta
               rng.normal(size=shape[-1]).astype(np.float32),  # moving mean
               rng.uniform(0.5, 2.0, shape[-1]).astype(np.float32)]  # moving variance
    reference.set_weights(weights)
    fused.set_weights(weights)
    return reference, fused


def _step(layer: keras.layers.Layer, x: tf.Tensor, training: bool) -> tuple[np.ndarray, list[np.ndarray]]:
    upstream = tf.constant(np.random.default_rng(4).normal(size=x.shape).astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=training)
        loss = tf.reduce_sum(y * upstream)
    grads = tape.gradient(loss, [x, layer.gamma, layer.beta])
    return y.numpy(), [g.numpy() for g in grads]


def test_hand_worked_channel() -> None:
    """One channel of values 1, 2, 3, 6: mean 3, biased variance 3.5, Bessel-corrected 14/3."""
    layer = FusedBatchNormalization(momentum=0.5, epsilon=1e-3)
    x = tf.reshape(tf.constant([1.0, 2.0, 3.0, 6.0]), [1, 2, 2, 1])
    y = layer(x, training=True).numpy().ravel()
    np.testing.assert_allclose(y, (np.array([1.0, 2.0, 3.0, 6.0]) - 3.0) / np.sqrt(3.5 + 1e-3), rtol=1e-5)
    np.testing.assert_allclose(layer.moving_mean.numpy(), [0.5 * 0.0 + 0.5 * 3.0], rtol=1e-6)
    np.testing.assert_allclose(layer.moving_variance.numpy(), [0.5 * 1.0 + 0.5 * 3.5], rtol=1e-6)


@pytest.mark.parametrize("training", [True, False])
def test_matches_keras_batch_norm(training: bool) -> None:
    shape = (2, 5, 7, 3)
    reference, fused = _pair(shape, momentum=0.9, epsilon=1e-3)
    x = tf.constant(np.random.default_rng(5).normal(2.0, 3.0, size=shape).astype(np.float32))
    y_ref, g_ref = _step(reference, x, training)
    y_fused, g_fused = _step(fused, x, training)
    np.testing.assert_allclose(y_fused, y_ref, rtol=1e-4, atol=1e-5)
    for got, want in zip(g_fused, g_ref, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(fused.moving_mean.numpy(), reference.moving_mean.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fused.moving_variance.numpy(), reference.moving_variance.numpy(), rtol=1e-5,
                               atol=1e-6)


def test_inside_tf_function_and_other_ranks() -> None:
    """Inside a traced function the moving statistics update; a 2-D input takes the Keras path."""
    shape = (3, 4, 4, 2)
    reference, fused = _pair(shape, momentum=0.8)
    x = tf.constant(np.random.default_rng(6).normal(size=shape).astype(np.float32))

    @tf.function
    def run(layer: keras.layers.Layer) -> tf.Tensor:
        return layer(x, training=True)

    for _ in range(3):
        np.testing.assert_allclose(run(fused).numpy(), run(reference).numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fused.moving_variance.numpy(), reference.moving_variance.numpy(), rtol=1e-5)

    dense_ref, dense_fused = _pair((6, 5))
    flat = tf.constant(np.random.default_rng(7).normal(size=(6, 5)).astype(np.float32))
    np.testing.assert_allclose(dense_fused(flat, training=True).numpy(), dense_ref(flat, training=True).numpy(),
                               rtol=1e-6)


def test_config_round_trip_in_a_model() -> None:
    inputs = keras.Input((4, 4, 2))
    model = keras.Model(inputs, FusedBatchNormalization(name="bn")(inputs))
    clone = keras.Model.from_config(model.get_config())
    assert type(clone.get_layer("bn")) is FusedBatchNormalization
    assert isinstance(clone.get_layer("bn"), keras.layers.BatchNormalization)
