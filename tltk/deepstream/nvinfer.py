"""DeepStream ``nvinfer`` configuration files (INI and the DeepStream 6.2+ YAML twin).

:class:`NvinferConfig` describes the three kinds of sections ``gst-nvinfer`` reads:
``[property]`` (:class:`NvinferProperties`), ``[class-attrs-all]`` and ``[class-attrs-<id>]``
(:class:`ClassAttributes`).  :func:`write_nvinfer_config` writes the INI form (GKeyFile syntax:
comments on lines of their own, never after a value) and :func:`write_nvinfer_yaml` the YAML
form (``property:``, ``class-attrs-all:``, ``class-attrs-<id>:`` maps).  Both carry exactly the
same keys and values.

:func:`detectnet_v2_nvinfer_config` and :func:`mask_rcnn_nvinfer_config` fill a config from what
export knows: model file and key, input size, preprocessing, precision and calibration cache,
exported tensor names, classes and the spec's postprocessing.
"""

from __future__ import annotations

import decimal
import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from tltk.errors import UsageError
from tltk.fileio import atomic_write_bytes

log = logging.getLogger(__name__)

#: ``network-mode`` per precision.
NETWORK_MODES = {"fp32": 0, "int8": 1, "fp16": 2}
#: ``cluster-mode`` values.
CLUSTER_GROUP_RECTANGLES, CLUSTER_DBSCAN, CLUSTER_NMS, CLUSTER_HYBRID, CLUSTER_NONE = 0, 1, 2, 3, 4
CLUSTER_MODES = {"DBSCAN": CLUSTER_DBSCAN, "NMS": CLUSTER_NMS, "HYBRID": CLUSTER_HYBRID}
#: ``model-color-format`` values.
COLOR_FORMATS = {"rgb": 0, "bgr": 1, "gray": 2}
#: ``network-type`` values.
NETWORK_TYPE_DETECTOR, NETWORK_TYPE_INSTANCE_SEGMENTATION = 0, 3

#: The MaskRCNN box/mask parser for ``mask_fcn_logits/BiasAdd`` outputs.
MASK_RCNN_PARSE_FUNC = "NvDsInferParseCustomMrcnnTLTV2"
#: DeepStream's stock custom-parser library; it contains ``NvDsInferParseCustomMrcnnTLTV2`` (the
#: deepstream_tao_apps repository builds the same parser as ``post_processor/libnvds_infercustomparser_tao.so``).
DEEPSTREAM_CUSTOM_PARSER_LIB = "/opt/nvidia/deepstream/deepstream/lib/libnvds_infercustomparser.so"
#: MaskRCNN inference score threshold (TAO ``inference -t`` default).
MASK_RCNN_SCORE_THRESHOLD = 0.6

_PROPERTY_COMMENTS = {
    "net-scale-factor": "Preprocessing: y = net-scale-factor * (x - offsets[c]) on 8-bit pixels",
    "model-color-format": "0=RGB, 1=BGR, 2=GRAY",
    "onnx-file": "The model exported by tltk",
    "tlt-encoded-model": "Legacy encrypted model (.etlt) and its key",
    "model-engine-file": "Engine DeepStream builds on first run (or one built with tltk converter)",
    "int8-calib-file": "TensorRT INT8 calibration cache",
    "infer-dims": "Network input C;H;W",
    "network-mode": "0=FP32, 1=INT8, 2=FP16",
    "network-type": "0=detector, 3=instance segmentation",
    "output-blob-names": "Exported output tensor names",
    "cluster-mode": "0=group rectangles, 1=DBSCAN, 2=NMS, 3=DBSCAN+NMS hybrid, 4=none",
    "maintain-aspect-ratio": "1=keep the aspect ratio, pad right/bottom; 0=stretch to W x H (as in training)",
    "custom-lib-path": "Parser library; NvDsInferParseCustomMrcnnTLTV2 ships with DeepStream",
}


