"""DetectNet_v2 ``dataset_convert``: KITTI folders or COCO JSON -> sharded TFRecords in TAO's layout.

Partitioning (as TAO, seeded with ``random.seed(42)`` semantics):

* KITTI ``random``: images listed in sorted order; the first ``int(val_split / 100 * N)``
  frames form partition 0 (validation, ``validation_fold: 0``), the rest partition 1; each
  partition is then shuffled with ``random.Random(42)``.
* KITTI ``sequence``: ``kitti_sequence_to_frames_file`` maps sequence names to frame ids;
  with ``num_partitions > 1`` sequences sorted by (descending frame count, name) are dealt
  round-robin into partitions and the partition list is reversed; otherwise one partition.
  Each partition is shuffled.
* COCO: one partition per annotation file, frames in file order (no shuffle).

Each partition is split into ``max(num_shards, 1)`` shards of ``len // num_shards`` frames
(the last takes the rest), named with :func:`tltk.data.tfrecord.shard_filename`.

Bad data never stops the conversion while usable frames remain: every problem is reported
with its file and line, counted by kind, logged and written to ``<prefix>_problems.txt``;
invalid boxes are also written to ``<prefix>_warning.json`` as TAO does.  Every image is
decoded completely (:func:`tltk.data.images.verify_image`), so a truncated or corrupt image is
skipped here, with its name and the reason, instead of stopping training later.  Shards are
written under hidden temporary names and renamed only after the whole conversion succeeded;
then the shards of an earlier conversion under the same prefix that this one did not rewrite
are deleted, so a ``<prefix>-fold-*`` glob never reads old and new frames together.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tltk import console
from tltk._proto import detectnet_v2_pb2 as pb
from tltk.data.images import verify_image
from tltk.data.kitti import LabelProblem, read_kitti_calibration, read_kitti_labels
from tltk.data.tfrecord import DetectionFrameRecord, DetectionObjectRecord, shard_filename
from tltk.detectnet_v2.spec import kitti_image_extension
from tltk.errors import InvalidInputError, SpecError
from tltk.fileio import atomic_write_text
from tltk.spec.fields import spec_field

log = logging.getLogger(__name__)

__all__ = ["PartitionStats", "ConvertReport", "SampleModifier", "convert_dataset", "kitti_partitions",
           "PROBLEMS_SHOWN"]

#: Problems logged one by one before the rest are only counted (all are in the problems file).
PROBLEMS_SHOWN = 30

@dataclass
class PartitionStats:
    """Objects written for one partition (fold).

    Attributes:
        index: partition index used in the file names.
        num_frames: examples written (after the sample modifier).
        class_counts: lower-cased class name -> number of objects written.
        shards: shard paths of this partition.
    """

    index: int
    num_frames: int = 0
    class_counts: dict[str, int] = field(default_factory=dict)
    shards: list[str] = field(default_factory=list)


@dataclass
class ConvertReport:
    """What :func:`convert_dataset` did.

    Attributes:
        output_prefix: the ``-o`` prefix.
        partitions: per-partition statistics, in file-name order.
        class_map: original class name -> name written in the TFRecords (lower-cased).
        problems: every data problem found (file, line, kind, message).
        frames_skipped: frames not written because of a problem.
        objects_skipped: objects left out of written frames (invalid or outside the image).
        shards: every shard file written.
        warning_file: TAO-style ``<prefix>_warning.json`` of invalid boxes, or None.
        problems_file: ``<prefix>_problems.txt`` listing every problem, or None.
        removed_stale: shards of an earlier conversion under the same prefix that were deleted
            (this conversion wrote fewer or other shards).
    """

    output_prefix: str
    partitions: list[PartitionStats] = field(default_factory=list)
    class_map: dict[str, str] = field(default_factory=dict)
    problems: list[LabelProblem] = field(default_factory=list)
    frames_skipped: int = 0
    objects_skipped: int = 0
    shards: list[str] = field(default_factory=list)
    warning_file: str | None = None
    problems_file: str | None = None
    removed_stale: list[str] = field(default_factory=list)

    @property
    def total_counts(self) -> dict[str, int]:
        """Cumulative objects per class over all partitions."""
        total: Counter[str] = Counter()
        for part in self.partitions:
            total.update(part.class_counts)
        return dict(sorted(total.items()))

    @property
    def num_frames(self) -> int:
        """Examples written over all partitions."""
        return sum(p.num_frames for p in self.partitions)

    def problem_counts(self) -> dict[str, int]:
        """Number of problems per kind."""
        return dict(sorted(Counter(p.kind for p in self.problems).items()))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (used by ``--json``)."""
        return {
            "output_prefix": self.output_prefix,
            "num_frames": self.num_frames,
            "partitions": [{"index": p.index, "num_frames": p.num_frames, "class_counts": p.class_counts,
                            "shards": p.shards} for p in self.partitions],
            "total_counts": self.total_counts,
            "class_map": self.class_map,
            "problems": {"total": len(self.problems), "by_kind": self.problem_counts(),
                         "frames_skipped": self.frames_skipped, "objects_skipped": self.objects_skipped,
                         "first": [p.to_dict() for p in self.problems[:PROBLEMS_SHOWN]]},
            "shards": self.shards,
            "warning_file": self.warning_file,
            "problems_file": self.problems_file,
            "removed_stale_shards": self.removed_stale,
        }


