"""TFRecord schemas as tables, a generic Example writer/reader, shard naming and atomic shard writing.

A :class:`TFRecordSchema` names every feature key of one record layout with its list type and
whether it holds one value per frame (image) or one value per object.  Two tables follow TAO's
converters verbatim, so TFRecords made by TAO load in tltk and the reverse:

* :data:`KITTI_DETECTION` -- DetectNet_v2's ``dataset_convert`` (KITTI and COCO input);
* :data:`COCO_INSTANCE` -- MaskRCNN's ``dataset_convert`` (COCO instances with PNG masks).

One record holds one image: frame-level features hold ``length`` values (usually one),
object-level features hold one value per object (all object lists have the same length; a frame
without objects has empty lists).  :func:`build_example`, :func:`parse_example` (NumPy, for tools
and tests) and :func:`parse_tensors` (``tf.data``) work for any schema; the DetectNet_v2
functions (:func:`build_detection_example`, ...) are thin users of them.

Shard files are named ``<prefix>-fold-{p:03d}-of-{n:03d}-shard-{s:05d}-of-{k:05d}`` (each
suffix only when its count is non-zero), as TAO's DetectNet_v2 converter does; the loader
selects a validation fold by the substring ``fold-{p:03d}-of-``.

TensorFlow is imported inside the functions that need it, so the naming helpers and the
schema tables are cheap to import.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from tltk.errors import InvalidInputError
from tltk.fileio import temporary_name

if TYPE_CHECKING:  # pragma: no cover
    import tensorflow as tf

log = logging.getLogger(__name__)

__all__ = [
    "FeatureSpec",
    "TFRecordSchema",
    "KITTI_DETECTION",
    "COCO_INSTANCE",
    "FEATURES",
    "OBJECT_FLOAT_KEYS",
    "build_example",
    "parse_example",
    "parse_tensors",
    "DetectionObjectRecord",
    "DetectionFrameRecord",
    "build_detection_example",
    "parse_detection_example",
    "parse_detection_tensors",
    "shard_filename",
    "fold_substring",
    "ShardSetWriter",
    "iterate_records",
    "frame_ids",
    "count_records",
]

_LIST_FIELD = {"bytes": "bytes_list", "int64": "int64_list", "float": "float_list"}
_NUMPY_DTYPE = {"bytes": object, "int64": np.int64, "float": np.float32}


@dataclass(frozen=True)
class FeatureSpec:
    """How one TFRecord feature is stored.

    Attributes:
        kind: ``bytes``, ``int64`` or ``float`` (the ``tf.train.Feature`` list type).
        per: ``frame`` (``length`` values per record) or ``object`` (one value per object).
        optional: written only for some datasets; readers do not require it.
        length: number of values of a ``frame`` feature (16 for a flattened 4x4 matrix);
            ignored for ``object`` features.
    """

    kind: str
    per: str
    optional: bool = False
    length: int = 1

    def __post_init__(self) -> None:
        if self.kind not in _LIST_FIELD:
            raise ValueError(f"FeatureSpec.kind must be one of {sorted(_LIST_FIELD)}, not {self.kind!r}")
        if self.per not in ("frame", "object"):
            raise ValueError(f"FeatureSpec.per must be 'frame' or 'object', not {self.per!r}")
        if self.length < 1:
            raise ValueError(f"FeatureSpec.length must be >= 1, not {self.length}")


@dataclass(frozen=True)
class TFRecordSchema:
    """One TFRecord layout: a name and its features in writing order.

    Attributes:
        name: short name used in error messages (``kitti_detection``, ``coco_instance``).
        features: feature key (verbatim as stored) -> :class:`FeatureSpec`, in writing order.
    """

    name: str
    features: Mapping[str, FeatureSpec]

    @property
    def frame_keys(self) -> list[str]:
        """Keys of the frame-level features, in schema order."""
        return [k for k, s in self.features.items() if s.per == "frame"]

    @property
    def object_keys(self) -> list[str]:
        """Keys of the object-level features, in schema order."""
        return [k for k, s in self.features.items() if s.per == "object"]


#: DetectNet_v2's record (TAO's detection ``dataset_convert`` for KITTI and COCO input).
KITTI_DETECTION = TFRecordSchema("kitti_detection", {
    "frame/id": FeatureSpec("bytes", "frame"),
    "frame/height": FeatureSpec("int64", "frame"),
    "frame/width": FeatureSpec("int64", "frame"),
    "target/object_class": FeatureSpec("bytes", "object"),
    "target/truncation": FeatureSpec("float", "object"),
    "target/occlusion": FeatureSpec("int64", "object"),
    "target/observation_angle": FeatureSpec("float", "object"),
    "target/coordinates_x1": FeatureSpec("float", "object"),
    "target/coordinates_y1": FeatureSpec("float", "object"),
    "target/coordinates_x2": FeatureSpec("float", "object"),
    "target/coordinates_y2": FeatureSpec("float", "object"),
    "target/world_bbox_h": FeatureSpec("float", "object"),
    "target/world_bbox_w": FeatureSpec("float", "object"),
    "target/world_bbox_l": FeatureSpec("float", "object"),
    "target/world_bbox_x": FeatureSpec("float", "object"),
    "target/world_bbox_y": FeatureSpec("float", "object"),
    "target/world_bbox_z": FeatureSpec("float", "object"),
    "target/world_bbox_rot_y": FeatureSpec("float", "object"),
    "point_cloud/id": FeatureSpec("bytes", "frame", optional=True),
    "point_cloud/num_input_channels": FeatureSpec("int64", "frame", optional=True),
    "calibration/T_lidar_to_camera": FeatureSpec("float", "frame", optional=True, length=16),
    "calibration/P_lidar_to_image": FeatureSpec("float", "frame", optional=True, length=12),
})

#: MaskRCNN's record (TAO's COCO instance ``dataset_convert``).  Boxes are normalized to
#: [0, 1] by the image size; ``class/label`` holds the dataset's raw ``category_id``;
#: ``image/source_id`` is the decimal image id as text; ``image/format`` is always ``jpeg``;
#: ``image/object/mask`` holds one PNG per instance (full image, values 0/1).
COCO_INSTANCE = TFRecordSchema("coco_instance", {
    "image/height": FeatureSpec("int64", "frame"),
    "image/width": FeatureSpec("int64", "frame"),
    "image/filename": FeatureSpec("bytes", "frame"),
    "image/source_id": FeatureSpec("bytes", "frame"),
    "image/key/sha256": FeatureSpec("bytes", "frame"),
    "image/encoded": FeatureSpec("bytes", "frame"),
    "image/format": FeatureSpec("bytes", "frame"),
    "image/object/bbox/xmin": FeatureSpec("float", "object"),
    "image/object/bbox/xmax": FeatureSpec("float", "object"),
    "image/object/bbox/ymin": FeatureSpec("float", "object"),
    "image/object/bbox/ymax": FeatureSpec("float", "object"),
    "image/object/class/text": FeatureSpec("bytes", "object"),
    "image/object/class/label": FeatureSpec("int64", "object"),
    "image/object/is_crowd": FeatureSpec("int64", "object"),
    "image/object/area": FeatureSpec("float", "object"),
    "image/object/mask": FeatureSpec("bytes", "object"),
})

#: Every feature TAO's detection converters write, with its kind (``KITTI_DETECTION``'s table).
FEATURES: Mapping[str, FeatureSpec] = KITTI_DETECTION.features

#: Object-level float features, in the order of :class:`DetectionObjectRecord` fields.
OBJECT_FLOAT_KEYS: dict[str, str] = {
    "truncation": "target/truncation",
    "observation_angle": "target/observation_angle",
    "x1": "target/coordinates_x1",
    "y1": "target/coordinates_y1",
    "x2": "target/coordinates_x2",
    "y2": "target/coordinates_y2",
    "world_bbox_h": "target/world_bbox_h",
    "world_bbox_w": "target/world_bbox_w",
    "world_bbox_l": "target/world_bbox_l",
    "world_bbox_x": "target/world_bbox_x",
    "world_bbox_y": "target/world_bbox_y",
    "world_bbox_z": "target/world_bbox_z",
    "world_bbox_rot_y": "target/world_bbox_rot_y",
}


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, (bytes, str)):
        return [value]
    if isinstance(value, np.ndarray):
        return value.reshape(-1).tolist()
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _feature(kind: str, values: list[Any]) -> Any:
    import tensorflow as tf

    if kind == "bytes":
        return tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[v if isinstance(v, bytes) else str(v).encode("utf-8") for v in values]))
    if kind == "int64":
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))
    return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))


def build_example(schema: TFRecordSchema, values: Mapping[str, Any]) -> tf.train.Example:
    """Build one ``tf.train.Example`` of ``schema``.

    Args:
        schema: the record layout.
        values: feature key -> value.  A frame feature takes a scalar (or a sequence of
            ``length`` values); an object feature takes a sequence (list, tuple or 1-D array)
            with one value per object.  ``bytes`` features accept ``bytes`` or ``str``
            (written as UTF-8).  Optional features may be left out.

    Returns:
        The Example with the given features.

    Raises:
        ValueError: a key is not in the schema, a required key is missing, a frame feature
            has the wrong number of values, or object features have different lengths.
    """
    import tensorflow as tf

    unknown = [k for k in values if k not in schema.features]
    if unknown:
        raise ValueError(f"{schema.name}: unknown feature key(s) {unknown}; known keys: {list(schema.features)}")
    missing = [k for k, s in schema.features.items() if not s.optional and k not in values]
    if missing:
        raise ValueError(f"{schema.name}: required feature key(s) {missing} have no value")
    feats: dict[str, Any] = {}
    first_object: tuple[str, int] | None = None
    for key, spec in schema.features.items():
        if key not in values:
            continue
        vals = _as_list(values[key])
        if spec.per == "frame":
            if len(vals) != spec.length:
                raise ValueError(f"{schema.name}: frame feature {key!r} takes {spec.length} value(s), got {len(vals)}")
        elif first_object is None:
            first_object = (key, len(vals))
        elif len(vals) != first_object[1]:
            raise ValueError(f"{schema.name}: object feature {key!r} has {len(vals)} values but "
                             f"{first_object[0]!r} has {first_object[1]}; every object feature needs one value per object")
        feats[key] = _feature(spec.kind, vals)
    return tf.train.Example(features=tf.train.Features(feature=feats))


def _stored_values(schema: TFRecordSchema, key: str, feature: Any) -> list[Any]:
    kind = _LIST_FIELD[schema.features[key].kind]
    stored = feature.WhichOneof("kind")
    if stored is None:
        return []
    if stored != kind:
        raise InvalidInputError(f"{schema.name} record: feature {key!r} is stored as {stored}, expected {kind}",
                                hint="the file was written with another record layout; re-create it with dataset_convert")
    return list(getattr(feature, kind).value)


def _numpy_scalar(kind: str, value: Any) -> Any:
    if kind == "bytes":
        return bytes(value)
    return _NUMPY_DTYPE[kind](value)


def _numpy_array(kind: str, values: list[Any]) -> np.ndarray:
    if kind == "bytes":
        out = np.empty(len(values), dtype=object)
        out[:] = [bytes(v) for v in values]
        return out
    return np.asarray(values, dtype=_NUMPY_DTYPE[kind]).reshape(len(values))


def parse_example(schema: TFRecordSchema, serialized: bytes) -> dict[str, Any]:
    """Parse one serialized Example of ``schema`` in Python (tools and tests).

    Args:
        schema: the record layout.
        serialized: the record bytes.

    Returns:
        Feature key -> value.  A frame feature with one value gives a scalar (``bytes``,
        ``np.int64`` or ``np.float32``), one with ``length`` > 1 a ``[length]`` array.  An
        object feature gives a ``[N]`` array (dtype ``object`` holding ``bytes``, ``int64`` or
        ``float32``); an object feature missing from the record reads as N zeros (``b""`` for
        bytes).  Optional frame features missing from the record are left out.  Keys not in
        the schema are ignored.

    Raises:
        InvalidInputError: the bytes are not an Example, a required frame feature is missing
            or has the wrong number of values, a feature has the wrong list type, or object
            features have different lengths.
    """
    import tensorflow as tf
    from google.protobuf.message import DecodeError

    try:
        example = tf.train.Example.FromString(serialized)
    except DecodeError as exc:
        raise InvalidInputError(f"a record is not a tf.train.Example ({exc})",
                                hint=f"check that the file is a {schema.name} TFRecord") from exc
    fmap = example.features.feature
    missing = [k for k in schema.frame_keys if not schema.features[k].optional and k not in fmap]
    if missing:
        raise InvalidInputError(f"record has no {', '.join(map(repr, missing))} feature(s); not a {schema.name} TFRecord",
                                hint="convert the dataset with the matching dataset_convert")
    out: dict[str, Any] = {}
    for key in schema.frame_keys:
        spec = schema.features[key]
        if key not in fmap:
            continue
        vals = _stored_values(schema, key, fmap[key])
        if len(vals) != spec.length:
            raise InvalidInputError(f"{schema.name} record: frame feature {key!r} has {len(vals)} value(s), "
                                    f"expected {spec.length}")
        out[key] = _numpy_scalar(spec.kind, vals[0]) if spec.length == 1 else _numpy_array(spec.kind, vals)
    present = {k: _stored_values(schema, k, fmap[k]) for k in schema.object_keys if k in fmap}
    lengths = {k: len(v) for k, v in present.items()}
    if len(set(lengths.values())) > 1:
        raise InvalidInputError(f"{schema.name} record: object features have different lengths {lengths}; "
                                "every object feature needs one value per object")
    n = next(iter(lengths.values()), 0)
    for key in schema.object_keys:
        kind = schema.features[key].kind
        vals = present.get(key, [b"" if kind == "bytes" else 0] * n)
        out[key] = _numpy_array(kind, vals)
    return out


def parse_tensors(schema: TFRecordSchema, serialized: tf.Tensor,
                  keys: Sequence[str] | None = None) -> dict[str, tf.Tensor]:
    """Parse one serialized Example of ``schema`` inside a ``tf.data`` pipeline.

    Frame features are read with ``tf.io.FixedLenFeature`` (a required one missing from the
    record is a parse error; an optional one reads as ``""``/0), object features with
    ``tf.io.VarLenFeature`` and made dense (a missing one reads as an empty list).

    Args:
        schema: the record layout.
        serialized: scalar ``tf.string`` tensor.
        keys: the features to read (default: all of the schema); records may hold others.

    Returns:
        Feature key -> tensor: frame features are scalars (``[length]`` when ``length`` > 1),
        object features ``[N]``; dtypes ``tf.string``, ``tf.int64`` or ``tf.float32``.

    Raises:
        ValueError: a key is not in the schema.
    """
    import tensorflow as tf

    dtypes = {"bytes": tf.string, "int64": tf.int64, "float": tf.float32}
    wanted = list(schema.features) if keys is None else list(keys)
    unknown = [k for k in wanted if k not in schema.features]
    if unknown:
        raise ValueError(f"{schema.name}: unknown feature key(s) {unknown}")
    spec_map: dict[str, Any] = {}
    for key in wanted:
        spec = schema.features[key]
        dtype = dtypes[spec.kind]
        if spec.per == "object":
            spec_map[key] = tf.io.VarLenFeature(dtype)
            continue
        shape = [] if spec.length == 1 else [spec.length]
        if spec.optional:
            empty = "" if spec.kind == "bytes" else 0
            default = empty if spec.length == 1 else [empty] * spec.length
            spec_map[key] = tf.io.FixedLenFeature(shape, dtype, default_value=default)
        else:
            spec_map[key] = tf.io.FixedLenFeature(shape, dtype)
    parsed = tf.io.parse_single_example(serialized, spec_map)
    out: dict[str, tf.Tensor] = {}
    for key in wanted:
        value = parsed[key]
        if schema.features[key].per == "object":
            value = tf.sparse.to_dense(value, default_value="" if schema.features[key].kind == "bytes" else 0)
        out[key] = value
    return out


@dataclass
class DetectionObjectRecord:
    """One object of a detection TFRecord example (pixel coordinates of the original image)."""

    object_class: str
    x1: float
    y1: float
    x2: float
    y2: float
    truncation: float = 0.0
    occlusion: int = 0
    observation_angle: float = 0.0
    world_bbox_h: float = 0.0
    world_bbox_w: float = 0.0
    world_bbox_l: float = 0.0
    world_bbox_x: float = 0.0
    world_bbox_y: float = 0.0
    world_bbox_z: float = 0.0
    world_bbox_rot_y: float = 0.0


@dataclass
class DetectionFrameRecord:
    """One detection TFRecord example.

    Attributes:
        frame_id: ``<image_dir_name>/<file stem>``; the loader appends ``.<image_extension>``.
        width: image width in pixels.
        height: image height in pixels.
        objects: the frame's objects (may be empty).
        extra: optional frame-level features (``point_cloud/id`` -> str,
            ``point_cloud/num_input_channels`` -> int, ``calibration/*`` -> list of floats).
    """

    frame_id: str
    width: int
    height: int
    objects: list[DetectionObjectRecord] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def build_detection_example(frame: DetectionFrameRecord) -> tf.train.Example:
    """Build the ``tf.train.Example`` TAO's converter writes for one frame.

    Args:
        frame: the frame with its objects; class names are written as given (the converter
            lower-cases them before calling this).

    Returns:
        The Example, with every non-optional key of :data:`KITTI_DETECTION` present plus the
        optional keys found in ``frame.extra``.

    Raises:
        ValueError: a key of ``frame.extra`` is not an optional frame feature, or a
            calibration matrix has the wrong number of values.
    """
    values: dict[str, Any] = {
        "frame/id": frame.frame_id,
        "frame/height": frame.height,
        "frame/width": frame.width,
        "target/object_class": [o.object_class for o in frame.objects],
        "target/occlusion": [o.occlusion for o in frame.objects],
    }
    for attr, key in OBJECT_FLOAT_KEYS.items():
        values[key] = [getattr(o, attr) for o in frame.objects]
    for key, value in frame.extra.items():
        spec = FEATURES.get(key)
        if spec is None or not spec.optional:
            raise ValueError(f"{key!r} is not an optional frame feature of the detection schema")
        values[key] = value
    return build_example(KITTI_DETECTION, values)


def parse_detection_example(serialized: bytes) -> DetectionFrameRecord:
    """Parse one serialized detection Example in Python (tools and tests; the loader uses
    :func:`parse_detection_tensors`).

    Args:
        serialized: the record bytes.

    Returns:
        The frame.  Missing object-level keys read as zeros.

    Raises:
        InvalidInputError: ``frame/id``, ``frame/width`` or ``frame/height`` is missing, or
            object lists have different lengths.
    """
    values = parse_example(KITTI_DETECTION, serialized)

    def text(raw: bytes) -> str:
        return raw.decode("utf-8", errors="replace")

    classes = values["target/object_class"]
    columns: dict[str, Any] = {attr: [float(v) for v in values[key]] for attr, key in OBJECT_FLOAT_KEYS.items()}
    columns["occlusion"] = [int(v) for v in values["target/occlusion"]]
    objects = [DetectionObjectRecord(object_class=text(classes[i]), **{a: columns[a][i] for a in columns})
               for i in range(len(classes))]
    extra: dict[str, Any] = {}
    for key, spec in FEATURES.items():
        if not spec.optional or key not in values:
            continue
        if spec.kind == "bytes":
            extra[key] = text(values[key])
        elif spec.length > 1:
            extra[key] = [float(v) for v in values[key]]
        else:
            extra[key] = values[key].item()
    return DetectionFrameRecord(
        frame_id=text(values["frame/id"]),
        width=int(values["frame/width"]),
        height=int(values["frame/height"]),
        objects=objects,
        extra=extra,
    )


def parse_detection_tensors(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """Parse one serialized detection Example inside a ``tf.data`` pipeline.

    Only the keys the DetectNet_v2 loader needs are read, so records with extra (lidar)
    features parse as well.

    Args:
        serialized: scalar ``tf.string`` tensor.

    Returns:
        Dict with ``frame_id`` (scalar string), ``width``/``height`` (scalar int32),
        ``classes`` ([N] string, as stored) and ``boxes`` ([N, 4] float32, ``x1, y1, x2, y2``
        in pixels of the original image).
    """
    import tensorflow as tf

    corners = [f"target/coordinates_{k}" for k in ("x1", "y1", "x2", "y2")]
    parsed = parse_tensors(KITTI_DETECTION, serialized,
                           ["frame/id", "frame/width", "frame/height", "target/object_class", *corners])
    return {
        "frame_id": parsed["frame/id"],
        "width": tf.cast(parsed["frame/width"], tf.int32),
        "height": tf.cast(parsed["frame/height"], tf.int32),
        "classes": parsed["target/object_class"],
        "boxes": tf.stack([parsed[k] for k in corners], axis=-1),
    }


def fold_substring(fold: int) -> str:
    """The file-name substring that marks fold ``fold``: ``fold-{fold:03d}-of-``."""
    return f"fold-{int(fold):03d}-of-"


def shard_filename(prefix: str, partition: int, num_partitions: int, shard: int, num_shards: int) -> str:
    """The file name TAO gives shard ``shard`` of partition ``partition``.

    Args:
        prefix: the ``-o`` output prefix (a path).
        partition: 0-based partition (fold) index.
        num_partitions: the partition count written in the name; 0 omits the fold suffix.
        shard: 0-based shard index.
        num_shards: the shard count from the spec; 0 omits the shard suffix.

    Returns:
        e.g. ``prefix-fold-000-of-002-shard-00003-of-00010``.
    """
    name = prefix
    if num_partitions != 0:
        name += f"-fold-{partition:03d}-of-{num_partitions:03d}"
    if num_shards != 0:
        name += f"-shard-{shard:05d}-of-{num_shards:05d}"
    return name


_SHARD_NAME = re.compile(r"^(?P<stem>.*-)(?P<index>\d{5})-of-(?P<count>\d{5})(?P<tail>[^/]*)$")


def check_shard_sets(files: Sequence[str], source: str) -> None:
    """Refuse TFRecords whose shard set a ``dataset_convert`` left unfinished.

    Files named ``...-NNNNN-of-MMMMM...`` (TAO's shard names, both models) are grouped by their
    set; a set with shards missing while a missing shard's hidden temporary (what
    :class:`ShardSetWriter` writes before its renames) is still in the folder was cut by a killed
    conversion, and training on it would use part of the data without a word.  Shards missing
    without such a temporary (a glob that selects part of a set on purpose) are only logged.

    Args:
        files: the matched TFRecord paths.
        source: the spec field that matched them, for the message.

    Raises:
        InvalidInputError: a set is incomplete and its conversion was interrupted.
    """
    sets: dict[tuple[str, str, int], set[int]] = {}
    for path in files:
        m = _SHARD_NAME.match(path)
        if m:
            sets.setdefault((m["stem"], m["tail"], int(m["count"])), set()).add(int(m["index"]))
    for (stem, tail, count), present in sorted(sets.items()):
        missing = [f"{stem}{i:05d}-of-{count:05d}{tail}" for i in range(count) if i not in present]
        if not missing:
            continue
        interrupted = [m for m in missing
                       if any(name.startswith(f".{os.path.basename(m)}.") and name.endswith(".tltk-partial")
                              for name in _listdir(os.path.dirname(m) or "."))]
        if interrupted:
            raise InvalidInputError(
                f"{source}: shard set {os.path.basename(missing[0])} is incomplete: {len(present)} of {count} "
                f"shards, missing {', '.join(os.path.basename(m) for m in missing[:3])}"
                f"{' ...' if len(missing) > 3 else ''}; the dataset_convert that wrote it was interrupted "
                "(its unfinished shards are hidden .tltk-partial files)",
                hint="run dataset_convert again (into an empty folder, or remove the incomplete set first)")
        log.warning("%s: %d of %d shards of %s match (missing %s)", source, len(present), count,
                    os.path.basename(stem.rstrip("-")), os.path.basename(missing[0]))


def _listdir(folder: str) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError:
        return []


class ShardSetWriter:
    """Writes a set of TFRecord shards so that none looks finished until all are.

    Each shard is written to a hidden temporary name (``.<name>.tltk-partial`` in the same
    folder, which neither TAO's nor tltk's ``tfrecords_path`` globs match).  :meth:`commit`
    renames all of them to their final names; :meth:`abort` (also called when the ``with``
    block raises, including on Ctrl-C) deletes them.  An interrupted run therefore never
    leaves shards with final names behind.

    Usage::

        with ShardSetWriter() as shards:
            writer = shards.open(path)
            writer.write(example.SerializeToString())
            shards.close_current()
            shards.commit()
    """

    def __init__(self) -> None:
        self._pending: list[tuple[str, str]] = []
        self._writer: Any = None
        self._committed = False

    def open(self, path: str) -> Any:
        """Start shard ``path`` (closing the previous one); returns a ``tf.io.TFRecordWriter``."""
        import tensorflow as tf

        self.close_current()
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        temp = temporary_name(path, ".tltk-partial")
        self._writer = tf.io.TFRecordWriter(temp)
        self._pending.append((temp, path))
        return self._writer

    def close_current(self) -> None:
        """Flush and close the shard being written, if any."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    @property
    def paths(self) -> list[str]:
        """Final paths of every shard opened so far, in order."""
        return [final for _, final in self._pending]

    def commit(self) -> list[str]:
        """Rename every shard to its final name; returns the final paths."""
        self.close_current()
        for temp, final in self._pending:
            os.replace(temp, final)
        self._committed = True
        return self.paths

    def abort(self) -> None:
        """Delete every temporary shard of this set (nothing final is touched)."""
        try:
            self.close_current()
        finally:
            for temp, _ in self._pending:
                try:
                    os.remove(temp)
                except FileNotFoundError:
                    pass

    def __enter__(self) -> ShardSetWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if not self._committed:
            self.abort()


def iterate_records(files: Iterable[str]) -> Iterator[bytes]:
    """Yield the raw records of TFRecord files in order (eager, for tools and tests)."""
    import tensorflow as tf

    for record in tf.data.TFRecordDataset(list(files)):
        yield bytes(record.numpy())


def frame_ids(files: Iterable[str]) -> list[str]:
    """The ``frame/id`` of every record of DetectNet_v2 TFRecord files, in file order.

    Args:
        files: TFRecord shard paths.

    Returns:
        Frame ids (``<image_dir_name>/<file stem>``).
    """
    import tensorflow as tf

    files = list(files)
    if not files:
        return []
    spec = {"frame/id": tf.io.FixedLenFeature([], tf.string)}
    dataset = tf.data.TFRecordDataset(files).batch(1024).map(lambda x: tf.io.parse_example(x, spec)["frame/id"])
    return [v.decode("utf-8") for batch in dataset.as_numpy_iterator() for v in batch]


def count_records(files: Iterable[str]) -> int:
    """Number of records in the given TFRecord files."""
    import tensorflow as tf

    files = list(files)
    if not files:
        return 0
    dataset = tf.data.TFRecordDataset(files).batch(4096).map(lambda x: tf.shape(x)[0])
    return int(sum(int(n) for n in dataset.as_numpy_iterator()))
