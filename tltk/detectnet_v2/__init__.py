"""DetectNet_v2: model-specific code (heads, rasterizer, cost functions, postprocessing, subtasks)."""