# ---- spec access ------------------------------------------------------------------------------

_MODIFIER = pb.DatasetExportConfig.SampleModifierConfig

#: ``minimum_target_class_imbalance`` of a class the map leaves out (TAO's value; a map field
#: has no ``[default = ...]``).
DEFAULT_CLASS_IMBALANCE = 1.0


def _kitti(config: Any, name: str) -> Any:
    return spec_field(config, pb.KITTIConfig, name)


def _coco(config: Any, name: str) -> Any:
    return spec_field(config, pb.COCOConfig, name)


def _which(msg: Any, oneof: str, names: tuple[str, ...]) -> str | None:
    if hasattr(msg, "WhichOneof"):
        return msg.WhichOneof(oneof)
    for name in names:
        if getattr(msg, name, None) is not None:
            return name
    return None


def _default_resolver(base_dir: str | None) -> Callable[[str], str]:
    def resolve(value: str) -> str:
        value = os.path.expanduser(value)
        if os.path.isabs(value) or not base_dir:
            return os.path.abspath(value)
        candidate = os.path.join(base_dir, value)
        if os.path.exists(candidate) or not os.path.exists(value):
            return os.path.abspath(candidate)
        return os.path.abspath(value)
    return resolve


# ---- sample modifier (training folds only) ----------------------------------------------------

class SampleModifier:
    """TAO's ``sample_modifier_config``: filter, duplicate and cap training examples.

    Args:
        config: the ``SampleModifierConfig`` message (or None for a no-op).
        num_partitions: number of partitions written.
        validation_fold: the fold left untouched (None: every fold is a training fold).

    Raises:
        SpecError: a dominant or filter class is not a value of ``source_to_target_class_mapping``.
    """

    def __init__(self, config: Any, num_partitions: int, validation_fold: int | None) -> None:
        self.mapping = {str(k).lower(): str(v)
                        for k, v in dict(spec_field(config, _MODIFIER, "source_to_target_class_mapping")).items()}
        self.filter_only = [str(c) for c in spec_field(config, _MODIFIER, "filter_samples_containing_only")]
        self.dominant = [str(c) for c in spec_field(config, _MODIFIER, "dominant_target_classes")]
        self.imbalance = {str(k): float(v)
                          for k, v in dict(spec_field(config, _MODIFIER, "minimum_target_class_imbalance")).items()}
        self.num_duplicates = int(spec_field(config, _MODIFIER, "num_duplicates"))
        max_samples = int(spec_field(config, _MODIFIER, "max_training_samples"))
        self.validation_fold = validation_fold
        targets = set(self.mapping.values())
        bad = [c for c in self.filter_only + self.dominant if c not in targets]
        if bad and config is not None:
            raise SpecError("invalid sample_modifier_config", [
                f"sample_modifier_config: class {c!r} is not a value of source_to_target_class_mapping" for c in bad])
        folds = num_partitions - 1 if validation_fold is not None else num_partitions
        self.cap = max_samples // max(folds, 1) if max_samples > 0 else 0
        self._written: Counter[int] = Counter()

    def modify(self, frame: DetectionFrameRecord, partition: int) -> list[DetectionFrameRecord]:
        """The examples to write for ``frame`` in ``partition`` (0, 1 or several copies)."""
        if partition == self.validation_fold:
            return [frame]
        targets = [self.mapping[o.object_class] for o in frame.objects if o.object_class in self.mapping]
        if self.filter_only and len(set(targets)) == 1 and targets[0] in self.filter_only:
            return []
        out = [frame]
        if self.dominant and targets and self.num_duplicates:
            counts = Counter(targets)
            rare = [c for c in counts if c not in self.dominant]
            if any(counts[r] > counts.get(d, 0) * self.imbalance.get(r, DEFAULT_CLASS_IMBALANCE) for r in rare for d in self.dominant):
                out += [frame] * self.num_duplicates
        if self.cap:
            room = max(self.cap - self._written[partition], 0)
            out = out[:room]
        self._written[partition] += len(out)
        return out


