"""Keras feature extractors with TAO's layer names, one family per module.

``BACKBONES`` is the explicit table of families; ``build_backbone`` validates the
architecture name and depth and builds the family on an NHWC Keras tensor.  Every weight-carrying
layer has the name TAO gives it, so TAO pretrained HDF5 files load by layer name
(``tltk.core.weights.load_weights_by_name``).  See ``docs/backbones.md``.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Iterable
from typing import Any

import keras

from tltk.backbones import googlenet, mobilenet_v1, mobilenet_v2, resnet, vgg
from tltk.backbones.layers import BackboneConfig, BackboneOutput, nchw_to_nhwc, nhwc_to_nchw, to_channels_last
from tltk.errors import SpecError

logger = logging.getLogger(__name__)

BackboneBuilder = Callable[[Any, int, BackboneConfig], BackboneOutput]

BACKBONES: dict[str, BackboneBuilder] = {
    "resnet": resnet.build_resnet,
    "vgg": vgg.build_vgg,
    "mobilenet_v1": mobilenet_v1.build_mobilenet_v1,
    "mobilenet_v2": mobilenet_v2.build_mobilenet_v2,
    "googlenet": googlenet.build_googlenet,
}

# Supported num_layers per family; None = the family has one depth and ignores num_layers.
SUPPORTED_NUM_LAYERS: dict[str, tuple[int, ...] | None] = {
    "resnet": tuple(resnet.RESNET_DEPTHS),
    "vgg": tuple(vgg.VGG_DEPTHS),
    "mobilenet_v1": None,
    "mobilenet_v2": None,
    "googlenet": None,
}

# Valid freeze_blocks ids per family.
FREEZE_BLOCK_IDS: dict[str, tuple[int, ...]] = {
    "resnet": resnet.FREEZE_IDS,
    "vgg": vgg.FREEZE_IDS,
    "mobilenet_v1": mobilenet_v1.FREEZE_IDS,
    "mobilenet_v2": mobilenet_v2.FREEZE_IDS,
    "googlenet": googlenet.FREEZE_IDS,
}

# TAO's spec validator also accepts these; tltk does not build them.
_TAO_ONLY_ARCHS = ("squeezenet", "darknet", "efficientnet_b0")

__all__ = [
    "BACKBONES",
    "FREEZE_BLOCK_IDS",
    "SUPPORTED_NUM_LAYERS",
    "BackboneConfig",
    "BackboneOutput",
    "build_backbone",
    "check_arch",
    "freeze_block_ids",
    "nchw_to_nhwc",
    "to_channels_last",
    "nhwc_to_nchw",
]


def check_arch(arch: str, num_layers: int) -> None:
    """Check that ``arch``/``num_layers`` name a backbone tltk can build.

    Args:
        arch: family name (``model_config.arch``).
        num_layers: depth (``model_config.num_layers``; ignored by single-depth families).

    Raises:
        SpecError: unknown family or unsupported depth, with a did-you-mean and the list of
            supported values.
    """
    if arch not in BACKBONES:
        close = difflib.get_close_matches(arch, list(BACKBONES), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        extra = " (TAO-only, not supported by tltk)" if arch in _TAO_ONLY_ARCHS else ""
        raise SpecError(
            f"model_config.arch: unknown backbone '{arch}'{extra}",
            hint=f"{hint}supported: {', '.join(BACKBONES)}",
        )
    depths = SUPPORTED_NUM_LAYERS[arch]
    if depths is not None and num_layers not in depths:
        close_depths = sorted(depths, key=lambda d: abs(d - num_layers))[:1]
        raise SpecError(
            f"model_config.num_layers: {arch} has no {num_layers}-layer variant",
            hint=f"did you mean {close_depths[0]}? supported for {arch}: {', '.join(map(str, depths))}",
        )


def freeze_block_ids(arch: str, freeze_blocks: Iterable[float]) -> frozenset[int]:
    """Turn ``model_config.freeze_blocks`` (repeated float) into the set of block ids to freeze.

    Like TAO, values are compared numerically; ids that name no block of ``arch`` (out of range
    or not whole numbers) freeze nothing and are reported with a warning.

    Args:
        arch: family name (must be in ``BACKBONES``).
        freeze_blocks: the spec values, e.g. ``[0.0, 1.0]``.

    Returns:
        Valid integer block ids.
    """
    valid = FREEZE_BLOCK_IDS[arch]
    ids: set[int] = set()
    for value in freeze_blocks:
        number = float(value)
        if number.is_integer() and int(number) in valid:
            ids.add(int(number))
        else:
            logger.warning(
                "model_config.freeze_blocks: %g is not a block of %s (valid: %s); it freezes nothing",
                number,
                arch,
                ", ".join(map(str, valid)),
            )
    return frozenset(ids)


def build_backbone(
    arch: str,
    num_layers: int,
    inputs_nhwc: Any,
    *,
    use_batch_norm: bool = True,
    use_pooling: bool = False,
    all_projections: bool = False,
    dropout_rate: float = 0.0,
    freeze_blocks: Iterable[float] = (),
    freeze_bn: bool = False,
    use_bias: bool | None = None,
    kernel_regularizer: Any = None,
    bias_regularizer: Any = None,
    output_stride: int = 16,
) -> BackboneOutput:
    """Build a TAO feature extractor on an NHWC Keras tensor.

    Args:
        arch: ``resnet``, ``vgg``, ``mobilenet_v1``, ``mobilenet_v2`` or ``googlenet``.
        num_layers: resnet 10/18/34/50/101, vgg 16/19; ignored by the other families.
        inputs_nhwc: Keras tensor (N, H, W, C) with C = 1 or 3, values in [0, 1].
        use_batch_norm: BN after every conv.
        use_pooling: resnet/vgg: max-pool downsampling instead of strided convs.
        all_projections: resnet: 1x1 projection on every shortcut.
        dropout_rate: if > 0, a ``Dropout`` layer named ``dropout`` is applied to the output
            feature map (TAO accepts the field but ignores it).
        freeze_blocks: block ids whose convs become non-trainable (see ``FREEZE_BLOCK_IDS``).
        freeze_bn: BN layers run in inference mode and are non-trainable.
        use_bias: conv bias; None = TAO's family default.
        kernel_regularizer: Keras regularizer for every conv kernel, or None.
        bias_regularizer: Keras regularizer for every conv bias, or None.
        output_stride: 16, or 32 for resnet (adds the stride in block 4, MaskRCNN's C5).

    Returns:
        BackboneOutput: ``output`` (N, H/stride, W/stride, C_out), plus named ``endpoints``
        and ``levels`` (C1..C5) for multi-level heads.

    Raises:
        SpecError: unknown arch, unsupported num_layers, or dropout_rate outside [0, 1).
        ValueError: ``output_stride`` other than 16, or 32 for a non-resnet family.
    """
    check_arch(arch, num_layers)
    if output_stride not in (16, 32) or (output_stride == 32 and arch != "resnet"):
        raise ValueError(f"output_stride {output_stride} is not available for {arch} (16; 32 for resnet)")
    if not 0.0 <= float(dropout_rate) < 1.0:
        raise SpecError(
            f"model_config.dropout_rate: {dropout_rate} is outside [0, 1)",
            hint="TAO documents 0.0-0.1; 0.0 disables dropout",
        )
    if arch == "resnet" and use_pooling and output_stride == 16:
        logger.info(
            "resnet with use_pooling: max-pool after conv1 and no stride in block 4, keeping output stride 16 "
            "(TAO's template would give a stride-32 map followed by a 7x7 average pool)"
        )
    config = BackboneConfig(
        use_batch_norm=bool(use_batch_norm),
        use_pooling=bool(use_pooling) and arch in ("resnet", "vgg"),
        all_projections=bool(all_projections) and arch == "resnet",
        freeze_blocks=freeze_block_ids(arch, freeze_blocks),
        freeze_bn=bool(freeze_bn),
        use_bias=use_bias,
        kernel_regularizer=kernel_regularizer,
        bias_regularizer=bias_regularizer,
        output_stride=output_stride,
    )
    result = BACKBONES[arch](inputs_nhwc, int(num_layers), config)
    if dropout_rate > 0:
        result.output = keras.layers.Dropout(float(dropout_rate), name="dropout")(result.output)
    return result
