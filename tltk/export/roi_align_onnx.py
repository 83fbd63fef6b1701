"""MaskRCNN's multilevel ROIAlign as ONE native ONNX ``RoiAlign`` in exported graphs.

:class:`tltk.mask_rcnn.roi_align.MultilevelRoiAlign` samples with gathers: for ``R`` ROIs it
builds a ``[B, R, S, S, 4, C]`` tensor of neighbours (ResNet-50 at 832x1344, 1000 ROIs, 7x7,
256 channels: 200 MB per image) and blends it with Mul/ReduceSum.  Exported as it is, ONNX
Runtime spends most of MaskRCNN's post-processing there.  :func:`native_roi_align` replaces
each such subgraph of a converted graph by ONNX's ``RoiAlign`` (opset 16+, what TensorRT 10's
parser maps to ``ROIAlign_TRT`` v2), computing the same numbers:

* **One canvas for every level.**  ``RoiAlign`` has one ``spatial_scale`` and samples one
  ``[C, H, W]`` map per batch index, so the FPN levels are packed into one NCHW canvas per
  image: level ``min_level`` at the top left, the others stacked in a column to its right.
  Every level is padded at its bottom and right by repeating its last row and column
  (``Pad`` ``edge``), so a sample between the last row and the border reads the last row, as
  TAO's clamped neighbours do (both neighbours clamp to ``H_l - 1``).  The canvas is built once
  and shared by the box and mask ROIAligns.
* **Boxes in canvas pixels.**  Each ROI's level is TAO's rule (same operators as the Keras
  graph: ``floor(log(sqrt(max(h*w, 1e-8)) / 224) / log 2) + 4`` clamped), its box is scaled by
  ``2**-level`` and shifted to its level's place on the canvas, plus 0.5: with
  ``coordinate_transformation_mode="half_pixel"`` RoiAlign subtracts 0.5 again, and samples bin
  ``i`` at ``y1 + (i + 0.5) * (y2 - y1) / S`` (TAO's position; feature pixel ``u`` at
  coordinate ``u``) without the ``max(size, 1)`` clamp the ``output_half_pixel`` mode applies.
  ``sampling_ratio=1`` (one sample per bin) and ``mode="avg"`` are written explicitly (TensorRT's
  importer defaults ``sampling_ratio`` to 1, ONNX to 0).
* **Same neighbours for clipped boxes.**  Proposals and detections are clipped to the image
  (``[0, H-1] x [0, W-1]``), so every sample lies in ``[0, H_l)``: ``floor`` never needs
  TAO's clamp at 0, and past ``H_l - 1`` both runtimes read the (repeated) last row.  Boxes
  with ``y2 < y1`` (the +1 box coder can give them) sample between ``y2`` and ``y1`` in both.

The only differences are float rounding: coordinates are offset on the canvas (by at most the
canvas size, so ~1e-5 feature pixels).  The export's parity check compares the result against
Keras on every export.

How the subgraph is found: :func:`roi_align_taps` lists the model's ``MultilevelRoiAlign``
layers and the tensors around them; :func:`tltk.export.onnx_export.convert_keras_to_onnx`
converts a twin of the model that also outputs those tensors (so their ONNX names are known
exactly, whatever the converter renamed or merged), calls :func:`native_roi_align` with them,
and drops the extra outputs; the gather subgraphs are then dead and pruned.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover - typing only
    import onnx

log = logging.getLogger(__name__)

#: Lowest opset whose ``RoiAlign`` has ``coordinate_transformation_mode`` (``half_pixel``).
MIN_OPSET = 16

#: TAO's canonical ROI size and level (:mod:`tltk.mask_rcnn.roi_align`).
CANONICAL_SIZE = 224.0
CANONICAL_LEVEL = 4

#: Prefix of the extra outputs the converted twin carries.
TAP_PREFIX = "tltk_roi_align_tap"


@dataclass(frozen=True)
class RoiAlignTap:
    """One multilevel ROIAlign of a Keras model, by the output names its tensors get in the twin.

    Attributes:
        features: output names of the FPN maps ``[B, H_l, W_l, C]`` (NHWC), ascending levels.
        boxes: output name of the ROIs ``[B, R, 4]`` ``(y1, x1, y2, x2)`` input pixels.
        result: output name of the layer's result ``[B, R, S, S, C]``.
        output_size: S.
        min_level: level of ``features[0]``.
        layer: the Keras layer's name (for messages).
    """

    features: tuple[str, ...]
    boxes: str
    result: str
    output_size: int
    min_level: int
    layer: str


def roi_align_taps(model: Any) -> tuple[list[RoiAlignTap], dict[str, Any]]:
    """The model's multilevel ROIAligns and the Keras tensors to add as twin outputs.

    Args:
        model: a Keras functional model.

    Returns:
        ``(taps, extra outputs)``: one :class:`RoiAlignTap` per ``MultilevelRoiAlign`` layer
        called once, and output name -> Keras tensor for the twin model (empty when none).
    """
    taps: list[RoiAlignTap] = []
    extra: dict[str, Any] = {}
    # one output per tensor (the box and mask ROIAligns share the maps); a tensor that already is
    # a model output keeps that output's name
    named: dict[int, str] = {id(t): name for t, name in zip(model.outputs, model.output_names, strict=True)}

    def tap(name: str, tensor: Any) -> str:
        if id(tensor) not in named:
            named[id(tensor)] = name
            extra[name] = tensor
        return named[id(tensor)]

    for index, layer in enumerate(x for x in model.layers if type(x).__name__ == "MultilevelRoiAlign"):
        nodes = getattr(layer, "_inbound_nodes", [])
        if len(nodes) != 1:
            log.debug("ROIAlign rewrite: layer %s is called %d times; left as gathers", layer.name, len(nodes))
            continue
        inputs = list(nodes[0].input_tensors)
        outputs = list(nodes[0].output_tensors)
        if len(inputs) < 2 or len(outputs) != 1:
            continue
        names = tuple(tap(f"{TAP_PREFIX}{index}_feature{i}", t) for i, t in enumerate(inputs[:-1]))
        taps.append(RoiAlignTap(names, tap(f"{TAP_PREFIX}{index}_boxes", inputs[-1]),
                                tap(f"{TAP_PREFIX}{index}_result", outputs[0]), int(layer.output_size),
                                int(layer.min_level), layer.name))
    return taps, extra


# ---- graph helpers -------------------------------------------------------------------------------

class _Builder:
    """Appends nodes and initializers with unique names."""

    def __init__(self, proto: onnx.ModelProto, prefix: str) -> None:
        self.proto = proto
        self.prefix = prefix
        self.nodes: list[Any] = []
        self.count = 0
        taken = {t for n in proto.graph.node for t in list(n.input) + list(n.output)}
        taken |= {i.name for i in proto.graph.initializer} | {v.name for v in proto.graph.input}
        self.taken = taken

    def name(self, hint: str) -> str:
        while True:
            self.count += 1
            candidate = f"{self.prefix}/{hint}_{self.count}"
            if candidate not in self.taken:
                self.taken.add(candidate)
                return candidate

    def const(self, hint: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self.name(hint)
        # (np.ascontiguousarray would turn a scalar into shape [1])
        self.proto.graph.initializer.append(numpy_helper.from_array(np.array(value, order="C"), name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, **attrs: Any) -> str:
        import onnx

        out = self.name(hint or op_type)
        self.nodes.append(onnx.helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out


def _producers(proto: onnx.ModelProto) -> dict[str, Any]:
    return {out: node for node in proto.graph.node for out in node.output}


def _shapes(proto: onnx.ModelProto) -> dict[str, list[int | None]]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=False, data_prop=True)
    dims: dict[str, list[int | None]] = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        tensor_type = value.type.tensor_type
        if tensor_type.HasField("shape"):
            dims[value.name] = [int(d.dim_value) if d.HasField("dim_value") else None
                                for d in tensor_type.shape.dim]
    return dims


def _nchw(builder: _Builder, producers: dict[str, Any], nhwc: str) -> str:
    """``nhwc`` as NCHW: the input of its NCHW->NHWC Transpose when it has one, else a Transpose."""
    node = producers.get(nhwc)
    if node is not None and node.op_type == "Transpose":
        perm = [a.ints for a in node.attribute if a.name == "perm"]
        if perm and list(perm[0]) == [0, 2, 3, 1]:
            return str(node.input[0])
    return builder.op("Transpose", [nhwc], "to_nchw", perm=[0, 3, 1, 2])


@dataclass
class _Canvas:
    tensor: str
    offsets: np.ndarray  # [L, 2] (y, x) canvas pixel of each level's (0, 0)


def _build_canvas(builder: _Builder, producers: dict[str, Any], features: list[str],
                  sizes: list[tuple[int, int]], image_hw: tuple[int, int], min_level: int) -> _Canvas:
    """Pack the NCHW levels into one canvas (see the module docstring); returns it and the offsets."""
    # rows/columns each level needs: its own plus enough repeated ones to cover a sample at the
    # image border ((H - 1) / 2**l < ceil(H / 2**l)), at least one
    need = []
    for level, (h, w) in enumerate(sizes):
        stride = 2 ** (min_level + level)
        need.append((max(h + 1, math.ceil(image_hw[0] / stride) + 1), max(w + 1, math.ceil(image_hw[1] / stride) + 1)))
    offsets = np.zeros((len(sizes), 2), np.float32)
    if len(sizes) == 1:
        (h, w), (nh, nw) = sizes[0], need[0]
        canvas = builder.op("Pad", [_nchw(builder, producers, features[0]),
                                    builder.const("pads", np.array([0, 0, 0, 0, 0, 0, nh - h, nw - w], np.int64))],
                            "canvas", mode="edge")
        return _Canvas(canvas, offsets)
    column_width = max(nw for _, nw in need[1:])
    column_height = sum(nh for nh, _ in need[1:])
    height = max(need[0][0], column_height)
    y = 0
    column = []
    for level in range(1, len(sizes)):
        (h, w), (nh, nw) = sizes[level], need[level]
        extra_h = nh - h + (height - column_height if level == len(sizes) - 1 else 0)
        pads = np.array([0, 0, 0, 0, 0, 0, extra_h, column_width - w], np.int64)
        column.append(builder.op("Pad", [_nchw(builder, producers, features[level]), builder.const("pads", pads)],
                                 f"level{level}", mode="edge"))
        offsets[level] = (y, need[0][1])
        y += nh
    (h0, w0) = sizes[0]
    first = builder.op("Pad", [_nchw(builder, producers, features[0]),
                               builder.const("pads", np.array([0, 0, 0, 0, 0, 0, height - h0, need[0][1] - w0],
                                                              np.int64))], "level0", mode="edge")
    right = builder.op("Concat", column, "column", axis=2)
    canvas = builder.op("Concat", [first, right], "canvas", axis=3)
    return _Canvas(canvas, offsets)


def _roi_align(builder: _Builder, canvas: _Canvas, boxes: str, size: int, min_level: int, num_levels: int) -> str:
    """``RoiAlign`` of ``boxes`` ``[B, R, 4]`` on the canvas; returns ``[B * R, C, S, S]``."""
    c = builder.const

    def split(index: int) -> str:
        return builder.op("Gather", [boxes, c("index", np.array(index, np.int64))], "coord", axis=2)

    y1, x1, y2, x2 = (split(i) for i in range(4))
    # TAO's level rule with the Keras graph's operators (tltk.mask_rcnn.roi_align.roi_levels)
    area = builder.op("Mul", [builder.op("Sub", [y2, y1]), builder.op("Sub", [x2, x1])], "area")
    area = builder.op("Max", [area, c("eps", np.array(1e-8, np.float32))])
    ratio = builder.op("Div", [builder.op("Sqrt", [area]), c("canonical", np.array(CANONICAL_SIZE, np.float32))])
    level = builder.op("Div", [builder.op("Log", [ratio]), c("ln2", np.array(math.log(2.0), np.float32))])
    level = builder.op("Add", [builder.op("Floor", [level]), c("canonical_level", np.array(CANONICAL_LEVEL, np.float32))])
    level = builder.op("Clip", [level, c("lo", np.array(min_level, np.float32)),
                                c("hi", np.array(min_level + num_levels - 1, np.float32))])
    index = builder.op("Cast", [builder.op("Sub", [level, c("min_level", np.array(min_level, np.float32))])],
                       "level_index", to=7)  # INT64
    scales = np.array([2.0 ** -(min_level + i) for i in range(num_levels)], np.float32)
    scale = builder.op("Unsqueeze", [builder.op("Gather", [c("scales", scales), index], "scale"),
                                     c("axis", np.array([2], np.int64))])
    # (x1, y1, x2, y2) on the canvas, + 0.5 for the half_pixel mode
    shift = np.stack([canvas.offsets[:, 1], canvas.offsets[:, 0], canvas.offsets[:, 1], canvas.offsets[:, 0]],
                     axis=1).astype(np.float32) + np.float32(0.5)
    xyxy = builder.op("Gather", [boxes, c("xyxy", np.array([1, 0, 3, 2], np.int64))], "xyxy", axis=2)
    rois = builder.op("Add", [builder.op("Mul", [xyxy, scale]), builder.op("Gather", [c("shift", shift), index])],
                      "canvas_boxes")
    rois = builder.op("Reshape", [rois, c("shape", np.array([-1, 4], np.int64))], "rois")
    batch = builder.op("Gather", [builder.op("Shape", [boxes]), c("zero", np.array(0, np.int64))], "batch")
    images = builder.op("Range", [c("start", np.array(0, np.int64)), batch, c("delta", np.array(1, np.int64))])
    images = builder.op("Unsqueeze", [images, c("axis", np.array([1], np.int64))])
    batch_index = builder.op("Add", [images, builder.op("Mul", [index, c("zero_i", np.array(0, np.int64))])])
    batch_index = builder.op("Reshape", [batch_index, c("flat", np.array([-1], np.int64))], "batch_indices")
    return builder.op("RoiAlign", [canvas.tensor, rois, batch_index], "RoiAlign", mode="avg",
                      output_height=size, output_width=size, sampling_ratio=1, spatial_scale=1.0,
                      coordinate_transformation_mode="half_pixel")


def _opset(proto: onnx.ModelProto) -> int:
    return max((int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)


def native_roi_align(proto: onnx.ModelProto, taps: list[RoiAlignTap], keep_outputs: tuple[str, ...] = ()) -> int:
    """Replace each tapped multilevel ROIAlign by a canvas ``RoiAlign`` (see the module docstring).

    The tapped tensors must be graph outputs of ``proto`` (the twin's extra outputs); they are
    removed from the outputs, the old gather subgraphs are pruned and the nodes re-sorted.

    Args:
        proto: the converted twin, edited in place.
        taps: from :func:`roi_align_taps`.
        keep_outputs: the model's own outputs (a tapped tensor may be one of them; it stays).

    Returns:
        How many ROIAligns were replaced (0 when the opset is below 16 or the shapes are not
        static; the graph then keeps the gathers).
    """
    kept = set(keep_outputs)
    tap_names = {name for tap in taps for name in (*tap.features, tap.boxes, tap.result)} - kept
    replaced = 0
    if _opset(proto) < MIN_OPSET:
        log.info("ROIAlign rewrite skipped: opset %d has no half_pixel RoiAlign (needs %d)", _opset(proto), MIN_OPSET)
    else:
        replaced = _replace(proto, taps)
    outputs = [o for o in proto.graph.output if o.name not in tap_names]
    del proto.graph.output[:]
    proto.graph.output.extend(outputs)
    _prune(proto)
    return replaced


def _replace(proto: onnx.ModelProto, taps: list[RoiAlignTap]) -> int:
    import onnx

    dims = _shapes(proto)
    graph = proto.graph
    image = dims.get(graph.input[0].name) or []
    if len(image) != 4 or image[2] is None or image[3] is None:
        return 0
    image_hw = (int(image[2]), int(image[3]))
    producers = _producers(proto)
    builder = _Builder(proto, "tltk_roi_align")
    canvases: dict[tuple[str, ...], _Canvas] = {}
    renames: dict[str, str] = {}
    replaced = 0
    for tap in taps:
        shapes: list[list[int]] = []
        for name in tap.features:
            found = dims.get(name)
            if found is not None and len(found) == 4 and all(d is not None for d in found[1:]):
                shapes.append([int(d) for d in found[1:] if d is not None])
        if len(shapes) != len(tap.features):
            log.info("ROIAlign rewrite: the feature maps of %s have no static shapes; left as gathers", tap.layer)
            continue
        channels = {s[2] for s in shapes}
        if len(channels) != 1:
            continue
        sizes = [(s[0], s[1]) for s in shapes]
        key = tap.features
        if key not in canvases:
            canvases[key] = _build_canvas(builder, producers, list(tap.features), sizes, image_hw, tap.min_level)
        size, c = tap.output_size, channels.pop()
        pooled = _roi_align(builder, canvases[key], tap.boxes, size, tap.min_level, len(sizes))
        # [B * R, C, S, S] -> [B, R, C, S, S] (B and R from the boxes: static R is folded later)
        leading = builder.op("Slice", [builder.op("Shape", [tap.boxes]), builder.const("start", np.array([0], np.int64)),
                                       builder.const("end", np.array([2], np.int64))], "batch_rois")
        target = builder.op("Concat", [leading, builder.const("chw", np.array([c, size, size], np.int64))],
                            "rois_chw_shape", axis=0)
        unfolded = builder.op("Reshape", [pooled, target], "rois_chw")
        result = builder.op("Transpose", [unfolded], "rois_hwc", perm=[0, 1, 3, 4, 2])
        renames[tap.result] = result
        replaced += 1
    if not replaced:
        return 0
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in renames:
                node.input[i] = renames[name]
    outputs = {o.name for o in graph.output}
    for old, new in renames.items():
        if old in outputs:  # the ROIAlign's result is a graph output itself: the new nodes produce it
            for node in graph.node:
                for i, name in enumerate(node.output):
                    if name == old:
                        node.output[i] = f"{old}/tltk_replaced"
            builder.nodes.append(onnx.helper.make_node("Identity", [new], [old], name=f"{old}/tltk_identity"))
    graph.node.extend(builder.nodes)
    _cancel_transposes(proto)
    log.info("ROIAlign rewrite: %d multilevel ROIAlign(s) -> ONNX RoiAlign", replaced)
    return replaced


def _perm(node: Any) -> list[int] | None:
    for attr in node.attribute:
        if attr.name == "perm":
            return list(attr.ints)
    return None


def _cancel_transposes(proto: onnx.ModelProto) -> None:
    """Bypass ``Transpose -> Transpose`` pairs that compose to the identity.

    Also the pattern ``Transpose(p) -> Reshape -> Transpose(q)`` of the ROIAlign result feeding the
    mask head (``[B,R,C,S,S] -> [B,R,S,S,C] -> [B*R,S,S,C] -> [B*R,C,S,S]``) becomes one Reshape.
    """
    import onnx

    graph = proto.graph
    producers = _producers(proto)
    outputs = {o.name for o in graph.output}
    extra: list[Any] = []
    for node in graph.node:
        if node.op_type != "Transpose":
            continue
        q = _perm(node)
        source = producers.get(node.input[0])
        if q is None or source is None or node.output[0] in outputs:
            continue
        if source.op_type == "Transpose":
            p = _perm(source)
            if p is not None and len(p) == len(q) and [p[i] for i in q] == list(range(len(q))):
                _rewire(graph, node.output[0], source.input[0])
            continue
        if source.op_type == "Reshape" and q == [0, 3, 1, 2]:
            inner = producers.get(source.input[0])
            if inner is None or inner.op_type != "Transpose" or _perm(inner) != [0, 1, 3, 4, 2]:
                continue
            # [B, R, C, S, S] -> (transpose) [B, R, S, S, C] -> (reshape) [B*R, S, S, C] -> [B*R, C, S, S]
            from onnx import numpy_helper

            inits = {i.name: i for i in graph.initializer}
            shape = inits.get(source.input[1])
            if shape is None:
                continue
            target = numpy_helper.to_array(shape).reshape(-1).tolist()
            if len(target) != 4 or target[0] not in (-1, 0):
                continue
            new_shape = np.array([-1, target[3], target[1], target[2]], np.int64)
            name = f"{node.output[0]}/tltk_chw_shape"
            graph.initializer.append(numpy_helper.from_array(new_shape, name))
            out = f"{node.output[0]}/tltk_chw"
            extra.append(onnx.helper.make_node("Reshape", [inner.input[0], name], [out], name=out))
            _rewire(graph, node.output[0], out)
    graph.node.extend(extra)


def _rewire(graph: Any, old: str, new: str) -> None:
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new


def _prune(proto: onnx.ModelProto) -> None:
    """Drop dead nodes, unused initializers and value_info, and sort the nodes topologically."""
    from tltk.export.onnx_passes import _prune_dead, _used_tensors

    graph = proto.graph
    outputs = {o.name for o in graph.output}
    nodes, _ = _prune_dead(list(graph.node), outputs)
    nodes = _topological(nodes, {i.name for i in graph.input} | {i.name for i in graph.initializer})
    used = _used_tensors(nodes, outputs)
    inits = [i for i in graph.initializer if i.name in used]
    produced = {name for node in nodes for name in node.output}
    info = [v for v in graph.value_info if v.name in produced]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(inits)
    del graph.value_info[:]
    graph.value_info.extend(info)


def _topological(nodes: list[Any], available: set[str]) -> list[Any]:
    """Nodes in an order where every input is produced before use (stable otherwise)."""
    ready = set(available) | {""}
    pending = list(nodes)
    ordered: list[Any] = []
    while pending:
        rest = []
        for node in pending:
            if all(name in ready for name in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            missing = sorted({n for node in rest for n in node.input if n not in ready})[:5]
            raise RuntimeError(f"ONNX graph has a cycle or undefined inputs: {missing}")
        pending = rest
    return ordered


__all__ = ["MIN_OPSET", "RoiAlignTap", "native_roi_align", "roi_align_taps"]
