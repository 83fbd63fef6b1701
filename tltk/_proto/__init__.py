"""Generated protobuf modules for tltk's spec schemas (do not edit by hand).

``common_pb2`` (W&B/ClearML blocks), ``detectnet_v2_pb2`` (``Experiment``, ``Inference``,
``DatasetExportConfig``) and ``mask_rcnn_pb2`` (``Experiment``) are generated from
``protos/tltk/*.proto`` by ``scripts/compile_protos.py`` (``make protos``).
"""
