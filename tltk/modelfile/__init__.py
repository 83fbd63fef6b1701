"""Model files: tltk's sealed ``.tlt`` container, TAO's legacy ``.etlt``/``.tlt`` codec, reading.

``reading`` is the bottom (no tltk imports but errors), ``legacy`` builds on it and
``container`` on both, so the package has no import cycle.
"""
