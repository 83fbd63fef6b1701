"""Box geometry: NumPy ops (IoU, NMS) and TensorFlow ops (IoU, box coder, clipping)."""
