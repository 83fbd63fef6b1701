"""ResNet 10/18/34/50/101 feature extractors with TAO's layer names.

Structure (TAO's ResNet template): ``conv1`` 7x7/2 with 64 filters, ``bn_conv1``, ReLU, then
four blocks of residual units.  Unit ``r`` (letters a, b, c, ...) of block ``b`` is named
``block_<b><r>_``: convolutions ``conv_1``, ``conv_2`` (``conv_3`` for bottlenecks), BNs
``bn_1``..., ReLUs ``relu_1``... between them, an optional 1x1 projection shortcut
``conv_shortcut`` + ``bn_shortcut`` (on the first unit of every block, or on every unit with
``all_projections``), the residual add ``add`` and the unit output ReLU ``relu``.

Strides (stride 16 output): without pooling conv1 /2 and blocks 1-3 /2 each (block 4 keeps
the resolution); with ``use_pooling`` a 3x3/2 max-pool follows conv1 and block 1 keeps the
resolution.  ``output_stride=32`` also halves in block 4 (MaskRCNN's C5).

``freeze_blocks``: 0 freezes ``conv1``; 1..4 freeze every conv (shortcut included) of that
block.  BN layers of frozen blocks stay trainable, as in TAO; ``freeze_bn`` freezes all BNs.
"""

from __future__ import annotations

import math
from typing import Any

import keras

from tltk.backbones.layers import (
    BackboneConfig,
    BackboneOutput,
    batch_norm,
    conv2d,
    max_pool,
    relu,
    unit_letter,
)

# num_layers -> (bottleneck units?, units per block)
RESNET_DEPTHS: dict[int, tuple[bool, tuple[int, int, int, int]]] = {
    10: (False, (1, 1, 1, 1)),
    18: (False, (2, 2, 2, 2)),
    34: (False, (3, 4, 6, 3)),
    50: (True, (3, 4, 6, 3)),
    101: (True, (3, 4, 23, 3)),
}
RESNET_WIDTHS = (64, 128, 256, 512)
FREEZE_IDS = (0, 1, 2, 3, 4)


def _unit(
    x: Any,
    prefix: str,
    subblocks: list[tuple[int, int]],
    stride: int,
    project_shortcut: bool,
    use_bias: bool,
    frozen: bool,
    config: BackboneConfig,
) -> Any:
    shortcut = x
    last = len(subblocks) - 1
    for i, (kernel, filters) in enumerate(subblocks):
        x = conv2d(
            x,
            filters,
            kernel,
            strides=stride if i == 0 else 1,
            use_bias=use_bias,
            trainable=not frozen,
            name=f"{prefix}conv_{i + 1}",
            config=config,
        )
        if config.use_batch_norm:
            x = batch_norm(x, name=f"{prefix}bn_{i + 1}", config=config)
        if i != last:
            x = relu(x, f"{prefix}relu_{i + 1}")
    if project_shortcut:
        shortcut = conv2d(
            shortcut,
            subblocks[-1][1],
            1,
            strides=stride,
            use_bias=use_bias,
            trainable=not frozen,
            name=f"{prefix}conv_shortcut",
            config=config,
            projection=True,
        )
        if config.use_batch_norm:
            shortcut = batch_norm(shortcut, name=f"{prefix}bn_shortcut", config=config)
    x = keras.layers.Add(name=f"{prefix}add")([x, shortcut])
    return relu(x, f"{prefix}relu")


def build_resnet(inputs: Any, num_layers: int, config: BackboneConfig) -> BackboneOutput:
    """Build a ResNet feature extractor on an NHWC input tensor.

    Args:
        inputs: NHWC Keras tensor (N, H, W, C), C = 1 or 3.
        num_layers: 10, 18, 34, 50 or 101 (checked by ``tltk.backbones.build_backbone``).
        config: backbone options; ``use_bias`` defaults to True (TAO).

    Returns:
        BackboneOutput with ``output`` of shape (N, H/16, W/16, 512) for 10/18/34 or
        (N, H/16, W/16, 2048) for 50/101 (H/32, W/32 with ``output_stride=32``); endpoints
        are every unit output ``block_<b><r>_relu``; levels C1..C4 (C5 at stride 32).
    """
    bottleneck, repeats = RESNET_DEPTHS[num_layers]
    use_bias = config.bias(True)
    frozen = config.freeze_blocks
    endpoints: dict[str, Any] = {}
    levels: dict[str, Any] = {}

    x = conv2d(
        inputs, 64, 7, strides=2, use_bias=use_bias, trainable=0 not in frozen, name="conv1", config=config
    )
    if config.use_batch_norm:
        x = batch_norm(x, name="bn_conv1", config=config)
    x = relu(x, "conv1_relu")
    stride = 2
    endpoints["conv1_relu"] = x
    levels["C1"] = x
    if config.use_pooling:
        x = max_pool(x, 3, 2, name="pool1")
        stride = 4
        block_strides = [1, 2, 2, 2 if config.output_stride == 32 else 1]
    else:
        block_strides = [2, 2, 2, 2 if config.output_stride == 32 else 1]

    for b, (units, width, block_stride) in enumerate(
        zip(repeats, RESNET_WIDTHS, block_strides, strict=True), start=1
    ):
        subblocks = [(1, width), (3, width), (1, 4 * width)] if bottleneck else [(3, width), (3, width)]
        for u in range(units):
            prefix = f"block_{b}{unit_letter(u)}_"
            x = _unit(
                x,
                prefix,
                subblocks,
                stride=block_stride if u == 0 else 1,
                project_shortcut=config.all_projections or u == 0,
                use_bias=use_bias,
                frozen=b in frozen,
                config=config,
            )
            endpoints[f"{prefix}relu"] = x
        stride *= block_stride
        levels[f"C{int(math.log2(stride))}"] = x

    name = f"resnet{num_layers}"
    if not config.use_pooling:
        name += "_nopool"
    if config.use_batch_norm:
        name += "_bn"
    return BackboneOutput(output=x, output_stride=stride, name=name, endpoints=endpoints, levels=levels)