@dataclass
class NvinferProperties:
    """The ``[property]`` section; ``None`` fields are not written.

    Attribute names are the nvinfer keys with ``-`` spelt ``_``; they are written in this order.
    """

    gpu_id: int = 0
    net_scale_factor: float = 1.0
    offsets: tuple[float, ...] | None = None
    model_color_format: int = 0
    onnx_file: str | None = None
    tlt_encoded_model: str | None = None
    tlt_model_key: str | None = None
    uff_input_blob_name: str | None = None
    uff_input_order: int | None = None
    model_engine_file: str | None = None
    int8_calib_file: str | None = None
    labelfile_path: str | None = None
    infer_dims: tuple[int, ...] | None = None
    batch_size: int = 1
    process_mode: int = 1
    network_mode: int = 0
    network_type: int = NETWORK_TYPE_DETECTOR
    num_detected_classes: int | None = None
    output_blob_names: tuple[str, ...] | None = None
    cluster_mode: int | None = None
    maintain_aspect_ratio: int | None = None
    symmetric_padding: int | None = None
    output_instance_mask: int | None = None
    parse_bbox_instance_mask_func_name: str | None = None
    custom_lib_path: str | None = None
    workspace_size: int | None = None
    enable_dla: int | None = None
    use_dla_core: int | None = None
    interval: int = 0
    gie_unique_id: int = 1


@dataclass
class ClassAttributes:
    """One ``[class-attrs-all]`` or ``[class-attrs-<id>]`` section; ``None`` fields are not written.

    Attributes:
        pre_cluster_threshold: confidence threshold applied before clustering.
        post_cluster_threshold: confidence threshold applied after clustering.
        eps: DBSCAN neighbourhood distance.
        min_boxes: DBSCAN minimum cluster size (key ``minBoxes``).
        dbscan_min_score: DBSCAN minimum summed confidence of a cluster.
        nms_iou_threshold: NMS overlap threshold.
        topk: keep at most this many objects per class after NMS.
        detected_min_w: drop objects narrower than this (pixels).
        detected_min_h: drop objects shorter than this (pixels).
    """

    pre_cluster_threshold: float | None = None
    post_cluster_threshold: float | None = None
    eps: float | None = None
    min_boxes: int | None = None
    dbscan_min_score: float | None = None
    nms_iou_threshold: float | None = None
    topk: int | None = None
    detected_min_w: int | None = None
    detected_min_h: int | None = None


@dataclass
class NvinferConfig:
    """A complete nvinfer configuration.

    Attributes:
        properties: the ``[property]`` section.
        class_attrs_all: the ``[class-attrs-all]`` section.
        class_attrs: class id -> ``[class-attrs-<id>]`` section (only classes that differ).
        header: comment lines written at the top of the files.
    """

    properties: NvinferProperties
    class_attrs_all: ClassAttributes = field(default_factory=ClassAttributes)
    class_attrs: dict[int, ClassAttributes] = field(default_factory=dict)
    header: tuple[str, ...] = ()

    def sections(self) -> list[tuple[str, list[tuple[str, str]]]]:
        """Every section as ``(name, [(key, value text), ...])``, in file order.

        Returns:
            ``[("property", ...), ("class-attrs-all", ...), ("class-attrs-0", ...), ...]``;
            empty class sections are left out.
        """
        return [(name, [(key, text) for key, text, _ in items]) for name, items in self._typed_sections()]

    def _typed_sections(self) -> list[tuple[str, list[tuple[str, str, bool]]]]:
        result = [("property", _items(self.properties, _PROPERTY_KEYS))]
        all_items = _items(self.class_attrs_all, _CLASS_KEYS)
        if all_items:
            result.append(("class-attrs-all", all_items))
        for class_id in sorted(self.class_attrs):
            items = _items(self.class_attrs[class_id], _CLASS_KEYS)
            if items:
                result.append((f"class-attrs-{class_id}", items))
        return result


_PROPERTY_KEYS: dict[str, str] = {}
_CLASS_KEYS = {"min_boxes": "minBoxes"}


def _key(name: str, special: Mapping[str, str]) -> str:
    return special.get(name, name.replace("_", "-"))


