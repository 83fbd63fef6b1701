"""ROI sampler (counts, fg_fraction, padding flags, targets) and mask targets, by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from tltk.mask_rcnn.sampling import RoiSampler, mask_targets, sample_rois  # noqa: E402

GT = np.array([[[0, 0, 20, 20], [40, 40, 80, 80], [-1, -1, -1, -1]]], np.float32)
GT_CLASSES = np.array([[1, 2, -1]], np.int32)
KW = dict(fg_fraction=0.25, fg_thresh=0.5, bg_thresh_hi=0.5, bg_thresh_lo=0.0, bbox_reg_weights=(10.0, 10.0, 5.0, 5.0))


def _sample(rois: np.ndarray, scores: np.ndarray, size: int, seed: int = 0, gt=GT, gt_classes=GT_CLASSES, **kw):
    n = rois.shape[1] + gt.shape[1]
    random = np.random.default_rng(seed).random((rois.shape[0], n)).astype(np.float32)
    args = dict(KW)
    args.update(kw)
    out = sample_rois(rois, scores, gt, gt_classes, random, batch_size_per_im=size, **args)
    return {k: v.numpy() for k, v in out.items()}


def test_labels_targets_and_padding_flags() -> None:
    rois = np.array([[[0, 0, 20, 22],      # IoU 20*20/(20*22) = 0.909 with gt 0 -> fg class 1
                      [40, 40, 80, 100],   # IoU 40*40/(40*60) = 0.667 with gt 1 -> fg class 2
                      [0, 0, 20, 60],      # IoU 400/1200 = 0.333 -> bg
                      [100, 100, 120, 120],  # IoU 0 -> bg
                      [0, 0, 0, 0]]], np.float32)  # empty proposal slot (score 0) -> not sampled as real
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.0]], np.float32)
    out = _sample(rois, scores, size=8)  # 5 proposals + 3 gt rows = 8 candidates
    assert out["rois"].shape == (1, 8, 4)
    # 4 fg candidates (2 proposals + 2 gt boxes) but fg_fraction caps them at floor(0.25 * 8) = 2
    assert out["fg"].sum() == 2
    assert out["fg"][0, :2].tolist() == [1.0, 1.0]  # foreground first
    # real samples: 2 fg + 2 bg (the two bg proposals); the other 4 slots are fillers
    assert out["valid"].sum() == 4
    fg_rows = out["fg"][0] == 1
    assert set(out["class_targets"][0][fg_rows].tolist()) <= {1, 2}
    assert np.all(out["class_targets"][0][~fg_rows] == 0)
    assert np.all(out["box_targets"][0][~fg_rows] == 0)
    # each fg target re-encodes its matched gt box against the roi
    for i in np.where(fg_rows)[0]:
        roi, gt = out["rois"][0, i], out["matched_gt_boxes"][0, i]
        h_r, w_r = roi[2] - roi[0] + 1, roi[3] - roi[1] + 1
        h_g, w_g = gt[2] - gt[0] + 1, gt[3] - gt[1] + 1
        expect = [10 * ((gt[0] + h_g / 2) - (roi[0] + h_r / 2)) / h_r, 10 * ((gt[1] + w_g / 2) - (roi[1] + w_r / 2)) / w_r,
                  5 * math.log(h_g / h_r), 5 * math.log(w_g / w_r)]
        np.testing.assert_allclose(out["box_targets"][0, i], expect, rtol=1e-5, atol=1e-5)


def test_fg_fraction_respected_with_many_positives() -> None:
    rng = np.random.default_rng(1)
    jitter = rng.uniform(-1, 1, (1, 40, 4)).astype(np.float32)
    rois = np.concatenate([np.tile(GT[:, :1], (1, 40, 1)) + jitter,            # 40 fg
                           np.tile([[[100, 100, 127, 127]]], (1, 40, 1))], 1).astype(np.float32)  # 40 bg
    scores = np.full((1, 80), 0.5, np.float32)
    for seed in range(3):
        out = _sample(rois, scores, size=16, seed=seed)
        assert out["fg"].sum() == 4  # floor(0.25 * 16)
        assert out["valid"].sum() == 16  # enough background to fill every slot
        assert np.all(out["fg"][0, :4] == 1)


def test_no_ground_truth_gives_only_background() -> None:
    rois = np.array([[[0, 0, 10, 10], [5, 5, 30, 30]]], np.float32)
    out = _sample(rois, np.array([[0.9, 0.8]], np.float32), size=4, gt=-np.ones((1, 2, 4), np.float32),
                  gt_classes=-np.ones((1, 2), np.int32))
    assert out["fg"].sum() == 0 and out["valid"].sum() == 2 and np.all(out["class_targets"] == 0)


def test_mask_targets_by_hand() -> None:
    g = 16
    crop = np.zeros((1, 1, g + 4, g + 4), np.float32)
    crop[0, 0, 2:18, 2:10] = 1.0  # left half of the object
    gt = np.array([[[0, 0, 16, 16]]], np.float32)
    index = np.zeros((1, 1), np.int32)
    # roi == gt box: samples at rows/cols 2 + (i + 0.5) * 4 = 4, 8, 12, 16 of the padded crop
    same = mask_targets(gt, gt, index, crop, g, 4).numpy()[0, 0]
    np.testing.assert_array_equal(same, [[1, 1, 0, 0]] * 4)
    # roi entirely below the object: reads the zero border only
    below = mask_targets(np.array([[[16, 0, 32, 16]]], np.float32), gt, index, crop, g, 4).numpy()
    assert below.sum() == 0
    # roi = top-left quarter of the object: all ones (left half, top half)
    quarter = mask_targets(np.array([[[0, 0, 8, 8]]], np.float32), gt, index, crop, g, 4).numpy()
    np.testing.assert_array_equal(quarter[0, 0], np.ones((4, 4)))


def test_layer_selects_foreground_mask_rois() -> None:
    layer = RoiSampler(8, 0.25, 0.5, 0.5, 0.0, (10, 10, 5, 5), mask_rois=2, gt_mask_size=4, mrcnn_resolution=4, seed=3)
    rois = np.array([[[0, 0, 20, 22], [100, 100, 120, 120], [0, 0, 0, 0]]], np.float32)
    scores = np.array([[0.9, 0.5, 0.0]], np.float32)
    masks = np.ones((1, 3, 8, 8), np.float32)
    out = layer(rois, scores, GT, GT_CLASSES, masks)
    assert out["mask_rois"].shape == (1, 2, 4) and out["mask_targets"].shape == (1, 2, 4, 4)
    assert out["mask_weights"].numpy().tolist() == [[1.0, 1.0]]
    assert RoiSampler.from_config(layer.get_config()).get_config() == layer.get_config()
