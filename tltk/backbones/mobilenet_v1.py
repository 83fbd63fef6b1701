"""MobileNet V1 (alpha 1.0, depth multiplier 1) stride-16 feature extractor, TAO layer names.

``conv1`` 3x3/2 (32 filters) + ``conv1_bn`` + ``conv_block_relu``, then depthwise-separable
blocks 1..11: ``conv_dw_<i>`` (3x3 depthwise) + ``conv_dw_<i>_bn`` + ``conv_dw_<i>_relu``,
``conv_pw_<i>`` (1x1) + ``conv_pw_<i>_bn`` + ``conv_pw_relu_<i>``.  Blocks 2, 4 and 6 have
stride 2, so the output (512 channels) is at stride 16; blocks 12-13 of the stride-32
classification network are not built.  Convolutions have no bias (TAO's default for the
MobileNets, also without BN).  ``freeze_blocks``: 0 = conv1, i = block i (1..11).
"""

from __future__ import annotations

from typing import Any

from tltk.backbones.layers import BackboneConfig, BackboneOutput, batch_norm, conv2d, depthwise_conv2d, relu

# block id -> (pointwise filters, stride)
MOBILENET_V1_BLOCKS: dict[int, tuple[int, int]] = {
    1: (64, 1),
    2: (128, 2),
    3: (128, 1),
    4: (256, 2),
    5: (256, 1),
    6: (512, 2),
    7: (512, 1),
    8: (512, 1),
    9: (512, 1),
    10: (512, 1),
    11: (512, 1),
}
FREEZE_IDS = tuple(range(12))


def build_mobilenet_v1(inputs: Any, num_layers: int, config: BackboneConfig) -> BackboneOutput:
    """Build the MobileNet V1 feature extractor on an NHWC input tensor.

    Args:
        inputs: NHWC Keras tensor (N, H, W, C), C = 1 or 3.
        num_layers: ignored (TAO ignores it for this family).
        config: backbone options; ``use_bias`` defaults to False (TAO).

    Returns:
        BackboneOutput with ``output`` of shape (N, H/16, W/16, 512); endpoints are
        ``conv_block_relu`` and every ``conv_pw_relu_<i>``; levels C1..C4.
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
        x = batch_norm(x, name="conv1_bn", config=config)
    x = relu(x, "conv_block_relu")
    endpoints["conv_block_relu"] = x
    stride = 2
    levels["C1"] = x
    for block_id, (filters, block_stride) in MOBILENET_V1_BLOCKS.items():
        trainable = block_id not in frozen
        x = depthwise_conv2d(
            x,
            strides=block_stride,
            use_bias=use_bias,
            trainable=trainable,
            name=f"conv_dw_{block_id}",
            config=config,
        )
        if config.use_batch_norm:
            x = batch_norm(x, name=f"conv_dw_{block_id}_bn", config=config)
        x = relu(x, f"conv_dw_{block_id}_relu")
        x = conv2d(
            x, filters, 1, use_bias=use_bias, trainable=trainable, name=f"conv_pw_{block_id}", config=config
        )
        if config.use_batch_norm:
            x = batch_norm(x, name=f"conv_pw_{block_id}_bn", config=config)
        x = relu(x, f"conv_pw_relu_{block_id}")
        endpoints[f"conv_pw_relu_{block_id}"] = x
        stride *= block_stride
        levels[f"C{stride.bit_length() - 1}"] = x

    name = "mobilenet_bn" if config.use_batch_norm else "mobilenet"
    return BackboneOutput(output=x, output_stride=stride, name=name, endpoints=endpoints, levels=levels)
