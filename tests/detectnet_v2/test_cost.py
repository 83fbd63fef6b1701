"""DetectNet_v2 cost function: values worked out by hand."""

from __future__ import annotations

import math
from types import SimpleNamespace as NS

import numpy as np
import pytest

from tltk.detectnet_v2.cost import CostParams, DetectNetCost, autoweights


def _config(autoweighting=False, max_w=0.9999, min_w=0.0001, warmup=0):
    def tc(name, cw, fg):
        return NS(name=name, class_weight=cw, coverage_foreground_weight=fg,
                  objectives=[NS(name="cov", initial_weight=1.0, weight_target=1.0),
                              NS(name="bbox", initial_weight=10.0, weight_target=10.0)])
    return NS(target_classes=[tc("car", 1.0, 0.05), tc("person", 3.0, 0.05)],
              enable_autoweighting=autoweighting, max_objective_weight=max_w, min_objective_weight=min_w,
              autoweighting_warmup_steps=warmup)


def test_params_from_config():
    p = CostParams.from_config(_config())
    assert p.class_names == ("car", "person")
    np.testing.assert_allclose(p.normalised_class_weights(), [0.25, 0.75])
    np.testing.assert_allclose(p.initial_objective_weights(), [[1 / 11, 10 / 11]] * 2, rtol=1e-6)


def test_costs_by_hand():
    cost = DetectNetCost(CostParams.from_config(_config()))
    n, c, h, w = 1, 2, 1, 2
    cov_t = np.zeros((n, c, h, w), np.float32)
    cov_t[0, 0, 0, 0] = 1.0                      # car present in cell (0,0)
    cov_pred = np.full((n, c, h, w), 0.5, np.float32)
    cov_norm = np.zeros_like(cov_t)
    cov_norm[0, 0, 0, 0] = 0.25
    bbox_t = np.zeros((n, 4 * c, h, w), np.float32)
    bbox_t[0, 0:4, 0, 0] = [1.0, 2.0, 3.0, 4.0]
    bbox_pred = np.zeros_like(bbox_t)
    targets = {"cov": cov_t, "cov_norm": cov_norm, "bbox": bbox_t}
    costs = cost.per_class_costs(cov_pred, bbox_pred, targets).numpy()
    bce = -math.log(0.5 + 1e-5)
    # car: foreground cell weight 0.05, background cell weight 0.95, mean over 2 cells
    assert costs[0, 0] == pytest.approx((0.05 * bce + 0.95 * bce) / 2, rel=1e-5)
    # person: both cells background
    assert costs[1, 0] == pytest.approx(0.95 * bce, rel=1e-5)
    # car bbox: 0.25 * (1+2+3+4) / (4 channels * 2 cells)
    assert costs[0, 1] == pytest.approx(0.25 * 10 / 8, rel=1e-6)
    assert costs[1, 1] == pytest.approx(0.0)
    total, comps = cost(cov_pred, bbox_pred, targets)
    expected = (0.25 * (costs[0, 0] / 11 + costs[0, 1] * 10 / 11) + 0.75 * (costs[1, 0] / 11 + costs[1, 1] * 10 / 11))
    assert float(total) == pytest.approx(expected, rel=1e-5)
    assert float(comps["cost_car_bbox"]) == pytest.approx(costs[0, 1])


def test_loss_mask_zeroes_cells():
    cost = DetectNetCost(CostParams.from_config(_config()))
    cov_t = np.zeros((1, 2, 1, 2), np.float32)
    pred = np.full_like(cov_t, 0.9)
    mask = np.zeros_like(cov_t)
    targets = {"cov": cov_t, "cov_norm": cov_t, "bbox": np.zeros((1, 8, 1, 2), np.float32), "loss_mask": mask}
    assert float(np.abs(cost.per_class_costs(pred, np.ones((1, 8, 1, 2), np.float32), targets).numpy()).sum()) == 0.0


def test_autoweights_by_hand():
    sums = np.array([[2.0, 8.0], [0.0, 0.0]])
    targets = np.array([[1.0, 10.0], [1.0, 10.0]])
    prev = np.array([[0.3, 0.7], [0.4, 0.6]], np.float32)
    new = autoweights(sums, targets, prev, 0.0001, 0.9999)
    # u = (0.5, 1.25) -> (0.2857, 0.7143); class 2 has no costs: keeps previous weights
    np.testing.assert_allclose(new[0], [0.5 / 1.75, 1.25 / 1.75], rtol=1e-6)
    np.testing.assert_allclose(new[1], prev[1])
    assert np.all(autoweights(sums, targets, prev, 0.4, 0.6)[0] == np.float32([0.4, 0.6]))


def test_end_epoch_applies_and_resets():
    cost = DetectNetCost(CostParams.from_config(_config(autoweighting=True)))
    cov_t = np.zeros((1, 2, 1, 2), np.float32)
    targets = {"cov": cov_t, "cov_norm": cov_t + 0.5, "bbox": np.zeros((1, 8, 1, 2), np.float32)}
    cost(np.full_like(cov_t, 0.5), np.ones((1, 8, 1, 2), np.float32), targets)
    weights = cost.end_epoch(1)
    # clamped to [0.0001, 0.9999], the weights stay a proper distribution
    np.testing.assert_allclose(weights.sum(axis=1), [1.0, 1.0], rtol=1e-5)
    assert np.all((weights >= 0.0001) & (weights <= 0.9999))
    assert float(np.abs(cost.epoch_sums.numpy()).sum()) == 0.0
    state = cost.get_state()
    fresh = DetectNetCost(CostParams.from_config(_config(autoweighting=True)))
    fresh.set_state(state)
    np.testing.assert_allclose(fresh.objective_weights.numpy(), weights)


def test_autoweighting_warmup_keeps_the_initial_weights_then_applies_tao_arithmetic():
    # 40 steps per epoch, warm-up 100 steps: epochs 1 and 2 (40, 80 steps) keep the initial weights
    cost = DetectNetCost(CostParams.from_config(_config(autoweighting=True, warmup=100)))
    cov_t = np.zeros((1, 2, 1, 2), np.float32)
    cov_t[0, :, 0, 0] = 1.0
    targets = {"cov": cov_t, "cov_norm": cov_t * 0.5, "bbox": np.zeros((1, 8, 1, 2), np.float32)}
    pred_cov, pred_bbox = np.full_like(cov_t, 0.5), np.full((1, 8, 1, 2), 0.2, np.float32)
    initial = np.array([[1 / 11, 10 / 11]] * 2, np.float32)
    for steps in (40, 80):
        cost(pred_cov, pred_bbox, targets)
        np.testing.assert_allclose(cost.end_epoch(steps), initial, rtol=1e-6)
        assert float(np.abs(cost.epoch_sums.numpy()).sum()) == 0.0   # warm-up sums are dropped
    cost(pred_cov, pred_bbox, targets)
    weights = cost.end_epoch(120)
    # epoch 3's sums alone: cov = (0.05 + 0.95) ln2 / 2 (one foreground, one background cell),
    # bbox = 0.5 * 0.2 * 4 / 8 = 0.05; u = (1 / cov, 10 / 0.05), w = u / sum(u)
    cov_cost = (0.05 + 0.95) * -math.log(0.5 + 1e-5) / 2
    u = np.array([1 / cov_cost, 10 / 0.05])
    np.testing.assert_allclose(weights, [u / u.sum()] * 2, rtol=1e-5)