def format_float(value: float) -> str:
    """Shortest round-tripping decimal spelling of a float, never in exponent form.

    Args:
        value: the number.

    Returns:
        e.g. ``"0.00392156862745098"``, ``"0.2"``, ``"0.00001"``, ``"1.0"``.
    """
    value = float(value)
    single = np.float32(value)
    if np.isfinite(single) and float(single) == value:
        # A float32 spec value (protobuf float fields): its shortest float32 spelling, so
        # 0.005 is written as 0.005, not 0.004999999888241291.
        text = np.format_float_positional(single, unique=True, trim="0")
        return text
    text = repr(value)
    if "e" in text or "E" in text:
        text = format(decimal.Decimal(text), "f")
        if "." not in text:
            text += ".0"
    return text


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format_float(value)
    if isinstance(value, (tuple, list)):
        return ";".join(_format_value(v) for v in value)
    return str(value)


def _items(section: Any, special: Mapping[str, str]) -> list[tuple[str, str, bool]]:
    items = []
    for spec in fields(section):
        value = getattr(section, spec.name)
        if value is None:
            continue
        is_text = isinstance(value, str) or (isinstance(value, (tuple, list)) and any(isinstance(v, str) for v in value))
        items.append((_key(spec.name, special), _format_value(value), is_text))
    return items


# ---- writers ----------------------------------------------------------------------------------

def format_nvinfer_config(config: NvinferConfig) -> str:
    """The INI text of a config (see :func:`write_nvinfer_config`)."""
    lines = [f"# {h}" if h else "#" for h in config.header]
    for name, items in config.sections():
        if lines:
            lines.append("")
        lines.append(f"[{name}]")
        for key, value in items:
            comment = _PROPERTY_COMMENTS.get(key) if name == "property" else None
            if comment:
                lines.append(f"# {comment}")
            lines.append(f"{key}={value}")
    return "\n".join(lines) + "\n"


def format_nvinfer_yaml(config: NvinferConfig) -> str:
    """The YAML text of a config (see :func:`write_nvinfer_yaml`)."""
    lines = [f"# {h}" if h else "#" for h in config.header]
    for name, items in config._typed_sections():
        if lines:
            lines.append("")
        lines.append(f"{name}:")
        for key, value, is_text in items:
            comment = _PROPERTY_COMMENTS.get(key) if name == "property" else None
            if comment:
                lines.append(f"  # {comment}")
            lines.append(f"  {key}: {_yaml_scalar(value, is_text)}")
    return "\n".join(lines) + "\n"


def _yaml_scalar(text: str, is_text: bool) -> str:
    import yaml

    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError:
        loaded = None
    if is_text:
        plain = isinstance(loaded, str) and loaded == text
    else:  # numbers, or numbers joined with ';' (offsets, infer-dims) that read back as the same string
        plain = (isinstance(loaded, str) and loaded == text) or (
            isinstance(loaded, (int, float)) and not isinstance(loaded, bool) and _format_value(loaded) == text)
    if plain:
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_nvinfer_config(path: str | os.PathLike[str], config: NvinferConfig) -> None:
    """Write the INI form read by ``gst-nvinfer`` (``config-file-path``), atomically.

    Args:
        path: e.g. ``nvinfer_config.txt``; relative paths inside the config are relative to the
            folder of this file, as nvinfer resolves them.
        config: the configuration.
    """
    atomic_write_bytes(path, format_nvinfer_config(config).encode("utf-8"))


def write_nvinfer_yaml(path: str | os.PathLike[str], config: NvinferConfig) -> None:
    """Write the YAML form (DeepStream 6.2+ accepts ``config-file-path`` ending in ``.yml``), atomically.

    Args:
        path: e.g. ``nvinfer_config.yml``.
        config: the configuration.
    """
    atomic_write_bytes(path, format_nvinfer_yaml(config).encode("utf-8"))


