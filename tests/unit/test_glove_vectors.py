"""WordVectors built in memory: lookup (hash table for small lists, dict for large ones) and hashes."""

from __future__ import annotations

import numpy as np
import pytest

from glove import GloveError, WordVectors
from glove.hashing import token_hashes
from glove.vectors import DICT_AFTER_TOKENS

WORDS = ["the", ",", "new york", "naïve", "", "\x00", "Zürich", "東京", "a" * 300]


@pytest.fixture
def vectors() -> WordVectors:
    rows = np.arange(len(WORDS) * 4, dtype=np.float32).reshape(len(WORDS), 4)
    return WordVectors(rows, list(WORDS), source="test")


def naive_rows(tokens: list[str]) -> list[int]:
    return [WORDS.index(token) if token in WORDS else -1 for token in tokens]


def test_small_lookup_finds_every_word_and_nothing_else(vectors: WordVectors) -> None:
    tokens = [*WORDS, "The", "new", "york", "naive", " ", "\x00\x00", "a" * 299, "東"]
    rows = vectors.lookup(tokens)
    assert rows.dtype == np.int64
    assert rows.tolist() == naive_rows(tokens)
    assert "index" not in vectors.__dict__  # the small lookup didn't need the dict


def test_large_lookup_uses_the_dict_and_agrees(vectors: WordVectors) -> None:
    tokens = [*WORDS, "unknown", "THE"] * (DICT_AFTER_TOKENS // len(WORDS) + 1)
    assert len(tokens) >= DICT_AFTER_TOKENS
    rows = vectors.lookup(tokens)
    assert "index" in vectors.__dict__
    assert rows.tolist() == naive_rows(tokens)
    # Once the dict exists, small lookups use it and still agree.
    assert vectors.lookup(["naïve", "nope"]).tolist() == [3, -1]


def test_lookup_takes_any_iterable_and_empty(vectors: WordVectors) -> None:
    assert vectors.lookup(token for token in ["東京", "x"]).tolist() == [7, -1]
    empty = vectors.lookup([])
    assert empty.dtype == np.int64
    assert empty.shape == (0,)


def test_rows_index_the_vectors(vectors: WordVectors) -> None:
    rows = vectors.lookup(["Zürich", ","])
    assert vectors.vectors[rows].tolist() == [[24, 25, 26, 27], [4, 5, 6, 7]]
    assert vectors.index["Zürich"] == 6
    assert vectors.dim == 4
    assert len(vectors) == len(WORDS)


def test_lazy_words_are_read_once_on_first_use() -> None:
    calls = []

    def read_words() -> list[str]:
        calls.append(1)
        return ["a", "b"]

    wv = WordVectors(np.zeros((2, 3), dtype=np.float32), read_words, source="lazy")
    assert wv.lookup(["b", "c"]).tolist() == [1, -1]
    assert wv.words == ["a", "b"]
    assert wv.words == ["a", "b"]
    assert calls == [1]


def test_word_count_must_match_the_vectors() -> None:
    with pytest.raises(GloveError, match="mismatch-source: 2 words for 3 vectors"):
        WordVectors(np.zeros((3, 2), dtype=np.float32), ["a", "b"], source="mismatch-source")


def test_hashes_are_stable_across_processes() -> None:
    # The cache stores these hashes on disk: they must not depend on the process or machine
    # (Python's own hash() does). Changing the function needs a new cache FORMAT.
    assert token_hashes(["the", "", "naïve"]).tolist() == [14559401292903944394, 0, 2357793233532633907]


def test_hashes_separate_tokens_across_chunk_boundaries() -> None:
    # A token's hash must not depend on its neighbours or its place in the list.
    tokens = [f"w{i}" for i in range(70_000)]
    together = token_hashes(tokens)
    assert together[65_536] == token_hashes(["w65536"])[0]
    assert len(set(together.tolist())) == len(tokens)
