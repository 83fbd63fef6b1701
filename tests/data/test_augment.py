"""Box/image agreement after every spatial transform, colour maths, parameter validation.

Each agreement test draws a filled rectangle (value 1 on black) whose pixels are exactly the
box ``(x1, y1, x2, y2)``, transforms image and box with the same matrix, and checks that the
transformed box tightly encloses the pixels that are still bright (> 0.75, so the 0.5 fill
and half-covered edge pixels do not count).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from tltk.data import augment as A


def _rect_image(width: int, height: int, box: tuple[int, int, int, int], channels: int = 3) -> np.ndarray:
    img = np.zeros((height, width, channels), np.float32)
    x1, y1, x2, y2 = box
    img[y1:y2, x1:x2] = 1.0
    return img


def _pixel_extent(image: np.ndarray) -> tuple[int, int, int, int]:
    mask = image[..., 0] > 0.75
    ys, xs = np.nonzero(mask)
    assert xs.size, "rectangle vanished"
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _check_agreement(image: np.ndarray, box: np.ndarray, tol: float) -> None:
    extent = np.array(_pixel_extent(image), np.float32)
    np.testing.assert_allclose(box, extent, atol=tol, err_msg=f"box {box} vs pixels {extent}")


def _warp_and_map(img: np.ndarray, box: tuple[int, ...], matrix: tf.Tensor, out_h: int, out_w: int):
    warped = A.warp_image(tf.constant(img), matrix, out_h, out_w).numpy()
    mapped = A.transform_boxes(tf.constant([box], tf.float32), matrix).numpy()[0]
    return warped, mapped


W, H = 96, 64
BOX = (20, 12, 52, 40)


@pytest.mark.parametrize("name,matrix,tol", [
    ("hflip", A.flip_matrix(W, H, True, False), 0.0),
    ("vflip", A.flip_matrix(W, H, False, True), 0.0),
    ("hvflip", A.flip_matrix(W, H, True, True), 0.0),
    ("translate", A.translation_matrix(7.0, -5.0), 0.0),
    ("zoom_out", A.zoom_matrix(2.0, 10.0, 6.0), 1.0),
    ("zoom_in", A.zoom_matrix(0.75, -8.0, -4.0), 1.0),
    ("rotate", A.rotation_matrix(0.3, W, H), 2.0),
    ("rotate_neg", A.rotation_matrix(-0.5, W, H), 2.0),
])
def test_each_spatial_transform_keeps_box_on_its_pixels(name, matrix, tol):
    img = _rect_image(W, H, BOX)
    warped, mapped = _warp_and_map(img, BOX, matrix, H, W)
    _check_agreement(warped, mapped, tol)


def test_hflip_numbers_by_hand():
    # x -> 96 - x: box (20, 12, 52, 40) becomes (44, 12, 76, 40).
    mapped = A.transform_boxes(tf.constant([BOX], tf.float32), A.flip_matrix(W, H, True, False)).numpy()[0]
    np.testing.assert_allclose(mapped, [44, 12, 76, 40], atol=1e-4)
    # Zoom out by 2 placed at (10, 6): output = source / 2 + (10, 6).
    mapped = A.transform_boxes(tf.constant([BOX], tf.float32), A.zoom_matrix(2.0, 10.0, 6.0)).numpy()[0]
    np.testing.assert_allclose(mapped, [20, 12, 36, 26], atol=1e-4)
    # Translation samples p + t, so content moves by -t.
    mapped = A.transform_boxes(tf.constant([BOX], tf.float32), A.translation_matrix(7.0, -5.0)).numpy()[0]
    np.testing.assert_allclose(mapped, [13, 17, 45, 45], atol=1e-4)


def test_rotation_box_is_bounding_box_of_rotated_corners():
    theta = 0.3
    mapped = A.transform_boxes(tf.constant([BOX], tf.float32), A.rotation_matrix(theta, W, H)).numpy()[0]
    # Rotating the content by -theta about (48, 32): corner (x, y) -> c + R(-theta)(p - c).
    c, s = math.cos(theta), math.sin(theta)
    corners = [(20, 12), (52, 12), (52, 40), (20, 40)]
    pts = [(48 + c * (x - 48) + s * (y - 32), 32 - s * (x - 48) + c * (y - 32)) for x, y in corners]
    expect = [min(p[0] for p in pts), min(p[1] for p in pts), max(p[0] for p in pts), max(p[1] for p in pts)]
    np.testing.assert_allclose(mapped, expect, atol=1e-3)


def _params(**kw) -> A.AugmentationParams:
    pre = A.PreprocessingParams(output_width=kw.pop("out_w", W), output_height=kw.pop("out_h", H),
                                **{k: kw.pop(k) for k in list(kw) if k in A.PreprocessingParams.__dataclass_fields__})
    spatial = A.SpatialAugmentationParams(**{k: kw.pop(k) for k in list(kw)
                                             if k in A.SpatialAugmentationParams.__dataclass_fields__})
    color = A.ColorAugmentationParams(**kw)
    return A.AugmentationParams(pre, spatial, color)


def test_crop_then_scale_moves_box_with_pixels():
    img = _rect_image(200, 120, (60, 40, 100, 80))
    params = _params(crop_left=40, crop_top=20, crop_right=88, crop_bottom=52, scale_width=2.0, scale_height=2.0)
    out = A.augment_frame(tf.constant(img), tf.constant([[60, 40, 100, 80]], tf.float32), params, training=False)
    # Crop offset (40, 20), then x2: box -> ((60-40)*2, (40-20)*2, ...) = (40, 40, 120, 80) clipped to
    # the visible canvas min(48*2, 96) x min(32*2, 64) = 96 x 64.
    np.testing.assert_allclose(out.boxes.numpy()[0], [40, 40, 96, 64], atol=1e-4)
    _check_agreement(out.image.numpy(), out.boxes.numpy()[0], 1.0)


def test_auto_resize_scales_box_and_image_together():
    img = _rect_image(192, 96, (40, 30, 100, 60))
    params = _params(enable_auto_resize=True)
    out = A.augment_frame(tf.constant(img), tf.constant([[40, 30, 100, 60]], tf.float32), params, training=False)
    # x * 96/192 = x/2, y * 64/96 = 2y/3.
    np.testing.assert_allclose(out.boxes.numpy()[0], [20, 20, 50, 40], atol=1e-4)
    _check_agreement(out.image.numpy(), out.boxes.numpy()[0], 1.0)


def test_small_image_is_zero_padded_right_and_bottom_and_large_one_clipped():
    img = np.full((40, 60, 3), 0.8, np.float32)
    out = A.augment_frame(tf.constant(img), tf.zeros([0, 4]), _params(), training=False).image.numpy()
    assert out.shape == (H, W, 3)
    np.testing.assert_allclose(out[:40, :60], 0.8, atol=1e-5)
    assert np.all(out[40:] == 0.0) and np.all(out[:, 60:] == 0.0)
    big = _rect_image(150, 100, (80, 50, 140, 90))
    res = A.augment_frame(tf.constant(big), tf.constant([[80, 50, 140, 90]], tf.float32), _params(), training=False)
    # Clipped to the output window 96 x 64.
    np.testing.assert_allclose(res.boxes.numpy()[0], [80, 50, 96, 64], atol=1e-4)
    assert bool(res.keep.numpy()[0])


def test_min_bbox_filter_and_boxes_leaving_the_image_are_dropped():
    boxes = tf.constant([[10, 10, 14, 30], [10, 10, 40, 30], [200, 10, 240, 30], [5, 5, 5.5, 9]], tf.float32)
    img = np.zeros((H, W, 3), np.float32)
    out = A.augment_frame(tf.constant(img), boxes, _params(min_bbox_width=5.0), training=False)
    # 4 px wide < 5: dropped; normal: kept; outside the image: no area left; 0.5 px: TAO's < 1 px rule.
    assert out.keep.numpy().tolist() == [False, True, False, False]


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_random_augmentation_with_everything_on_keeps_agreement(seed):
    img = _rect_image(W, H, BOX)
    params = _params(hflip_probability=0.5, vflip_probability=0.5, zoom_min=0.8, zoom_max=1.3, translate_max_x=8,
                     translate_max_y=8, rotate_rad_max=0.25, rotate_probability=1.0, color_shift_stddev=0.0,
                     hue_rotation_max=0.0, saturation_shift_max=0.0, contrast_scale_max=0.0)
    out = A.augment_frame(tf.constant(img), tf.constant([BOX], tf.float32), params, training=True,
                          seed=tf.constant([seed, 99], tf.int64))
    box = out.boxes.numpy()[0]
    _check_agreement(out.image.numpy(), box, 2.0)


def test_random_augmentation_is_deterministic_per_seed():
    img = np.random.default_rng(0).random((H, W, 3)).astype(np.float32)
    params = _params(hflip_probability=0.5, zoom_min=0.8, zoom_max=1.2, translate_max_x=4, translate_max_y=4,
                     rotate_rad_max=0.2, hue_rotation_max=20.0, saturation_shift_max=0.2, contrast_scale_max=0.1,
                     color_shift_stddev=0.05)
    box = tf.constant([BOX], tf.float32)
    a = A.augment_frame(tf.constant(img), box, params, True, tf.constant([5, 6]))
    b = A.augment_frame(tf.constant(img), box, params, True, tf.constant([5, 6]))
    c = A.augment_frame(tf.constant(img), box, params, True, tf.constant([5, 7]))
    np.testing.assert_array_equal(a.image.numpy(), b.image.numpy())
    np.testing.assert_array_equal(a.boxes.numpy(), b.boxes.numpy())
    assert not np.array_equal(a.image.numpy(), c.image.numpy())
    assert float(a.image.numpy().min()) >= 0.0 and float(a.image.numpy().max()) <= 1.0


def test_translation_draws_integers_within_range():
    params = A.SpatialAugmentationParams(translate_max_x=3, translate_max_y=2)
    seen_x, seen_y = set(), set()
    for s in range(60):
        m = A.random_spatial_matrix(tf.constant([s, 1]), W, H, params).numpy()
        seen_x.add(float(m[0, 2]))
        seen_y.add(float(m[1, 2]))
    assert seen_x == {-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0}
    assert seen_y == {-2.0, -1.0, 0.0, 1.0, 2.0}


def test_hue_saturation_identity_and_gray_invariance():
    np.testing.assert_allclose(A.hue_saturation_matrix(0.0, 1.0).numpy(), np.eye(3), atol=1e-6)
    m = A.hue_saturation_matrix(40.0, 0.7).numpy()
    gray = m @ np.array([0.4, 0.4, 0.4])
    np.testing.assert_allclose(gray, 0.4, atol=2e-3)
    # Saturation 0 gives pure luma: R=1 -> 0.299 in every channel.
    np.testing.assert_allclose(A.hue_saturation_matrix(0.0, 0.0).numpy() @ [1.0, 0.0, 0.0], [0.299] * 3, atol=1e-6)


def test_contrast_only_color_transform_pivots_on_center():
    params = A.ColorAugmentationParams(contrast_scale_max=0.4, contrast_center=0.5)
    matrix, offset = A.random_color_transform(tf.constant([3, 4]), params)
    m, o = matrix.numpy(), offset.numpy()
    c = m[0, 0] - 1.0
    assert c != 0.0 and abs(c) <= 0.4 + 1e-6  # truncated at 2 sigma = contrast_scale_max
    np.testing.assert_allclose(m, np.eye(3) * (1 + c), atol=1e-6)
    np.testing.assert_allclose(o, [-c * 0.5] * 3, atol=1e-6)
    # x' = x + c (x - 0.5): the centre value is a fixed point.
    out = A.apply_color_transform(tf.fill([1, 1, 3], 0.5), matrix, offset).numpy()
    np.testing.assert_allclose(out, 0.5, atol=1e-6)


def test_params_from_config_take_the_proto_defaults():
    from google.protobuf import text_format

    from tltk._proto import detectnet_v2_pb2 as pb

    cfg = text_format.Parse("preprocessing { output_image_width: 960 output_image_height: 544 } "
                            "spatial_augmentation { zoom_min: 0.5 zoom_max: 1.5 rotate_rad_max: 0.1 }",
                            pb.AugmentationConfig())
    p = A.AugmentationParams.from_config(cfg)
    assert (p.preprocessing.output_width, p.preprocessing.output_height, p.preprocessing.output_channels) == (960, 544, 3)
    assert (p.spatial.zoom_min, p.spatial.zoom_max) == (0.5, 1.5)
    # Unset fields and the absent colour block read as the proto's documented defaults.
    assert p.spatial.hflip_probability == 0.5 and p.spatial.rotate_probability == 1.0
    assert (p.spatial.translate_max_x, p.spatial.translate_max_y) == (8, 8)
    assert p.color.hue_rotation_max == 25.0 and p.color.contrast_center == 0.5
    assert p.color.saturation_shift_max == pytest.approx(0.2) and p.color.contrast_scale_max == pytest.approx(0.1)