def write_deepstream_files(output_dir: str | os.PathLike[str], config: NvinferConfig, labels: Sequence[str],
                           basename: str = "nvinfer_config", labels_name: str = "labels.txt") -> dict[str, str]:
    """Write ``nvinfer_config.txt``, ``nvinfer_config.yml`` and ``labels.txt`` into one folder.

    Args:
        output_dir: the folder (created if needed); normally the folder of the exported model.
        config: the configuration; its ``labelfile-path`` should be ``labels_name``.
        labels: the label lines (see :mod:`tltk.deepstream.labels`).
        basename: file name stem of the two config files.
        labels_name: file name of the labels file.

    Returns:
        ``{"config": ..., "yaml": ..., "labels": ...}`` paths of the written files.
    """
    from tltk.deepstream.labels import write_labels

    folder = os.fspath(output_dir)
    paths = {"config": os.path.join(folder, basename + ".txt"), "yaml": os.path.join(folder, basename + ".yml"),
             "labels": os.path.join(folder, labels_name)}
    write_nvinfer_config(paths["config"], config)
    write_nvinfer_yaml(paths["yaml"], config)
    write_labels(paths["labels"], labels)
    log.info("wrote DeepStream files %s, %s, %s", paths["config"], paths["yaml"], paths["labels"])
    return paths


# ---- clustering -> class attributes -----------------------------------------------------------

def clustering_algorithm(params: Any) -> str:
    """The clustering algorithm of a clustering-parameters object, as ``DBSCAN``, ``NMS`` or ``HYBRID``.

    Args:
        params: any object with an ``algorithm`` or ``clustering_algorithm`` attribute holding a
            name (``"DBSCAN"``), an enum member with such a ``name``, or the proto enum number
            (``DBSCAN=0, NMS=1, HYBRID=2``).

    Returns:
        The upper-case algorithm name.

    Raises:
        UsageError: the attribute is missing or names another algorithm.
    """
    value = getattr(params, "algorithm", None)
    if value is None:
        value = getattr(params, "clustering_algorithm", None)
    if value is None:
        raise UsageError("clustering parameters have no 'algorithm' / 'clustering_algorithm'")
    if isinstance(value, int) and not isinstance(value, bool):
        names = {0: "DBSCAN", 1: "NMS", 2: "HYBRID"}
        if value not in names:
            raise UsageError(f"clustering_algorithm: unknown enum value {value}")
        return names[value]
    name = str(getattr(value, "name", value)).upper()
    if name not in CLUSTER_MODES:
        raise UsageError(f"clustering_algorithm: '{name}' is not DBSCAN, NMS or HYBRID")
    return name


def _num(params: Any, name: str, default: float = 0.0) -> float:
    value = getattr(params, name, None)
    return float(default if value is None else value)


