"""One home for each MaskRCNN default: the proto's ``[default = ...]`` plus the spec rule tables.

Fields left out of a spec resolve to the proto's defaults and the data loader uses them as
they are; an explicit 0 that TAO forbids is a spec error naming the field.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tltk._proto import mask_rcnn_pb2 as pb
from tltk.errors import SpecError, UsageError
from tltk.mask_rcnn.dataloader import MaskRCNNData
from tltk.mask_rcnn.sampling import RoiSampler
from tltk.models import parse_spec_text

#: A minimal experiment; the fields under test are added by ``_experiment``.
SPEC = """
num_steps_per_eval: 10
total_steps: 20
init_learning_rate: 0.01
data_config {
  %s
  image_size: "(128, 128)"
  num_classes: 3
  training_file_pattern: "train-*.tfrecord"
  validation_file_pattern: "val-*.tfrecord"
  val_json_file: "val.json"
}
maskrcnn_config {
  gt_mask_size: 8
}
"""


def _experiment(**fields: int) -> pb.Experiment:
    """The minimal spec with top-level fields (and ``data_config__<name>``) set."""
    data = " ".join(f"{k.removeprefix('data_config__')}: {v}" for k, v in fields.items() if k.startswith("data_config__"))
    top = "".join(f"{k}: {v}\n" for k, v in fields.items() if not k.startswith("data_config__"))
    return parse_spec_text(top + SPEC % data, pb.Experiment, validate=True)


def test_unset_fields_read_the_proto_defaults() -> None:
    exp = _experiment()
    assert (exp.seed, exp.train_batch_size, exp.eval_batch_size) == (123, 2, 4)
    data = MaskRCNNData(exp)
    assert (data.seed, data.train_batch_size, data.eval_batch_size) == (123, 2, 4)
    assert data.decoded_cache_mb == 2048
    assert _experiment(data_config__decoded_cache_mb=0).data_config.decoded_cache_mb == 0  # 0: never cache


@pytest.mark.parametrize("field", ["train_batch_size", "eval_batch_size"])
def test_explicit_zero_batch_size_is_a_spec_error_naming_the_field(field: str) -> None:
    with pytest.raises(SpecError) as err:
        _experiment(**{field: 0})
    assert err.value.problems == [f"<spec>:1:1: {field}: 0 is invalid: must be > 0"]


def test_dataset_batch_size_zero_is_a_usage_error_not_the_spec_value() -> None:
    data = MaskRCNNData(_experiment())
    with pytest.raises(UsageError, match="batch_size must be at least 1, not 0"):
        data.dataset("val", batch_size=0)


def test_roi_sampler_without_a_seed_draws_like_seed_zero() -> None:
    rois = np.array([[[0, 0, 20, 22], [100, 100, 120, 120], [30, 30, 70, 70], [0, 0, 10, 10]]], np.float32)
    scores = np.array([[0.9, 0.5, 0.7, 0.2]], np.float32)
    gt = np.array([[[0, 0, 20, 20], [40, 40, 80, 80]]], np.float32)
    classes = np.array([[1, 2]], np.int32)
    masks = np.ones((1, 2, 8, 8), np.float32)
    outputs = []
    for seed in (None, 0, 1):
        layer = RoiSampler(4, 0.25, 0.5, 0.5, 0.0, (10, 10, 5, 5), mask_rois=2, gt_mask_size=8, mrcnn_resolution=4,
                           seed=seed)
        layer.use_step_counter(tf.Variable(3, dtype=tf.int64))
        outputs.append(layer(rois, scores, gt, classes, masks)["rois"].numpy())
    np.testing.assert_array_equal(outputs[0], outputs[1])
    assert not np.array_equal(outputs[0], outputs[2])  # the seed does steer the draw
