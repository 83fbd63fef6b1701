"""MaskRCNN input pipeline: COCO-instance TFRecords -> letterboxed NCHW batches with every target.

One preprocessing serves training, evaluation, inference and INT8 calibration
(:func:`letterbox` in the graph, :func:`preprocess_image` for NumPy images):

1. decode (JPEG or PNG, 3 channels, whatever ``image/format`` says);
2. resize keeping the aspect ratio: ``scale = min(H / h, W / w)``, scaled size
   ``(floor(scale * h), floor(scale * w))``, bilinear (antialiased when shrinking, which
   matches PIL's bilinear resize within one grey level);
3. normalize with TAO's mean and std on [0, 1] RGB: ``(x - (0.485, 0.456, 0.406)) / 0.224``;
4. pad bottom/right with zeros (the mean colour) to ``image_size`` ``(H, W)``;
5. NCHW.

Training adds (TAO's order): crowd instances dropped when ``skip_crowd_during_training``,
a random horizontal flip (probability 0.5) of image, boxes and masks when
``augment_input_data``, and the RPN anchor targets of :mod:`tltk.mask_rcnn.anchor_targets`.

Element of :meth:`MaskRCNNData.dataset` with ``output="targets"`` (B images; M =
``max_num_instances``; S = ``gt_mask_size``; A anchors per location; H_l, W_l = H, W / 2**l):

* ``images`` float32 ``[B, 3, H, W]``;
* ``targets`` dict:

  - ``image_info`` float32 ``[B, 5]``: scaled height, scaled width, scale (scaled / original),
    original height, original width;
  - ``source_ids`` int64 ``[B]``: COCO image id;
  - ``gt_boxes`` float32 ``[B, M, 4]``: ``(y1, x1, y2, x2)`` in input pixels, padding rows -1;
  - ``gt_classes`` int32 ``[B, M]``: class index 1..num_classes-1 (see
    :mod:`tltk.mask_rcnn.categories`), padding -1;
  - ``cropped_gt_masks`` float32 ``[B, M, S + 4, S + 4]``: the instance mask sampled at the
    centres of an S x S grid over its box (bilinear, values in [0, 1]) with a 2-pixel zero
    border, padding -1;
  - ``score_targets_<l>`` int32 ``[B, H_l, W_l, A]`` and ``box_targets_<l>`` float32
    ``[B, H_l, W_l, 4A]`` for every level.

An image with more than M instances keeps the M largest boxes (TAO's pipeline fails on it);
:meth:`MaskRCNNData.stats` names such images.  Other outputs: ``"inference"`` gives
``(images, {"image_info", "source_ids"})``, ``"images"`` gives images only (calibration,
benchmark baseline).
"""

from __future__ import annotations

import glob
import logging
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tensorflow as tf
from google.protobuf.message import Message

from tltk.data.memory import cache_budget
from tltk.data.tfrecord import COCO_INSTANCE, check_shard_sets, parse_tensors
from tltk.errors import InvalidInputError, SpecError, UsageError
from tltk.mask_rcnn.anchor_targets import AnchorLabeler, RpnTargetParams
from tltk.mask_rcnn.anchors import AnchorConfig
from tltk.mask_rcnn.categories import CategoryMap
from tltk.spec.literals import LiteralError

log = logging.getLogger(__name__)

__all__ = [
    "NORM_MEAN",
    "NORM_STD",
    "OUTPUTS",
    "MASK_BORDER",
    "SplitStats",
    "MaskRCNNData",
    "letterbox",
    "preprocess_image",
    "crop_instance_masks",
]

#: RGB mean of TAO's normalization, on [0, 1] values.
NORM_MEAN = (0.485, 0.456, 0.406)
#: Standard deviation of TAO's normalization (the same for every channel).
NORM_STD = (0.224, 0.224, 0.224)
#: Zero border (pixels) around each cropped ground-truth mask, as TAO.
MASK_BORDER = 2
#: Values of the ``output`` argument of :meth:`MaskRCNNData.dataset`.
OUTPUTS = ("targets", "inference", "images")

