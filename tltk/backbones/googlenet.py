"""GoogLeNet (Inception v1 with BN) stride-16 feature extractor with TAO's layer names.

Stem: ``conv1`` 7x7/2 (64) + ``bn_conv1``, ``pool1`` 2x2/2, ``conv2_reduce`` 1x1 (64) +
``bn_conv2_reduce``, ``conv2`` 3x3 (192) + ``bn_conv2``, ``pool2`` 2x2/2.  Then inception blocks
3a, 3b, ``pool3`` 2x2/2, 4a-4e, 5a, 5b (TAO builds 5a/5b at stride 16 whenever there is no
classification head; ``pool4`` only exists with the head).  Block ``inception_<id>`` has the
branches ``_1x1``, ``_3x3_reduce`` -> ``_3x3``, ``_5x5_reduce`` -> ``_5x5`` and ``_pool`` (3x3/1
max-pool) -> ``_pool_proj``, each conv followed by ``<conv>_bn`` and a ReLU, concatenated as
``inception_<id>_output``.  Output: 1024 channels at stride 16.

``freeze_blocks``: 0 = the stem convs (conv1, conv2_reduce, conv2), 1 = 3a, 2 = 3b, 3..7 =
4a..4e, 8 = 5a, 9 = 5b (TAO documents 0..7; its template also numbers 5a and 5b).
"""

from __future__ import annotations

from typing import Any

import keras

from tltk.backbones.layers import BackboneConfig, BackboneOutput, batch_norm, conv2d, max_pool, relu

# id -> (1x1, 3x3_reduce, 3x3, 5x5_reduce, 5x5, pool_proj) filters; freeze id = position + 1
INCEPTION_BLOCKS: dict[str, tuple[int, int, int, int, int, int]] = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}
FREEZE_IDS = tuple(range(10))


def _conv_bn_relu(
    x: Any,
    filters: int,
    kernel: int,
    name: str,
    bn_name: str,
    use_bias: bool,
    trainable: bool,
    config: BackboneConfig,
) -> Any:
    x = conv2d(x, filters, kernel, use_bias=use_bias, trainable=trainable, name=name, config=config)
    if config.use_batch_norm:
        x = batch_norm(x, name=bn_name, config=config)
    return relu(x, f"{name}_relu")


def _inception(
    x: Any, block_id: str, filters: tuple[int, ...], use_bias: bool, trainable: bool, config: BackboneConfig
) -> Any:
    p = f"inception_{block_id}"
    f1, f3r, f3, f5r, f5, fp = filters
    b1 = _conv_bn_relu(x, f1, 1, f"{p}_1x1", f"{p}_1x1_bn", use_bias, trainable, config)
    b3 = _conv_bn_relu(x, f3r, 1, f"{p}_3x3_reduce", f"{p}_3x3_reduce_bn", use_bias, trainable, config)
    b3 = _conv_bn_relu(b3, f3, 3, f"{p}_3x3", f"{p}_3x3_bn", use_bias, trainable, config)
    b5 = _conv_bn_relu(x, f5r, 1, f"{p}_5x5_reduce", f"{p}_5x5_reduce_bn", use_bias, trainable, config)
    b5 = _conv_bn_relu(b5, f5, 5, f"{p}_5x5", f"{p}_5x5_bn", use_bias, trainable, config)
    bp = max_pool(x, 3, 1, name=f"{p}_pool")
    bp = _conv_bn_relu(bp, fp, 1, f"{p}_pool_proj", f"{p}_pool_proj_bn", use_bias, trainable, config)
    return keras.layers.Concatenate(axis=-1, name=f"{p}_output")([b1, b3, b5, bp])


def build_googlenet(inputs: Any, num_layers: int, config: BackboneConfig) -> BackboneOutput:
    """Build the GoogLeNet feature extractor on an NHWC input tensor.

    Args:
        inputs: NHWC Keras tensor (N, H, W, C), C = 1 or 3.
        num_layers: ignored (TAO ignores it for this family).
        config: backbone options; ``use_bias`` defaults to True (TAO).

    Returns:
        BackboneOutput with ``output`` of shape (N, H/16, W/16, 1024); endpoints are the stem
        pools and every ``inception_<id>_output``; levels C1..C4.
    """
    del num_layers
    use_bias = config.bias(True)
    frozen = config.freeze_blocks
    stem_trainable = 0 not in frozen
    endpoints: dict[str, Any] = {}
    levels: dict[str, Any] = {}

    x = conv2d(
        inputs, 64, 7, strides=2, use_bias=use_bias, trainable=stem_trainable, name="conv1", config=config
    )
    if config.use_batch_norm:
        x = batch_norm(x, name="bn_conv1", config=config)
    x = relu(x, "conv1_relu")
    levels["C1"] = x
    x = max_pool(x, 2, 2, name="pool1")
    endpoints["pool1"] = x
    x = _conv_bn_relu(x, 64, 1, "conv2_reduce", "bn_conv2_reduce", use_bias, stem_trainable, config)
    x = _conv_bn_relu(x, 192, 3, "conv2", "bn_conv2", use_bias, stem_trainable, config)
    levels["C2"] = x
    x = max_pool(x, 2, 2, name="pool2")
    endpoints["pool2"] = x
    for position, (block_id, filters) in enumerate(INCEPTION_BLOCKS.items(), start=1):
        if block_id == "4a":
            levels["C3"] = x
            x = max_pool(x, 2, 2, name="pool3")
            endpoints["pool3"] = x
        x = _inception(x, block_id, filters, use_bias, position not in frozen, config)
        endpoints[f"inception_{block_id}_output"] = x
    levels["C4"] = x
    name = "Googlenet_bn" if config.use_batch_norm else "Googlenet"
    return BackboneOutput(output=x, output_stride=16, name=name, endpoints=endpoints, levels=levels)
