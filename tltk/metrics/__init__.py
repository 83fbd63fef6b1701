"""Detection metrics shared by both models: KITTI/TAO-style AP (SAMPLE, INTEGRATE), COCO via pycocotools."""
