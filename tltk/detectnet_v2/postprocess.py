"""DetectNet_v2 postprocessing: decode the coverage/bbox grids and cluster them into detections.

This module needs only NumPy, SciPy and scikit-learn (never TensorFlow), so it can run next
to Triton, ONNX Runtime or TensorRT clients.  It follows TAO's *inference* path (the
``inference`` command and tao_deploy) everywhere:

1. **Decode** (:func:`decode_grids`).  For output cell (row ``j``, column ``i``) the anchor in
   model-input pixels is ``X = stride*i + offset``, ``Y = stride*j + offset`` (near the
   cell's top-left corner, not its centre) and the four bbox channels ``(L, T, R, B)`` of a
   class give ``x1 = X - scale*L``, ``y1 = Y - scale*T``, ``x2 = X + scale*R``,
   ``y2 = Y + scale*B`` (``scale`` 35, ``offset`` 0.5 in every TAO spec).
2. **Threshold**: cells with ``coverage > coverage_threshold`` become candidates.
3. **Cluster** per class with that class's :class:`ClusteringParams` (or the ``default``
   entry):

   * ``DBSCAN``: weighted DBSCAN (scikit-learn's algorithm and labelling; a vectorised
     backend by default, ``sklearn.cluster.DBSCAN`` on request) on the precomputed distance
     ``1 - IoU`` where
     ``IoU = intersection / (union + 0.01)`` on continuous coordinates; ``eps =
     dbscan_eps + 1e-12``; ``sample_weight = coverage`` and ``min_samples =
     max(int(dbscan_min_samples), 1)``, so a cell is a core point when the *sum of
     coverages* within ``eps`` (itself included) reaches that value.  One detection per
     cluster: the coverage-weighted mean box; confidence ``aggregate_cov`` = sum of member
     coverages (can exceed 1) or ``mean_cov`` = their mean.  Clusters with
     ``y2 - y1 <= minimum_bounding_box_height`` are dropped; a cluster is kept only when its
     confidence is strictly greater than ``dbscan_confidence_threshold``.
   * ``NMS``: greedy non-maximum suppression over the candidates in descending coverage
     order; IoU with the inclusive-pixel convention (areas ``(x2-x1+1)*(y2-y1+1)``); a later
     box is suppressed when its IoU with a kept box is ``> nms_iou_threshold``; boxes are
     kept when their coverage is ``> nms_confidence_threshold``.  Confidence is the cell's
     raw coverage; ``minimum_bounding_box_height`` is not applied (as in TAO).
   * ``HYBRID``: DBSCAN as above (with its confidence and height filters), then NMS over
     the raw member cells of the surviving clusters; the output is the NMS survivors.

4. Per image, detections are listed class by class (in ``class_names`` order), each class
   sorted by descending confidence, like TAO's KITTI dumps.

Coordinates are model-input pixels throughout.  :func:`postprocess` can clip to the model
frame (``image_size``) as TAO does when it writes outputs; rescaling to the original image
size belongs to the caller (see :func:`scale_detections`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from tltk._proto import detectnet_v2_pb2 as pb
from tltk.boxes.numpy_ops import clip_boxes, dbscan_iou_matrix, greedy_nms
from tltk.errors import InvalidInputError, SpecError
from tltk.spec.fields import spec_default

logger = logging.getLogger(__name__)

ALGORITHMS: tuple[str, ...] = ("DBSCAN", "NMS", "HYBRID")
"""Clustering algorithm names, in the order of TAO's ``ClusteringAlgorithm`` enum values 0, 1, 2."""

CONFIDENCE_MODELS: tuple[str, ...] = ("aggregate_cov", "mean_cov")
"""Supported ``confidence_model`` values."""

DEFAULT_CLASS_KEY = "default"
"""Key of the fallback entry used for classes without their own clustering parameters."""

DBSCAN_EPS_EPSILON = 1e-12
"""Added to ``dbscan_eps`` (TAO does the same; it also keeps scikit-learn's ``eps > 0`` rule)."""


# --------------------------------------------------------------------------------------------
# Parameters


_CC = pb.ClusteringConfig


