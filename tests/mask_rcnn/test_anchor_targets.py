"""RPN anchor targets on small grids worked out by hand.

Layout used throughout: a 64x64 input, levels 4 and 5, one square anchor per location with
anchor_scale 1, so level 4 has 16 anchors of 16x16 (centres 8, 24, 40, 56) and level 5 four
anchors of 32x32 (centres 16, 48): anchor index 0..15 for level 4 (row-major), 16..19 for level 5.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from tltk.mask_rcnn.anchor_targets import AnchorLabeler, RpnTargetParams
from tltk.mask_rcnn.anchors import AnchorConfig

CFG = AnchorConfig(min_level=4, max_level=5, num_scales=1, aspect_ratios=[(1.0, 1.0)], anchor_scale=1.0,
                   image_size=(64, 64))


def _labeler(batch: int = 256, fg: float = 0.5) -> AnchorLabeler:
    return AnchorLabeler(CFG, RpnTargetParams(positive_overlap=0.7, negative_overlap=0.3, batch_size_per_im=batch,
                                              fg_fraction=fg))


def _flat(out: dict[str, tf.Tensor], name: str) -> np.ndarray:
    return np.concatenate([out[f"{name}_{lvl}"].numpy().reshape(-1, 4 if name == "box_targets" else 1)
                           for lvl in (4, 5)])


def test_shapes_and_anchor_layout():
    lab = _labeler()
    assert lab.num_anchors == 20
    assert lab.output_shapes() == {"score_targets_4": (4, 4, 1), "box_targets_4": (4, 4, 4),
                                   "score_targets_5": (2, 2, 1), "box_targets_5": (2, 2, 4)}
    np.testing.assert_allclose(lab.anchors[0], [0, 0, 16, 16])
    np.testing.assert_allclose(lab.anchors[19], [32, 32, 64, 64])


def test_positive_negative_ignored_and_forced():
    # Box A = one level-4 cell exactly: IoU 1 with anchor 0 (positive), 0.25 with the level-5
    # anchor 16 (negative).  Box B (24x24 at 32..56): best IoU 576/1024 = 0.5625 with anchor 19
    # (below 0.7, forced positive); 256/576 = 0.444 with anchor 10 (ignored); 0.18 and 0.08 with
    # anchors 11, 14, 15 (negative).
    out = _labeler().label(tf.constant([[0, 0, 16, 16], [32, 32, 56, 56]], tf.float32), tf.constant([3, 4]))
    scores = _flat(out, "score_targets").ravel()
    expected = np.zeros(20, np.int32)
    expected[[0, 19]] = 1
    expected[10] = -1
    np.testing.assert_array_equal(scores, expected)
    boxes = _flat(out, "box_targets")
    # Anchor 0 equals box A: all deltas 0.  Anchor 19 vs B with the +1 coder: anchor h = w = 33,
    # centre 48.5; box h = w = 25, centre 44.5.
    d = -4.0 / 33.0
    np.testing.assert_allclose(boxes[19], [d, d, math.log(25 / 33), math.log(25 / 33)], rtol=1e-5)
    np.testing.assert_array_equal(boxes[np.arange(20) != 19], 0.0)


def test_force_match_picks_first_box_on_a_shared_best_anchor():
    # Y = [0, 0, 10, 10]: IoU 100/256 = 0.39 with anchor 0 (its best); X = [0, 0, 16, 20]: IoU 0.8
    # with anchor 0 (its best too).  Arg-max matching gives X, force matching gives the first box.
    lab = _labeler()
    y, x = [0, 0, 10, 10], [0, 0, 16, 20]
    _, _, matched = lab.match(tf.constant([y, x], tf.float32))
    assert int(matched[0]) == 0
    _, _, matched = lab.match(tf.constant([x, y], tf.float32))
    assert int(matched[0]) == 0


def test_force_match_overrides_the_arg_max_box():
    # Anchor 0 overlaps X = [0, 0, 16, 18] with IoU 256/288 = 0.89 and a second box W = [0, 0, 16, 17]
    # with 256/272 = 0.94; W is the arg-max, both force the same anchor -> the first box (X) wins.
    lab = _labeler()
    _, _, matched = lab.match(tf.constant([[0, 0, 16, 18], [0, 0, 16, 17]], tf.float32))
    assert int(matched[0]) == 0


def test_no_boxes_gives_only_negatives():
    out = _labeler().label(tf.zeros([0, 4], tf.float32), tf.constant([1, 2]))
    np.testing.assert_array_equal(_flat(out, "score_targets"), 0)
    np.testing.assert_array_equal(_flat(out, "box_targets"), 0.0)


@pytest.mark.parametrize("seed", [(1, 2), (5, 9), (123, 0)])
def test_sampling_caps_positives_and_fills_with_negatives(seed):
    # Four boxes equal to four level-4 cells: 4 positives; batch 4 with fg 0.5 keeps 2 of them
    # and 2 of the negatives; box targets stay on all 4 matched anchors.
    cells = [[0, 0, 16, 16], [0, 16, 16, 32], [16, 0, 32, 16], [48, 48, 64, 64]]
    out = _labeler(batch=4, fg=0.5).label(tf.constant(cells, tf.float32), tf.constant(seed))
    scores = _flat(out, "score_targets").ravel()
    matched = {0, 1, 4, 15}
    assert (scores == 1).sum() == 2 and set(np.flatnonzero(scores == 1)) <= matched
    assert (scores == 0).sum() == 2 and not set(np.flatnonzero(scores == 0)) & matched
    assert (scores == -1).sum() == 16
    assert np.count_nonzero(np.abs(_flat(out, "box_targets")).sum(axis=1) == 0) == 20  # exact cells: zero deltas
    again = _labeler(batch=4, fg=0.5).label(tf.constant(cells, tf.float32), tf.constant(seed))
    np.testing.assert_array_equal(_flat(again, "score_targets").ravel(), scores)


def test_sampling_varies_with_the_seed():
    cells = [[0, 0, 16, 16], [0, 16, 16, 32], [16, 0, 32, 16], [48, 48, 64, 64]]
    lab = _labeler(batch=4, fg=0.5)
    draws = {tuple(_flat(lab.label(tf.constant(cells, tf.float32), tf.constant([s, 0])), "score_targets").ravel())
             for s in range(8)}
    assert len(draws) > 1


def test_box_targets_cover_matched_anchors_beyond_the_sample():
    # Shifted boxes give non-zero deltas; with a sample of 2 (1 positive at most) all 3 matched
    # anchors still carry box targets.
    boxes = [[1, 1, 17, 17], [1, 17, 17, 33], [33, 33, 49, 49]]
    out = _labeler(batch=2, fg=0.5).label(tf.constant(boxes, tf.float32), tf.constant([1, 1]))
    scores = _flat(out, "score_targets").ravel()
    assert (scores == 1).sum() == 1
    nonzero = np.flatnonzero(np.abs(_flat(out, "box_targets")).sum(axis=1) > 0)
    assert nonzero.tolist() == [0, 1, 10]
    np.testing.assert_allclose(_flat(out, "box_targets")[0], [1 / 17, 1 / 17, 0, 0], rtol=1e-5)


def test_channel_layout_of_several_anchors_per_location():
    cfg = AnchorConfig(min_level=5, max_level=5, num_scales=1, aspect_ratios=[(1.0, 1.0), (2.0, 0.5)],
                       anchor_scale=1.0, image_size=(64, 64))
    lab = AnchorLabeler(cfg, RpnTargetParams(0.7, 0.3, 256, 0.5))
    # The wide anchor (a = 1) of cell (1, 0): 64 x 16 centred at (48, 16) -> [40, -16, 56, 48].
    out = lab.label(tf.constant([[40, -16, 56, 48]], tf.float32), tf.constant([0, 0]))
    scores = out["score_targets_5"].numpy()
    assert scores.shape == (2, 2, 2)
    assert scores[1, 0, 1] == 1 and (scores == 1).sum() == 1
    assert out["box_targets_5"].numpy().shape == (2, 2, 8)