# ---- KITTI ------------------------------------------------------------------------------------

@dataclass
class _KittiFrame:
    frame_id: str
    image_path: str
    label_path: str


def kitti_partitions(config: Any, resolve: Callable[[str], str], problems: list[LabelProblem]
                     ) -> tuple[list[list[str]], int, dict[str, str]]:
    """Frame ids per partition for a ``kitti_config`` (before shuffling).

    Args:
        config: the ``KITTIConfig`` message.
        resolve: turns a spec path into an absolute path.
        problems: receives ``label_without_image``/``missing_image`` problems.

    Returns:
        ``(partitions, num_partitions_in_names, paths)`` where ``paths`` holds ``root``,
        ``images``, ``labels`` and ``extension``.

    Raises:
        SpecError: unknown partition mode, bad ``val_split``, missing sequence file.
        InvalidInputError: the image folder does not exist or holds no image.
    """
    root = resolve(str(_kitti(config, "root_directory_path")))
    image_dir = os.path.join(root, str(_kitti(config, "image_dir_name")))
    label_dir = os.path.join(root, str(_kitti(config, "label_dir_name")))
    ext = kitti_image_extension(config)
    mode = str(_kitti(config, "partition_mode")).strip().lower()
    paths = {"root": root, "images": image_dir, "labels": label_dir, "extension": ext}
    if not os.path.isdir(image_dir):
        raise InvalidInputError(f"KITTI image folder not found: {image_dir}",
                                hint="check kitti_config.root_directory_path and image_dir_name")
    if not os.path.isdir(label_dir):
        raise InvalidInputError(f"KITTI label folder not found: {label_dir}",
                                hint="check kitti_config.root_directory_path and label_dir_name")
    if mode == "random":
        num = int(_kitti(config, "num_partitions"))
        if num != 2:
            log.warning("kitti_config.num_partitions is %d; random partitioning always makes 2 (validation, training)", num)
        val_split = float(_kitti(config, "val_split"))
        if not 0.0 <= val_split / 100.0 < 1.0:
            raise SpecError("invalid kitti_config", [f"kitti_config.val_split: {val_split} must be a percentage in [0, 100)"])
        names = sorted(n for n in os.listdir(image_dir) if n.endswith(ext))
        frames = [n[: -len(ext)] for n in names]
        if not frames:
            raise InvalidInputError(f"no '*{ext}' images in {image_dir}",
                                    hint="check kitti_config.image_extension (e.g. \".png\" or \".jpg\")")
        frame_set = set(frames)
        for label in sorted(os.listdir(label_dir)):
            stem, dot, suffix = label.rpartition(".")
            if dot and suffix == "txt" and stem not in frame_set:
                problems.append(LabelProblem(os.path.join(label_dir, label), 0, "label_without_image",
                                             f"label file has no image {stem}{ext} in {image_dir}; skipped"))
        num_val = int(val_split / 100.0 * len(frames))
        log.info("Num images in\nTrain: %d\tVal: %d", len(frames) - num_val, num_val)
        if num_val == 0:
            log.info("Skipped validation data (val_split gives 0 images).")
        else:
            log.info("Validation data in partition 0. Hence, while choosing the validation set during "
                     "training choose validation_fold 0.")
        return [frames[:num_val], frames[num_val:]], 2, paths
    if mode == "sequence":
        seq_file = str(_kitti(config, "kitti_sequence_to_frames_file"))
        if not seq_file:
            raise SpecError("invalid kitti_config", ["kitti_config.kitti_sequence_to_frames_file: required for "
                                                     "partition_mode \"sequence\""])
        seq_path = seq_file if os.path.isabs(seq_file) else os.path.join(root, seq_file)
        try:
            with open(seq_path, encoding="utf-8") as handle:
                sequences = json.load(handle)
        except FileNotFoundError:
            raise InvalidInputError(f"sequence-to-frames file not found: {seq_path}") from None
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"{seq_path}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}") from None
        if not isinstance(sequences, dict) or not sequences:
            raise InvalidInputError(f"{seq_path}: expected a JSON object {{sequence: [frame ids]}}")
        num = int(_kitti(config, "num_partitions"))
        seqs = {str(k): [str(f) for f in v] for k, v in sequences.items()}
        if num > 1:
            ordered = sorted(seqs, key=lambda s: (-len(seqs[s]), s))
            parts: list[list[str]] = [[] for _ in range(num)]
            for index, name in enumerate(ordered):
                parts[index % num].extend(seqs[name])
            parts.reverse()
        else:
            parts = [[f for name in seqs for f in seqs[name]]]
        return parts, num, paths
    raise SpecError("invalid kitti_config", [
        f"kitti_config.partition_mode: {mode!r} is not supported; use \"random\" or \"sequence\""])