def class_attributes_from_clustering(params: Any, algorithm: str | None = None,
                                     topk: int | None = None) -> ClassAttributes:
    """Translate one class's DetectNet_v2 clustering parameters to nvinfer class attributes.

    Args:
        params: an object with the fields of TAO's ``ClusteringConfig`` (e.g.
            ``tltk.detectnet_v2.postprocess.ClusteringParams``): ``coverage_threshold``,
            ``dbscan_eps``, ``dbscan_min_samples``, ``dbscan_confidence_threshold``,
            ``nms_iou_threshold``, ``nms_confidence_threshold``, ``minimum_bounding_box_height``.
        algorithm: ``DBSCAN``, ``NMS`` or ``HYBRID``; default: the object's own.
        topk: written as ``topk`` for NMS/HYBRID when given (TAO keeps every NMS survivor,
            which is nvinfer's default).

    Returns:
        The class attributes:

        * DBSCAN: ``pre-cluster-threshold`` = coverage_threshold, ``eps`` = dbscan_eps,
          ``minBoxes`` = max(int(dbscan_min_samples), 1), ``dbscan-min-score`` =
          dbscan_confidence_threshold, ``detected-min-h`` = minimum_bounding_box_height (if > 0);
        * NMS: ``pre-cluster-threshold`` = max(coverage_threshold, nms_confidence_threshold, with
          0 read as TAO's inference default 0.1), ``nms-iou-threshold`` = nms_iou_threshold (0 read
          as 0.3), ``topk``;
        * HYBRID: the DBSCAN keys plus ``nms-iou-threshold`` and ``topk``.
    """
    algo = (algorithm or clustering_algorithm(params)).upper()
    if algo not in CLUSTER_MODES:
        raise UsageError(f"clustering_algorithm: '{algo}' is not DBSCAN, NMS or HYBRID")
    coverage = _num(params, "coverage_threshold")
    attrs = ClassAttributes()
    if algo in ("DBSCAN", "HYBRID"):
        attrs.pre_cluster_threshold = coverage
        attrs.eps = _num(params, "dbscan_eps")
        attrs.min_boxes = max(int(_num(params, "dbscan_min_samples", 1.0)), 1)
        attrs.dbscan_min_score = _num(params, "dbscan_confidence_threshold")
        min_height = int(_num(params, "minimum_bounding_box_height"))
        if min_height > 0:
            attrs.detected_min_h = min_height
    if algo in ("NMS", "HYBRID"):
        iou = _num(params, "nms_iou_threshold")
        attrs.nms_iou_threshold = iou if iou > 0 else 0.3
        attrs.topk = topk
    if algo == "NMS":
        confidence = _num(params, "nms_confidence_threshold")
        attrs.pre_cluster_threshold = max(coverage, confidence if confidence > 0 else 0.1)
    return attrs


def detectnet_v2_class_attributes(class_names: Sequence[str], clustering: Mapping[str, Any] | Sequence[Any],
                                  topk: int | None = None) -> tuple[int, ClassAttributes, dict[int, ClassAttributes]]:
    """``cluster-mode`` and the class sections for DetectNet_v2 postprocessing.

    Args:
        class_names: classes in network order.
        clustering: per-class clustering parameters, either a mapping class name -> params (a
            ``"default"`` entry covers missing classes, as in TAO's inference spec) or a
            sequence aligned with ``class_names``.
        topk: see :func:`class_attributes_from_clustering`.

    Returns:
        ``(cluster_mode, class_attrs_all, {class id: attributes that differ from class_attrs_all})``.
        ``class-attrs-all`` comes from the ``"default"`` entry, else from the first class.
        nvinfer has one ``cluster-mode`` per model: when classes use different algorithms the
        most common one is used for all (with a warning).

    Raises:
        UsageError: a class has no parameters and there is no ``"default"``.
    """
    per_class: list[Any] = []
    default = None
    if isinstance(clustering, Mapping):
        default = clustering.get("default")
        for name in class_names:
            params = clustering.get(name, default)
            if params is None:
                raise UsageError(f"postprocessing: class '{name}' has no clustering parameters (and there is no "
                                 "'default' entry)")
            per_class.append(params)
    else:
        if len(clustering) != len(class_names):
            raise UsageError(f"postprocessing: {len(clustering)} clustering entries for {len(class_names)} classes")
        per_class = list(clustering)
    algorithms = [clustering_algorithm(p) for p in per_class]
    counts = Counter(algorithms)
    chosen = max(counts, key=lambda a: (counts[a], -algorithms.index(a)))
    if len(counts) > 1:
        others = [n for n, a in zip(class_names, algorithms, strict=True) if a != chosen]
        log.warning("DeepStream uses one cluster-mode per model: using %s for every class (classes %s are "
                    "configured otherwise in the spec)", chosen, ", ".join(others))
    attrs = [class_attributes_from_clustering(p, chosen, topk) for p in per_class]
    base = class_attributes_from_clustering(default, chosen, topk) if default is not None else attrs[0]
    specific = {i: a for i, a in enumerate(attrs) if a != base}
    return CLUSTER_MODES[chosen], base, specific


# ---- model-specific builders ------------------------------------------------------------------

