"""MaskRCNN's case for the shared model battery: a tiny synthetic COCO set and experiment spec."""

from __future__ import annotations

from pathlib import Path
from typing import Any

TINY_SPEC = """seed: 7
warmup_steps: 2
warmup_learning_rate: 0.001
init_learning_rate: 0.01
learning_rate_steps: "[100]"
learning_rate_decay_levels: "[0.1]"
total_steps: 4
num_steps_per_eval: 2
train_batch_size: 2
eval_batch_size: 2
logging_frequency: 1
data_config {
  image_size: "(128, 192)"
  eval_samples: 4
  training_file_pattern: "tfrecords/train-*.tfrecord"
  validation_file_pattern: "tfrecords/val-*.tfrecord"
  val_json_file: "coco/annotations/instances_val.json"
  num_classes: 4
  max_num_instances: 12
  n_workers: 2
  shuffle_buffer_size: 16
}
maskrcnn_config {
  nlayers: 10
  gt_mask_size: 16
  rpn_batch_size_per_im: 64
  batch_size_per_im: 32
  fast_rcnn_mlp_head_dim: 64
  train_rpn_pre_nms_topn: 200
  train_rpn_post_nms_topn: 64
  test_rpn_pre_nms_topn: 200
  test_rpn_post_nms_topn: 64
  test_detections_per_image: 10
  anchor_scale: 4
}
"""


def make_dataset(root: Path, num_images: int = 16, image_size: tuple[int, int] = (192, 128)) -> Path:
    """Synthesize a small COCO set under ``root`` and convert both splits; returns ``root``."""
    from tltk.data.synthetic import synthesize_coco
    from tltk.mask_rcnn.dataset_convert import convert_coco

    synthesize_coco(root / "coco", num_images=num_images, image_size=image_size, seed=3, val_fraction=0.25, workers=1)
    for split in ("train", "val"):
        convert_coco(root / "coco" / "images" / split, root / "coco" / "annotations" / f"instances_{split}.json",
                     root / "tfrecords", tag=split, num_shards=1, include_masks=True, workers=1)
    return root


def battery_spec(tmp_path_factory: Any) -> Path:
    """The tiny experiment spec (with its data beside it) the model battery runs."""
    root = make_dataset(tmp_path_factory.mktemp("mrcnn_battery"))
    (root / "experiment.txt").write_text(TINY_SPEC)
    return root / "experiment.txt"
