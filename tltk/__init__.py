"""tltk: TAO-compatible transfer-learning toolkit for DetectNet_v2 and MaskRCNN.

Importing this package is cheap: it never imports TensorFlow.  The heavy parts live in
sub-packages that are imported by the subtasks that need them.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
