"""Box geometry shared by both models.

* :mod:`tltk.boxes.numpy_ops` -- NumPy: areas, pairwise IoU (continuous, TAO's inclusive-pixel
  convention, and DetectNet_v2's DBSCAN variant), greedy NMS, clipping, ``xywh``/``xyxy``
  conversion.  Used by DetectNet_v2 postprocessing and the metrics.
* :mod:`tltk.boxes.tf_ops` -- TensorFlow in-graph ops with static shapes (IoU, box coder,
  clipping) for MaskRCNN's targets, proposals and detections.

Nothing is imported here, so importing the NumPy ops never loads TensorFlow.
"""
