"""The loaded word vectors and the package's one error type."""

from __future__ import annotations

from collections.abc import Iterable, Sized
from functools import cached_property
from itertools import repeat

import numpy as np


class GloveError(Exception):
    """A GloVe source or cache can't be read; the message names the path (and line for text files)."""


class WordVectors:
    """A vocabulary and its vectors: row ``i`` of ``vectors`` is the vector of ``words[i]``."""

    def __init__(self, vectors: np.ndarray, words: list[str], source: str) -> None:
        if vectors.ndim != 2 or len(words) != vectors.shape[0]:
            raise GloveError(f"{source}: {len(words)} words for vectors of shape {vectors.shape}")
        self.vectors = vectors
        self.words = words
        self.source = source

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @cached_property
    def index(self) -> dict[str, int]:
        # Built on first use: the dict is most of the cold-load cost, and callers that only
        # need ``vectors``/``words`` never pay for it.
        return dict(zip(self.words, range(len(self.words)), strict=True))

    def lookup(self, tokens: Iterable[str]) -> np.ndarray:
        """Row of each token (int64), -1 for tokens out of the vocabulary. Exact, case-sensitive match."""
        count = len(tokens) if isinstance(tokens, Sized) else -1
        return np.fromiter(map(self.index.get, tokens, repeat(-1)), dtype=np.int64, count=count)

    def __len__(self) -> int:
        return len(self.words)

    def __repr__(self) -> str:
        return f"WordVectors(words={len(self.words)}, dim={self.dim}, source={self.source!r})"