def _kitti_record(frame_id: str, paths: dict[str, str], config: Any, problems: list[LabelProblem],
                  invalid: dict[str, list[int]], class_map: dict[str, str]) -> tuple[DetectionFrameRecord | None, int]:
    image_path = os.path.join(paths["images"], frame_id + paths["extension"])
    label_path = os.path.join(paths["labels"], frame_id + ".txt")
    if not os.path.isfile(image_path):
        problems.append(LabelProblem(label_path, 0, "missing_image", f"image {image_path} not found; frame skipped"))
        return None, 0
    if not os.path.isfile(label_path):
        problems.append(LabelProblem(image_path, 0, "image_without_label",
                                     f"no label file {label_path}; frame skipped"))
        return None, 0
    try:
        width, height = verify_image(image_path)
    except InvalidInputError as exc:
        problems.append(LabelProblem(image_path, 0, "unreadable_image",
                                     exc.message.removeprefix(image_path + ": ") + "; frame skipped"))
        return None, 0
    try:
        objects, bad_lines = read_kitti_labels(label_path, allow_score=False)
    except OSError as exc:
        problems.append(LabelProblem(label_path, 0, "unreadable_label", f"cannot read label file ({exc}); frame skipped"))
        return None, 0
    if bad_lines:
        for p in bad_lines:
            problems.append(LabelProblem(p.path, p.line, p.kind, p.message + "; frame skipped"))
        return None, 0
    extra: dict[str, Any] = {}
    calib_dir = str(_kitti(config, "calibrations_dir"))
    if calib_dir:
        calib_path = os.path.join(paths["root"], calib_dir, frame_id + ".txt")
        try:
            calib = read_kitti_calibration(calib_path)
        except (OSError, ValueError) as exc:
            problems.append(LabelProblem(calib_path, 0, "unreadable_calibration", f"{exc}; frame skipped"))
            return None, 0
        extra["calibration/T_lidar_to_camera"] = calib.lidar_to_camera()
        extra["calibration/P_lidar_to_image"] = calib.lidar_to_image()
    pc_dir = str(_kitti(config, "point_clouds_dir"))
    if pc_dir:
        extra["point_cloud/id"] = os.path.join(pc_dir, frame_id)
        extra["point_cloud/num_input_channels"] = 4
    records: list[DetectionObjectRecord] = []
    skipped = 0
    for index, obj in enumerate(objects):
        x1, y1, x2, y2 = obj.bbox
        name = obj.type.lower()
        class_map.setdefault(obj.type, name)
        if not (int(x1) < int(x2) and int(y1) < int(y2)):
            invalid[f"{label_path}_{index}"] = [int(x1), int(y1), int(x2), int(y2)]
            problems.append(LabelProblem(label_path, obj.line, "invalid_box",
                                         f"box ({x1}, {y1}, {x2}, {y2}) is empty or inverted; object skipped"))
            skipped += 1
            continue
        if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
            problems.append(LabelProblem(label_path, obj.line, "box_outside_image",
                                         f"box ({x1}, {y1}, {x2}, {y2}) lies outside the {width}x{height} image; "
                                         "object skipped"))
            skipped += 1
            continue
        if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
            problems.append(LabelProblem(label_path, obj.line, "box_partly_outside_image",
                                         f"box ({x1}, {y1}, {x2}, {y2}) extends past the {width}x{height} image; "
                                         "kept (the loader clips it)"))
        records.append(DetectionObjectRecord(
            object_class=name, x1=x1, y1=y1, x2=x2, y2=y2, truncation=obj.truncated, occlusion=obj.occluded,
            observation_angle=obj.alpha, world_bbox_h=obj.dimensions[0], world_bbox_w=obj.dimensions[1],
            world_bbox_l=obj.dimensions[2], world_bbox_x=obj.location[0], world_bbox_y=obj.location[1],
            world_bbox_z=obj.location[2], world_bbox_rot_y=obj.rotation_y))
    frame = DetectionFrameRecord(f"{_kitti(config, 'image_dir_name')}/{frame_id}", int(width), int(height), records, extra)
    return frame, skipped


