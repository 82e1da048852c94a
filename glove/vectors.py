"""The loaded word vectors and the package's one error type."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import cached_property
from itertools import repeat

import numpy as np

from glove.hashing import HashTable

# A lookup this large builds the word -> row dict (~0.1 s for 400,000 words) and uses it from
# then on: per token a dict is ~5x faster than the hash table, which only wins when the dict
# would not pay for itself (a cold process looking up one text).
DICT_AFTER_TOKENS = 50_000


class GloveError(Exception):
    """A GloVe source or cache can't be read; the message names the path (and line for text files)."""


class WordVectors:
    """A vocabulary and its vectors: row ``i`` of ``vectors`` is the vector of ``words[i]``.

    ``words`` may be given as a function returning the list, read on first use; ``table`` is
    the precomputed hash table of the words (built from them when absent).
    """

    def __init__(
        self,
        vectors: np.ndarray,
        words: list[str] | Callable[[], list[str]],
        source: str = "<memory>",
        table: HashTable | None = None,
    ) -> None:
        if vectors.ndim != 2:
            raise GloveError(f"{source}: vectors must be 2-d, got shape {vectors.shape}")
        self.vectors = vectors
        self.source = source
        self._words = words
        if table is not None:
            self._table = table
        if isinstance(words, list):
            self._check_words(words)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @cached_property
    def words(self) -> list[str]:
        words = self._words() if callable(self._words) else self._words
        self._check_words(words)
        return words

    @cached_property
    def index(self) -> dict[str, int]:
        return dict(zip(self.words, range(len(self.words)), strict=True))

    @cached_property
    def _table(self) -> HashTable:
        return HashTable.build(self.words)

    def lookup(self, tokens: Iterable[str]) -> np.ndarray:
        """Row of each token (int64), -1 for tokens out of the vocabulary. Exact, case-sensitive match."""
        tokens = tokens if isinstance(tokens, list | tuple) else list(tokens)
        if "index" not in self.__dict__ and len(tokens) < DICT_AFTER_TOKENS:
            return self._table.find(tokens)
        return np.fromiter(map(self.index.get, tokens, repeat(-1)), dtype=np.int64, count=len(tokens))

    def _check_words(self, words: list[str]) -> None:
        if len(words) != self.vectors.shape[0]:
            raise GloveError(f"{self.source}: {len(words)} words for {self.vectors.shape[0]} vectors")

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def __repr__(self) -> str:
        return f"WordVectors(words={len(self)}, dim={self.dim}, source={self.source!r})"
