"""The one map between COCO category ids and MaskRCNN class indices.

TFRecords, COCO JSON files and COCO results keep the dataset's own category ids (as TAO
writes them).  The network works with contiguous class indices: 0 is the background and the
categories take ``1..K`` in ascending order of category id, so COCO's 80 categories with ids
1..90 (gaps at 12, 26, ...) become classes 1..80.  ``num_classes`` (``data_config.num_classes``,
background included) must leave room for every category: ``K <= num_classes - 1``; a category
that does not fit is an error that names it.  Indices above ``K`` (when ``num_classes`` is larger
than needed, as TAO's COCO spec with 91) exist in the network but no data maps to them.

The map travels inside the model file (:meth:`CategoryMap.to_json` /
:meth:`CategoryMap.from_json`), so evaluation, inference and DeepStream's ``labels.txt`` use the
training-time map.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tltk.errors import InvalidInputError

if TYPE_CHECKING:  # pragma: no cover
    import tensorflow as tf

log = logging.getLogger(__name__)

__all__ = ["BACKGROUND", "CategoryMap"]

#: Name of class index 0.
BACKGROUND = "BG"

_FORMAT = "tltk.mask_rcnn.category_map"


@dataclass(frozen=True)
class CategoryMap:
    """COCO category ids <-> contiguous class indices ``1..K`` (0 = background).

    Build it with :meth:`from_categories` or :meth:`from_coco_json`; the constructor takes the
    categories already sorted by id.

    Attributes:
        category_ids: the categories' ids, ascending; ``category_ids[i]`` has class index ``i + 1``.
        names: the categories' names, in the same order.
        num_classes: network classes including the background (``data_config.num_classes``).
    """

    category_ids: tuple[int, ...]
    names: tuple[str, ...]
    num_classes: int

    def __post_init__(self) -> None:
        if len(self.category_ids) != len(self.names):
            raise ValueError(f"{len(self.category_ids)} category ids for {len(self.names)} names")
        if list(self.category_ids) != sorted(set(self.category_ids)):
            raise ValueError(f"category ids must be unique and ascending: {list(self.category_ids)}")

    # ---- construction ------------------------------------------------------------------------

    @classmethod
    def from_categories(cls, categories: Mapping[int, str], num_classes: int, source: str = "") -> CategoryMap:
        """Build the map from ``{category_id: name}``.

        A category with id 0 is the background entry some tools write (labelme's COCO export
        writes ``_background_``); it is left out with a warning.

        Args:
            categories: category id -> name (any order).
            num_classes: classes including the background (``data_config.num_classes``).
            source: where the categories come from (a file name), for messages.

        Returns:
            The map; class index ``i`` (1-based) is the ``i``-th smallest category id.

        Raises:
            InvalidInputError: a negative id, no category, or more categories than
                ``num_classes - 1`` (the first category that does not fit is named).
        """
        where = f"{source}: " if source else ""
        items = sorted((int(k), str(v)) for k, v in categories.items())
        negative = [k for k, _ in items if k < 0]
        if negative:
            raise InvalidInputError(f"{where}category id {negative[0]} is negative",
                                    hint="COCO category ids are positive integers")
        if items and items[0][0] == 0:
            log.warning("%scategory id 0 (%r) is the background and is ignored; class index 0 is always the "
                        "background", where, items[0][1])
            items = items[1:]
        if not items:
            raise InvalidInputError(f"{where}no category (besides the background)",
                                    hint="the 'categories' list needs at least one entry with an id >= 1")
        if num_classes < 2:
            raise InvalidInputError(f"data_config.num_classes is {num_classes}; it must be the number of "
                                    f"categories + 1 (here {len(items) + 1})")
        if len(items) > num_classes - 1:
            cid, name = items[num_classes - 1]
            raise InvalidInputError(
                f"{where}category id {cid} ({name!r}) does not fit data_config.num_classes = {num_classes}: "
                f"the {len(items)} categories need class indices 1..{len(items)}",
                hint=f"set data_config.num_classes to {len(items) + 1} (categories + background)")
        if len(items) < num_classes - 1:
            log.info("%s%d categories for num_classes = %d: class indices %d..%d receive no data", where,
                     len(items), num_classes, len(items) + 1, num_classes - 1)
        return cls(tuple(k for k, _ in items), tuple(v for _, v in items), int(num_classes))

    @classmethod
    def from_coco_json(cls, path: str | os.PathLike[str], num_classes: int) -> CategoryMap:
        """Build the map from the ``categories`` list of a COCO annotation file.

        Args:
            path: a COCO instances JSON (e.g. ``data_config.val_json_file``).
            num_classes: classes including the background.

        Raises:
            InvalidInputError: the file is missing or malformed, or see :meth:`from_categories`.
        """
        from tltk.data.coco import read_coco

        dataset = read_coco(path, require_annotations=False)
        return cls.from_categories(dataset.categories, num_classes, source=os.fspath(path))

    # ---- lookups -----------------------------------------------------------------------------

    @property
    def num_categories(self) -> int:
        """K: the number of categories (classes besides the background that receive data)."""
        return len(self.category_ids)

    @property
    def class_names(self) -> list[str]:
        """Names by class index, ``num_classes`` long: ``[BG, name_1, ..., name_K]`` then
        ``class_<i>`` for indices no category maps to."""
        out = [BACKGROUND, *self.names]
        out += [f"class_{i}" for i in range(len(out), self.num_classes)]
        return out

    def index_of(self, category_id: int) -> int:
        """Class index (1..K) of a category id.

        Raises:
            InvalidInputError: the id is not in the map.
        """
        try:
            return self.category_ids.index(int(category_id)) + 1
        except ValueError:
            raise InvalidInputError(f"category id {category_id} is not in the category map "
                                    f"(ids {self._id_summary()})",
                                    hint="the TFRecords and the annotation JSON must come from the same dataset") from None

    def category_id_of(self, index: int) -> int:
        """Category id of a class index (1..K).

        Raises:
            InvalidInputError: the index is the background or has no category.
        """
        if not 1 <= int(index) <= self.num_categories:
            raise InvalidInputError(f"class index {index} has no category (categories take 1..{self.num_categories})")
        return self.category_ids[int(index) - 1]

    def name_of(self, category_id: int) -> str:
        """Name of a category id."""
        return self.names[self.index_of(category_id) - 1]

    def _id_summary(self) -> str:
        ids = list(self.category_ids)
        return ", ".join(str(i) for i in ids) if len(ids) <= 12 else f"{ids[0]}..{ids[-1]}, {len(ids)} in all"

    def tf_lookup(self) -> tf.lookup.StaticHashTable:
        """An in-graph table: int64 category id -> int32 class index; unknown ids give -1."""
        import tensorflow as tf

        keys = tf.constant(list(self.category_ids), tf.int64)
        values = tf.constant(list(range(1, self.num_categories + 1)), tf.int32)
        return tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(keys, values), default_value=-1)

    # ---- serialisation -----------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict for the model file's metadata (read back with :meth:`from_json`)."""
        return {"format": _FORMAT, "num_classes": self.num_classes,
                "categories": [{"id": cid, "name": name, "class_index": i + 1}
                               for i, (cid, name) in enumerate(zip(self.category_ids, self.names, strict=True))]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str) -> CategoryMap:
        """Rebuild a map written by :meth:`to_json` (a dict or its JSON text).

        Raises:
            InvalidInputError: the document is not a category map or its class indices do not
                follow the sorted category ids.
        """
        doc = json.loads(data) if isinstance(data, str) else data
        if not isinstance(doc, Mapping) or doc.get("format") != _FORMAT:
            raise InvalidInputError("model metadata: the category map is missing or not a tltk category map")
        cats = list(doc.get("categories") or [])
        result = cls.from_categories({int(c["id"]): str(c["name"]) for c in cats}, int(doc["num_classes"]))
        for c in cats:
            if "class_index" in c and int(c["class_index"]) != result.index_of(int(c["id"])):
                raise InvalidInputError(f"model metadata: category {c['id']} has class index {c['class_index']}, "
                                        f"expected {result.index_of(int(c['id']))}")
        return result
