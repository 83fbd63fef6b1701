"""MaskRCNN: model-specific code (FPN, anchors, RPN, heads, losses, postprocessing, subtasks)."""