def _default(message_class: Any, name: str) -> Any:
    return spec_default(message_class, name, as_written=True)


_NUMERIC_FIELDS = ("coverage_threshold", "minimum_bounding_box_height", "dbscan_eps", "dbscan_min_samples",
                   "dbscan_confidence_threshold", "nms_iou_threshold", "nms_confidence_threshold")


@dataclass(frozen=True)
class ClusteringParams:
    """Clustering parameters of one class (TAO's ``ClusteringConfig`` plus the confidence model).

    The defaults are the spec schema's (``protos/tltk/detectnet_v2.proto``), and so are the
    valid ranges: specs are checked by the DetectNet_v2 spec rules when they are loaded, so
    values given here directly are taken as they are.

    Attributes:
        coverage_threshold: cells with coverage strictly above this become candidates, in [0, 1].
        minimum_bounding_box_height: DBSCAN/HYBRID clusters with ``y2 - y1 <=`` this are
            dropped, in model-input pixels (>= 0).
        algorithm: ``"DBSCAN"``, ``"NMS"`` or ``"HYBRID"``.
        dbscan_eps: DBSCAN neighbourhood radius on the distance ``1 - IoU``, in (0, 1].
        dbscan_min_samples: coverage-weighted minimum neighbourhood weight of a core cell.
            TAO truncates it to an integer of at least 1 (``max(int(v), 1)``), and so does
            tltk, so the documented ``0.05`` behaves as ``1.0``; see
            :attr:`effective_min_samples`.
        dbscan_confidence_threshold: DBSCAN/HYBRID clusters are kept when their confidence
            is strictly greater than this (>= 0).
        nms_iou_threshold: NMS suppresses a box whose inclusive-pixel IoU with a kept box
            is greater than this, in [0, 1].
        nms_confidence_threshold: NMS keeps boxes whose coverage is strictly greater than
            this, in [0, 1].
        confidence_model: ``"aggregate_cov"`` (sum of member coverages, may exceed 1) or
            ``"mean_cov"`` (mean of member coverages).

    Raises:
        ValueError: ``algorithm`` or ``confidence_model`` is not a known name.
    """

    coverage_threshold: float = _default(_CC, "coverage_threshold")
    minimum_bounding_box_height: float = _default(_CC, "minimum_bounding_box_height")
    algorithm: str = ALGORITHMS[_default(_CC, "clustering_algorithm")]
    dbscan_eps: float = _default(_CC, "dbscan_eps")
    dbscan_min_samples: float = _default(_CC, "dbscan_min_samples")
    dbscan_confidence_threshold: float = _default(_CC, "dbscan_confidence_threshold")
    nms_iou_threshold: float = _default(_CC, "nms_iou_threshold")
    nms_confidence_threshold: float = _default(_CC, "nms_confidence_threshold")
    confidence_model: str = _default(pb.ClasswiseBboxHandlerConfig, "confidence_model")

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm {self.algorithm!r} is not one of {', '.join(ALGORITHMS)}")
        if self.confidence_model not in CONFIDENCE_MODELS:
            raise ValueError(f"confidence_model {self.confidence_model!r} is not one of {', '.join(CONFIDENCE_MODELS)}")

    @property
    def effective_min_samples(self) -> int:
        """The integer ``min_samples`` handed to DBSCAN: ``max(int(dbscan_min_samples), 1)``."""
        return max(int(self.dbscan_min_samples), 1)

    @classmethod
    def from_config(cls, clustering_config: Any, confidence_model: str | None = None,
                    field_path: str = "clustering_config") -> ClusteringParams:
        """Build parameters from a TAO ``ClusteringConfig`` of a loaded (validated) spec.

        The config is duck-typed: a protobuf message, any object with attributes named like
        the proto fields, or a mapping with those keys; fields an object or mapping leaves out
        take the proto's defaults, as an unset field of the message does.
        ``clustering_algorithm`` may be an int (``DBSCAN=0, NMS=1, HYBRID=2``) or a name (any
        case).  Values are not range-checked here: the spec rules did that when the spec was
        loaded (and turned TAO's "0 means default" NMS thresholds into the defaults).

        Args:
            clustering_config: the ``clustering_config`` message of one class.
            confidence_model: ``"aggregate_cov"`` or ``"mean_cov"``; ``None`` takes the proto's
                default (``aggregate_cov``).
            field_path: where the config sits in the spec, used in error messages.

        Returns:
            The parameters.

        Raises:
            SpecError: a value is not a number or the algorithm is not a known enum value or
                name.
            ValueError: ``confidence_model`` is not a known name (the spec rules reject such
                specs when they are loaded).
        """
        def get(name: str) -> Any:
            if isinstance(clustering_config, Mapping):
                value = clustering_config.get(name)
            else:
                value = getattr(clustering_config, name, None)
            return _default(_CC, name) if value is None else value

        problems: list[str] = []
        algorithm = _algorithm_name(get("clustering_algorithm"), f"{field_path}.clustering_algorithm", problems)
        numbers: dict[str, float] = {}
        for name in _NUMERIC_FIELDS:
            raw = get(name)
            try:
                numbers[name] = float(raw)
            except (TypeError, ValueError):
                problems.append(f"{field_path}.{name}: {raw!r} is not a number")
        if problems:
            raise SpecError("invalid clustering configuration", problems=problems,
                            hint="fix the values listed above in the spec")
        model = _default(pb.ClasswiseBboxHandlerConfig, "confidence_model") if confidence_model is None \
            else str(confidence_model).strip()
        return cls(algorithm=algorithm, confidence_model=model, **numbers)


