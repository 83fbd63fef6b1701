"""VGG 16/19 feature extractors with TAO's layer names.

Five blocks of 3x3 convolutions (64, 128, 256, 512, 512 filters; VGG16 repeats 2, 2, 3, 3, 3,
VGG19 repeats 2, 2, 4, 4, 4).  Each conv is its own unit ``block_<b><r>_`` with ``conv_1``,
``bn_1`` and the unit ReLU ``relu`` (e.g. ``block_3c_conv_1``, ``block_3c_relu``).  With
``use_pooling`` 2x2/2 max-pools ``block1_pool``..``block4_pool`` follow blocks 1-4; otherwise
the first conv of blocks 2-5 has stride 2.  Either way the output stride is 16 (block 5 is
the output, no ``block5_pool``).  ``freeze_blocks`` ids 1..5 freeze the convs of that block.
"""

from __future__ import annotations

from typing import Any

from tltk.backbones.layers import (
    BackboneConfig,
    BackboneOutput,
    batch_norm,
    conv2d,
    max_pool,
    relu,
    unit_letter,
)

VGG_DEPTHS: dict[int, tuple[int, int, int, int, int]] = {
    16: (2, 2, 3, 3, 3),
    19: (2, 2, 4, 4, 4),
}
VGG_WIDTHS = (64, 128, 256, 512, 512)
FREEZE_IDS = (1, 2, 3, 4, 5)


def build_vgg(inputs: Any, num_layers: int, config: BackboneConfig) -> BackboneOutput:
    """Build a VGG feature extractor on an NHWC input tensor.

    Args:
        inputs: NHWC Keras tensor (N, H, W, C), C = 1 or 3.
        num_layers: 16 or 19.
        config: backbone options; ``use_bias`` defaults to True (TAO).

    Returns:
        BackboneOutput with ``output`` of shape (N, H/16, W/16, 512); endpoints are every unit
        ReLU (``block_<b><r>_relu``) and pool; levels C1..C4 (C1 only with strided convs,
        since with pooling block 1 runs at full resolution).
    """
    use_bias = config.bias(True)
    endpoints: dict[str, Any] = {}
    levels: dict[str, Any] = {}
    x = inputs
    stride = 1
    for b, (units, width) in enumerate(zip(VGG_DEPTHS[num_layers], VGG_WIDTHS, strict=True), start=1):
        block_stride = 1 if (b == 1 or config.use_pooling) else 2
        for u in range(units):
            prefix = f"block_{b}{unit_letter(u)}_"
            x = conv2d(
                x,
                width,
                3,
                strides=block_stride if u == 0 else 1,
                use_bias=use_bias,
                trainable=b not in config.freeze_blocks,
                name=f"{prefix}conv_1",
                config=config,
            )
            if config.use_batch_norm:
                x = batch_norm(x, name=f"{prefix}bn_1", config=config)
            x = relu(x, f"{prefix}relu")
            endpoints[f"{prefix}relu"] = x
        stride *= block_stride
        if config.use_pooling and b < 5:
            x = max_pool(x, 2, 2, name=f"block{b}_pool")
            endpoints[f"block{b}_pool"] = x
            stride *= 2
        if stride > 1:
            levels[f"C{stride.bit_length() - 1}"] = x

    name = f"vgg{num_layers}"
    if not config.use_pooling:
        name += "_nopool"
    if config.use_batch_norm:
        name += "_bn"
    return BackboneOutput(output=x, output_stride=stride, name=name, endpoints=endpoints, levels=levels)
