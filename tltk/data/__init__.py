"""Data: KITTI and COCO readers/writers, TFRecord schemas, tf.data building blocks, augmentation,
TensorFile calibration data and the synthetic dataset generator."""
