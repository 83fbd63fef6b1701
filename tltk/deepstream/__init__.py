"""DeepStream integration: ``gst-nvinfer`` config files (INI and YAML) and labels files.

Modules:
    nvinfer: :class:`~tltk.deepstream.nvinfer.NvinferConfig`, its INI/YAML writers and the
        DetectNet_v2 / MaskRCNN config builders used by ``export --gen_ds_config``.
    labels: ``labels.txt`` writers (DetectNet_v2 class order; MaskRCNN with ``BG`` first).
"""
