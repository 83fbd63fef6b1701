"""Rasterizer targets on 4x4 grids (64x64 input, stride 16), worked out by hand.

Sub-samples of output cell i sit at i + 0.125, 0.375, 0.625, 0.875.  For a circle of radius
0.5 centred on a grid corner, each of the four touching cells has 3 of its 16 samples inside
(offsets (0.125, 0.125), (0.125, 0.375), (0.375, 0.125)): c = 3/16.  For radius 1, a touching
cell has 13 of 16 inside.
"""

from __future__ import annotations

from types import SimpleNamespace as NS

import numpy as np
import pytest
import tensorflow as tf

from tltk.detectnet_v2.rasterizer import (
    ClassRasterParams,
    LossMaskParams,
    LossMaskRule,
    RasterizerParams,
    rasterize_loss_masks,
    rasterize_targets,
)
from tltk.errors import SpecError


def _params(radius=0.5, min_radius=0.0, deadzone=0.0, classes=("car",)) -> RasterizerParams:
    cfg = ClassRasterParams(0.5, 0.5, radius, radius, min_radius)
    return RasterizerParams(tuple(classes), tuple(cfg for _ in classes), deadzone, 64, 64)


def _run(boxes, classes, params):
    out = rasterize_targets(tf.constant(boxes, tf.float32), tf.constant(classes, tf.int32), params)
    return {k: v.numpy() for k, v in out.items()}


def test_one_box_coverage_and_bbox_targets():
    out = _run([[16, 16, 48, 48]], [0], _params())
    assert out["cov"].shape == (1, 4, 4) and out["bbox"].shape == (4, 4, 4)
    expect = np.zeros((4, 4))
    expect[1:3, 1:3] = 3 / 16
    np.testing.assert_allclose(out["cov"][0], expect, atol=1e-6)
    # 4 rx ry = 1 -> cov_norm = cov.
    np.testing.assert_allclose(out["cov_norm"][0], expect, atol=1e-6)
    # Cell (i=1, j=1): anchor (16.5, 16.5): L = T = 0.5/35, R = B = 31.5/35.
    np.testing.assert_allclose(out["bbox"][:, 1, 1], [0.5 / 35, 0.5 / 35, 0.9, 0.9], atol=1e-6)
    # Cell (i=2, j=1): anchor (32.5, 16.5).
    np.testing.assert_allclose(out["bbox"][:, 1, 2], [16.5 / 35, 0.5 / 35, 15.5 / 35, 0.9], atol=1e-6)
    # Cells outside the ellipse carry no bbox target.
    assert np.all(out["bbox"][:, 0, :] == 0) and np.all(out["bbox"][:, 3, :] == 0)


def test_radius_one_covers_13_of_16_samples():
    out = _run([[16, 16, 48, 48]], [0], _params(radius=1.0))
    np.testing.assert_allclose(out["cov"][0, 1:3, 1:3], 13 / 16, atol=1e-6)
    assert out["cov"][0, 0, 1] == 0.0
    # 4 rx ry = 4 -> cov_norm = cov / 4.
    np.testing.assert_allclose(out["cov_norm"][0, 1, 1], 13 / 64, atol=1e-6)


def test_min_radius_enlarges_tiny_box_keeping_aspect():
    # Output box (1, 1, 1.25, 1.25): half extent 0.125, radius max(0.0625, 0.1) = 0.1 -> min radius 1.
    # Circle r=1 at (1.125, 1.125): cell (1,1) offsets 0, .25, .5, .75 -> 15 of 16 inside.
    out = _run([[16, 16, 20, 20]], [0], _params(min_radius=1.0))
    np.testing.assert_allclose(out["cov"][0, 1, 1], 15 / 16, atol=1e-6)
    np.testing.assert_allclose(out["cov_norm"][0, 1, 1], 15 / 64, atol=1e-6)


def test_deadzone_lets_the_lower_box_clear_and_win():
    # A: (0,0,64,48) -> output centre (2, 1.5), radii (1, 0.75).  B: (16,32,48,64) -> centre (2, 3),
    # radius 0.5, deadzone radius (d=1) = half extent 1.  Cell (2,2): c_A = 2/16, a_B = 13/16 >= c_A,
    # so B clears it and writes c_B = 3/16 with its own bbox targets.  Cell (2,1): a_B = 0, A keeps
    # c_A = 14/16.
    params = _params(radius=0.5, deadzone=1.0)
    a = [0, 0, 64, 48]
    b = [16, 32, 48, 64]
    out = _run([a, b], [0, 0], params)
    np.testing.assert_allclose(out["cov"][0, 1, 2], 14 / 16, atol=1e-6)
    np.testing.assert_allclose(out["cov"][0, 2, 2], 3 / 16, atol=1e-6)
    np.testing.assert_allclose(out["bbox"][:, 2, 2], [16.5 / 35, 0.5 / 35, 15.5 / 35, 31.5 / 35], atol=1e-6)
    np.testing.assert_allclose(out["bbox"][:, 1, 2], [32.5 / 35, 16.5 / 35, 31.5 / 35, 31.5 / 35], atol=1e-6)
    # Drawing order comes from y2, not from the input order.
    swapped = _run([b, a], [0, 0], params)
    for key in out:
        np.testing.assert_array_equal(out[key], swapped[key])


