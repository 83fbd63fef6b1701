"""Keras BatchNormalization that trains with TensorFlow's fused kernel.

Keras 3's ``BatchNormalization`` computes its batch statistics with ``tf.nn.moments`` and
normalises with ``tf.nn.batch_normalization``: several passes over the activation in the forward
pass and more in the backward pass.  TensorFlow's ``FusedBatchNormV3`` (oneDNN on CPU) does the
forward in one kernel and the backward in another; on a 1x208x336x256 activation a training
step's BN (forward and backward) takes about a third of the CPU time of the Keras 3 layer.

:class:`FusedBatchNormalization` is a drop-in subclass with the same weights, config and
inference path; only a training call on a 4-D channels-last input uses the fused kernel:

* outputs: ``gamma * (x - mean) / sqrt(var + epsilon) + beta`` with the batch mean and the
  biased batch variance, as Keras;
* moving statistics: ``moving = moving * momentum + batch * (1 - momentum)`` with the *biased*
  batch variance, as Keras 3 (the fused kernel returns the Bessel-corrected ``N / (N - 1)``
  variance; it is scaled back);
* gradients: the full BN backward (through the batch statistics), as Keras.

Everything else (inference, masks, renormalisation, other ranks or axes, other backends)
goes through the Keras implementation unchanged, so exported graphs do not change.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="tltk")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` whose training call on NHWC input is one fused kernel.

    Same constructor, weights (``gamma``, ``beta``, ``moving_mean``, ``moving_variance``) and
    config as ``keras.layers.BatchNormalization``, so weights load by layer name either way.
    """

    def _fusable(self, inputs: Any, training: Any, mask: Any) -> bool:
        axis = self.axis if isinstance(self.axis, int) else None
        return (training is True and self.trainable and mask is None and not self.renorm
                and keras.backend.backend() == "tensorflow" and len(inputs.shape) == 4
                and axis in (3, -1) and not isinstance(inputs, keras.KerasTensor))

    def call(self, inputs: Any, training: Any = None, mask: Any = None) -> Any:
        """Normalise ``inputs`` ``[B, H, W, C]`` (any rank and axis through the Keras path).

        Args:
            inputs: the activation.
            training: True normalises with the batch statistics and updates the moving ones.
            mask: optional mask (Keras path).

        Returns:
            The normalised tensor in the layer's compute dtype, shape of ``inputs``.
        """
        if not self._fusable(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        x = tf.cast(inputs, tf.float32)
        channels = int(x.shape[-1])
        gamma = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels], tf.float32)
        beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels], tf.float32)
        y, mean, corrected_variance = tf.compat.v1.nn.fused_batch_norm(
            x, gamma, beta, epsilon=self.epsilon, data_format="NHWC", is_training=True)
        # FusedBatchNormV3 returns var * N / max(N - 1, 1); Keras keeps the biased variance
        count = tf.cast(tf.size(x, out_type=tf.int64) // channels, tf.float32)
        variance = corrected_variance * (tf.maximum(count - 1.0, 1.0) / count)
        momentum = float(self.momentum)
        moving_mean = tf.cast(self.moving_mean, tf.float32)
        moving_variance = tf.cast(self.moving_variance, tf.float32)
        self.moving_mean.assign(moving_mean * momentum + tf.stop_gradient(mean) * (1.0 - momentum))
        self.moving_variance.assign(moving_variance * momentum + tf.stop_gradient(variance) * (1.0 - momentum))
        return tf.cast(y, self.compute_dtype)


__all__ = ["FusedBatchNormalization"]