def _model_keys(props: NvinferProperties, model_file: str, key: str | None, etlt_payload: str,
                input_blob_name: str) -> None:
    if model_file.lower().endswith(".etlt"):
        if not key:
            raise UsageError(f"DeepStream config: {model_file} is an encrypted .etlt; its key (-k) is needed for "
                             "tlt-model-key")
        props.tlt_encoded_model = model_file
        props.tlt_model_key = key
        if etlt_payload == "uff":
            props.uff_input_blob_name = input_blob_name
            props.uff_input_order = 0
    elif model_file.lower().endswith(".onnx"):
        props.onnx_file = model_file
    else:
        raise UsageError(f"DeepStream config: the model must be .onnx or .etlt, got {model_file}")


def _precision_keys(props: NvinferProperties, precision: str, calib_cache: str | None,
                    explicit_quantization: bool) -> None:
    mode = precision.lower()
    if mode not in NETWORK_MODES:
        raise UsageError(f"--data_type: unknown precision '{precision}' (one of fp32, fp16, int8)")
    props.network_mode = NETWORK_MODES[mode]
    if mode == "int8" and not explicit_quantization:
        if not calib_cache:
            raise UsageError("--data_type int8: DeepStream needs the INT8 calibration cache (int8-calib-file) for a "
                             "model without Q/DQ nodes; pass --cal_cache_file")
        props.int8_calib_file = calib_cache


def _rel(path: str | None, config_dir: str | None) -> str | None:
    if path is None or config_dir is None:
        return path
    return os.path.relpath(os.path.abspath(path), os.path.abspath(config_dir))


def engine_file_name(model_file: str, batch_size: int, precision: str, gpu_id: int = 0) -> str:
    """The engine path DeepStream itself gives an engine it builds from ``model_file``.

    Args:
        model_file: the ``.onnx``/``.etlt`` path.
        batch_size: ``batch-size``.
        precision: ``fp32``, ``fp16`` or ``int8``.
        gpu_id: ``gpu-id``.

    Returns:
        ``<model_file>_b<batch>_gpu<id>_<precision>.engine``, e.g.
        ``model.onnx_b1_gpu0_fp16.engine``, in the model's folder.
    """
    return f"{model_file}_b{batch_size}_gpu{gpu_id}_{precision.lower()}.engine"


def _check_common(input_chw: Sequence[int], batch_size: int) -> tuple[int, int, int]:
    if len(input_chw) != 3 or any(int(d) <= 0 for d in input_chw):
        raise UsageError(f"DeepStream config: input dims must be C,H,W positive integers, got {tuple(input_chw)}")
    if batch_size < 1:
        raise UsageError(f"DeepStream config: batch size must be positive, got {batch_size}")
    c, h, w = (int(d) for d in input_chw)
    return c, h, w


