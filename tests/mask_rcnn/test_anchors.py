"""Anchors: TAO's sizes, centres and (y, x, anchor) order, worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tltk.mask_rcnn.anchors import AnchorConfig, anchor_sizes, generate_anchors


def _cfg(**kw) -> AnchorConfig:
    base = dict(min_level=2, max_level=3, num_scales=1, aspect_ratios=[(1.0, 1.0), (1.4, 0.7)],
                anchor_scale=8.0, image_size=(16, 32))
    base.update(kw)
    return AnchorConfig(**base)


def test_shapes_and_first_anchors_by_hand() -> None:
    anchors = generate_anchors(_cfg())
    assert sorted(anchors) == [2, 3]
    assert anchors[2].shape == (4 * 8 * 2, 4) and anchors[2].dtype == np.float32
    assert anchors[3].shape == (2 * 4 * 2, 4)
    # level 2: stride 4, centre (2, 2), base 32 -> half 16
    np.testing.assert_allclose(anchors[2][0], [-14, -14, 18, 18])
    # (1.4, 0.7): width 44.8 (half 22.4), height 22.4 (half 11.2)
    np.testing.assert_allclose(anchors[2][1], [2 - 11.2, 2 - 22.4, 2 + 11.2, 2 + 22.4], rtol=1e-6)
    # next x cell: centre (2, 6)
    np.testing.assert_allclose(anchors[2][2], [-14, -10, 18, 22])
    # next row (y=1, x=0): index (1*8 + 0) * 2 = 16, centre (6, 2)
    np.testing.assert_allclose(anchors[2][16], [-10, -14, 22, 18])
    # level 3: stride 8, base 64, first centre (4, 4)
    np.testing.assert_allclose(anchors[3][0], [-28, -28, 36, 36])
    # last anchor of level 3: cell (1, 3) -> centre (12, 28), wide anchor half sizes (22.4, 44.8)
    np.testing.assert_allclose(anchors[3][-1], [12 - 22.4, 28 - 44.8, 12 + 22.4, 28 + 44.8], rtol=1e-6)


def test_order_matches_head_reshape() -> None:
    cfg = _cfg()
    anchors = generate_anchors(cfg)[2]
    h, w = cfg.feature_size(2)
    a = cfg.anchors_per_location
    # a head output [H, W, A*4] whose channel a*4+k holds coordinate k of anchor a at (y, x)
    grid = np.zeros((h, w, a * 4), np.float32)
    sizes = anchor_sizes(cfg, 2)
    for y in range(h):
        for x in range(w):
            for k in range(a):
                yc, xc = 2 + 4 * y, 2 + 4 * x
                hh, ww = sizes[k] / 2
                grid[y, x, 4 * k:4 * k + 4] = [yc - hh, xc - ww, yc + hh, xc + ww]
    np.testing.assert_allclose(grid.reshape(-1, 4), anchors, rtol=1e-6)


def test_octaves_outer_aspects_inner() -> None:
    cfg = _cfg(num_scales=2)
    sizes = anchor_sizes(cfg, 2)
    base1 = 32 * math.sqrt(2.0)
    np.testing.assert_allclose(sizes, [[32, 32], [22.4, 44.8], [base1, base1], [0.7 * base1, 1.4 * base1]])
    assert generate_anchors(cfg)[2].shape == (4 * 8 * 4, 4)


def test_tao_default_layout_count() -> None:
    cfg = AnchorConfig(2, 6, 1, [(1.0, 1.0), (1.4, 0.7), (0.7, 1.4)], 8.0, (832, 1344))
    anchors = generate_anchors(cfg)
    assert sum(v.shape[0] for v in anchors.values()) == 279_279
    assert anchors[6].shape[0] == 13 * 21 * 3
    # P6 square anchor: 8 * 64 = 512 px
    box = anchors[6][0]
    assert box[2] - box[0] == pytest.approx(512.0)


def test_rejects_size_not_divisible() -> None:
    with pytest.raises(ValueError, match="divisible"):
        generate_anchors(_cfg(image_size=(20, 32)))


def test_from_experiment_uses_proto_defaults() -> None:
    from tltk._proto import mask_rcnn_pb2 as pb

    exp = pb.Experiment()
    exp.data_config.image_size = "(128, 192)"
    cfg = AnchorConfig.from_experiment(exp)
    assert cfg.levels == [2, 3, 4, 5, 6]
    assert cfg.aspect_ratios == [(1.0, 1.0), (1.4, 0.7), (0.7, 1.4)]
    assert cfg.anchor_scale == 8.0 and cfg.image_size == (128, 192) and cfg.anchors_per_location == 3