def _algorithm_name(value: Any, field: str, problems: list[str]) -> str:
    if isinstance(value, bool):
        problems.append(f"{field}: {value!r} is not a clustering algorithm")
        return "DBSCAN"
    if isinstance(value, (int, np.integer)):
        if 0 <= int(value) < len(ALGORITHMS):
            return ALGORITHMS[int(value)]
        problems.append(f"{field}: enum value {int(value)} is not one of 0 (DBSCAN), 1 (NMS), 2 (HYBRID)")
        return "DBSCAN"
    name = str(value).strip().upper()
    if name in ALGORITHMS:
        return name
    problems.append(f"{field}: {value!r} is not one of {', '.join(ALGORITHMS)}")
    return "DBSCAN"


def _entries(config_map: Any) -> list[tuple[str, Any]]:
    if config_map is None:
        return []
    items = config_map.items() if hasattr(config_map, "items") else config_map
    return [(str(k), v) for k, v in items]


def params_from_bbox_handler_config(bbox_handler_config: Any,
                                    field_path: str = "bbox_handler_config") -> dict[str, ClusteringParams]:
    """Clustering parameters of an inference spec's ``bbox_handler_config``.

    Reads the ``classwise_bbox_handler_config`` map (class name or ``default`` ->
    ``{clustering_config, confidence_model, ...}``), duck-typed like
    :meth:`ClusteringParams.from_config`.

    Args:
        bbox_handler_config: the ``bbox_handler_config`` message (or an object/mapping with a
            ``classwise_bbox_handler_config`` mapping).
        field_path: where it sits in the spec, for error messages.

    Returns:
        ``{class name or "default": ClusteringParams}``.

    Raises:
        SpecError: the map is empty or an entry is invalid.
    """
    classwise = _field(bbox_handler_config, "classwise_bbox_handler_config")
    result: dict[str, ClusteringParams] = {}
    for key, value in _entries(classwise):
        path = f"{field_path}.classwise_bbox_handler_config[{key!r}]"
        model = _field(value, "confidence_model")
        result[key] = ClusteringParams.from_config(_field(value, "clustering_config") or {},
                                                   confidence_model=model, field_path=f"{path}.clustering_config")
    if not result:
        raise SpecError(f"{field_path}.classwise_bbox_handler_config is empty",
                        hint="add one entry per class or a 'default' entry")
    return result