# ---- COCO -------------------------------------------------------------------------------------

def _coco_partitions(config: Any, resolve: Callable[[str], str], problems: list[LabelProblem]
                     ) -> tuple[list[list[Any]], int, list[int], str]:
    from tltk.data.coco import read_coco

    root = resolve(str(_coco(config, "root_directory_path")))
    img_dirs = [str(d) for d in _coco(config, "img_dir_names")]
    ann_files = [str(f) for f in _coco(config, "annotation_files")]
    num = int(_coco(config, "num_partitions"))
    spec_problems = []
    if len(img_dirs) != num or len(ann_files) != num:
        spec_problems.append(f"coco_config: num_partitions ({num}) must equal the number of img_dir_names "
                             f"({len(img_dirs)}) and annotation_files ({len(ann_files)})")
    shards = [int(s) for s in _coco(config, "num_shards")]
    if len(shards) not in (0, 1, num):
        spec_problems.append(f"coco_config.num_shards: give one value or one per partition ({num}), not {len(shards)}")
    if spec_problems:
        raise SpecError("invalid coco_config", spec_problems)
    shard_counts = (shards * num if len(shards) == 1 else shards) or [0] * num
    partitions: list[list[Any]] = []
    category_ids: set[int] | None = None
    for img_dir, ann in zip(img_dirs, ann_files, strict=True):
        path = ann if os.path.isabs(ann) else os.path.join(root, ann)
        data = read_coco(path)
        problems.extend(data.problems)
        ids = set(data.categories)
        if category_ids is not None and ids != category_ids:
            raise InvalidInputError(f"{path}: category ids {sorted(ids)} differ from the first annotation file's "
                                    f"{sorted(category_ids)}", hint="all COCO partitions must share one category list")
        category_ids = ids
        partitions.append([(img_dir, data, img) for img in data.images])
    return partitions, num, shard_counts, root


def _coco_record(item: Any, root: str, problems: list[LabelProblem], invalid: dict[str, list[int]],
                 class_map: dict[str, str]) -> tuple[DetectionFrameRecord | None, int]:
    from tltk.data.coco import detection_class_name

    img_dir, data, img = item
    image_path = os.path.join(root, img_dir, img.file_name)
    if not os.path.isfile(image_path):
        problems.append(LabelProblem(data.path, 0, "missing_image",
                                     f"image id {img.id}: file {image_path} not found; frame skipped"))
        return None, 0
    try:
        verify_image(image_path)
    except InvalidInputError as exc:
        problems.append(LabelProblem(image_path, 0, "unreadable_image",
                                     exc.message.removeprefix(image_path + ": ") + "; frame skipped"))
        return None, 0
    records = []
    skipped = 0
    for ann in img.annotations:
        x1, y1, x2, y2 = ann.xyxy
        name = data.categories[ann.category_id]
        lowered = detection_class_name(name)
        class_map.setdefault(name, lowered)
        where = f"annotation id {ann.id} (image id {img.id})"
        if not (int(x1) < int(x2) and int(y1) < int(y2)):
            invalid[str(ann.id)] = [int(x1), int(y1), int(x2), int(y2)]
            problems.append(LabelProblem(data.path, 0, "invalid_box", f"{where}: box is empty; object skipped"))
            skipped += 1
            continue
        if x2 <= 0 or y2 <= 0 or x1 >= img.width or y1 >= img.height:
            problems.append(LabelProblem(data.path, 0, "box_outside_image",
                                         f"{where}: box lies outside the {img.width}x{img.height} image; object skipped"))
            skipped += 1
            continue
        records.append(DetectionObjectRecord(object_class=lowered, x1=x1, y1=y1, x2=x2, y2=y2))
    stem = os.path.splitext(img.file_name)[0]
    return DetectionFrameRecord(f"{img_dir}/{stem}", img.width, img.height, records), skipped


