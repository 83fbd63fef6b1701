"""DetectNet_v2 input pipeline: TFRecords -> decoded, augmented NCHW batches with targets.

Entry points:

* :func:`build_dataset` — the ``tf.data.Dataset`` for a split, yielding
  ``(images, targets)`` for training (``output="targets"``), ``(images, labels)`` for
  evaluation (``output="labels"``), ``(images, targets, labels)`` (``output="both"``) or just
  ``images`` (``output="images"``, calibration).
* :class:`DetectNetV2Data` — the same, plus the data sources, example counts and class
  statistics a trainer needs (``steps_per_epoch``...).

Element structure (B = batch size, C = number of target classes, H x W = output image size,
h x w = H/16 x W/16):

* ``images``: float32 [B, channels, H, W] in [0, 1], RGB (or one grey channel);
* ``targets``: dict of float32 ``cov`` [B, C, h, w], ``bbox`` [B, 4C, h, w] (channel 4c + k,
  k = L, T, R, B), ``cov_norm`` [B, C, h, w], ``cov_mask`` and ``bbox_mask`` [B, C, h, w];
* ``labels``: dict of ``frame_id`` [B] string, ``boxes`` [B, N, 4] float32 (x1, y1, x2, y2 in
  model-input pixels after preprocessing/augmentation), ``classes`` [B, N] int32 (target class
  index, -1 for padding), ``source_classes`` [B, N] string, ``num_boxes`` [B] int32 and
  ``image_size`` [B, 2] int32 (original height, width).  N is the largest box count in the batch.

Classes are in ``cost_function_config.target_classes`` order (sorted unique values of
``target_class_mapping`` when the cost function lists none).
"""

from __future__ import annotations

import glob
import logging
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import tensorflow as tf

from tltk._proto import detectnet_v2_pb2 as pb
from tltk.data.augment import AugmentationParams, augment_frame
from tltk.data.images import assert_decodable
from tltk.data.memory import cache_budget
from tltk.data.tfrecord import check_shard_sets, fold_substring, parse_detection_tensors
from tltk.detectnet_v2.rasterizer import (
    LossMaskParams,
    RasterizerParams,
    rasterize_loss_masks,
    rasterize_targets,
)
from tltk.detectnet_v2.spec import image_extension
from tltk.errors import InvalidInputError, SpecError, UsageError

log = logging.getLogger(__name__)

__all__ = ["DataSourceFiles", "SplitStats", "DetectNetV2Data", "build_dataset", "OUTPUTS", "target_class_names"]

#: Valid values of the ``output`` argument.
OUTPUTS = ("targets", "labels", "both", "images")

_SHUFFLE_BUFFER_MAX = 10000


@dataclass
class DataSourceFiles:
    """One data source resolved to files.

    Attributes:
        tfrecords: TFRecord files (sorted).
        image_directory: folder that ``frame/id`` + extension is relative to.
        weight: ``source_weight`` (0 in the spec means 1.0); multiplies the loss masks.
    """

    tfrecords: list[str]
    image_directory: str
    weight: float = 1.0


@dataclass
class SplitStats:
    """What a scan of a split's TFRecords found.

    Attributes:
        num_examples: records (frames) in the split.
        source_class_counts: objects per class name as stored in the TFRecords.
        mapped_counts: objects per target class after ``target_class_mapping``.
        dropped_counts: objects per source class that the mapping (or the target class list)
            does not cover; the loader ignores them.
        examples_per_source: records per data source.
        repeated_frames: frame ids found in more than one TFRecord file (read twice).
    """

    num_examples: int = 0
    source_class_counts: dict[str, int] = field(default_factory=dict)
    mapped_counts: dict[str, int] = field(default_factory=dict)
    dropped_counts: dict[str, int] = field(default_factory=dict)
    examples_per_source: list[int] = field(default_factory=list)
    repeated_frames: int = 0


def _which_split(dataset_config: Any) -> str | None:
    if hasattr(dataset_config, "WhichOneof"):
        return dataset_config.WhichOneof("dataset_split_type")
    if getattr(dataset_config, "validation_data_source", None) is not None:
        return "validation_data_source"
    if getattr(dataset_config, "validation_fold", None) is not None:
        return "validation_fold"
    return None


def target_class_names(experiment: Any) -> list[str]:
    """Target classes in network output order.

    ``cost_function_config.target_classes`` names when present, else the sorted unique values
    of ``dataset_config.target_class_mapping``.
    """
    names = [str(t.name) for t in experiment.cost_function_config.target_classes]
    if names:
        return names
    mapping = dict(experiment.dataset_config.target_class_mapping)
    return sorted({str(v) for v in mapping.values()})


