"""Proposals: per-level top-k, decode, clip, NMS and global top-k with static shapes."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from tltk.mask_rcnn.anchors import AnchorConfig  # noqa: E402
from tltk.mask_rcnn.proposals import MultilevelProposals, proposal_counts  # noqa: E402


def _layer(nms: float, post: int = 6, pre: int = 4, min_size: float = 0.0) -> MultilevelProposals:
    # 16x16 image, levels 2..3, one square anchor of 2 strides: level 2 anchors are 8 px wide
    return MultilevelProposals(min_level=2, max_level=3, num_scales=1, aspect_ratios=[(1.0, 1.0)], anchor_scale=2.0,
                               image_size=(16, 16), pre_nms_topn=pre, post_nms_topn=post, nms_threshold=nms,
                               min_size=min_size)


def _inputs() -> tuple[list[np.ndarray], list[np.ndarray]]:
    s2 = np.full((1, 4, 4, 1), -10.0, np.float32)
    s2[0, 0, 0, 0] = 3.0  # anchor centre (2, 2) -> (-2, -2, 6, 6), clipped (0, 0, 6, 6)
    s2[0, 0, 1, 0] = 2.0  # anchor centre (2, 6) -> (-2, 2, 6, 10), clipped (0, 2, 6, 10)
    s3 = np.full((1, 2, 2, 1), -10.0, np.float32)
    s3[0, 1, 1, 0] = 1.0  # level 3: centre (12, 12), 16 px -> (4, 4, 20, 20), clipped (4, 4, 15, 15)
    boxes = [np.zeros((1, 4, 4, 4), np.float32), np.zeros((1, 2, 2, 4), np.float32)]
    return [s2, s3], boxes


def test_counts() -> None:
    cfg = AnchorConfig(2, 3, 1, [(1.0, 1.0)], 2.0, (16, 16))
    assert proposal_counts(cfg, 4, 6) == ([4, 4], [4, 4], 6)
    assert proposal_counts(cfg, 100, 3) == ([16, 4], [3, 3], 3)
    assert _layer(0.5).num_proposals == 6


def test_nms_and_clipping_by_hand() -> None:
    scores, boxes = _inputs()
    sig = 1 / (1 + np.exp(-np.array([3.0, 2.0, 1.0])))
    # the two level-2 boxes overlap with IoU (6*4) / (36 + 48 - 24) = 0.4
    rois, out_scores = (t.numpy() for t in _layer(0.5)(scores, boxes))
    assert rois.shape == (1, 6, 4) and out_scores.shape == (1, 6)
    np.testing.assert_allclose(out_scores[0, :3], sig, rtol=1e-5)
    np.testing.assert_allclose(rois[0, :3], [[0, 0, 6, 6], [0, 2, 6, 10], [4, 4, 15, 15]], atol=1e-4)
    # the other candidates of the two levels have sigmoid(-10) scores; nothing is empty here
    assert np.all(out_scores[0, 3:] > 0)
    rois, out_scores = (t.numpy() for t in _layer(0.3)(scores, boxes))
    np.testing.assert_allclose(out_scores[0, :2], sig[[0, 2]], rtol=1e-5)  # second box suppressed
    np.testing.assert_allclose(rois[0, 1], [4, 4, 15, 15], atol=1e-4)
    assert np.all(np.diff(out_scores[0]) <= 0)


def test_empty_slots_are_zero() -> None:
    scores, boxes = _inputs()
    # NMS at IoU 0 keeps only disjoint boxes: fewer than R survive -> zero rows at the end
    rois, out_scores = (t.numpy() for t in _layer(0.0, post=8, pre=16)(scores, boxes))
    assert rois.shape == (1, 8, 4)
    empty = out_scores[0] == 0
    assert empty.any() and np.all(rois[0][empty] == 0) and np.all(empty[np.argmax(empty):])


def test_image_info_clips_to_the_scaled_image() -> None:
    scores, boxes = _inputs()
    info = np.array([[8.0, 12.0, 1.0, 8.0, 12.0]], np.float32)
    rois = _layer(0.5)(scores, boxes, info)[0].numpy()
    assert rois[..., [0, 2]].max() <= 7.0 and rois[..., [1, 3]].max() <= 11.0


def test_min_size_drops_small_boxes() -> None:
    scores, boxes = _inputs()
    # heights/widths (+1): 7x7 and 7x9 at level 2, 12x12 at level 3 -> only the last passes 10 px
    out_scores = _layer(0.5, min_size=10.0)(scores, boxes)[1].numpy()
    assert out_scores[0, 0] == pytest.approx(1 / (1 + np.exp(-1.0)), rel=1e-5)


def test_batch_images_are_independent_and_config_round_trips() -> None:
    scores, boxes = _inputs()
    flipped = [s.copy() for s in scores]
    flipped[0][0, 0, 0, 0], flipped[0][0, 0, 1, 0] = 2.0, 3.0
    batch_scores = [np.concatenate([a, b]) for a, b in zip(scores, flipped, strict=True)]
    batch_boxes = [np.concatenate([b, b]) for b in boxes]
    layer = _layer(0.3)
    rois = layer(batch_scores, batch_boxes)[0].numpy()
    np.testing.assert_allclose(rois[0, 0], [0, 0, 6, 6], atol=1e-4)
    np.testing.assert_allclose(rois[1, 0], [0, 2, 6, 10], atol=1e-4)
    clone = MultilevelProposals.from_config(layer.get_config())
    np.testing.assert_array_equal(clone(batch_scores, batch_boxes)[0].numpy(), rois)
