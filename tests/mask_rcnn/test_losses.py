"""TAO's MaskRCNN losses and normalisations on tiny inputs worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from tltk.mask_rcnn.losses import LOSS_NAMES, fast_rcnn_losses, huber, mask_loss, mask_rcnn_loss, rpn_losses  # noqa: E402
from tltk.mask_rcnn.params import MaskRCNNParams  # noqa: E402

LOG2 = math.log(2.0)


def test_huber_is_elementwise() -> None:
    x = np.array([0.05, -0.5, 2.0], np.float32)
    d = 1 / 9
    np.testing.assert_allclose(huber(x, d).numpy(), [0.5 * 0.05**2, d * (0.5 - d / 2), d * (2.0 - d / 2)], rtol=1e-6)
    np.testing.assert_allclose(huber(x, 1.0).numpy(), [0.00125, 0.125, 1.5], rtol=1e-6)


def test_rpn_losses_by_hand() -> None:
    outputs = {
        "rpn_score_2": np.zeros((1, 1, 2, 1), np.float32),
        "rpn_box_2": np.zeros((1, 1, 2, 4), np.float32),
        "rpn_score_3": np.full((1, 1, 1, 1), 2.0, np.float32),
        "rpn_box_3": np.zeros((1, 1, 1, 4), np.float32),
    }
    targets = {
        "score_targets_2": np.array([1, -1], np.int32).reshape(1, 1, 2, 1),  # one counted anchor: log 2
        "box_targets_2": np.array([[0.5, 0, 0, 0], [0, 0, 0, 0]], np.float32).reshape(1, 1, 2, 4),
        "score_targets_3": np.zeros((1, 1, 1, 1), np.int32),  # negative with logit 2: log(1 + e^2)
        "box_targets_3": np.array([0.05, -0.05, 0, 0], np.float32).reshape(1, 1, 1, 4),
    }
    score, box = rpn_losses(outputs, targets, [2, 3], rpn_batch_size_per_im=4)
    assert score.numpy() == pytest.approx((LOG2 + math.log(1 + math.e**2)) / 4, rel=1e-5)
    d = 1 / 9
    level2 = d * (0.5 - d / 2) / 1  # one non-zero target element
    level3 = (0.5 * 0.05**2 * 2) / 2  # two non-zero elements, both quadratic
    assert box.numpy() == pytest.approx(level2 + level3, rel=1e-5)


def test_fast_rcnn_losses_by_hand() -> None:
    class_outputs = np.zeros((1, 3, 2), np.float32)  # uniform over 2 classes: CE = log 2
    box_outputs = np.zeros((1, 3, 8), np.float32)
    box_outputs[0, 0, 4] = 1.0  # class-1 dy of roi 0 is off by 1 -> huber 0.5
    box_outputs[0, 1, 4:] = 9.0  # background roi: its class-1 deltas do not count
    class_targets = np.array([[1, 0, 0]], np.int32)
    box_targets = np.zeros((1, 3, 4), np.float32)
    weights = np.array([[1.0, 1.0, 0.0]], np.float32)  # roi 2 is a filler slot
    cls, box = fast_rcnn_losses(class_outputs, box_outputs, class_targets, box_targets, weights)
    assert cls.numpy() == pytest.approx(LOG2, rel=1e-6)
    assert box.numpy() == pytest.approx(0.5 / 4, rel=1e-6)


def test_mask_loss_by_hand() -> None:
    logits = np.zeros((1, 2, 2, 2), np.float32)
    logits[0, 1] = 50.0  # a background roi with a huge error: weight 0
    targets = np.zeros((1, 2, 2, 2), np.float32)
    assert mask_loss(logits, targets, np.array([[1.0, 0.0]], np.float32)).numpy() == pytest.approx(LOG2, rel=1e-6)
    assert mask_loss(logits, targets, np.zeros((1, 2), np.float32)).numpy() == 0.0


def test_total_applies_weights_and_names() -> None:
    from tltk._proto import mask_rcnn_pb2 as pb

    exp = pb.Experiment()
    exp.data_config.num_classes = 2
    exp.maskrcnn_config.min_level = 2
    exp.maskrcnn_config.max_level = 3
    exp.maskrcnn_config.rpn_box_loss_weight = 2.0
    exp.maskrcnn_config.fast_rcnn_box_loss_weight = 3.0
    exp.maskrcnn_config.mrcnn_weight_loss_mask = 0.5
    exp.maskrcnn_config.rpn_batch_size_per_im = 1
    params = MaskRCNNParams.from_experiment(exp)
    outputs = {
        "rpn_score_2": np.zeros((1, 1, 1, 1), np.float32), "rpn_box_2": np.ones((1, 1, 1, 4), np.float32),
        "rpn_score_3": np.zeros((1, 1, 1, 1), np.float32), "rpn_box_3": np.zeros((1, 1, 1, 4), np.float32),
        "class_outputs": np.zeros((1, 1, 2), np.float32), "box_outputs": np.zeros((1, 1, 8), np.float32),
        "class_targets": np.ones((1, 1), np.int32), "box_targets": np.full((1, 1, 4), 2.0, np.float32),
        "roi_weights": np.ones((1, 1), np.float32),
        "mask_outputs": np.zeros((1, 1, 2, 2), np.float32), "mask_targets": np.ones((1, 1, 2, 2), np.float32),
        "mask_weights": np.ones((1, 1), np.float32),
    }
    targets = {"score_targets_2": np.ones((1, 1, 1, 1), np.int32), "box_targets_2": np.full((1, 1, 1, 4), 1.5, np.float32),
               "score_targets_3": -np.ones((1, 1, 1, 1), np.int32), "box_targets_3": np.zeros((1, 1, 1, 4), np.float32)}
    total, parts = mask_rcnn_loss(outputs, targets, params)
    assert tuple(parts) == LOSS_NAMES
    d = 1 / 9
    expect = {
        "rpn_score_loss": LOG2,
        "rpn_box_loss": 2.0 * d * (0.5 - d / 2),
        "fast_rcnn_class_loss": LOG2,
        "fast_rcnn_box_loss": 3.0 * 1.5,  # huber(2, 1) = 1.5 per element, 4 elements / 4
        "mask_loss": 0.5 * LOG2,
    }
    for name, value in expect.items():
        assert parts[name].numpy() == pytest.approx(value, rel=1e-5), name
    assert total.numpy() == pytest.approx(sum(expect.values()), rel=1e-5)
