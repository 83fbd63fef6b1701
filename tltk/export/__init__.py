"""Export and deployment file formats: Keras -> ONNX, the legacy TAO .etlt/.tlt codec, INT8 calibration
tables and TensorRT calibration caches."""