_RECORD_KEYS = [
    "image/encoded", "image/source_id", "image/object/bbox/ymin", "image/object/bbox/xmin",
    "image/object/bbox/ymax", "image/object/bbox/xmax", "image/object/class/label",
    "image/object/is_crowd", "image/object/mask",
]
_IMAGE_KEYS = ["image/encoded", "image/source_id"]


# ---- the one preprocessing ------------------------------------------------------------------------

def letterbox(image: tf.Tensor, image_size: tuple[int, int]) -> tuple[tf.Tensor, tf.Tensor]:
    """Resize keeping the aspect ratio, normalize and pad (steps 2-4 of the module docstring).

    Args:
        image: uint8 (or float 0..255) ``[h, w, 3]`` RGB image.
        image_size: network input ``(H, W)``.

    Returns:
        ``(image, image_info)``: float32 ``[H, W, 3]`` normalized and zero-padded, and float32
        ``[5]`` = (scaled_h, scaled_w, scale, h, w) with scale = scaled / original.
    """
    height, width = int(image_size[0]), int(image_size[1])
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = tf.minimum(height / shape[0], width / shape[1])
    scaled = tf.maximum(tf.floor(shape * scale), 1.0)
    scaled_i = tf.cast(scaled, tf.int32)
    pixels = tf.cast(image, tf.float32)
    same = tf.reduce_all(tf.equal(scaled_i, tf.shape(image)[:2]))
    # Downscaling filters over the covered pixels (as PIL's bilinear does), so a picture reads the
    # same whether tf.data or an image library resized it; upscaling is plain bilinear.
    resized = tf.cond(same, lambda: pixels, lambda: tf.cond(
        scale < 1.0, lambda: tf.image.resize(pixels, scaled_i, method="bilinear", antialias=True),
        lambda: tf.image.resize(pixels, scaled_i, method="bilinear")))
    normalized = (resized / 255.0 - tf.constant(NORM_MEAN, tf.float32)) / tf.constant(NORM_STD, tf.float32)
    padded = tf.image.pad_to_bounding_box(normalized, 0, 0, height, width)
    padded = tf.ensure_shape(padded, [height, width, 3])
    info = tf.stack([scaled[0], scaled[1], scale, shape[0], shape[1]])
    return padded, info