def params_from_postprocessing_config(postprocessing_config: Any,
                                      field_path: str = "postprocessing_config") -> dict[str, ClusteringParams]:
    """Clustering parameters of a training spec's ``postprocessing_config``.

    Reads the ``target_class_config`` map (class name -> ``{clustering_config}``) and applies
    the same (inference-path) semantics as :func:`params_from_bbox_handler_config`, with the
    ``aggregate_cov`` confidence model.  TAO's train/evaluate path swaps the DBSCAN and NMS
    confidence thresholds; tltk does not copy that bug.

    Args:
        postprocessing_config: the ``postprocessing_config`` message (or an object/mapping
            with a ``target_class_config`` mapping).
        field_path: where it sits in the spec, for error messages.

    Returns:
        ``{class name: ClusteringParams}``.

    Raises:
        SpecError: the map is empty or an entry is invalid.
    """
    target = _field(postprocessing_config, "target_class_config")
    result: dict[str, ClusteringParams] = {}
    for key, value in _entries(target):
        path = f"{field_path}.target_class_config[{key!r}].clustering_config"
        result[key] = ClusteringParams.from_config(_field(value, "clustering_config") or {},
                                                   confidence_model="aggregate_cov", field_path=path)
    if not result:
        raise SpecError(f"{field_path}.target_class_config is empty", hint="add one entry per target class")
    return result


def _field(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def resolve_params(params: Mapping[str, ClusteringParams], class_name: str) -> ClusteringParams:
    """The parameters for one class: its own entry, else the ``default`` entry.

    Args:
        params: ``{class name or "default": ClusteringParams}``.
        class_name: the class to look up.

    Returns:
        The parameters to use.

    Raises:
        SpecError: neither the class nor ``default`` has an entry.
    """
    if class_name in params:
        return params[class_name]
    if DEFAULT_CLASS_KEY in params:
        return params[DEFAULT_CLASS_KEY]
    raise SpecError(f"no clustering parameters for class {class_name!r} and no 'default' entry",
                    hint=f"add a clustering entry keyed {class_name!r} or 'default'")


# --------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class Detection:
    """One detected object in model-input pixels (or original-image pixels after scaling).

    Attributes:
        class_name: the target class name.
        x1: left edge, pixels.
        y1: top edge, pixels.
        x2: right edge, pixels.
        y2: bottom edge, pixels.
        confidence: the detection confidence: for DBSCAN the cluster confidence
            (``aggregate_cov`` may exceed 1), for NMS/HYBRID the cell's raw coverage.
        num_raw_boxes: number of grid cells merged into this detection (1 for NMS/HYBRID).
        coverage: mean coverage of the merged cells (the raw coverage for NMS/HYBRID).
    """

    class_name: str
    x1: float
    y1: float
    x2: float
    y2: float
    confidence: float
    num_raw_boxes: int = 1
    coverage: float = 0.0

    @property
    def box(self) -> tuple[float, float, float, float]:
        """``(x1, y1, x2, y2)`` in pixels."""
        return (self.x1, self.y1, self.x2, self.y2)

    @property
    def width(self) -> float:
        """``x2 - x1`` in pixels."""
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        """``y2 - y1`` in pixels."""
        return self.y2 - self.y1


@dataclass(frozen=True)
class ClusterOutput:
    """Clustered boxes of one class in one image (arrays of equal length M).

    Attributes:
        boxes: (M, 4) float64 ``x1, y1, x2, y2`` in pixels.
        confidences: (M,) float64 detection confidences.
        num_raw_boxes: (M,) int64 number of merged cells per box.
        coverages: (M,) float64 mean coverage of the merged cells.
    """

    boxes: np.ndarray
    confidences: np.ndarray
    num_raw_boxes: np.ndarray
    coverages: np.ndarray

    def __len__(self) -> int:
        return int(self.confidences.shape[0])

    def sorted(self) -> ClusterOutput:
        """The same boxes in descending confidence order (stable for ties)."""
        order = np.argsort(-self.confidences, kind="stable")
        return ClusterOutput(self.boxes[order], self.confidences[order], self.num_raw_boxes[order],
                             self.coverages[order])


def _empty_output() -> ClusterOutput:
    return ClusterOutput(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0))


# --------------------------------------------------------------------------------------------
# Decoding


