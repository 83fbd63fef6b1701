"""Building blocks shared by every backbone family: TAO-style padding, conv, BN, pooling.

All tensors here are channels-last (NHWC); the model transposes the NCHW input once (see
``tltk.backbones``).  Layer names are passed in by the family builders so that every
weight-carrying layer carries TAO's name.

Padding follows TAO exactly.  TAO patches Keras so that ``padding="same"`` means symmetric
zero padding of ``((k - 1) * dilation + 1) // 2`` pixels on each side followed by a VALID
convolution or pooling (TensorFlow's own SAME pads the odd extra pixel only at the bottom and
right).  For stride-1 layers with odd kernels the two are identical, so tltk keeps the fast
built-in ``"same"`` there; only strided layers with a kernel larger than 1 (and the 2x2/3x3
strided pools) get an explicit ``ZeroPadding2D`` named ``<layer>_pad`` followed by a VALID
layer.  Pretrained TAO weights therefore see exactly the sampling grid they were trained on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import keras

from tltk.backbones.fused_batch_norm import FusedBatchNormalization

# Keras' BatchNormalization defaults, which TAO uses unchanged (MobileNetV2 overrides momentum).
BN_MOMENTUM = 0.99
BN_EPSILON = 1e-3


@dataclass(frozen=True)
class BackboneConfig:
    """Options shared by every backbone builder (TAO ``model_config`` names).

    Attributes:
        use_batch_norm: add a BatchNormalization after every convolution.
        use_pooling: resnet/vgg only: downsample with max-pooling instead of strided convs.
        all_projections: resnet only: every shortcut is a 1x1 projection conv.
        freeze_blocks: block ids whose convolutions are made non-trainable (family specific).
        freeze_bn: every BatchNormalization runs in inference mode and is non-trainable.
        use_bias: conv bias; None means the family's TAO default (True for resnet, vgg,
            googlenet; False for the MobileNets).
        kernel_regularizer: Keras regularizer applied to every conv kernel, or None.
        bias_regularizer: Keras regularizer applied to every conv bias, or None.
        output_stride: total stride of the main output, 16 (DetectNet_v2) or 32 (resnet only,
            the C5 level MaskRCNN uses).
        gamma_regularizer: Keras regularizer applied to every BN gamma, or None (TAO MaskRCNN's
            weight decay covers gamma).
        freeze_bn_affine: with ``freeze_bn``, also freeze gamma/beta (True, DetectNet_v2).
            False gives TAO MaskRCNN's ``freeze_bn``: BN normalises with its moving statistics
            in training too, but gamma and beta stay trainable.
        fused_batch_norm: train BatchNormalization with TensorFlow's fused kernel
            (:class:`~tltk.backbones.fused_batch_norm.FusedBatchNormalization`: same weights,
            numbers and inference graph; MaskRCNN, where Keras' unfused BN costs a large share
            of a ResNet-50 step at 832x1344).
    """

    use_batch_norm: bool = True
    use_pooling: bool = False
    all_projections: bool = False
    freeze_blocks: frozenset[int] = field(default_factory=frozenset)
    freeze_bn: bool = False
    use_bias: bool | None = None
    kernel_regularizer: Any = None
    bias_regularizer: Any = None
    output_stride: int = 16
    gamma_regularizer: Any = None
    freeze_bn_affine: bool = True
    fused_batch_norm: bool = False

    def bias(self, family_default: bool) -> bool:
        """The conv ``use_bias`` to use: the explicit setting or the family default.

        Args:
            family_default: TAO's default for the calling family.

        Returns:
            Whether convolutions carry a bias vector.
        """
        return family_default if self.use_bias is None else bool(self.use_bias)


@dataclass
class BackboneOutput:
    """What a backbone builder returns (all tensors NHWC Keras tensors).

    Attributes:
        output: the main feature map, shape (N, H/output_stride, W/output_stride, C).
        output_stride: total stride of ``output`` relative to the input (16 for DetectNet_v2).
        name: TAO's name for the feature extractor, e.g. ``resnet18_nopool_bn``.
        endpoints: every block output by its TAO layer name (``block_3f_relu``,
            ``inception_4e_output``, ``conv_pw_relu_11``, ``block_12_add``...), in build order.
        levels: ``C1``..``C5``: the last tensor at stride 2, 4, 8, 16 (and 32 when built with
            ``output_stride=32``), for feature-pyramid heads.
    """

    output: Any
    output_stride: int
    name: str
    endpoints: dict[str, Any] = field(default_factory=dict)
    levels: dict[str, Any] = field(default_factory=dict)


def unit_letter(index: int) -> str:
    """TAO's unit id: 0 -> 'a', 25 -> 'z', 26 -> 'aa', 27 -> 'ab' (bijective base 26).

    Args:
        index: 0-based unit index inside a block.

    Returns:
        The letter suffix used in layer names.
    """
    letters = ""
    cur = index
    while cur >= 0:
        letters = chr(ord("a") + cur % 26) + letters
        cur = cur // 26 - 1
    return letters


def tao_padding(kernel_size: int, dilation: int = 1) -> int:
    """Pixels of symmetric zero padding TAO's patched ``"same"`` adds on each side.

    Args:
        kernel_size: square kernel or pool size in pixels.
        dilation: dilation rate.

    Returns:
        ``((kernel_size - 1) * dilation + 1) // 2`` for convolutions.
    """
    return ((kernel_size - 1) * dilation + 1) // 2


def conv2d(
    x: Any,
    filters: int,
    kernel_size: int,
    *,
    name: str,
    config: BackboneConfig,
    strides: int = 1,
    use_bias: bool = True,
    trainable: bool = True,
    projection: bool = False,
) -> Any:
    """A Conv2D with TAO's symmetric "same" padding (see module docstring).

    Args:
        x: NHWC input tensor.
        filters: output channels.
        kernel_size: square kernel size.
        name: the layer name (TAO's name, e.g. ``block_2a_conv_1``).
        config: backbone options (regularizers).
        strides: square stride.
        use_bias: add a bias vector.
        trainable: False for frozen blocks.
        projection: a 1x1 shortcut projection, which TAO builds with VALID padding.

    Returns:
        NHWC output tensor of shape (N, ceil(H/strides), ceil(W/strides), filters).
    """
    padding = "valid" if projection else "same"
    if strides > 1 and kernel_size > 1:
        pad = tao_padding(kernel_size)
        x = keras.layers.ZeroPadding2D(padding=(pad, pad), name=f"{name}_pad")(x)
        padding = "valid"
    return keras.layers.Conv2D(
        filters,
        (kernel_size, kernel_size),
        strides=(strides, strides),
        padding=padding,
        use_bias=use_bias,
        kernel_regularizer=config.kernel_regularizer,
        bias_regularizer=config.bias_regularizer if use_bias else None,
        trainable=trainable,
        name=name,
    )(x)


def depthwise_conv2d(
    x: Any,
    *,
    name: str,
    config: BackboneConfig,
    strides: int = 1,
    use_bias: bool = False,
    trainable: bool = True,
) -> Any:
    """A 3x3 DepthwiseConv2D (depth multiplier 1) with TAO's symmetric padding.

    Args:
        x: NHWC input tensor.
        name: TAO layer name (``conv_dw_3``, ``block_5_depthwise``).
        config: backbone options (regularizers).
        strides: square stride.
        use_bias: add a bias vector.
        trainable: False for frozen blocks.

    Returns:
        NHWC tensor with the input's channel count, spatially divided by ``strides``.
    """
    padding = "same"
    if strides > 1:
        x = keras.layers.ZeroPadding2D(padding=(1, 1), name=f"{name}_pad")(x)
        padding = "valid"
    return keras.layers.DepthwiseConv2D(
        (3, 3),
        strides=(strides, strides),
        padding=padding,
        depth_multiplier=1,
        use_bias=use_bias,
        depthwise_regularizer=config.kernel_regularizer,
        bias_regularizer=config.bias_regularizer if use_bias else None,
        trainable=trainable,
        name=name,
    )(x)


@keras.saving.register_keras_serializable(package="tltk")
class FrozenStatsBatchNormalization(keras.layers.BatchNormalization):
    """BatchNormalization that always normalises with its moving statistics.

    Unlike a non-trainable Keras BN, gamma and beta stay trainable and the moving statistics are
    never updated (TAO MaskRCNN's ``freeze_bn``: BN called in inference mode).  Same weights and
    config as ``BatchNormalization``, so weights load by layer name either way.
    """

    def call(self, inputs: Any, training: Any = None, mask: Any = None) -> Any:
        return super().call(inputs, training=False, mask=mask)


def batch_norm(x: Any, *, name: str, config: BackboneConfig, momentum: float = BN_MOMENTUM) -> Any:
    """BatchNormalization over the channel axis; frozen when ``config.freeze_bn``.

    A frozen BN always normalises with its moving statistics; with ``config.freeze_bn_affine``
    (the default) it is a non-trainable Keras BN, otherwise a
    :class:`FrozenStatsBatchNormalization` whose gamma/beta keep training.

    Args:
        x: NHWC input tensor.
        name: TAO layer name (``bn_conv1``, ``block_1a_bn_1``).
        config: backbone options.
        momentum: moving-average momentum (0.99; MobileNetV2 uses 0.999).

    Returns:
        Normalised NHWC tensor of the same shape.
    """
    stats_only = config.freeze_bn and not config.freeze_bn_affine
    cls = (FrozenStatsBatchNormalization if stats_only else
           FusedBatchNormalization if config.fused_batch_norm else keras.layers.BatchNormalization)
    return cls(
        axis=-1,
        momentum=momentum,
        epsilon=BN_EPSILON,
        gamma_regularizer=config.gamma_regularizer,
        trainable=stats_only or not config.freeze_bn,
        name=name,
    )(x)


def relu(x: Any, name: str) -> Any:
    """A named ReLU layer.

    Args:
        x: input tensor.
        name: layer name.

    Returns:
        max(x, 0), same shape.
    """
    return keras.layers.ReLU(name=name)(x)


def max_pool(x: Any, pool_size: int, strides: int, name: str) -> Any:
    """Max pooling with TAO's patched "same" padding.

    TAO pads ``(pool_size - 1) // 2`` zeros on each side and pools VALID.  Every max-pool in
    the backbones follows a ReLU or a concatenation of ReLUs, so zero padding equals Keras'
    -inf padding for stride 1; strided pools get the explicit padding.

    Args:
        x: NHWC input tensor (non-negative).
        pool_size: square pool size.
        strides: square stride.
        name: layer name (``pool1``, ``block1_pool``, ``inception_3a_pool``).

    Returns:
        Pooled NHWC tensor.
    """
    if strides == 1:
        return keras.layers.MaxPooling2D((pool_size, pool_size), strides=(1, 1), padding="same", name=name)(x)
    pad = (pool_size - 1) // 2
    if pad:
        x = keras.layers.ZeroPadding2D(padding=(pad, pad), name=f"{name}_pad")(x)
    return keras.layers.MaxPooling2D(
        (pool_size, pool_size), strides=(strides, strides), padding="valid", name=name
    )(x)


def nchw_to_nhwc(x: Any, name: str = "input_nhwc") -> Any:
    """Transpose an NCHW network input to the NHWC layout the backbones compute in.

    TensorFlow has no NCHW convolutions on CPU, so tltk models keep TAO's NCHW interface and
    transpose once, right after the input layer.

    Args:
        x: Keras tensor (N, C, H, W).
        name: layer name of the Permute layer.

    Returns:
        Keras tensor (N, H, W, C).
    """
    return keras.layers.Permute((2, 3, 1), name=name)(x)


def nhwc_to_nchw(x: Any, name: str, dtype: str | None = None) -> Any:
    """Transpose an NHWC feature map back to TAO's NCHW output layout.

    Args:
        x: Keras tensor (N, H, W, C).
        name: layer name of the Permute layer.
        dtype: optional layer dtype (``"float32"`` keeps model outputs in float32 under a
            mixed-precision policy).

    Returns:
        Keras tensor (N, C, H, W).
    """
    return keras.layers.Permute((3, 1, 2), name=name, dtype=dtype)(x)


# Layers whose arithmetic does not depend on where the channel axis is.
_LAYOUT_FREE = (keras.layers.InputLayer, keras.layers.Activation, keras.layers.ReLU, keras.layers.LeakyReLU,
                keras.layers.ELU, keras.layers.Add, keras.layers.Subtract, keras.layers.Multiply,
                keras.layers.Maximum, keras.layers.Minimum, keras.layers.Average, keras.layers.Dropout,
                keras.layers.SpatialDropout2D)
# Layers with an ``axis`` that names the channel axis.
_CHANNEL_AXIS = (keras.layers.BatchNormalization, keras.layers.Concatenate)


def _channels_last_config(layer: Any) -> dict[str, Any] | None:
    """``layer``'s config with its channel axis moved last, or None when tltk cannot move it."""
    config = layer.get_config()
    if isinstance(layer, _CHANNEL_AXIS):
        axis = config["axis"]
        axes = list(axis) if isinstance(axis, list | tuple) else [axis]
        if axes != [1]:
            return config if axes in ([-1], [3]) else None
        config["axis"] = -1
        return config
    if "data_format" in config:
        config["data_format"] = "channels_last"
        return config
    return config if isinstance(layer, _LAYOUT_FREE) else None


def to_channels_last(model: keras.Model) -> keras.Model | None:
    """A channels-first (NCHW) Keras graph rebuilt to compute in NHWC, with the same weights.

    TAO's Keras models (e.g. pruned DetectNet_v2 ``.tlt`` files) are channels-first throughout.
    TensorFlow runs NCHW convolutions and pooling on CPU only through oneDNN, which it enables
    on CPUs with AVX-512 and not on others, so tltk computes in NHWC as its own models do: the
    NCHW input is transposed once (:func:`nchw_to_nhwc`), every ``data_format`` becomes
    ``channels_last`` and batch-norm / concatenation axes 1 become -1.  Layer names, weights and
    the input stay as they were; outputs come out NHWC (their layers say ``channels_last``).

    Args:
        model: a functional Keras model with one rank-4 NCHW input.

    Returns:
        The rebuilt model, or None when a layer's arithmetic depends on the layout in a way this
        rewrite does not handle (e.g. ``Flatten``, ``Reshape``, ``Dense``, ``Lambda``), or the
        model has several inputs.
    """
    if len(model.inputs) != 1 or len(model.inputs[0].shape) != 4:
        return None
    if any(_channels_last_config(layer) is None for layer in model.layers):
        return None
    transposed: list[Any] = []

    def clone(layer: Any) -> Any:
        return type(layer).from_config(_channels_last_config(layer))

    def swap(tensor: Any) -> Any:
        if isinstance(tensor, list | tuple):
            return type(tensor)(swap(t) for t in tensor)
        producer = getattr(getattr(tensor, "_keras_history", None), "operation", None)
        if not isinstance(producer, keras.layers.InputLayer):
            return tensor
        if not transposed:
            transposed.append(nchw_to_nhwc(tensor, name=_unique_name("input_nhwc", model)))
        return transposed[0]

    def call(layer: Any, *args: Any, **kwargs: Any) -> Any:
        if args:
            return layer(swap(args[0]), *args[1:], **kwargs)
        return layer(**{**kwargs, "inputs": swap(kwargs["inputs"])})

    rebuilt = keras.models.clone_model(model, clone_function=clone, call_function=call)
    for layer in model.layers:
        if layer.weights:
            rebuilt.get_layer(layer.name).set_weights(layer.get_weights())
    return rebuilt


def _unique_name(base: str, model: keras.Model) -> str:
    taken = {layer.name for layer in model.layers}
    name, index = base, 1
    while name in taken:
        name, index = f"{base}_{index}", index + 1
    return name