def preprocess_image(image: np.ndarray, image_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The network input of one NumPy image (inference and calibration; the same ops as training).

    Args:
        image: uint8 ``[h, w, 3]`` RGB (a ``[h, w]`` or ``[h, w, 1]`` grey image is repeated to
            3 channels).
        image_size: network input ``(H, W)``.

    Returns:
        ``(chw, image_info)``: float32 ``[3, H, W]`` and float32 ``[5]`` (see :func:`letterbox`).
    """
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    padded, info = _letterbox_fn(tuple(int(v) for v in image_size))(tf.convert_to_tensor(array[:, :, :3]))
    return np.ascontiguousarray(tf.transpose(padded, [2, 0, 1]).numpy()), info.numpy()


_LETTERBOX_CACHE: dict[tuple[int, ...], Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]] = {}


def _letterbox_fn(image_size: tuple[int, ...]) -> Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]:
    fn = _LETTERBOX_CACHE.get(image_size)
    if fn is None:
        size = (int(image_size[0]), int(image_size[1]))
        fn = tf.function(lambda img: letterbox(img, size), reduce_retracing=True)
        _LETTERBOX_CACHE[image_size] = fn
    return fn


def crop_instance_masks(masks: tf.Tensor, boxes: tf.Tensor, size: int) -> tf.Tensor:
    """Sample each instance mask on an ``size x size`` grid over its box, with TAO's 2-px border.

    Sample ``(i, j)`` is taken (bilinear) at the centre of cell ``(i, j)`` of the box split into
    ``size x size`` cells, i.e. at ``y1 + (i + 0.5) * (y2 - y1) / size`` in continuous pixel
    coordinates (pixel ``k`` covers ``[k, k + 1)``) -- the convention of the mask-target crop
    inside the model.

    Args:
        masks: float32 ``[n, h, w]`` full-image masks (0/1).
        boxes: float32 ``[n, 4]`` ``(y1, x1, y2, x2)`` in pixels of the masks.
        size: S, ``gt_mask_size``.

    Returns:
        float32 ``[n, S + 4, S + 4]``.
    """
    shape = tf.cast(tf.shape(masks)[1:3], tf.float32)
    denom = tf.maximum(shape - 1.0, 1.0)
    y1, x1, y2, x2 = (boxes[:, k] for k in range(4))
    step_y = (y2 - y1) / size
    step_x = (x2 - x1) / size
    first_y = y1 + 0.5 * step_y - 0.5
    first_x = x1 + 0.5 * step_x - 0.5
    last_y = first_y + (size - 1) * step_y
    last_x = first_x + (size - 1) * step_x
    norm = tf.stack([first_y / denom[0], first_x / denom[1], last_y / denom[0], last_x / denom[1]], axis=1)
    n = tf.shape(masks)[0]
    crops = tf.image.crop_and_resize(masks[..., None], norm, tf.range(n), [size, size], method="bilinear",
                                     extrapolation_value=0.0)
    border = MASK_BORDER
    return tf.pad(crops[..., 0], [[0, 0], [border, border], [border, border]])


def _decode_masks(pngs: tf.Tensor, height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
    def decode() -> tf.Tensor:
        return tf.map_fn(lambda s: tf.io.decode_png(s, channels=1)[:, :, 0], pngs,
                         fn_output_signature=tf.TensorSpec([None, None], tf.uint8))

    masks = tf.cond(tf.size(pngs) > 0, decode, lambda: tf.zeros([0, height, width], tf.uint8))
    return tf.cast(masks, tf.float32)


def _source_id(text: tf.Tensor, encoded: tf.Tensor) -> tf.Tensor:
    numeric = tf.strings.regex_full_match(text, r"[0-9]{1,18}")
    return tf.cond(numeric, lambda: tf.strings.to_number(text, tf.int64),
                   lambda: tf.strings.to_hash_bucket_fast(encoded, 2**62))


#: Hash range of the decoded-record cache keys (``tf.strings.to_hash_bucket_fast`` of the record).
_KEY_BUCKETS = 2**62


def _parse_fixed_part(stored: tf.Tensor, gt_mask_size: int
                      ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """The five tensors of :meth:`MaskRCNNData._fixed_part` from their cached serialization."""
    parts = tf.io.parse_tensor(stored, tf.string)
    s = gt_mask_size + 2 * MASK_BORDER
    image = tf.ensure_shape(tf.io.parse_tensor(parts[0], tf.uint8), [None, None, 3])
    boxes = tf.ensure_shape(tf.io.parse_tensor(parts[1], tf.float32), [None, 4])
    classes = tf.ensure_shape(tf.io.parse_tensor(parts[2], tf.int32), [None])
    crops = tf.ensure_shape(tf.io.parse_tensor(parts[3], tf.float32), [None, s, s])
    source_id = tf.ensure_shape(tf.io.parse_tensor(parts[4], tf.int64), [])
    return image, boxes, classes, crops, source_id


# ---- statistics -----------------------------------------------------------------------------------

@dataclass
class SplitStats:
    """What a scan of one split's TFRecords found.

    Attributes:
        num_examples: records (images).
        instances_per_category: category id -> instances (crowd included).
        crowd: crowd instances.
        category_names: category id -> name as stored in ``image/object/class/text``.
        over_limit: images with more than ``max_num_instances`` instances (after dropping
            crowd when the split skips it): ``(file name, count)``, at most 20.
        num_over_limit: how many images exceed the limit in all.
    """

    num_examples: int = 0
    instances_per_category: dict[int, int] = field(default_factory=dict)
    crowd: int = 0
    category_names: dict[int, str] = field(default_factory=dict)
    over_limit: list[tuple[str, int]] = field(default_factory=list)
    num_over_limit: int = 0


# ---- the data of one experiment -----------------------------------------------------------------

class MaskRCNNData:
    """The MaskRCNN data of one experiment spec: files, category map, statistics and pipelines.

    Args:
        experiment: the MaskRCNN ``Experiment`` message (``data_config``, ``maskrcnn_config``,
            ``seed``, batch sizes).
        spec_dir: folder of the spec file; relative paths resolve against it first, then the
            current directory (then ``$DATA_BASE_PATH``).
        category_map: the class map to use (a trained model's); default: built from
            ``data_config.val_json_file`` (or, without it, from the training TFRecords).
        resolve: custom path resolver (overrides ``spec_dir``).

    Raises:
        SpecError: malformed ``image_size``/``aspect_ratios``, or an image size the anchor
            levels do not divide.
    """

    def __init__(self, experiment: Message, spec_dir: str | None = None, category_map: CategoryMap | None = None,
                 resolve: Callable[[str], str] | None = None) -> None:
        self.experiment = experiment
        dc, mc = experiment.data_config, experiment.maskrcnn_config
        if resolve is None:
            from tltk.spec.load import resolve_path

            def resolve(value: str) -> str:
                return resolve_path(value, spec_dir)
        self._resolve = resolve
        try:
            self.anchor_config = AnchorConfig.from_experiment(experiment)
        except LiteralError as exc:
            raise SpecError("invalid MaskRCNN spec", [str(exc)]) from None
        self.image_size = self.anchor_config.image_size
        stride = 2 ** self.anchor_config.max_level
        if self.image_size[0] % stride or self.image_size[1] % stride:
            raise SpecError("invalid MaskRCNN spec", [
                f"data_config.image_size: {self.image_size} must be divisible by 2^max_level = {stride}"])
        self.rpn_params = RpnTargetParams.from_experiment(experiment)
        self.labeler = AnchorLabeler(self.anchor_config, self.rpn_params)
        self.num_classes = int(dc.num_classes)
        self.max_num_instances = int(dc.max_num_instances)
        self.gt_mask_size = int(mc.gt_mask_size)
        self.augment = bool(dc.augment_input_data)
        self.skip_crowd = bool(dc.skip_crowd_during_training)
        self.shuffle_buffer_size = int(dc.shuffle_buffer_size)
        self.n_workers = int(dc.n_workers)
        # prefetch_buffer_size 0 is TAO's documented AUTOTUNE, not an unset field.
        self.prefetch_buffer_size = int(dc.prefetch_buffer_size) if dc.prefetch_buffer_size > 0 else tf.data.AUTOTUNE
        self.eval_samples = int(dc.eval_samples)
        self.seed = int(experiment.seed)
        self.train_batch_size = int(experiment.train_batch_size)
        self.eval_batch_size = int(experiment.eval_batch_size)
        self._category_map = category_map
        self._stats: dict[tuple[str, bool], SplitStats] = {}
        self.decoded_cache_mb = int(dc.decoded_cache_mb)
        self._decoded_caches: dict[tuple[str, bool], tf.lookup.StaticHashTable | None] = {}

    # ---- sources ---------------------------------------------------------------------------------

    def files(self, split: str) -> list[str]:
        """TFRecord files of ``split`` (``train`` or ``val``), sorted.

        Raises:
            UsageError: unknown split.
            SpecError: the split's file pattern is empty.
            InvalidInputError: the pattern matches no file.
        """
        dc = self.experiment.data_config
        if split == "train":
            field_name, pattern = "training_file_pattern", dc.training_file_pattern
        elif split == "val":
            field_name, pattern = "validation_file_pattern", dc.validation_file_pattern
        else:
            raise UsageError(f"split must be 'train' or 'val', not {split!r}")
        if not pattern:
            raise SpecError("invalid MaskRCNN spec", [f"data_config.{field_name}: empty; give the TFRecords glob "
                                                      "written by `tltk mask_rcnn dataset_convert`"])
        resolved = self._resolve(pattern)
        found = sorted(f for f in glob.glob(resolved) if os.path.isfile(f))
        if not found:
            raise InvalidInputError(f"data_config.{field_name} {pattern!r} matches no file (looked for {resolved})",
                                    hint="run `tltk mask_rcnn dataset_convert` first, or fix the pattern")
        check_shard_sets(found, f"data_config.{field_name}")
        return found

    @property
    def category_map(self) -> CategoryMap:
        """The category id -> class index map (built once; see the class docstring)."""
        if self._category_map is None:
            val_json = self.experiment.data_config.val_json_file
            if val_json:
                self._category_map = CategoryMap.from_coco_json(self._resolve(val_json), self.num_classes)
            else:
                stats = self.stats("train", training=False)
                self._category_map = CategoryMap.from_categories(
                    stats.category_names, self.num_classes, source=self.experiment.data_config.training_file_pattern)
        return self._category_map

    def stats(self, split: str, training: bool | None = None) -> SplitStats:
        """Scan the split's TFRecords once: images, instances per category, crowd, over-full images.

        Args:
            split: ``train`` or ``val``.
            training: count instances as training sees them (crowd dropped when
                ``skip_crowd_during_training``); default ``split == "train"``.

        Raises:
            InvalidInputError: a record's category id is not in the category map (when the map
                is already known) -- the id, its name and the file are named.
        """
        training = (split == "train") if training is None else training
        key = (split, training)
        if key in self._stats:
            return self._stats[key]
        result = SplitStats()
        per_cat: Counter[int] = Counter()
        keys = ["image/filename", "image/object/class/label", "image/object/class/text", "image/object/is_crowd"]
        limit = self.max_num_instances
        for path in self.files(split):
            ds = tf.data.TFRecordDataset(path).map(lambda r: parse_tensors(COCO_INSTANCE, r, keys=keys),
                                                   num_parallel_calls=tf.data.AUTOTUNE)
            for rec in ds.as_numpy_iterator():
                result.num_examples += 1
                labels = rec["image/object/class/label"]
                crowd = rec["image/object/is_crowd"]
                texts = rec["image/object/class/text"]
                per_cat.update(int(v) for v in labels)
                result.crowd += int(np.count_nonzero(crowd))
                for cid, text in zip(labels, texts, strict=False):
                    result.category_names.setdefault(int(cid), text.decode("utf-8", "replace"))
                used = int(np.count_nonzero(crowd == 0)) if (training and self.skip_crowd) else len(labels)
                if used > limit:
                    result.num_over_limit += 1
                    if len(result.over_limit) < 20:
                        result.over_limit.append((rec["image/filename"].decode("utf-8", "replace"), used))
            known = self._category_map
            unknown = [c for c in sorted(per_cat) if known is not None and c not in known.category_ids]
            if known is not None and unknown:
                cid = unknown[0]
                raise InvalidInputError(
                    f"{path}: category id {cid} ({result.category_names.get(cid, '?')!r}) is not in the category map "
                    f"(ids {list(known.category_ids)})",
                    hint="the TFRecords and data_config.val_json_file must list the same categories")
        result.instances_per_category = dict(sorted(per_cat.items()))
        if result.num_over_limit:
            shown = ", ".join(f"{name} ({n})" for name, n in result.over_limit[:5])
            log.warning("%s data: %d image(s) have more than data_config.max_num_instances = %d instances; the %d "
                        "largest are kept, e.g. %s", split, result.num_over_limit, limit, limit, shown)
        self._stats[key] = result
        return result

    def num_examples(self, split: str) -> int:
        """Number of images in ``split``."""
        return self.stats(split).num_examples

    def check_categories(self, split: str) -> None:
        """Fail early when the split's TFRecords hold a category the class map lacks.

        Raises:
            InvalidInputError: naming the category id, its name and the file.
        """
        self.category_map  # noqa: B018 -- builds the map before the scan checks against it
        self._stats.pop((split, split == "train"), None)
        self.stats(split)

    # ---- shapes ----------------------------------------------------------------------------------

    def target_shapes(self) -> dict[str, tuple[int, ...]]:
        """Target name -> shape of one image's target (no batch axis)."""
        m, s = self.max_num_instances, self.gt_mask_size + 2 * MASK_BORDER
        shapes: dict[str, tuple[int, ...]] = {
            "image_info": (5,), "source_ids": (), "gt_boxes": (m, 4), "gt_classes": (m,),
            "cropped_gt_masks": (m, s, s)}
        shapes.update(self.labeler.output_shapes())
        return shapes

    def preprocess_image(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:func:`preprocess_image` at this experiment's ``image_size``."""
        return preprocess_image(image, self.image_size)

    # ---- pipeline --------------------------------------------------------------------------------

    def _records(self, split: str, shuffle: bool) -> tf.data.Dataset:
        files = self.files(split)
        names = tf.data.Dataset.from_tensor_slices(files)
        if shuffle and len(files) > 1:
            names = names.shuffle(len(files), seed=self.seed, reshuffle_each_iteration=True)
        records = names.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 32), block_length=64,
                                   num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if shuffle:
            records = records.shuffle(self.shuffle_buffer_size, seed=self.seed, reshuffle_each_iteration=True)
        return records

    def _example(self, record: tf.Tensor, seeds: tf.Tensor, training: bool, output: str,
                 table: tf.lookup.StaticHashTable, cache: tf.lookup.StaticHashTable | None = None) -> Any:
        size = self.image_size
        if output != "targets":
            parsed = parse_tensors(COCO_INSTANCE, record, keys=_IMAGE_KEYS)
            image = tf.io.decode_image(parsed["image/encoded"], channels=3, dtype=tf.uint8, expand_animations=False)
            padded, info = letterbox(image, size)
            chw = tf.transpose(padded, [2, 0, 1])
            if output == "images":
                return chw
            return chw, {"image_info": info, "source_ids": _source_id(parsed["image/source_id"],
                                                                     parsed["image/encoded"])}
        if cache is None:
            image, boxes, classes, crops, source_id = self._fixed_part(record, training, table)
        else:
            stored = cache.lookup(tf.strings.to_hash_bucket_fast(record, _KEY_BUCKETS))
            image, boxes, classes, crops, source_id = tf.cond(
                tf.strings.length(stored) > 0, lambda: _parse_fixed_part(stored, self.gt_mask_size),
                lambda: self._fixed_part(record, training, table))

        if training and self.augment:
            flip = tf.random.stateless_uniform([], seed=seeds[:2]) < 0.5
            image = tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image)
            boxes = tf.cond(flip, lambda: tf.stack([boxes[:, 0], 1.0 - boxes[:, 3], boxes[:, 2], 1.0 - boxes[:, 1]],
                                                   axis=1), lambda: boxes)
            crops = tf.cond(flip, lambda: tf.reverse(crops, axis=[2]), lambda: crops)
        padded, info = letterbox(image, size)
        scaled = tf.stack([info[0], info[1], info[0], info[1]])
        gt = boxes * scaled
        targets = {"image_info": info, "source_ids": source_id}
        targets.update(self.labeler.label(gt, seeds[2:]))
        limit = self.max_num_instances
        pad = limit - tf.shape(gt)[0]
        s = self.gt_mask_size + 2 * MASK_BORDER
        targets["gt_boxes"] = tf.ensure_shape(tf.pad(gt, [[0, pad], [0, 0]], constant_values=-1.0), [limit, 4])
        targets["gt_classes"] = tf.ensure_shape(tf.pad(classes, [[0, pad]], constant_values=-1), [limit])
        targets["cropped_gt_masks"] = tf.ensure_shape(
            tf.pad(crops, [[0, pad], [0, 0], [0, 0]], constant_values=-1.0), [limit, s, s])
        return tf.transpose(padded, [2, 0, 1]), targets

    def _fixed_part(self, record: tf.Tensor, training: bool, table: tf.lookup.StaticHashTable
                    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        """What a training example is before its random flip: the same every epoch.

        Returns:
            ``(image, boxes, classes, crops, source_id)``: uint8 ``[h, w, 3]``, float32
            ``[n, 4]`` normalized ``(y1, x1, y2, x2)``, int32 ``[n]`` class indices, float32
            ``[n, S + 4, S + 4]`` cropped masks and the int64 source id; n <= ``max_num_instances``
            (crowd dropped first when training skips it).
        """
        parsed = parse_tensors(COCO_INSTANCE, record, keys=_RECORD_KEYS)
        image = tf.io.decode_image(parsed["image/encoded"], channels=3, dtype=tf.uint8, expand_animations=False)
        height, width = tf.shape(image)[0], tf.shape(image)[1]
        boxes = tf.clip_by_value(tf.stack([parsed[f"image/object/bbox/{k}"] for k in ("ymin", "xmin", "ymax", "xmax")],
                                          axis=1), 0.0, 1.0)
        labels = parsed["image/object/class/label"]
        pngs = parsed["image/object/mask"]
        if training and self.skip_crowd:
            keep = tf.equal(parsed["image/object/is_crowd"], 0)
            boxes, labels, pngs = (tf.boolean_mask(t, keep) for t in (boxes, labels, pngs))
        classes = table.lookup(labels)
        tf.debugging.assert_non_negative(
            classes, message="a category id in the TFRecords is not in the category map (run MaskRCNNData."
                             "check_categories to name it)")
        n = tf.shape(boxes)[0]
        limit = self.max_num_instances
        hw = tf.cast(tf.stack([height, width, height, width]), tf.float32)
        num_kept = tf.cast(tf.minimum(n, limit), tf.int32)
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        _, largest = tf.math.top_k(area, k=num_kept, sorted=False)
        kept = tf.sort(largest)
        boxes, classes, pngs = (tf.gather(t, kept) for t in (boxes, classes, pngs))
        masks = _decode_masks(pngs, height, width)
        crops = crop_instance_masks(masks, boxes * hw, self.gt_mask_size)
        return image, boxes, classes, crops, _source_id(parsed["image/source_id"], parsed["image/encoded"])

    def decoded_cache(self, split: str, training: bool = True) -> tf.lookup.StaticHashTable | None:
        """The fixed part of every training example of ``split`` held in memory, or None.

        Built once per split: every record is put through :meth:`_fixed_part` (decode, crowd
        skipping, instance limit, masks decoded and cropped) and the five results are stored,
        serialized, under a 62-bit hash of the record's bytes.  Made only when the results fit
        in ``data_config.decoded_cache_mb`` MiB (0: never) and in a quarter of the memory
        available now (estimated from the first record, checked while building).

        Args:
            split: ``train`` (``val`` is read once per evaluation and never cached); the empty
                string gives None.
            training: the fixed part as training sees it (crowd skipping).

        Returns:
            A table int64 record hash -> serialized ``[5]`` string tensor of serialized parts
            (an unknown record gives the empty string), or None.
        """
        key = (split, bool(training))
        if key in self._decoded_caches:
            return self._decoded_caches[key]
        self._decoded_caches[key] = None
        limit = cache_budget(self.decoded_cache_mb)
        if split != "train" or limit <= 0:
            return None
        table = self.category_map.tf_lookup()

        def entry(record: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            parts = self._fixed_part(record, bool(training), table)
            value = tf.io.serialize_tensor(tf.stack([tf.io.serialize_tensor(t) for t in parts]))
            return tf.strings.to_hash_bucket_fast(record, _KEY_BUCKETS), value

        records = tf.data.TFRecordDataset(self.files(split))
        built = records.map(entry, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        count = self.num_examples(split)
        stored: dict[int, bytes] = {}  # a record repeated in the files is stored once
        total = 0
        for hashed, value in built.as_numpy_iterator():
            if not stored and count * (len(value) + 64) > limit:
                log.info("%s data: decoded records are not cached in memory: about %d MiB, more than the %d MiB "
                         "allowed (data_config.decoded_cache_mb, a quarter of the available memory)", split,
                         count * len(value) // 2**20, limit // 2**20)
                return None
            if int(hashed) in stored:
                continue
            stored[int(hashed)] = value
            total += len(value) + 64
            if total > limit:
                log.info("%s data: decoded records are not cached in memory: more than the %d MiB allowed", split,
                         limit // 2**20)
                return None
        if not stored:
            return None
        cache = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
            tf.constant(list(stored), tf.int64), tf.constant(list(stored.values()), tf.string)), default_value="")
        log.info("%s data: %d decoded records cached in memory (%d MiB)", split, len(stored), total // 2**20)
        self._decoded_caches[key] = cache
        return cache

    def dataset(self, split: str = "train", batch_size: int | None = None, training: bool | None = None,
                repeat: bool | None = None, shuffle: bool | None = None, skip: int = 0,
                output: str = "targets") -> tf.data.Dataset:
        """The ``tf.data`` pipeline of one split (shapes in the module docstring).

        Order of operations (TAO's, minus its in-memory ``cache``): list the files, interleave
        them (deterministic), shuffle (``shuffle_buffer_size``, 0 means 4096, reshuffled every
        epoch from ``seed``), repeat, skip, parse and preprocess in ``n_workers`` parallel calls
        (0 means 16), batch, prefetch ``prefetch_buffer_size`` batches (0 means AUTOTUNE).  The
        stream is deterministic for a given ``seed``: random flips and anchor sampling use a
        per-example stateless seed.

        Args:
            split: ``train`` or ``val``.
            batch_size: images per batch; default ``train_batch_size`` for training,
                ``eval_batch_size`` otherwise.
            training: random flips (``augment_input_data``) and crowd skipping
                (``skip_crowd_during_training``); default ``split == "train"``.
            repeat: repeat forever; default ``training``.
            shuffle: shuffle files and records; default ``training``.
            skip: examples dropped from the start of the stream before decoding (a resumed run
                skips those of its completed steps and continues the same stream).
            output: ``targets`` (images, targets), ``inference`` (images, image_info and
                source_ids) or ``images`` (images only).

        Returns:
            The batched, prefetched dataset.  Training batches drop the remainder; otherwise
            the last batch may be smaller.  For ``val`` without training, only the first
            ``eval_samples`` images are read when that is > 0.

        Raises:
            UsageError: unknown ``output``; see :meth:`files` for the rest.
        """
        if output not in OUTPUTS:
            raise UsageError(f"output must be one of {', '.join(OUTPUTS)}, not {output!r}")
        training = (split == "train") if training is None else bool(training)
        repeat = training if repeat is None else bool(repeat)
        shuffle = training if shuffle is None else bool(shuffle)
        if batch_size is None:
            batch_size = self.train_batch_size if training else self.eval_batch_size
        batch_size = int(batch_size)
        if batch_size < 1:
            raise UsageError(f"batch_size must be at least 1, not {batch_size}")
        table = self.category_map.tf_lookup() if output == "targets" else None
        records = self._records(split, shuffle)
        if split == "val" and not training and self.eval_samples > 0:
            records = records.take(self.eval_samples)
        if repeat:
            records = records.repeat()
        seeds = tf.data.Dataset.random(seed=self.seed).batch(4)
        ds = tf.data.Dataset.zip((records, seeds))
        if skip:
            ds = ds.skip(int(skip))

        cache = self.decoded_cache(split, training) if output == "targets" and training else None

        def load(record: tf.Tensor, seed: tf.Tensor) -> Any:
            return self._example(record, seed, training, output, table, cache)

        ds = ds.map(load, num_parallel_calls=self.n_workers, deterministic=True)
        ds = ds.batch(batch_size, drop_remainder=training)
        options = tf.data.Options()
        options.deterministic = True
        return ds.with_options(options).prefetch(self.prefetch_buffer_size)