def decode_grids(cov: np.ndarray, bbox: np.ndarray, stride: float = 16, scale: float = 35.0,
                 offset: float = 0.5) -> np.ndarray:
    """Turn the raw ``output_bbox`` grid into absolute boxes, vectorised.

    Cell (row ``j``, column ``i``) has the anchor ``X = stride*i + offset``,
    ``Y = stride*j + offset``; channels ``4c..4c+3`` of class ``c`` are ``(L, T, R, B)`` and
    decode to ``(X - scale*L, Y - scale*T, X + scale*R, Y + scale*B)``.  No clipping.

    Args:
        cov: (N, C, H, W) coverage output (sigmoid); only its shape is used for checking.
        bbox: (N, 4*C, H, W) bbox output.
        stride: model input pixels per output cell (16 for DetectNet_v2).
        scale: the bbox objective's ``scale`` (35.0 in TAO specs).
        offset: the bbox objective's ``offset`` (0.5 in TAO specs), pixels.

    Returns:
        (N, C, H, W, 4) boxes ``x1, y1, x2, y2`` in model-input pixels, float32 for float32
        input (float64 otherwise).

    Raises:
        InvalidInputError: the shapes do not match.
    """
    cov = np.asarray(cov)
    bbox = np.asarray(bbox)
    _check_shapes(cov, bbox)
    n, c, h, w = cov.shape
    dtype = np.result_type(bbox.dtype, np.float32)
    grid = bbox.reshape(n, c, 4, h, w).astype(dtype, copy=False)
    xs = (np.arange(w, dtype=dtype) * dtype.type(stride) + dtype.type(offset))[None, None, None, :]
    ys = (np.arange(h, dtype=dtype) * dtype.type(stride) + dtype.type(offset))[None, None, :, None]
    s = dtype.type(scale)
    out = np.empty((n, c, h, w, 4), dtype=dtype)
    out[..., 0] = xs - s * grid[:, :, 0]
    out[..., 1] = ys - s * grid[:, :, 1]
    out[..., 2] = xs + s * grid[:, :, 2]
    out[..., 3] = ys + s * grid[:, :, 3]
    return out