def detectnet_v2_nvinfer_config(model_file: str, class_names: Sequence[str], input_chw: Sequence[int],
                                precision: str = "fp32", key: str | None = None, calib_cache: str | None = None,
                                explicit_quantization: bool = False,
                                clustering: Mapping[str, Any] | Sequence[Any] | None = None, *,
                                output_blob_names: Sequence[str], input_blob_name: str, net_scale_factor: float,
                                offsets: Sequence[float] | None = None, etlt_payload: str = "onnx",
                                color_format: str | None = None,
                                batch_size: int = 1, gpu_id: int = 0, topk: int | None = None,
                                config_dir: str | None = None, labels_file: str = "labels.txt",
                                engine_file: str | None = None) -> NvinferConfig:
    """An nvinfer config for a DetectNet_v2 model, complete enough for DeepStream to run as is.

    Args:
        model_file: the exported ``.onnx`` (``onnx-file``) or ``.etlt`` (``tlt-encoded-model``).
        class_names: ``cost_function_config.target_classes`` in spec order (= output channels).
        input_chw: network input ``(C, H, W)``.
        precision: ``fp32``, ``fp16`` or ``int8`` -> ``network-mode`` 0, 2, 1.
        key: the ``.etlt`` key (``tlt-model-key``); ignored for ONNX.
        calib_cache: the calibration cache (``int8-calib-file``); needed for int8 unless the
            model is a Q/DQ ONNX (``explicit_quantization``).
        explicit_quantization: the ONNX model carries Q/DQ nodes; no cache is written.
        clustering: the spec's per-class postprocessing (see :func:`detectnet_v2_class_attributes`);
            ``None`` uses NMS with DeepStream's sample values (pre-cluster 0.2, IoU 0.5).
        output_blob_names: the exported output tensor names (``output-blob-names``).
        input_blob_name: UFF input node (``uff-input-blob-name``, UFF payloads only).
        etlt_payload: ``onnx`` or ``uff``: what the ``.etlt`` holds.
        net_scale_factor: preprocessing scale (1/255 for DetectNet_v2).
        offsets: per-channel means subtracted before scaling (zeros for DetectNet_v2).
        color_format: ``rgb``, ``bgr`` or ``gray``; default ``gray`` for 1 channel, else ``rgb``.
        batch_size: ``batch-size``.
        gpu_id: ``gpu-id``.
        topk: ``topk`` for NMS/HYBRID; ``None`` keeps every survivor, like TAO.
        config_dir: folder the config is written to; file paths are made relative to it.
        labels_file: ``labelfile-path``.
        engine_file: ``model-engine-file``; default :func:`engine_file_name`.

    Returns:
        The :class:`NvinferConfig`.

    Raises:
        UsageError: inconsistent arguments (see the message).
    """
    c, h, w = _check_common(input_chw, batch_size)
    names = list(class_names)
    if not names:
        raise UsageError("DeepStream config: no classes (cost_function_config.target_classes is empty)")
    outputs = tuple(output_blob_names)
    if not any("cov" in n for n in outputs) or not any("bbox" in n for n in outputs):
        raise UsageError(f"DeepStream config: nvinfer's DetectNet parser finds the outputs by the substrings 'cov' and "
                         f"'bbox'; the output names {outputs} lack one")
    color = color_format or ("gray" if c == 1 else "rgb")
    if color not in COLOR_FORMATS:
        raise UsageError(f"DeepStream config: color format '{color}' is not rgb, bgr or gray")
    means = tuple(float(v) for v in offsets) if offsets is not None else tuple(0.0 for _ in range(c))
    if len(means) != c:
        raise UsageError(f"DeepStream config: {len(means)} offsets for {c} channels")
    props = NvinferProperties(
        gpu_id=gpu_id, net_scale_factor=float(net_scale_factor), offsets=means,
        model_color_format=COLOR_FORMATS[color], infer_dims=(c, h, w), batch_size=batch_size,
        network_type=NETWORK_TYPE_DETECTOR, num_detected_classes=len(names), output_blob_names=outputs,
        maintain_aspect_ratio=0, labelfile_path=labels_file)
    _model_keys(props, _rel(model_file, config_dir) or model_file, key, etlt_payload, input_blob_name)
    _precision_keys(props, precision, _rel(calib_cache, config_dir), explicit_quantization)
    props.model_engine_file = _rel(engine_file, config_dir) if engine_file else engine_file_name(
        _rel(model_file, config_dir) or model_file, batch_size, precision, gpu_id)
    specific: dict[int, ClassAttributes] = {}
    if clustering is None:
        mode, base = CLUSTER_NMS, ClassAttributes(pre_cluster_threshold=0.2, nms_iou_threshold=0.5, topk=topk)
    else:
        mode, base, specific = detectnet_v2_class_attributes(names, clustering, topk)
    props.cluster_mode = mode
    header = ("DeepStream nvinfer config for a DetectNet_v2 model, written by tltk.",
              f"Classes (output channel order): {', '.join(names)}")
    return NvinferConfig(props, base, specific, header)


