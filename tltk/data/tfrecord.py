"""TAO's detection TFRecord schema, Example building/parsing, shard naming and atomic shard writing.

The feature keys and kinds below are exactly the ones TAO's ``dataset_convert`` writes for
KITTI and COCO data, so TFRecords made by TAO load in tltk and the reverse.  One record holds
one image (frame): frame-level features are one-element lists, object-level features hold one
value per object (all object lists have the same length; a frame without objects has empty
lists).

Shard files are named ``<prefix>-fold-{p:03d}-of-{n:03d}-shard-{s:05d}-of-{k:05d}`` (each
suffix only when its count is non-zero), as TAO does; the loader selects a validation fold by
the substring ``fold-{p:03d}-of-``.

TensorFlow is imported inside the functions that need it, so the naming helpers and the
schema table are cheap to import.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tltk.fileio import temporary_name

if TYPE_CHECKING:  # pragma: no cover
    import tensorflow as tf

log = logging.getLogger(__name__)

__all__ = [
    "FeatureSpec",
    "FEATURES",
    "OBJECT_FLOAT_KEYS",
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


@dataclass(frozen=True)
class FeatureSpec:
    """How one TFRecord feature is stored.

    Attributes:
        kind: ``bytes``, ``int64`` or ``float`` (the ``tf.train.Feature`` list type).
        per: ``frame`` (one value per record) or ``object`` (one value per object).
        optional: written only for some datasets (lidar extras).
    """

    kind: str
    per: str
    optional: bool = False


#: Every feature TAO's detection converters write, with its kind.  Keys are TAO's, verbatim.
FEATURES: dict[str, FeatureSpec] = {
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
    "calibration/T_lidar_to_camera": FeatureSpec("float", "frame", optional=True),
    "calibration/P_lidar_to_image": FeatureSpec("float", "frame", optional=True),
}

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


def _feature(kind: str, values: list[Any]) -> Any:
    import tensorflow as tf

    if kind == "bytes":
        return tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[v if isinstance(v, bytes) else str(v).encode("utf-8") for v in values]))
    if kind == "int64":
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))
    return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))


def build_detection_example(frame: DetectionFrameRecord) -> tf.train.Example:
    """Build the ``tf.train.Example`` TAO's converter writes for one frame.

    Args:
        frame: the frame with its objects; class names are written as given (the converter
            lower-cases them before calling this).

    Returns:
        The Example, with every non-optional key of :data:`FEATURES` present plus the
        optional keys found in ``frame.extra``.
    """
    import tensorflow as tf

    feats: dict[str, Any] = {
        "frame/id": _feature("bytes", [frame.frame_id]),
        "frame/height": _feature("int64", [frame.height]),
        "frame/width": _feature("int64", [frame.width]),
        "target/object_class": _feature("bytes", [o.object_class for o in frame.objects]),
        "target/occlusion": _feature("int64", [o.occlusion for o in frame.objects]),
    }
    for attr, key in OBJECT_FLOAT_KEYS.items():
        feats[key] = _feature("float", [getattr(o, attr) for o in frame.objects])
    for key, value in frame.extra.items():
        spec = FEATURES.get(key)
        if spec is None or not spec.optional:
            raise ValueError(f"{key!r} is not an optional frame feature of the detection schema")
        feats[key] = _feature(spec.kind, list(value) if isinstance(value, (list, tuple)) else [value])
    return tf.train.Example(features=tf.train.Features(feature=feats))


def _values(feature: Any, kind: str) -> list[Any]:
    if kind == "bytes":
        return [v.decode("utf-8", errors="replace") for v in feature.bytes_list.value]
    if kind == "int64":
        return list(feature.int64_list.value)
    return list(feature.float_list.value)


def parse_detection_example(serialized: bytes) -> DetectionFrameRecord:
    """Parse one serialized detection Example in Python (tools and tests; the loader uses
    :func:`parse_detection_tensors`).

    Args:
        serialized: the record bytes.

    Returns:
        The frame.  Missing object-level keys read as zeros.

    Raises:
        ValueError: ``frame/id``, ``frame/width`` or ``frame/height`` is missing, or object
            lists have different lengths.
    """
    import tensorflow as tf

    example = tf.train.Example.FromString(serialized)
    fmap = example.features.feature
    for key in ("frame/id", "frame/width", "frame/height"):
        if key not in fmap:
            raise ValueError(f"record has no {key!r} feature; not a detection TFRecord")
    classes = _values(fmap["target/object_class"], "bytes") if "target/object_class" in fmap else []
    n = len(classes)
    columns: dict[str, list[Any]] = {}
    for attr, key in list(OBJECT_FLOAT_KEYS.items()) + [("occlusion", "target/occlusion")]:
        kind = FEATURES[key].kind
        vals = _values(fmap[key], kind) if key in fmap else [0] * n
        if len(vals) != n:
            raise ValueError(f"feature {key!r} has {len(vals)} values for {n} objects")
        columns[attr] = vals
    objects = [DetectionObjectRecord(object_class=classes[i], **{a: columns[a][i] for a in columns})
               for i in range(n)]
    extra = {}
    for key, spec in FEATURES.items():
        if spec.optional and key in fmap:
            vals = _values(fmap[key], spec.kind)
            extra[key] = vals if key.startswith("calibration/") else vals[0]
    return DetectionFrameRecord(
        frame_id=_values(fmap["frame/id"], "bytes")[0],
        width=int(_values(fmap["frame/width"], "int64")[0]),
        height=int(_values(fmap["frame/height"], "int64")[0]),
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

    spec = {
        "frame/id": tf.io.FixedLenFeature([], tf.string),
        "frame/width": tf.io.FixedLenFeature([], tf.int64),
        "frame/height": tf.io.FixedLenFeature([], tf.int64),
        "target/object_class": tf.io.VarLenFeature(tf.string),
        "target/coordinates_x1": tf.io.VarLenFeature(tf.float32),
        "target/coordinates_y1": tf.io.VarLenFeature(tf.float32),
        "target/coordinates_x2": tf.io.VarLenFeature(tf.float32),
        "target/coordinates_y2": tf.io.VarLenFeature(tf.float32),
    }
    parsed = tf.io.parse_single_example(serialized, spec)
    coords = [tf.sparse.to_dense(parsed[f"target/coordinates_{k}"]) for k in ("x1", "y1", "x2", "y2")]
    return {
        "frame_id": parsed["frame/id"],
        "width": tf.cast(parsed["frame/width"], tf.int32),
        "height": tf.cast(parsed["frame/height"], tf.int32),
        "classes": tf.sparse.to_dense(parsed["target/object_class"], default_value=""),
        "boxes": tf.stack(coords, axis=-1),
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