def encode_boxes(boxes: np.ndarray, grid_height: int, grid_width: int, stride: float = 16,
                 scale: float = 35.0, offset: float = 0.5) -> np.ndarray:
    """The inverse of :func:`decode_grids` for one box per cell (useful for tests and tools).

    Args:
        boxes: (H, W, 4) absolute ``x1, y1, x2, y2`` per cell, model-input pixels.
        grid_height: H, number of output rows.
        grid_width: W, number of output columns.
        stride: model input pixels per output cell.
        scale: the bbox objective's ``scale``.
        offset: the bbox objective's ``offset``, pixels.

    Returns:
        (4, H, W) float64 channels ``L, T, R, B`` as the network is trained to output them:
        ``L = (X - x1)/scale``, ``T = (Y - y1)/scale``, ``R = (x2 - X)/scale``,
        ``B = (y2 - Y)/scale``.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.shape != (grid_height, grid_width, 4):
        raise InvalidInputError(f"boxes must have shape ({grid_height}, {grid_width}, 4), got {boxes.shape}")
    xs = np.arange(grid_width) * float(stride) + offset
    ys = (np.arange(grid_height) * float(stride) + offset)[:, None]
    out = np.empty((4, grid_height, grid_width))
    out[0] = (xs - boxes[..., 0]) / scale
    out[1] = (ys - boxes[..., 1]) / scale
    out[2] = (boxes[..., 2] - xs) / scale
    out[3] = (boxes[..., 3] - ys) / scale
    return out


def _check_shapes(cov: np.ndarray, bbox: np.ndarray) -> None:
    if cov.ndim != 4:
        raise InvalidInputError(f"coverage output must be (N, C, H, W), got shape {cov.shape}",
                                hint="pass output_cov/Sigmoid in NCHW layout")
    if bbox.ndim != 4:
        raise InvalidInputError(f"bbox output must be (N, 4*C, H, W), got shape {bbox.shape}",
                                hint="pass output_bbox/BiasAdd in NCHW layout")
    n, c, h, w = cov.shape
    if bbox.shape != (n, 4 * c, h, w):
        raise InvalidInputError(
            f"bbox output shape {bbox.shape} does not match coverage shape {cov.shape}: "
            f"expected {(n, 4 * c, h, w)}",
            hint="the bbox output has 4 channels per class and the same batch and grid size")


# --------------------------------------------------------------------------------------------
# Clustering primitives (box IoU and NMS live in tltk.boxes.numpy_ops)


DBSCAN_BACKENDS: tuple[str, ...] = ("numpy", "sklearn")
"""DBSCAN implementations: ``numpy`` (default, vectorised) and ``sklearn`` (``sklearn.cluster.DBSCAN``)."""


def dbscan_labels(distance: np.ndarray, weights: np.ndarray, eps: float, min_samples: int,
                  backend: str = "numpy") -> np.ndarray:
    """Weighted DBSCAN on a precomputed distance matrix, with scikit-learn's exact labelling.

    A point's neighbourhood is every point at distance ``<= eps`` (itself included when its
    self-distance is); it is a core point when the sum of the neighbourhood's weights is
    ``>= min_samples``.  Clusters are the connected groups of core points plus their border
    points; labels are numbered in order of each cluster's lowest core index, and a border
    point next to several clusters joins the lowest-numbered one -- exactly what
    ``sklearn.cluster.DBSCAN(metric="precomputed").fit_predict(distance, sample_weight=weights)``
    returns (the ``sklearn`` backend calls it).  The ``numpy`` backend computes the same
    labels with array operations and is faster.  The two add neighbourhood weights in a
    different order, which cannot matter for coverages that come from a float32 network
    output (their float64 sums are exact); for arbitrary float64 weights they could differ
    only when a sum lies within rounding error of ``min_samples``.

    Args:
        distance: (K, K) symmetric non-negative distances.
        weights: (K,) sample weights (coverages).
        eps: neighbourhood radius (inclusive).
        min_samples: minimum neighbourhood weight of a core point (>= 1).
        backend: ``"numpy"`` or ``"sklearn"``.

    Returns:
        (K,) int64 cluster labels, -1 for noise.
    """
    distance = np.asarray(distance, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64).reshape(-1)
    n = weights.size
    if distance.shape != (n, n):
        raise InvalidInputError(f"distance matrix shape {distance.shape} does not match {n} weights")
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if backend == "sklearn":
        from sklearn.cluster import DBSCAN

        db = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed")
        return np.asarray(db.fit_predict(distance, sample_weight=weights), dtype=np.int64)
    if backend != "numpy":
        raise InvalidInputError(f"unknown DBSCAN backend {backend!r}; use one of {', '.join(DBSCAN_BACKENDS)}")
    adjacency = distance <= eps
    neighbourhood_weight = adjacency.astype(np.float64) @ weights
    core = neighbourhood_weight >= min_samples
    labels = np.full(n, -1, dtype=np.int64)
    core_idx = np.flatnonzero(core)
    if core_idx.size == 0:
        return labels
    core_adj = adjacency[np.ix_(core_idx, core_idx)]
    component = _connected_components(core_adj | core_adj.T)
    # Number clusters by their lowest core index, as scikit-learn's expansion order does.
    first = np.full(int(component.max()) + 1, n, dtype=np.int64)
    np.minimum.at(first, component, core_idx)
    rank = np.empty_like(first)
    rank[np.argsort(first, kind="stable")] = np.arange(first.size)
    labels[core_idx] = rank[component]
    border = np.flatnonzero(~core)
    if border.size:
        touching = adjacency[np.ix_(border, core_idx)]
        best = np.where(touching, rank[component][None, :], n).min(axis=1)
        has = best < n
        labels[border[has]] = best[has]
    return labels


def _connected_components(adj: np.ndarray) -> np.ndarray:
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    _, comp = connected_components(csr_matrix(adj), directed=False)
    return np.asarray(comp, dtype=np.int64)


def _dbscan_labels(boxes: np.ndarray, coverages: np.ndarray, params: ClusteringParams,
                   backend: str) -> np.ndarray:
    distance = 1.0 - dbscan_iou_matrix(boxes)
    np.maximum(distance, 0.0, out=distance)  # degenerate (inverted) boxes can push IoU above 1
    return dbscan_labels(distance, coverages, params.dbscan_eps + DBSCAN_EPS_EPSILON,
                         params.effective_min_samples, backend)


def _cluster_dbscan(boxes: np.ndarray, coverages: np.ndarray, params: ClusteringParams,
                    backend: str) -> tuple[ClusterOutput, np.ndarray, np.ndarray]:
    """DBSCAN clusters after the height and confidence filters, plus the member cells' labels."""
    labels = _dbscan_labels(boxes, coverages, params, backend)
    member = labels >= 0
    if not np.any(member):
        return _empty_output(), labels, np.zeros(0, dtype=bool)
    lab = labels[member]
    w = coverages[member]
    k = int(lab.max()) + 1
    counts = np.bincount(lab, minlength=k)
    wsum = np.bincount(lab, weights=w, minlength=k).astype(np.float64)
    weighted = [np.bincount(lab, weights=w * boxes[member, d], minlength=k) for d in range(4)]
    mean_box: np.ndarray = np.stack(weighted, axis=1) / wsum[:, None]
    confidence: np.ndarray = wsum if params.confidence_model == "aggregate_cov" else wsum / counts
    keep = ((mean_box[:, 3] - mean_box[:, 1]) > params.minimum_bounding_box_height) & (
        confidence > params.dbscan_confidence_threshold)
    out = ClusterOutput(mean_box[keep], confidence[keep], counts[keep].astype(np.int64), (wsum / counts)[keep])
    return out, labels, keep