def _class_mapping(experiment: Any, class_names: list[str]) -> dict[str, int]:
    mapping = dict(experiment.dataset_config.target_class_mapping)
    if not mapping:
        raise SpecError("invalid dataset_config", [
            "dataset_config.target_class_mapping: at least one 'key: source class, value: target class' entry is "
            "required (source classes are the lower-case names dataset_convert printed)"])
    index = {n.lower(): i for i, n in enumerate(class_names)}
    out: dict[str, int] = {}
    for key, value in mapping.items():
        out[str(key).lower()] = index.get(str(value).lower(), -1)
    return out


class DetectNetV2Data:
    """The DetectNet_v2 data of one experiment spec.

    Args:
        experiment: the ``Experiment`` message of a loaded (validated) spec
            (``dataset_config``, ``augmentation_config``, ``bbox_rasterizer_config``,
            ``cost_function_config``, ``model_config``, ``training_config``,
            ``loss_mask_label_filter``, ``random_seed``); unset fields are the proto's defaults.
        spec_dir: folder of the spec file; relative paths are resolved against it first,
            then the current directory (then ``$DATA_BASE_PATH``).
        resolve: custom path resolver (overrides ``spec_dir``).

    Raises:
        SpecError: invalid augmentation, rasterizer or class-mapping settings.
    """

    def __init__(self, experiment: Any, spec_dir: str | None = None, resolve: Callable[[str], str] | None = None) -> None:
        self.experiment = experiment
        self.dataset_config = experiment.dataset_config
        if resolve is None:
            from tltk.spec.load import resolve_path

            def resolve(value: str) -> str:
                return resolve_path(value, spec_dir)
        self._resolve = resolve
        self.augmentation = AugmentationParams.from_config(experiment.augmentation_config)
        self.class_names = target_class_names(experiment)
        if not self.class_names:
            raise SpecError("invalid experiment spec", ["cost_function_config.target_classes: no target class"])
        self.class_mapping = _class_mapping(experiment, self.class_names)
        pre = self.augmentation.preprocessing
        bbox_obj = experiment.model_config.objective_set.bbox
        scale, offset = float(bbox_obj.scale), float(bbox_obj.offset)
        self.rasterizer = RasterizerParams.from_config(experiment.bbox_rasterizer_config, self.class_names,
                                                       pre.output_width, pre.output_height, scale, offset)
        has_lm = experiment.HasField("loss_mask_label_filter")
        self.loss_mask = LossMaskParams.from_config(experiment.loss_mask_label_filter if has_lm else None,
                                                    self.class_names)
        self.seed = int(experiment.random_seed)
        self.extension = image_extension(self.dataset_config).lstrip(".")
        self.batch_size = int(experiment.training_config.batch_size_per_gpu)
        self._stats: dict[str, SplitStats] = {}
        self._image_paths: dict[str, list[str]] = {}
        self._image_caches: dict[str, tf.lookup.StaticHashTable | None] = {}
        self.image_cache_mb = int(self.dataset_config.image_cache_mb)

    # ---- sources ------------------------------------------------------------------------

    def _source(self, msg: Any, where: str) -> tuple[list[str], str, float]:
        pattern = str(msg.tfrecords_path)
        if not pattern:
            raise SpecError("invalid dataset_config", [f"{where}.tfrecords_path: empty"])
        resolved = self._resolve(pattern)
        files = sorted(f for f in glob.glob(resolved) if os.path.isfile(f))
        if not files:
            raise InvalidInputError(f"{where}.tfrecords_path {pattern!r} matches no file (looked for {resolved})",
                                    hint="run `tltk detectnet_v2 dataset_convert` first, or fix the path/pattern")
        check_shard_sets(files, f"{where}.tfrecords_path")
        image_dir = self._resolve(str(msg.image_directory_path) or ".")
        return files, image_dir, float(msg.source_weight)

    def sources(self, split: str) -> list[DataSourceFiles]:
        """The data sources of ``split`` (``train`` or ``val``), resolved to files.

        Raises:
            UsageError: ``split`` is ``val`` but the spec defines no validation data.
            InvalidInputError: a ``tfrecords_path`` matches no file, or the validation fold
                matches no file.
        """
        if split not in ("train", "val"):
            raise UsageError(f"split must be 'train' or 'val', not {split!r}")
        ds = self.dataset_config
        which = _which_split(ds)
        entries = [self._source(s, f"dataset_config.data_sources[{i}]") for i, s in enumerate(ds.data_sources)]
        if not entries and not (split == "val" and which == "validation_data_source"):
            raise SpecError("invalid dataset_config", ["dataset_config.data_sources: at least one source is required"])
        if which == "validation_fold":
            marker = fold_substring(int(ds.validation_fold))
            out = []
            for files, image_dir, weight in entries:
                chosen = [f for f in files if (marker in os.path.basename(f)) == (split == "val")]
                if chosen:
                    out.append(DataSourceFiles(chosen, image_dir, weight))
            if split == "val" and not out:
                raise InvalidInputError(f"dataset_config.validation_fold {int(ds.validation_fold)}: no TFRecord file "
                                        f"name contains {marker!r}",
                                        hint="random partitioning puts validation data in fold 0")
            if split == "train" and not out:
                raise InvalidInputError("every TFRecord file belongs to the validation fold; no training data left")
            return out
        if split == "train":
            return [DataSourceFiles(*e) for e in entries]
        if which == "validation_data_source":
            files, image_dir, weight = self._source(ds.validation_data_source, "dataset_config.validation_data_source")
            return [DataSourceFiles(files, image_dir, weight)]
        raise UsageError("the spec defines no validation data (set dataset_config.validation_fold or "
                         "validation_data_source)")

    def has_validation(self) -> bool:
        """Whether the spec defines validation data."""
        return _which_split(self.dataset_config) is not None

    # ---- statistics ---------------------------------------------------------------------

    def stats(self, split: str) -> SplitStats:
        """Scan the split's TFRecords once: example and object counts, classes the mapping drops.

        Also checks that every frame's image file exists, and warns when a frame id is in more
        than one TFRecord file (stale shards of an earlier conversion).

        Raises:
            InvalidInputError: image files are missing (the first few are named).
        """
        if split in self._stats:
            return self._stats[split]
        result = SplitStats()
        source_counts: Counter[str] = Counter()
        missing: list[str] = []
        n_missing = 0
        spec = {"frame/id": tf.io.FixedLenFeature([], tf.string),
                "target/object_class": tf.io.VarLenFeature(tf.string)}
        first_file: dict[tuple[str, str], str] = {}
        repeated: dict[str, tuple[str, str]] = {}
        paths: dict[str, None] = {}

        def parse(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            parsed = tf.io.parse_example(x, spec)
            return parsed["frame/id"], parsed["target/object_class"].values

        for src in self.sources(split):
            n = 0
            for record_file in src.tfrecords:
                ds = tf.data.TFRecordDataset(record_file).batch(1024).map(parse)
                for ids, classes in ds.as_numpy_iterator():
                    n += len(ids)
                    source_counts.update(v.decode("utf-8", "replace").lower() for v in classes)
                    for raw in ids:
                        frame_id = raw.decode("utf-8")
                        # The sample modifier duplicates frames inside one file; the same frame in
                        # two files is stale data read twice.
                        seen = first_file.setdefault((src.image_directory, frame_id), record_file)
                        if seen != record_file:
                            repeated.setdefault(frame_id, (seen, record_file))
                        paths.setdefault(self._image_key(src.image_directory, frame_id), None)
                        path = os.path.join(src.image_directory, frame_id + "." + self.extension)
                        if not os.path.isfile(path):
                            n_missing += 1
                            if len(missing) < 5:
                                missing.append(path)
            result.examples_per_source.append(n)
            result.num_examples += n
        if repeated:
            frame_id, (one, other) = next(iter(repeated.items()))
            log.warning("%s data: %d frame id(s) are in more than one TFRecord file, so those images are read "
                        "several times per epoch (e.g. %s in %s and %s); stale shards of an earlier dataset_convert "
                        "under the same prefix?", split, len(repeated), frame_id, one, other)
        result.repeated_frames = len(repeated)
        if n_missing:
            raise InvalidInputError(f"{n_missing} image file(s) referenced by the {split} TFRecords are missing, e.g. "
                                    + ", ".join(missing),
                                    hint="check dataset_config image_directory_path and image_extension")
        result.source_class_counts = dict(sorted(source_counts.items()))
        mapped: Counter[str] = Counter()
        dropped: Counter[str] = Counter()
        for name, count in source_counts.items():
            idx = self.class_mapping.get(name, -1)
            if idx < 0:
                dropped[name] += count
            else:
                mapped[self.class_names[idx]] += count
        result.mapped_counts = dict(sorted(mapped.items()))
        result.dropped_counts = dict(sorted(dropped.items()))
        log.info("%s data: %d images; objects per target class: %s", split, result.num_examples,
                 ", ".join(f"{k}: {v}" for k, v in result.mapped_counts.items()) or "none")
        if dropped:
            log.info("%s data: %d object(s) of classes not mapped to a target class are ignored: %s", split,
                     sum(dropped.values()), ", ".join(f"{k}: {v}" for k, v in result.dropped_counts.items()))
        self._stats[split] = result
        self._image_paths[split] = list(paths)
        return result

    def check_target_objects(self, split: str = "train") -> None:
        """Stop before training when no object of a split maps to a target class.

        Warns about target classes without any object (they learn nothing).

        Raises:
            InvalidInputError: the split's TFRecords hold no object that
                ``dataset_config.target_class_mapping`` maps to a target class; the message
                names the classes present and the mapping.
        """
        stats = self.stats(split)
        if stats.mapped_counts:
            empty = [c for c in self.class_names if not stats.mapped_counts.get(c)]
            if empty:
                log.warning("%s data: no object maps to target class(es) %s; they cannot be learned", split,
                            ", ".join(empty))
            return
        present = ", ".join(f"{k}: {v}" for k, v in stats.source_class_counts.items()) or "no object at all"
        mapping = ", ".join(f"{k!r} -> {v!r}" for k, v in
                            sorted(dict(self.dataset_config.target_class_mapping).items()))
        raise InvalidInputError(
            f"training would learn nothing: no object of the {split} data maps to a target class "
            f"({', '.join(self.class_names)}). The TFRecords hold {present}; dataset_config.target_class_mapping "
            f"({mapping}) matches none of them",
            hint="use the class names the TFRecords hold (lower case, as dataset_convert printed them) as the keys "
                 "of target_class_mapping")

    def num_examples(self, split: str) -> int:
        """Number of frames in ``split``."""
        return self.stats(split).num_examples

    # ---- pipeline -----------------------------------------------------------------------

    def _records(self, split: str, shuffle: bool) -> tf.data.Dataset:
        sources = self.sources(split)
        datasets = []
        for index, src in enumerate(sources):
            files = tf.data.Dataset.from_tensor_slices(src.tfrecords)
            if shuffle:
                files = files.shuffle(len(src.tfrecords), seed=self.seed + index, reshuffle_each_iteration=True)
            records = files.interleave(tf.data.TFRecordDataset, cycle_length=min(len(src.tfrecords), 4),
                                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            datasets.append(records.map(lambda r, i=index: (r, tf.constant(i, tf.int32))))
        uniform = self.dataset_config.sampling_mode == pb.DatasetConfig.UNIFORM
        if len(datasets) > 1 and uniform and shuffle:
            combined = tf.data.Dataset.sample_from_datasets([d.repeat() for d in datasets], seed=self.seed,
                                                            stop_on_empty_dataset=False)
            return combined
        combined = datasets[0]
        for extra in datasets[1:]:
            combined = combined.concatenate(extra)
        if shuffle:
            buffer = max(min(self.num_examples(split), _SHUFFLE_BUFFER_MAX), 1)
            combined = combined.shuffle(buffer, seed=self.seed, reshuffle_each_iteration=True)
        return combined

    def _decode(self, contents: tf.Tensor) -> tf.Tensor:
        channels = self.augmentation.preprocessing.output_channels
        if self.extension.lower() in ("jpg", "jpeg"):
            return tf.io.decode_jpeg(contents, channels=channels, dct_method="INTEGER_ACCURATE")
        return tf.io.decode_png(contents, channels=channels)

    def _image_key(self, image_directory: str, frame_id: str) -> str:
        """The image path as the pipeline builds it (the key of the image cache)."""
        return image_directory.rstrip("/") + "/" + frame_id + "." + self.extension

    def image_cache(self, split: str = "train") -> tf.lookup.StaticHashTable | None:
        """The decoded images of ``split`` held in memory, or None when they do not fit.

        Built once per split (and shared by every pipeline of this object): each distinct
        image of the split is read, checked and decoded exactly as the pipeline would, and
        stored as a serialized uint8 tensor under its path.  The cache is made only when the
        decoded images fit in ``dataset_config.image_cache_mb`` MiB (0: never) and in a
        quarter of the memory available now; the size is estimated from the first image and
        checked while decoding (the build stops when the images turn out larger).

        Returns:
            A table path -> serialized ``[H, W, C]`` uint8 tensor (``tf.io.serialize_tensor``;
            an unknown path gives the empty string), or None.
        """
        if split in self._image_caches:
            return self._image_caches[split]
        self._image_caches[split] = None
        limit = cache_budget(self.image_cache_mb)
        self.stats(split)
        paths = self._image_paths.get(split, [])
        if limit <= 0 or not paths:
            return None

        def decode(path: tf.Tensor) -> tf.Tensor:
            return tf.io.serialize_tensor(self._decode(assert_decodable(tf.io.read_file(path), path)))

        first = decode(tf.constant(paths[0]))
        estimate = len(paths) * (int(tf.strings.length(first)) + 64)
        if estimate > limit:
            log.info("%s images are not cached in memory: about %d MiB decoded, more than the %d MiB allowed "
                     "(dataset_config.image_cache_mb, a quarter of the available memory)", split,
                     estimate // 2**20, limit // 2**20)
            return None
        values: list[bytes] = []
        total = 0
        decoded = tf.data.Dataset.from_tensor_slices(paths).map(decode, num_parallel_calls=tf.data.AUTOTUNE,
                                                                 deterministic=True)
        for value in decoded.as_numpy_iterator():
            values.append(value)
            total += len(value)
            if total > limit:
                log.info("%s images are not cached in memory: more than the %d MiB allowed", split, limit // 2**20)
                return None
        table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
            tf.constant(paths, tf.string), tf.constant(values, tf.string)), default_value="")
        log.info("%s data: %d decoded images cached in memory (%d MiB)", split, len(paths), total // 2**20)
        self._image_caches[split] = table
        return table

    def _lookup(self) -> tf.lookup.StaticHashTable:
        keys = list(self.class_mapping)
        values = [self.class_mapping[k] for k in keys]
        return tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
            tf.constant(keys, tf.string), tf.constant(values, tf.int32)), default_value=-1)

    def dataset(self, split: str = "train", batch_size: int | None = None, training: bool | None = None,
                output: str = "targets", repeat: bool | None = None, shuffle: bool | None = None,
                decode_only: bool = False, skip: int = 0) -> tf.data.Dataset:
        """Build the ``tf.data`` pipeline of a split.

        Args:
            split: ``train`` or ``val``.
            batch_size: images per batch; default ``training_config.batch_size_per_gpu``.
            training: apply random augmentation; default ``split == "train"``.
            output: one of :data:`OUTPUTS` (see the module docstring).
            repeat: repeat forever; default ``training``.
            shuffle: shuffle files and records; default ``split == "train"``.
            decode_only: skip labels, preprocessing and augmentation: decode each image, scale
                it to [0, 1] and resize it to the output size only when its size differs (the
                baseline of the input-pipeline benchmark); yields images only.
            skip: drop this many examples from the start of the (deterministic) stream before
                any decoding; a resumed training run skips the examples of its completed epochs
                and so sees exactly the batches an uninterrupted run would.

        The training split reads its images from :meth:`image_cache` when they fit in memory
        (``dataset_config.image_cache_mb``); the batches are the same either way.

        Returns:
            The batched, prefetched dataset.  Training batches drop the remainder so every
            batch has ``batch_size`` images.

        Raises:
            UsageError: unknown ``output``; see :meth:`sources` for the rest.
        """
        if output not in OUTPUTS:
            raise UsageError(f"output must be one of {', '.join(OUTPUTS)}, not {output!r}")
        if decode_only:
            output = "images"
        training = (split == "train") if training is None else training
        repeat = training if repeat is None else repeat
        shuffle = (split == "train") if shuffle is None else shuffle
        batch_size = batch_size or self.batch_size
        sources = self.sources(split)
        image_dirs = tf.constant([s.image_directory.rstrip("/") + "/" for s in sources])
        weights = tf.constant([s.weight for s in sources], tf.float32)
        table = self._lookup()
        params = self.augmentation
        pre = params.preprocessing
        ext = "." + self.extension
        rparams, lmparams = self.rasterizer, self.loss_mask
        cache = None if decode_only else self.image_cache(split) if split == "train" else None

        def read_image(path: tf.Tensor) -> tf.Tensor:
            if cache is None:
                return self._decode(assert_decodable(tf.io.read_file(path), path))
            stored = cache.lookup(path)
            image = tf.cond(tf.strings.length(stored) > 0, lambda: tf.io.parse_tensor(stored, tf.uint8),
                            lambda: self._decode(assert_decodable(tf.io.read_file(path), path)))
            return tf.ensure_shape(image, [None, None, pre.output_channels])

        records = self._records(split, shuffle)
        if repeat:
            records = records.repeat()
        seeds = tf.data.Dataset.random(seed=self.seed).batch(2)
        ds = tf.data.Dataset.zip((records, seeds))
        if skip:
            ds = ds.skip(skip)

        def load(item: Any, seed: tf.Tensor) -> Any:
            record, source = item
            parsed = parse_detection_tensors(record)
            path = tf.strings.join([image_dirs[source], parsed["frame_id"], ext])
            image = read_image(path)
            shape = tf.shape(image)
            if decode_only:
                img = tf.cast(image, tf.float32) / 255.0
                same = tf.reduce_all(shape[:2] == [pre.output_height, pre.output_width])
                img = tf.cond(same, lambda: img,
                              lambda: tf.image.resize(img, [pre.output_height, pre.output_width]))
                img = tf.ensure_shape(img, [pre.output_height, pre.output_width, pre.output_channels])
                return tf.transpose(img, [2, 0, 1])
            source_classes = tf.strings.lower(parsed["classes"])
            classes = table.lookup(source_classes)
            # Every label goes through augmentation (loss masks may use unmapped classes such as
            # dontcare); targets and labels only use the mapped ones.
            frame = augment_frame(image, parsed["boxes"], params, training=training, seed=seed if training else None)
            all_boxes = tf.boolean_mask(frame.boxes, frame.keep)
            all_classes = tf.boolean_mask(classes, frame.keep)
            all_sources = tf.boolean_mask(source_classes, frame.keep)
            known = all_classes >= 0
            boxes = tf.boolean_mask(all_boxes, known)
            classes = tf.boolean_mask(all_classes, known)
            source_classes = tf.boolean_mask(all_sources, known)
            image_chw = tf.transpose(frame.image, [2, 0, 1])
            image_chw = tf.ensure_shape(image_chw, [pre.output_channels, pre.output_height, pre.output_width])
            if output == "images":
                return image_chw
            parts: list[Any] = [image_chw]
            if output in ("targets", "both"):
                targets = rasterize_targets(boxes, classes, rparams)
                targets.update(rasterize_loss_masks(all_boxes, all_classes, all_sources, targets["cov"], rparams,
                                                    lmparams, weights[source]))
                parts.append(targets)
            if output in ("labels", "both"):
                parts.append({"frame_id": parsed["frame_id"], "boxes": boxes, "classes": classes,
                              "source_classes": source_classes, "num_boxes": tf.shape(boxes)[0],
                              "image_size": shape[:2]})
            return tuple(parts)

        ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        drop = training
        if output in ("labels", "both"):
            pad = {"frame_id": tf.constant(""), "boxes": tf.constant(0.0), "classes": tf.constant(-1),
                   "source_classes": tf.constant(""), "num_boxes": tf.constant(0), "image_size": tf.constant(0)}
            values: tuple[Any, ...] = (tf.constant(0.0),)
            if output == "both":
                values += ({k: tf.constant(0.0) for k in ("cov", "bbox", "cov_norm", "cov_mask", "bbox_mask")},)
            ds = ds.padded_batch(batch_size, padding_values=values + (pad,), drop_remainder=drop)
        else:
            ds = ds.batch(batch_size, drop_remainder=drop)
        options = tf.data.Options()
        options.deterministic = True
        return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def build_dataset(experiment: Any, split: str = "train", spec_dir: str | None = None, batch_size: int | None = None,
                  training: bool | None = None, output: str = "targets", repeat: bool | None = None,
                  shuffle: bool | None = None) -> tf.data.Dataset:
    """The DetectNet_v2 ``tf.data`` pipeline of one split (see the module docstring for shapes).

    Args:
        experiment: the ``Experiment`` message.
        split: ``train`` or ``val``.
        spec_dir: folder of the spec file (relative paths are resolved against it first).
        batch_size: default ``training_config.batch_size_per_gpu``.
        training: random augmentation on; default ``split == "train"``.
        output: ``targets`` -> (images, targets), ``labels`` -> (images, labels),
            ``both`` -> (images, targets, labels), ``images`` -> images.
        repeat: repeat forever; default ``training``.
        shuffle: default ``split == "train"``.

    Returns:
        The batched, prefetched dataset.
    """
    data = DetectNetV2Data(experiment, spec_dir=spec_dir)
    return data.dataset(split, batch_size=batch_size, training=training, output=output, repeat=repeat, shuffle=shuffle)
