"""CategoryMap: COCO category ids <-> contiguous class indices, carried in model metadata."""

from __future__ import annotations

import json
import logging

import pytest

from tltk.errors import InvalidInputError
from tltk.mask_rcnn.categories import CategoryMap


def test_contiguous_ids_keep_their_numbers():
    cmap = CategoryMap.from_categories({2: "pedestrian", 1: "car", 3: "cyclist"}, num_classes=4)
    assert cmap.category_ids == (1, 2, 3)
    assert [cmap.index_of(c) for c in (1, 2, 3)] == [1, 2, 3]
    assert cmap.class_names == ["BG", "car", "pedestrian", "cyclist"]


def test_non_contiguous_ids_map_in_sorted_order():
    cmap = CategoryMap.from_categories({90: "toothbrush", 1: "person", 13: "stop sign"}, num_classes=4)
    assert [cmap.index_of(c) for c in (1, 13, 90)] == [1, 2, 3]
    assert [cmap.category_id_of(i) for i in (1, 2, 3)] == [1, 13, 90]
    assert cmap.name_of(13) == "stop sign"
    with pytest.raises(InvalidInputError, match="category id 12"):
        cmap.index_of(12)
    with pytest.raises(InvalidInputError, match="class index 0"):
        cmap.category_id_of(0)


def test_larger_num_classes_leaves_unused_indices():
    cmap = CategoryMap.from_categories({5: "a", 9: "b"}, num_classes=5)
    assert cmap.class_names == ["BG", "a", "b", "class_3", "class_4"]
    assert cmap.num_categories == 2


def test_category_that_does_not_fit_is_named():
    with pytest.raises(InvalidInputError, match=r"category id 40 \('c'\) does not fit data_config.num_classes = 3") as err:
        CategoryMap.from_categories({4: "a", 20: "b", 40: "c"}, num_classes=3)
    assert "num_classes to 4" in str(err.value)


def test_background_entry_with_id_zero_is_ignored(caplog):
    with caplog.at_level(logging.WARNING):
        cmap = CategoryMap.from_categories({0: "_background_", 1: "cat", 2: "dog"}, num_classes=3)
    assert cmap.category_ids == (1, 2)
    assert "_background_" in caplog.text


def test_json_round_trip_and_tampering(tmp_path):
    cmap = CategoryMap.from_categories({3: "x", 7: "y"}, num_classes=3)
    doc = cmap.to_json()
    assert json.loads(json.dumps(doc)) == doc
    assert CategoryMap.from_json(doc) == cmap
    assert CategoryMap.from_json(json.dumps(doc)) == cmap
    doc["categories"][0]["class_index"] = 2
    with pytest.raises(InvalidInputError, match="class index 2"):
        CategoryMap.from_json(doc)
    with pytest.raises(InvalidInputError, match="not a tltk category map"):
        CategoryMap.from_json({"categories": []})


def test_from_coco_json(tmp_path):
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png", "width": 4, "height": 4}],
                                "annotations": [],
                                "categories": [{"id": 11, "name": "b"}, {"id": 4, "name": "a"}]}))
    cmap = CategoryMap.from_coco_json(path, num_classes=3)
    assert cmap.category_ids == (4, 11)
    assert cmap.names == ("a", "b")


def test_tf_lookup_maps_ids_and_flags_unknown():
    import tensorflow as tf

    cmap = CategoryMap.from_categories({3: "x", 7: "y"}, num_classes=3)
    table = cmap.tf_lookup()
    assert table.lookup(tf.constant([7, 3, 5], tf.int64)).numpy().tolist() == [2, 1, -1]
