"""A tiny MaskRCNN configuration and synthetic batch shared by the model tests (not collected)."""

from __future__ import annotations

import numpy as np

from tltk._proto import mask_rcnn_pb2 as pb
from tltk.mask_rcnn.params import MaskRCNNParams

IMAGE = 128
NUM_CLASSES = 3
MAX_INSTANCES = 4
GT_MASK = 16


def tiny_experiment() -> pb.Experiment:
    """resnet10, 128x128, levels 2..6, few proposals and small heads."""
    exp = pb.Experiment()
    exp.data_config.image_size = f"({IMAGE}, {IMAGE})"
    exp.data_config.num_classes = NUM_CLASSES
    exp.data_config.max_num_instances = MAX_INSTANCES
    mc = exp.maskrcnn_config
    mc.nlayers = 10
    mc.gt_mask_size = GT_MASK
    mc.train_rpn_pre_nms_topn = 200
    mc.train_rpn_post_nms_topn = 64
    mc.test_rpn_pre_nms_topn = 200
    mc.test_rpn_post_nms_topn = 64
    mc.batch_size_per_im = 32
    mc.rpn_batch_size_per_im = 64
    mc.fast_rcnn_mlp_head_dim = 64
    mc.test_detections_per_image = 10
    return exp


def tiny_params(**changes: object) -> MaskRCNNParams:
    return MaskRCNNParams.from_experiment(tiny_experiment()).replace(**changes)


def synthetic_batch(params: MaskRCNNParams, batch: int = 2, seed: int = 0) -> tuple[np.ndarray, dict]:
    """Images with bright rectangles, their boxes/classes/masks, and matching RPN targets."""
    from tltk.boxes.tf_ops import encode_boxes, pairwise_iou
    from tltk.mask_rcnn.anchors import generate_anchors

    rng = np.random.default_rng(seed)
    h, w = params.image_size
    m, s = params.max_num_instances, params.gt_mask_size
    images = rng.normal(0.0, 0.1, (batch, 3, h, w)).astype(np.float32)
    gt_boxes = -np.ones((batch, m, 4), np.float32)
    gt_classes = -np.ones((batch, m), np.int32)
    masks = -np.ones((batch, m, s + 4, s + 4), np.float32)
    layouts = [[(10, 12, 60, 70, 1), (70, 40, 120, 110, 2)], [(20, 20, 90, 60, 2)]]
    for b in range(batch):
        for i, (y1, x1, y2, x2, c) in enumerate(layouts[b % 2]):
            images[b, c - 1, y1:y2, x1:x2] += 2.0
            gt_boxes[b, i] = (y1, x1, y2, x2)
            gt_classes[b, i] = c
            masks[b, i] = 0.0
            masks[b, i, 2:-2, 2:-2] = 1.0
    info = np.tile(np.array([[h, w, 1.0, h, w]], np.float32), (batch, 1))
    targets: dict = {"image_info": info, "gt_boxes": gt_boxes, "gt_classes": gt_classes, "cropped_gt_masks": masks}
    anchors = generate_anchors(params.anchor_config)
    a = params.anchors_per_location
    for level, level_anchors in anchors.items():
        lh, lw = h // 2**level, w // 2**level
        iou = pairwise_iou(level_anchors[None], gt_boxes).numpy()  # [B, N, M]
        best = iou.max(-1)
        arg = iou.argmax(-1)
        score = np.where(best >= 0.5, 1, np.where(best < 0.3, 0, -1)).astype(np.int32)
        for b in range(batch):  # TAO's sampling: every positive here, negatives fill to the RPN batch
            negatives = np.flatnonzero(score[b] == 0)
            keep = params.rpn_batch_size_per_im // len(anchors) - int((score[b] == 1).sum())
            score[b, rng.permutation(negatives)[max(keep, 0):]] = -1
        matched = np.take_along_axis(gt_boxes, arg[..., None], axis=1)
        deltas = encode_boxes(matched, level_anchors[None]).numpy() * (score == 1)[..., None]
        targets[f"score_targets_{level}"] = score.reshape(batch, lh, lw, a)
        targets[f"box_targets_{level}"] = deltas.reshape(batch, lh, lw, 4 * a).astype(np.float32)
    return images, targets
