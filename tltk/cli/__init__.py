"""Command-line interface: click commands only, TensorFlow is imported lazily inside them."""