# ---- driver -----------------------------------------------------------------------------------

def _stale_files(prefix: str, keep: set[str]) -> list[str]:
    folder = os.path.dirname(os.path.abspath(prefix))
    base = os.path.basename(prefix)
    if not os.path.isdir(folder):
        return []
    out = []
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if name.startswith(base + "-fold-") or name.startswith(base + "-shard-") or name == base:
            if os.path.abspath(path) not in keep and os.path.isfile(path):
                out.append(path)
    return sorted(out)


def _remove_stale_files(prefix: str, keep: set[str]) -> list[str]:
    """Delete the shards of an earlier conversion under ``prefix`` that this one did not rewrite.

    A ``tfrecords_path`` glob such as ``<prefix>-fold-*`` would read them with the new shards,
    so training would see frames twice.  Called after the new shards are committed, so a failed
    conversion leaves the earlier data set whole.
    """
    stale = _stale_files(prefix, keep)
    removed = []
    for path in stale:
        try:
            os.remove(path)
            removed.append(path)
        except OSError as exc:
            log.warning("cannot remove %s, a shard of an earlier conversion (%s); delete it, or training reads its "
                        "frames too", path, exc)
    if removed:
        log.warning("removed %d shard(s) of an earlier conversion under this prefix that this one did not rewrite: "
                    "%s%s", len(removed), ", ".join(os.path.basename(p) for p in removed[:5]),
                    " ..." if len(removed) > 5 else "")
    return removed


def _log_counts(counts: dict[str, int]) -> None:
    lines = "\n".join(f"{name}: {n}" for name, n in sorted(counts.items()))
    log.info("\nWrote the following numbers of objects:\n%s\n", lines)


