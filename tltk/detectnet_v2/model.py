"""The DetectNet_v2 Keras model: a TAO backbone plus the ``output_cov``/``output_bbox`` heads.

Layout (TAO's interface, computed channels-last inside)::

    input_1 (N, C, H, W), C = 1 or 3, values in [0, 1]
      -> input_nhwc (Permute to NHWC)
      -> backbone (TAO layer names, stride 16)
      -> output_cov  : Conv2D 1x1, num_classes filters, sigmoid  -> output_cov_nchw  (Permute)
      -> output_bbox : Conv2D 1x1, 4*num_classes filters, linear -> output_bbox_nchw (Permute)

The model returns a dict ``{"output_cov": (N, num_classes, H/16, W/16), "output_bbox":
(N, 4*num_classes, H/16, W/16)}`` (float32); bbox channel ``4*k + j`` is coordinate ``j``
(x1, y1, x2, y2 offsets) of class ``k``, exactly TAO's order.  The head convs keep TAO's names,
so TensorFlow names their ops ``output_cov/Sigmoid`` and ``output_bbox/BiasAdd`` and TAO head
weights load by name; the ``*_nchw`` Permute layers only restore TAO's output layout.

``model_config`` is duck-typed on TAO's ``ModelConfig`` field names, so the generated proto
message and a ``types.SimpleNamespace`` both work; fields a namespace lacks read the proto's
defaults (:func:`tltk.spec.fields.spec_field`).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import keras

from tltk._proto import detectnet_v2_pb2 as pb
from tltk.backbones import build_backbone, check_arch, nchw_to_nhwc, nhwc_to_nchw, to_channels_last
from tltk.core.weights import WeightLoadReport, load_model_graph, load_weights_by_name
from tltk.errors import SpecError
from tltk.spec.fields import spec_field

logger = logging.getLogger(__name__)

INPUT_NAME = "input_1"
COV_NAME = "output_cov"
BBOX_NAME = "output_bbox"
HEAD_NAMES = (COV_NAME, BBOX_NAME)
#: Keras output name -> TAO's exported (ONNX/TensorRT/DeepStream) output name.
OUTPUT_NAMES = {COV_NAME: "output_cov/Sigmoid", BBOX_NAME: "output_bbox/BiasAdd"}
OUTPUT_STRIDE = 16
BBOX_CHANNELS_PER_CLASS = 4


def prior_bias(prior_probability: float) -> float:
    """The coverage head's initial bias for a prior probability: ``-ln((1 - p) / p)``.

    A sigmoid of this bias is ``p``, so every cell of an untrained network predicts coverage
    ``p`` (0.5 gives TAO's zero bias; 0.01 gives -4.595).

    Args:
        prior_probability: ``p``, strictly between 0 and 1.

    Returns:
        The bias, in logits.

    Raises:
        SpecError: ``p`` outside (0, 1).
    """
    p = float(prior_probability)
    if not 0.0 < p < 1.0:
        raise SpecError(f"model_config.objective_set.cov.prior_probability: {p:g} is not strictly between 0 and 1")
    return -math.log((1.0 - p) / p)


def _model_field(model_config: Any, name: str) -> Any:
    """``model_config.<name>`` (message or namespace); unset fields read the proto's default."""
    return spec_field(model_config, pb.ModelConfig, name)


def resolved_arch(model_config: Any) -> tuple[str, int]:
    """The backbone family and depth a ``model_config`` asks for.

    Args:
        model_config: TAO ``ModelConfig`` (message or namespace).

    Returns:
        ``(arch, num_layers)``; unset fields read the proto's defaults (``resnet``, 18).  TAO's
        "``num_layers`` 0 means 18" is applied when the spec is loaded (``zero_means_default``
        in :mod:`tltk.detectnet_v2.spec`); an empty ``arch`` is a spec error there.
    """
    arch = str(_model_field(model_config, "arch"))
    num_layers = int(_model_field(model_config, "num_layers"))
    return arch, num_layers


def cov_prior_probability(model_config: Any) -> float:
    """``model_config.objective_set.cov.prior_probability`` (the proto's default when unset)."""
    objective_set = _model_field(model_config, "objective_set")
    cov = spec_field(objective_set, pb.ModelConfig.ObjectiveSet, "cov")
    return float(spec_field(cov, pb.ModelConfig.CovObjective, "prior_probability"))


def _head_inputs(model_config: Any) -> dict[str, str]:
    objective_set = _model_field(model_config, "objective_set")
    if objective_set is None:
        return {COV_NAME: "", BBOX_NAME: ""}
    inputs: dict[str, str] = {}
    missing = []
    for objective in ("cov", "bbox"):
        sub = spec_field(objective_set, pb.ModelConfig.ObjectiveSet, objective)
        if sub is None:
            missing.append(objective)
            continue
        objective_class = pb.ModelConfig.CovObjective if objective == "cov" else pb.ModelConfig.BboxObjective
        inputs[f"output_{objective}"] = str(spec_field(sub, objective_class, "input"))
    if missing:
        raise SpecError(
            f"model_config.objective_set: missing {' and '.join(missing)}",
            hint="DetectNet_v2 needs both: objective_set { cov {} bbox { scale: 35.0 offset: 0.5 } }",
        )
    return inputs


def _find_head_input(backbone: keras.Model, pattern: str, field_path: str) -> Any:
    if not pattern:
        return backbone.layers[-1].output
    names = [layer.name for layer in backbone.layers]
    if pattern in names:
        return backbone.get_layer(pattern).output
    matches = [name for name in names if pattern in name]
    if len(matches) != 1:
        found = f"it matches {', '.join(matches[:8])}" if matches else "no layer matches it"
        raise SpecError(
            f"{field_path}: '{pattern}' must name exactly one backbone layer; {found}",
            hint='use an exact layer name (see docs/backbones.md) or "" for the backbone output',
        )
    return backbone.get_layer(matches[0]).output


def _check_input_shape(input_shape_chw: tuple[int, int, int]) -> tuple[int, int, int]:
    if len(input_shape_chw) != 3:
        raise SpecError(f"input shape must be (C, H, W), got {tuple(input_shape_chw)}")
    channels, height, width = (int(v) for v in input_shape_chw)
    if channels not in (1, 3):
        raise SpecError(
            f"augmentation_config.preprocessing.output_image_channel: {channels} channels; DetectNet_v2 takes 1 or 3"
        )
    for label, value in (("height", height), ("width", width)):
        if value <= 0 or value % OUTPUT_STRIDE:
            raise SpecError(
                f"augmentation_config.preprocessing.output_image_{label}: {value} is not a positive multiple of 16",
                hint=f"use e.g. {max(OUTPUT_STRIDE, round(value / OUTPUT_STRIDE) * OUTPUT_STRIDE)}",
            )
    return channels, height, width


def _heads(
    features: dict[str, Any],
    num_classes: int,
    kernel_regularizer: Any,
    bias_regularizer: Any,
    prior_probability: float,
) -> dict[str, Any]:
    cov = keras.layers.Conv2D(
        num_classes,
        (1, 1),
        padding="same",
        activation="sigmoid",
        kernel_initializer="glorot_uniform",
        bias_initializer=keras.initializers.Constant(prior_bias(prior_probability)),
        kernel_regularizer=kernel_regularizer,
        bias_regularizer=bias_regularizer,
        name=COV_NAME,
    )(features[COV_NAME])
    bbox = keras.layers.Conv2D(
        BBOX_CHANNELS_PER_CLASS * num_classes,
        (1, 1),
        padding="same",
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=kernel_regularizer,
        bias_regularizer=bias_regularizer,
        name=BBOX_NAME,
    )(features[BBOX_NAME])
    return {
        COV_NAME: nhwc_to_nchw(cov, name=f"{COV_NAME}_nchw", dtype="float32"),
        BBOX_NAME: nhwc_to_nchw(bbox, name=f"{BBOX_NAME}_nchw", dtype="float32"),
    }


def build_detectnet_v2_model(
    model_config: Any,
    num_classes: int,
    input_shape_chw: tuple[int, int, int],
    *,
    kernel_regularizer: Any = None,
    bias_regularizer: Any = None,
) -> keras.Model:
    """Build a DetectNet_v2 model from a TAO ``model_config`` (no weights loaded).

    Args:
        model_config: ``ModelConfig`` message or namespace with TAO's fields: ``arch``,
            ``num_layers`` (0 -> 18), ``use_batch_norm``, ``use_pooling``, ``all_projections``,
            ``dropout_rate``, ``freeze_blocks``, ``freeze_bn``, ``objective_set`` (``cov.input`` /
            ``bbox.input``: head input layer, "" = backbone output; ``cov.prior_probability``:
            the coverage every cell predicts before training), ``pretrained_model_file``.
        num_classes: number of target classes (>= 1).
        input_shape_chw: (C, H, W) with C in {1, 3} and H, W multiples of 16, in pixels.
        kernel_regularizer: Keras regularizer for every conv kernel (heads included), or None.
        bias_regularizer: Keras regularizer for every conv bias, or None.

    Returns:
        ``keras.Model`` named ``<backbone>_detectnet_v2`` (e.g. ``resnet18_nopool_bn_detectnet_v2``)
        with input ``input_1`` (N, C, H, W) float32 and dict outputs ``output_cov``
        (N, num_classes, H/16, W/16), sigmoid in [0, 1], and ``output_bbox``
        (N, 4*num_classes, H/16, W/16), linear.

    Raises:
        SpecError: unknown arch/num_layers, bad input shape, no classes, bad head input, or an
            invalid dropout_rate.
    """
    if num_classes < 1:
        raise SpecError(
            "dataset_config.target_class_mapping: no target classes; DetectNet_v2 needs at least one"
        )
    channels, height, width = _check_input_shape(input_shape_chw)
    arch, num_layers = resolved_arch(model_config)
    check_arch(arch, num_layers)
    head_inputs = _head_inputs(model_config)
    freeze_blocks = list(_model_field(model_config, "freeze_blocks"))
    if freeze_blocks and not _model_field(model_config, "pretrained_model_file"):
        logger.warning(
            "model_config.freeze_blocks is set without a pretrained_model_file: frozen blocks keep random weights"
        )

    inputs = keras.Input(shape=(channels, height, width), name=INPUT_NAME)
    backbone = build_backbone(
        arch,
        num_layers,
        nchw_to_nhwc(inputs),
        use_batch_norm=bool(_model_field(model_config, "use_batch_norm")),
        use_pooling=bool(_model_field(model_config, "use_pooling")),
        all_projections=bool(_model_field(model_config, "all_projections")),
        dropout_rate=float(_model_field(model_config, "dropout_rate")),
        freeze_blocks=freeze_blocks,
        freeze_bn=bool(_model_field(model_config, "freeze_bn")),
        kernel_regularizer=kernel_regularizer,
        bias_regularizer=bias_regularizer,
    )
    trunk = keras.Model(inputs, backbone.output, name=backbone.name)
    features = {
        head: _find_head_input(trunk, pattern, f"model_config.objective_set.{head[len('output_') :]}.input")
        for head, pattern in head_inputs.items()
    }
    outputs = _heads(features, num_classes, kernel_regularizer, bias_regularizer,
                     cov_prior_probability(model_config))
    cov_shape, bbox_shape = tuple(outputs[COV_NAME].shape[2:]), tuple(outputs[BBOX_NAME].shape[2:])
    if cov_shape != bbox_shape:
        raise SpecError(
            f"model_config.objective_set: cov and bbox heads read maps of different sizes ({cov_shape} vs {bbox_shape})",
            hint="give both objectives the same input layer",
        )
    return keras.Model(inputs, outputs, name=f"{backbone.name}_detectnet_v2")


def _uses_channels_first(model: keras.Model) -> bool:
    return any(getattr(layer, "data_format", None) == "channels_first" for layer in model.layers)


def _standardize_loaded(
    model: keras.Model,
    num_classes: int,
    allow_modification: bool,
    source: str,
    kernel_regularizer: Any,
    bias_regularizer: Any,
    prior_probability: float,
) -> keras.Model:
    """Give a loaded graph tltk's output dict (NCHW maps), adding heads when allowed."""
    outputs = model.output
    if isinstance(outputs, dict) and set(outputs) == set(HEAD_NAMES):
        result = model
    else:
        names = {layer.name for layer in model.layers}
        channels_first = _uses_channels_first(model)
        if all(name in names for name in HEAD_NAMES):
            heads = {}
            for name in HEAD_NAMES:
                layer = model.get_layer(name)
                tensor = layer.output
                if getattr(layer, "data_format", "channels_last") == "channels_last":
                    tensor = nhwc_to_nchw(tensor, name=f"{name}_nchw", dtype="float32")
                heads[name] = tensor
        elif any(name in names for name in HEAD_NAMES) or not allow_modification:
            missing = [name for name in HEAD_NAMES if name not in names]
            raise SpecError(
                f"model_config.load_graph: {source} has no {' / '.join(missing)} head",
                hint="set allow_loaded_model_modification: true to add the missing heads",
            )
        else:
            features = model.outputs[0]
            if channels_first:
                features = nchw_to_nhwc(features, name="features_nhwc")
            heads = _heads(
                {COV_NAME: features, BBOX_NAME: features},
                num_classes,
                kernel_regularizer,
                bias_regularizer,
                prior_probability,
            )
            logger.info("load_graph: added output_cov/output_bbox heads to %s", source)
        model_inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
        result = keras.Model(model_inputs, heads, name=model.name)
    cov_channels = int(result.output[COV_NAME].shape[1])
    if cov_channels != num_classes:
        raise SpecError(
            f"model_config.load_graph: {source} predicts {cov_channels} classes but the spec has {num_classes} target classes",
            hint="use the same target_class_mapping as the loaded model, or load_graph: false to load weights only",
        )
    return result


def _apply_regularizers(model: keras.Model, kernel_regularizer: Any, bias_regularizer: Any) -> None:
    for layer in model.layers:
        if not isinstance(layer, keras.layers.Conv2D | keras.layers.DepthwiseConv2D | keras.layers.Dense):
            continue
        kernel = getattr(layer, "kernel", None)
        if kernel is not None:
            kernel.regularizer = kernel_regularizer
        bias = getattr(layer, "bias", None)
        if bias is not None:
            bias.regularizer = bias_regularizer


def build_or_load_detectnet_v2_model(
    model_config: Any,
    num_classes: int,
    input_shape_chw: tuple[int, int, int],
    *,
    key: str | None = None,
    kernel_regularizer: Any = None,
    bias_regularizer: Any = None,
) -> tuple[keras.Model, WeightLoadReport | None]:
    """Make the training model as TAO does: build and load pretrained weights, or load a graph.

    * ``load_graph: false``: build from ``model_config``; with ``pretrained_model_file`` copy
      weights by layer name into the backbone (heads are never copied, as in TAO, where heads
      are attached after loading).
    * ``load_graph: true``: use the whole saved model (e.g. pruned); missing heads are added only
      with ``allow_loaded_model_modification``; regularizers are re-applied to every conv/dense;
      ``freeze_bn`` freezes every batch-norm layer (moving statistics in training too).

    Args:
        model_config: ``ModelConfig`` message or namespace (see ``build_detectnet_v2_model``),
            also ``pretrained_model_file``, ``load_graph``, ``allow_loaded_model_modification``.
        num_classes: number of target classes.
        input_shape_chw: (C, H, W) input in pixels (with ``load_graph`` the loaded model's own
            input shape is kept).
        key: key for a sealed tltk ``.tlt`` or a legacy TAO ``.tlt``.
        kernel_regularizer: Keras regularizer for conv kernels, or None.
        bias_regularizer: Keras regularizer for conv biases, or None.

    Returns:
        ``(model, report)``: the model (outputs as in ``build_detectnet_v2_model``) and the weight
        loading report (None when nothing was loaded by name).

    Raises:
        SpecError: invalid model_config, ``load_graph`` without a file, heads or classes that do
            not fit.
        InvalidInputError, WrongKeyError, ModelFileError: the pretrained file cannot be used.
    """
    pretrained = str(_model_field(model_config, "pretrained_model_file"))
    if bool(_model_field(model_config, "load_graph")):
        if not pretrained:
            raise SpecError("model_config.load_graph is true but model_config.pretrained_model_file is empty")
        loaded = load_model_graph(pretrained, key)
        if _uses_channels_first(loaded):
            converted = to_channels_last(loaded)
            if converted is None:
                logger.warning("load_graph: %s is channels-first with layers tltk cannot move to channels-last; "
                               "TensorFlow runs its NCHW convolutions on CPU only with oneDNN (AVX-512 CPUs)",
                               pretrained)
            else:
                loaded = converted
                logger.info("load_graph: %s is channels-first; computing in channels-last (same weights)", pretrained)
        model = _standardize_loaded(
            loaded,
            num_classes,
            bool(_model_field(model_config, "allow_loaded_model_modification")),
            pretrained,
            kernel_regularizer,
            bias_regularizer,
            cov_prior_probability(model_config),
        )
        _apply_regularizers(model, kernel_regularizer, bias_regularizer)
        if bool(_model_field(model_config, "freeze_bn")):
            # A non-trainable Keras BatchNormalization normalises with its moving statistics in
            # training too, so training and inference see the same network.
            frozen = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
            for layer in frozen:
                layer.trainable = False
            logger.info("load_graph: freeze_bn: %d batch-norm layers frozen", len(frozen))
        loaded_shape = tuple(int(d) for d in model.inputs[0].shape[1:])
        if loaded_shape != tuple(int(d) for d in input_shape_chw):
            logger.warning(
                "load_graph: using the loaded model's input shape %s instead of %s",
                loaded_shape,
                tuple(input_shape_chw),
            )
        return model, None
    model = build_detectnet_v2_model(
        model_config,
        num_classes,
        input_shape_chw,
        kernel_regularizer=kernel_regularizer,
        bias_regularizer=bias_regularizer,
    )
    if not pretrained:
        return model, None
    report = load_weights_by_name(model, pretrained, key, exclude=HEAD_NAMES)
    if not report.loaded:
        arch, num_layers = resolved_arch(model_config)
        logger.warning(
            "no layer of %s matched %s (arch %s, num_layers %d): training starts from random weights",
            pretrained,
            model.name,
            arch,
            num_layers,
        )
    return model, report
