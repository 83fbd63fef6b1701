"""Multilevel ROIAlign: TAO's one-sample-per-bin bilinear sampler, levels, clamping, gradients."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from tltk.mask_rcnn.roi_align import MultilevelRoiAlign, multilevel_roi_align, roi_levels  # noqa: E402


def _ramp(h: int, w: int, batch: int = 1) -> np.ndarray:
    """Channel 0 = 10*y + x, channel 1 = y (so bilinear samples are exact)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    one = np.stack([10 * y + x, y], axis=-1)
    return np.stack([one + 1000 * b for b in range(batch)])


def test_ramp_samples_by_hand() -> None:
    features = [_ramp(32, 32), _ramp(16, 16)]  # levels 2, 3 of a 128 px image
    # a small box -> level 2 (stride 4): level coordinates (2, 4, 6, 12)
    boxes = np.array([[[8, 16, 24, 48]]], np.float32)
    out = multilevel_roi_align(features, boxes, size=2, min_level=2).numpy()
    assert out.shape == (1, 1, 2, 2, 2)
    # sample rows 2 + 0.5*2 = 3 and 2 + 1.5*2 = 5; columns 4 + 0.5*4 = 6 and 4 + 1.5*4 = 10
    np.testing.assert_allclose(out[0, 0, :, :, 0], [[36, 40], [56, 60]], atol=1e-4)
    np.testing.assert_allclose(out[0, 0, :, :, 1], [[3, 3], [5, 5]], atol=1e-5)


def test_fractional_sample_interpolates() -> None:
    features = [_ramp(32, 32)]
    # level coordinates (1, 1, 2, 2), one bin: sample at (1.5, 1.5) -> 10*1.5 + 1.5
    out = multilevel_roi_align(features, np.array([[[4, 4, 8, 8]]], np.float32), size=1, min_level=2).numpy()
    assert out[0, 0, 0, 0, 0] == pytest.approx(16.5, abs=1e-4)


def test_samples_past_the_last_row_read_the_last_row() -> None:
    features = [_ramp(8, 8)]
    # level coordinates (6, 0, 8, 2): rows 6.5 and 7.5; 7.5 clamps to row 7 (no extrapolation)
    out = multilevel_roi_align(features, np.array([[[24, 0, 32, 8]]], np.float32), size=2, min_level=2).numpy()
    np.testing.assert_allclose(out[0, 0, :, 0, 1], [6.5, 7.0], atol=1e-5)


def test_level_rule() -> None:
    sides = np.array([10, 111, 112, 224, 447, 448, 1000, 5000], np.float32)
    boxes = np.stack([np.zeros_like(sides), np.zeros_like(sides), sides, sides], axis=-1)
    np.testing.assert_array_equal(roi_levels(boxes, 2, 6).numpy(), [2, 2, 3, 4, 4, 5, 6, 6])
    np.testing.assert_array_equal(roi_levels(boxes, 3, 5).numpy(), [3, 3, 3, 4, 4, 5, 5, 5])


def test_rois_read_their_level_and_their_image() -> None:
    feats = [np.full((2, 32, 32, 1), 2.0, np.float32), np.full((2, 16, 16, 1), 3.0, np.float32),
             np.full((2, 8, 8, 1), 4.0, np.float32)]
    for f in feats:
        f[1] += 100.0  # image 1 differs
    boxes = np.array([[[0, 0, 20, 20], [0, 0, 120, 120], [0, 0, 127, 127]]] * 2, np.float32)
    out = multilevel_roi_align(feats, boxes, size=3, min_level=2).numpy()
    # 20 px -> level 2, 120 px -> level 3, 127 px -> level 3 (floor(log2(127/224)) + 4 = 3)
    np.testing.assert_allclose(out[0, :, 1, 1, 0], [2, 3, 3])
    np.testing.assert_allclose(out[1, :, 1, 1, 0], [102, 103, 103])
    big = np.array([[[0, 0, 500, 500]]], np.float32)  # level 5, clamped to the top level 4
    np.testing.assert_allclose(multilevel_roi_align([f[:1] for f in feats], big, 2, 2).numpy()[0, 0, 0, 0], [4])


def test_gradient_reaches_the_sampled_pixels_only() -> None:
    feature = tf.Variable(_ramp(32, 32))
    with tf.GradientTape() as tape:
        out = multilevel_roi_align([feature], np.array([[[8, 16, 24, 48]]], np.float32), 2, 2)
        total = tf.reduce_sum(out[..., 0])
    grad = tf.convert_to_tensor(tape.gradient(total, feature)).numpy()[0, :, :, 0]
    # four integer samples (3, 6), (3, 10), (5, 6), (5, 10) get weight 1 each
    assert grad.sum() == pytest.approx(4.0)
    assert grad[3, 6] == pytest.approx(1.0) and grad[5, 10] == pytest.approx(1.0)


def test_layer_config_round_trip() -> None:
    layer = MultilevelRoiAlign(7, 2, name="multilevel_crop_resize")
    clone = MultilevelRoiAlign.from_config(layer.get_config())
    feats = [_ramp(32, 32), _ramp(16, 16)]
    boxes = np.array([[[8, 16, 24, 48], [0, 0, 127, 127]]], np.float32)
    np.testing.assert_array_equal(layer(feats, boxes).numpy(), clone(feats, boxes).numpy())
    assert clone.output_size == 7 and clone.min_level == 2