def mask_rcnn_nvinfer_config(model_file: str, class_names: Sequence[str], input_chw: Sequence[int],
                             precision: str = "fp32", key: str | None = None, calib_cache: str | None = None,
                             explicit_quantization: bool = False, *,
                             output_blob_names: Sequence[str], input_blob_name: str, net_scale_factor: float,
                             offsets: Sequence[float], etlt_payload: str = "onnx",
                             score_threshold: float = MASK_RCNN_SCORE_THRESHOLD,
                             maintain_aspect_ratio: bool = True,
                             custom_lib_path: str = DEEPSTREAM_CUSTOM_PARSER_LIB,
                             parse_func_name: str = MASK_RCNN_PARSE_FUNC, batch_size: int = 1, gpu_id: int = 0,
                             config_dir: str | None = None, labels_file: str = "labels.txt",
                             engine_file: str | None = None) -> NvinferConfig:
    """An nvinfer config for a MaskRCNN model (instance segmentation, network-type 3).

    Args:
        model_file: the exported ``.onnx`` or ``.etlt``.
        class_names: category names in class-id order, without background.
        input_chw: network input ``(C, H, W)``.
        precision: ``fp32``, ``fp16`` or ``int8``.
        key: the ``.etlt`` key.
        calib_cache: ``int8-calib-file`` for int8 without Q/DQ nodes.
        explicit_quantization: the ONNX model carries Q/DQ nodes.
        output_blob_names: detections and mask logits tensor names; the parser looks them up by
            exactly these names.
        input_blob_name: ``uff-input-blob-name`` for UFF payloads.
        etlt_payload: ``onnx`` or ``uff``.
        score_threshold: ``[class-attrs-all] pre-cluster-threshold``, which the parser uses as the
            detection score threshold.
        net_scale_factor: 0.017507 (= 1 / (255 * 0.224)).
        offsets: 255 * ImageNet mean, RGB.
        maintain_aspect_ratio: resize keeping the aspect ratio with right/bottom padding, which is
            MaskRCNN's inference preprocessing.
        custom_lib_path: library with the ``parse_func_name`` parser.
        parse_func_name: ``parse-bbox-instance-mask-func-name``.
        batch_size: ``batch-size``.
        gpu_id: ``gpu-id``.
        config_dir: folder the config is written to; file paths are made relative to it.
        labels_file: ``labelfile-path``.
        engine_file: ``model-engine-file``; default :func:`engine_file_name`.

    Returns:
        The :class:`NvinferConfig` (``num-detected-classes`` counts the background class).
    """
    c, h, w = _check_common(input_chw, batch_size)
    names = [n for n in class_names]
    if names and names[0] == "BG":
        names = names[1:]
    if not names:
        raise UsageError("DeepStream config: MaskRCNN needs at least one category besides the background")
    if len(tuple(offsets)) != c:
        raise UsageError(f"DeepStream config: {len(tuple(offsets))} offsets for {c} channels")
    props = NvinferProperties(
        gpu_id=gpu_id, net_scale_factor=float(net_scale_factor), offsets=tuple(float(v) for v in offsets),
        model_color_format=COLOR_FORMATS["gray" if c == 1 else "rgb"], infer_dims=(c, h, w), batch_size=batch_size,
        network_type=NETWORK_TYPE_INSTANCE_SEGMENTATION, num_detected_classes=len(names) + 1,
        output_blob_names=tuple(output_blob_names), cluster_mode=CLUSTER_NONE,
        maintain_aspect_ratio=1 if maintain_aspect_ratio else 0, symmetric_padding=0 if maintain_aspect_ratio else None,
        output_instance_mask=1, parse_bbox_instance_mask_func_name=parse_func_name,
        custom_lib_path=custom_lib_path, labelfile_path=labels_file)
    _model_keys(props, _rel(model_file, config_dir) or model_file, key, etlt_payload, input_blob_name)
    _precision_keys(props, precision, _rel(calib_cache, config_dir), explicit_quantization)
    props.model_engine_file = _rel(engine_file, config_dir) if engine_file else engine_file_name(
        _rel(model_file, config_dir) or model_file, batch_size, precision, gpu_id)
    header = ("DeepStream nvinfer config for a MaskRCNN model, written by tltk.",
              "Clustering is done inside the model (cluster-mode=4); pre-cluster-threshold is the score threshold.")
    return NvinferConfig(props, ClassAttributes(pre_cluster_threshold=float(score_threshold)), {}, header)