def convert_dataset(config: Any, output_prefix: str, validation_fold: int | None = None,
                    base_dir: str | None = None, resolve: Callable[[str], str] | None = None) -> ConvertReport:
    """Convert a KITTI or COCO dataset to DetectNet_v2 TFRecords.

    Args:
        config: a ``DatasetExportConfig`` message (``kitti_config`` or ``coco_config``, optional
            ``sample_modifier_config``).
        output_prefix: path prefix of the shard files; its folder is created.
        validation_fold: fold excluded from sample modification (``-f``).
        base_dir: folder relative spec paths are resolved against first (the spec's folder);
            then the current directory.
        resolve: custom path resolver (overrides ``base_dir``).

    Returns:
        The report with counts, problems and shard paths.

    Raises:
        SpecError: invalid conversion settings.
        InvalidInputError: missing folders/files, or no usable frame at all.
    """
    resolve = resolve or _default_resolver(base_dir)
    kind = _which(config, "convert_config_type", ("kitti_config", "coco_config"))
    if kind not in ("kitti_config", "coco_config"):
        raise SpecError("invalid dataset_convert spec", ["the spec needs a kitti_config or a coco_config block"])
    output_prefix = os.path.abspath(os.path.expanduser(output_prefix))
    report = ConvertReport(output_prefix=output_prefix)
    problems = report.problems
    invalid: dict[str, list[int]] = {}
    rng = random.Random(42)

    if kind == "kitti_config":
        kcfg = config.kitti_config
        log.info("Instantiating a kitti converter")
        partitions, num_in_names, paths = kitti_partitions(kcfg, resolve, problems)
        for part in partitions:
            rng.shuffle(part)
        spec_shards = int(_kitti(kcfg, "num_shards"))
        shard_counts = [spec_shards] * len(partitions)

        def make(item: Any) -> tuple[DetectionFrameRecord | None, int]:
            return _kitti_record(item, paths, kcfg, problems, invalid, report.class_map)
    else:
        ccfg = config.coco_config
        log.info("Instantiating a coco converter")
        partitions, num_in_names, shard_counts, root = _coco_partitions(ccfg, resolve, problems)

        def make(item: Any) -> tuple[DetectionFrameRecord | None, int]:
            return _coco_record(item, root, problems, invalid, report.class_map)

    modifier = SampleModifier(getattr(config, "sample_modifier_config", None) if _has_field(config, "sample_modifier_config") else None,
                              len(partitions), validation_fold)
    from tltk.data.tfrecord import ShardSetWriter, build_detection_example

    planned = {os.path.abspath(shard_filename(output_prefix, p, num_in_names, s, shard_counts[p]))
               for p in range(len(partitions)) for s in range(max(shard_counts[p], 1))}

    with ShardSetWriter() as shards:
        for p, frames in enumerate(partitions):
            if not frames:
                log.info("Partition %d is empty; no shards written for it.", p)
                continue
            stats = PartitionStats(index=p)
            counts: Counter[str] = Counter()
            n_shards = max(shard_counts[p], 1)
            shard_size = len(frames) // n_shards
            for s in range(n_shards):
                start = s * shard_size
                stop = len(frames) if s == n_shards - 1 else (s + 1) * shard_size
                path = shard_filename(output_prefix, p, num_in_names, s, shard_counts[p])
                log.info("Writing partition %d, shard %d", p, s)
                writer = shards.open(path)
                stats.shards.append(path)
                for item in console.progress(frames[start:stop], total=stop - start, desc=f"fold {p} shard {s}",
                                             unit="img"):
                    frame, skipped = make(item)
                    report.objects_skipped += skipped
                    if frame is None:
                        report.frames_skipped += 1
                        continue
                    for example in modifier.modify(frame, p):
                        writer.write(build_detection_example(example).SerializeToString())
                        counts.update(o.object_class for o in example.objects)
                        stats.num_frames += 1
                shards.close_current()
            stats.class_counts = dict(sorted(counts.items()))
            _log_counts(stats.class_counts)
            report.partitions.append(stats)
        _report_problems(report, output_prefix, invalid)
        if report.num_frames == 0:
            raise InvalidInputError(
                f"no usable frame left to write ({len(problems)} problem(s) found, see above)",
                hint="fix the problems listed, or check the paths in the dataset_convert spec")
        report.shards = shards.commit()
    report.removed_stale = _remove_stale_files(output_prefix, planned)

    log.info("Cumulative object statistics")
    _log_counts(report.total_counts)
    mapping = "\n".join(f"{k}: {v}" for k, v in sorted(report.class_map.items()))
    log.info("Class map. \nLabel in GT: Label in tfrecords file \n%s", mapping)
    log.info("For the dataset_config in the experiment_spec, please use labels in the tfrecords file, "
             "while writing the classmap.")
    log.info("Tfrecords generation complete.")
    return report


def _has_field(msg: Any, name: str) -> bool:
    if hasattr(msg, "HasField"):
        try:
            return bool(msg.HasField(name))
        except ValueError:
            return False
    return getattr(msg, name, None) is not None


def _report_problems(report: ConvertReport, prefix: str, invalid: dict[str, list[int]]) -> None:
    problems = report.problems
    for leftover, written in ((prefix + "_warning.json", bool(invalid)), (prefix + "_problems.txt", bool(problems))):
        if not written and os.path.isfile(leftover):
            os.remove(leftover)  # an earlier conversion's report, which no longer describes the data
    if invalid:
        report.warning_file = prefix + "_warning.json"
        atomic_write_text(report.warning_file, json.dumps(invalid, indent=2))
    if not problems:
        return
    for problem in problems[:PROBLEMS_SHOWN]:
        log.warning("%s", problem)
    report.problems_file = prefix + "_problems.txt"
    folder = os.path.dirname(report.problems_file)
    os.makedirs(folder, exist_ok=True)
    atomic_write_text(report.problems_file, "".join(f"{problem.kind}\t{problem}\n" for problem in problems))
    if len(problems) > PROBLEMS_SHOWN:
        log.warning("... and %d more problem(s); all are listed in %s", len(problems) - PROBLEMS_SHOWN,
                    report.problems_file)
    by_kind = ", ".join(f"{k}: {n}" for k, n in report.problem_counts().items())
    log.warning("Data problems: %d (%s); frames skipped: %d, objects skipped: %d", len(problems), by_kind,
                report.frames_skipped, report.objects_skipped)