def cluster_candidates(boxes: np.ndarray, coverages: np.ndarray, params: ClusteringParams,
                       dbscan_backend: str = "numpy") -> ClusterOutput:
    """Cluster the candidate cells of one class in one image.

    Args:
        boxes: (K, 4) decoded boxes of the candidate cells (coverage above the threshold),
            ``x1, y1, x2, y2`` in model-input pixels, in TAO's cell order (column-major:
            x index outer, y index inner) for exact parity of DBSCAN border assignments.
        coverages: (K,) coverages of those cells.
        params: the class's clustering parameters.
        dbscan_backend: ``"numpy"`` (default) or ``"sklearn"``; see :func:`dbscan_labels`.

    Returns:
        The clustered boxes, in descending confidence order.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    coverages = np.asarray(coverages, dtype=np.float64).reshape(-1)
    if coverages.size == 0:
        return _empty_output()
    if params.algorithm == "NMS":
        keep = greedy_nms(boxes, coverages, params.nms_iou_threshold, params.nms_confidence_threshold, inclusive=True)
        return ClusterOutput(boxes[keep], coverages[keep], np.ones(keep.size, dtype=np.int64), coverages[keep])
    clusters, labels, kept = _cluster_dbscan(boxes, coverages, params, dbscan_backend)
    if params.algorithm == "DBSCAN":
        return clusters.sorted()
    # HYBRID: the raw member cells of the surviving clusters, cluster by cluster, go to NMS.
    if kept.size == 0 or not np.any(kept):
        return _empty_output()
    cell_in_kept = labels >= 0
    cell_in_kept[cell_in_kept] = kept[labels[cell_in_kept]]
    cells = np.flatnonzero(cell_in_kept)
    cells = cells[np.argsort(labels[cells], kind="stable")]
    sub_boxes, sub_cov = boxes[cells], coverages[cells]
    keep = greedy_nms(sub_boxes, sub_cov, params.nms_iou_threshold, params.nms_confidence_threshold,
                      inclusive=True)
    return ClusterOutput(sub_boxes[keep], sub_cov[keep], np.ones(keep.size, dtype=np.int64), sub_cov[keep])


# --------------------------------------------------------------------------------------------
# Whole-batch postprocessing


def postprocess(cov: np.ndarray, bbox: np.ndarray, class_names: Sequence[str],
                params: Mapping[str, ClusteringParams], stride: float = 16, scale: float = 35.0,
                offset: float = 0.5, image_size: tuple[float, float] | None = None,
                dbscan_backend: str = "numpy") -> list[list[Detection]]:
    """Decode and cluster a batch of DetectNet_v2 outputs into detections.

    Args:
        cov: (N, C, H, W) coverage output ``output_cov/Sigmoid``.
        bbox: (N, 4*C, H, W) bbox output ``output_bbox/BiasAdd``.
        class_names: C class names in output-channel order (the cost function's
            ``target_classes`` order).
        params: ``{class name or "default": ClusteringParams}``; a class without its own
            entry uses ``default``.
        stride: model input pixels per output cell.
        scale: the bbox objective's ``scale``.
        offset: the bbox objective's ``offset``, pixels.
        image_size: ``(width, height)`` of the model input; when given, boxes are clipped to
            ``[0, width] x [0, height]`` (with ``x2 >= x1``, ``y2 >= y1``) after clustering,
            as TAO does when writing outputs.  ``None`` keeps unclipped coordinates.
        dbscan_backend: ``"numpy"`` (default, vectorised) or ``"sklearn"``
            (``sklearn.cluster.DBSCAN``, as TAO); both give the same labels, see
            :func:`dbscan_labels`.

    Returns:
        One list per image of :class:`Detection` in model-input pixels, class by class in
        ``class_names`` order, each class by descending confidence.

    Raises:
        InvalidInputError: shapes do not match or the class count differs from C.
        SpecError: a class has no parameters and there is no ``default`` entry.
    """
    cov = np.asarray(cov)
    bbox = np.asarray(bbox)
    _check_shapes(cov, bbox)
    n, c, _, _ = cov.shape
    if len(class_names) != c:
        raise InvalidInputError(f"{len(class_names)} class names given for a coverage output with {c} channels",
                                hint="pass the target class names in the network's output order")
    per_class = [resolve_params(params, name) for name in class_names]
    boxes = decode_grids(cov, bbox, stride=stride, scale=scale, offset=offset)
    # TAO enumerates cells x-major (the grids are transposed to (W, H) before flattening).
    cov_xy = np.swapaxes(cov, 2, 3)
    boxes_xy = np.swapaxes(boxes, 2, 3)
    results: list[list[Detection]] = []
    for img in range(n):
        dets: list[Detection] = []
        for ci, name in enumerate(class_names):
            p = per_class[ci]
            plane = cov_xy[img, ci]
            mask = plane > p.coverage_threshold
            if not mask.any():
                continue
            out = cluster_candidates(boxes_xy[img, ci][mask], plane[mask], p, dbscan_backend)
            logger.debug("image %d class %s: %d candidates -> %d detections (%s)", img, name,
                         int(mask.sum()), len(out), p.algorithm)
            if len(out) == 0:
                continue
            b = out.boxes
            if image_size is not None:
                b = clip_boxes(b, image_size)
            for k in range(len(out)):
                dets.append(Detection(name, float(b[k, 0]), float(b[k, 1]), float(b[k, 2]), float(b[k, 3]),
                                      float(out.confidences[k]), int(out.num_raw_boxes[k]),
                                      float(out.coverages[k])))
        results.append(dets)
    return results


def scale_detections(detections: Sequence[Detection], model_size: tuple[float, float],
                     original_size: tuple[float, float]) -> list[Detection]:
    """Map detections from the model frame to the original image, as TAO's inference does.

    Each box is clipped to the model frame (:func:`tltk.boxes.numpy_ops.clip_boxes`) and then multiplied by
    ``original_width / model_width`` in x and ``original_height / model_height`` in y.  A box
    left without area by the clipping (it lay outside the frame: width or height <= 0) is
    dropped, so no zero-width box reaches a label file or an overlay.

    Args:
        detections: detections in model-input pixels.
        model_size: ``(width, height)`` of the model input, pixels.
        original_size: ``(width, height)`` of the original image, pixels.

    Returns:
        New detections in original-image pixels (other fields unchanged), in input order.
    """
    if not detections:
        return []
    sx = float(original_size[0]) / float(model_size[0])
    sy = float(original_size[1]) / float(model_size[1])
    b = clip_boxes(np.array([d.box for d in detections]), model_size)
    b[:, [0, 2]] *= sx
    b[:, [1, 3]] *= sy
    return [replace(d, x1=float(r[0]), y1=float(r[1]), x2=float(r[2]), y2=float(r[3]))
            for d, r in zip(detections, b, strict=True) if r[2] > r[0] and r[3] > r[1]]