def test_classes_have_independent_channels_in_tao_order():
    params = _params(classes=("car", "pedestrian"))
    out = _run([[16, 16, 48, 48]], [1], params)
    assert out["cov"].shape == (2, 4, 4) and out["bbox"].shape == (8, 4, 4)
    assert np.all(out["cov"][0] == 0) and np.all(out["bbox"][:4] == 0)
    np.testing.assert_allclose(out["cov"][1, 1, 1], 3 / 16, atol=1e-6)
    # Channel 4*c + k: class 1, k = 2 (R) is channel 6.
    np.testing.assert_allclose(out["bbox"][6, 1, 1], 0.9, atol=1e-6)


def test_no_boxes_gives_zero_targets():
    out = _run(np.zeros((0, 4)), np.zeros((0,)), _params())
    assert all(np.all(v == 0) for v in out.values())


def test_loss_mask_rule_zeroes_cells_of_selected_boxes_and_source_weight_scales():
    params = _params()
    boxes = tf.constant([[16, 16, 20, 20], [16, 16, 48, 48]], tf.float32)
    classes = tf.constant([0, 0])
    targets = rasterize_targets(boxes, classes, params)
    rule = LossMaskRule("bbox_dimensions", (0.0, 0.0, 10.0, 10.0))
    masks = rasterize_loss_masks(boxes, classes, tf.constant(["car", "car"]), targets["cov"], params,
                                 LossMaskParams((rule,), mask_multiplier=0.0), source_weight=2.0)
    expect = np.full((1, 4, 4), 2.0)
    expect[0, 1, 1] = 0.0  # the 4x4 px box only overlaps cell (1, 1)
    np.testing.assert_allclose(masks["cov_mask"].numpy(), expect)
    np.testing.assert_allclose(masks["bbox_mask"].numpy(), expect)
    # preserve_ground_truth keeps cells with coverage; objective_names restricts the masked objective.
    # Box (0,0,64,64): coverage circle r=1 at (2,2) covers cells 1..2 only; the rim cells get 0.
    big = tf.constant([[0, 0, 64, 64]], tf.float32)
    cov = rasterize_targets(big, tf.constant([0]), params)["cov"]
    rule = LossMaskRule("source_class", (), ("car",), (), ("bbox",))
    keep = rasterize_loss_masks(big, tf.constant([0]), tf.constant(["CAR"]), cov, params,
                                LossMaskParams((rule,), 0.0, True))
    assert np.all(keep["cov_mask"].numpy() == 1.0)
    expect = np.zeros((4, 4))
    expect[1:3, 1:3] = 1.0
    np.testing.assert_array_equal(keep["bbox_mask"].numpy()[0], expect)
    # A source class that does not match selects nothing.
    none = rasterize_loss_masks(big, tf.constant([0]), tf.constant(["van"]), cov, params,
                                LossMaskParams((rule,), 0.0, True))
    assert np.all(none["bbox_mask"].numpy() == 1.0)


def test_from_config_requires_every_class():
    cfg = NS(target_class_config={"car": NS(cov_center_x=0.5, cov_center_y=0.5, cov_radius_x=0.4,
                                            cov_radius_y=0.4, bbox_min_radius=1.0)}, deadzone_radius=0.67)
    p = RasterizerParams.from_config(cfg, ["Car"], 960, 544)
    assert (p.grid_width, p.grid_height) == (60, 34) and p.classes[0].cov_radius_x == 0.4
    with pytest.raises(SpecError, match="no entry for target class 'pedestrian'"):
        RasterizerParams.from_config(cfg, ["car", "pedestrian"], 960, 544)


def test_unmapped_dontcare_region_masks_rule_classes():
    params = _params(classes=("car", "pedestrian"))
    boxes = tf.constant([[16, 16, 48, 48], [0, 0, 16, 16]], tf.float32)
    classes = tf.constant([-1, 0])  # a dontcare region (unmapped) and a car
    sources = tf.constant(["dontcare", "car"])
    cov = rasterize_targets(boxes[1:], classes[1:], params)["cov"]
    region = np.zeros((4, 4))
    region[1:3, 1:3] = 1.0
    rule = LossMaskRule("source_class", (), ("dontcare",))
    masks = rasterize_loss_masks(boxes, classes, sources, cov, params, LossMaskParams((rule,), 0.0))
    for c in range(2):  # no target_class_names: every class channel is masked under the region
        np.testing.assert_array_equal(masks["cov_mask"].numpy()[c], 1.0 - region)
    only_ped = LossMaskRule("source_class", (), ("dontcare",), (1,))
    masks = rasterize_loss_masks(boxes, classes, sources, cov, params, LossMaskParams((only_ped,), 0.0))
    np.testing.assert_array_equal(masks["cov_mask"].numpy()[0], np.ones((4, 4)))
    np.testing.assert_array_equal(masks["cov_mask"].numpy()[1], 1.0 - region)
    # A size filter never selects unmapped labels.
    size = LossMaskRule("bbox_dimensions", (0.0, 0.0, 100.0, 100.0))
    masks = rasterize_loss_masks(boxes, classes, sources, cov, params, LossMaskParams((size,), 0.0))
    expect_car = np.ones((4, 4))
    expect_car[0, 0] = 0.0
    np.testing.assert_array_equal(masks["cov_mask"].numpy()[0], expect_car)
    np.testing.assert_array_equal(masks["cov_mask"].numpy()[1], np.ones((4, 4)))
