"""MobileNet V2 (alpha 1.0) stride-16 feature extractor with TAO's layer names.

``conv1`` 3x3/2 (32 filters) + ``bn_conv1`` + ``re_lu_0``, then inverted residual blocks 0..12.
Block 0 (prefix ``expanded_conv_``) has no expansion; block ``i`` >= 1 (prefix ``block_<i>_``)
is ``block_<i>_expand`` (1x1, 6x channels) + ``block_<i>_expand_bn`` + ``re_lu_<i+1>``, then
``<prefix>depthwise`` (3x3) + ``<prefix>depthwise_bn`` + ``<prefix>relu``, then the linear
``<prefix>project`` (1x1) + ``<prefix>project_bn`` and, when the block keeps shape,
``<prefix>add``.  Output: 96 channels at stride 16 (blocks 13-16 and the final 1x1 conv of the
stride-32 classifier are not built).  BN momentum is 0.999, convs have no bias (TAO).
``freeze_blocks``: 0 = conv1, ``i + 1`` = block ``i`` (so 1..13).
"""

from __future__ import annotations

from typing import Any

import keras

from tltk.backbones.layers import BackboneConfig, BackboneOutput, batch_norm, conv2d, depthwise_conv2d, relu

# block id -> (output filters, stride, expansion)
MOBILENET_V2_BLOCKS: dict[int, tuple[int, int, int]] = {
    0: (16, 1, 1),
    1: (24, 2, 6),
    2: (24, 1, 6),
    3: (32, 2, 6),
    4: (32, 1, 6),
    5: (32, 1, 6),
    6: (64, 2, 6),
    7: (64, 1, 6),
    8: (64, 1, 6),
    9: (64, 1, 6),
    10: (96, 1, 6),
    11: (96, 1, 6),
    12: (96, 1, 6),
}
FREEZE_IDS = tuple(range(14))
_BN_MOMENTUM = 0.999


def build_mobilenet_v2(inputs: Any, num_layers: int, config: BackboneConfig) -> BackboneOutput:
    """Build the MobileNet V2 feature extractor on an NHWC input tensor.

    Args:
        inputs: NHWC Keras tensor (N, H, W, C), C = 1 or 3.
        num_layers: ignored (TAO ignores it for this family).
        config: backbone options; ``use_bias`` defaults to False (TAO).

    Returns:
        BackboneOutput with ``output`` of shape (N, H/16, W/16, 96); endpoints are ``re_lu_0``
        and every block output (its ``add`` layer, else its ``project_bn``/``project``);
        levels C1..C4.
    """
    del num_layers
    use_bias = config.bias(False)
    frozen = config.freeze_blocks
    endpoints: dict[str, Any] = {}
    levels: dict[str, Any] = {}

    x = conv2d(
        inputs, 32, 3, strides=2, use_bias=use_bias, trainable=0 not in frozen, name="conv1", config=config
    )
    if config.use_batch_norm:
        x = batch_norm(x, name="bn_conv1", config=config, momentum=_BN_MOMENTUM)
    x = relu(x, "re_lu_0")
    endpoints["re_lu_0"] = x
    levels["C1"] = x
    stride = 2
    channels = 32
    for block_id, (filters, block_stride, expansion) in MOBILENET_V2_BLOCKS.items():
        trainable = (block_id + 1) not in frozen
        block_input = x
        if block_id:
            prefix = f"block_{block_id}_"
            x = conv2d(
                x,
                expansion * channels,
                1,
                use_bias=use_bias,
                trainable=trainable,
                name=f"{prefix}expand",
                config=config,
            )
            if config.use_batch_norm:
                x = batch_norm(x, name=f"{prefix}expand_bn", config=config, momentum=_BN_MOMENTUM)
            x = relu(x, f"re_lu_{block_id + 1}")
        else:
            prefix = "expanded_conv_"
        x = depthwise_conv2d(
            x,
            strides=block_stride,
            use_bias=use_bias,
            trainable=trainable,
            name=f"{prefix}depthwise",
            config=config,
        )
        if config.use_batch_norm:
            x = batch_norm(x, name=f"{prefix}depthwise_bn", config=config, momentum=_BN_MOMENTUM)
        x = relu(x, f"{prefix}relu")
        x = conv2d(
            x, filters, 1, use_bias=use_bias, trainable=trainable, name=f"{prefix}project", config=config
        )
        out_name = f"{prefix}project"
        if config.use_batch_norm:
            x = batch_norm(x, name=f"{prefix}project_bn", config=config, momentum=_BN_MOMENTUM)
            out_name = f"{prefix}project_bn"
        if channels == filters and block_stride == 1:
            x = keras.layers.Add(name=f"{prefix}add")([block_input, x])
            out_name = f"{prefix}add"
        endpoints[out_name] = x
        channels = filters
        stride *= block_stride
        levels[f"C{stride.bit_length() - 1}"] = x

    name = "mobilenet_v2_bn" if config.use_batch_norm else "mobilenet_v2"
    return BackboneOutput(output=x, output_stride=stride, name=name, endpoints=endpoints, levels=levels)
