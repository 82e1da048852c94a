"""Vectorised 64-bit token hashes: the lookup table that makes ``WordVectors.lookup`` cheap cold.

A Python dict of 400,000 words costs ~0.1 s to build in every new process (each string is
hashed and inserted one by one), which is most of the cold-load budget. Instead the cache
stores the words' 64-bit hashes sorted (``hashes.npy``) with their rows (``rows.npy``);
a lookup hashes the query tokens with numpy and binary-searches them. Per token this is
slower than a dict, so ``WordVectors.lookup`` switches to the dict for large token lists.

The hash is a polynomial over the UTF-8 bytes modulo 2**64 with an odd base (so its powers
are invertible and every token's hash falls out of one prefix sum), then a splitmix64
finaliser. Two different words sharing a hash is ~1e-8 likely for a 2M-word vocabulary; if it
happens the later word is left out of the table, like a duplicate token. An out-of-vocabulary
token matches a word by accident with probability ~n_words / 2**64.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

_BASE = 0x100000001B3  # the FNV prime: odd, so invertible modulo 2**64
_BASE_INVERSE = pow(_BASE, -1, 1 << 64)
# Bounds the temporary arrays (a few uint64 per input byte) for huge token lists.
TOKENS_PER_CHUNK = 1 << 16


def _powers(base: int, count: int) -> np.ndarray:
    powers = np.full(count, base, dtype=np.uint64)
    powers[0] = 1
    return np.cumprod(powers, dtype=np.uint64)  # wraps modulo 2**64, which is the point


def _finalise(values: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads the polynomial's low-entropy bits over all 64."""
    values = (values ^ (values >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    values = (values ^ (values >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return values ^ (values >> np.uint64(31))


def _hash_chunk(tokens: list[str]) -> np.ndarray:
    encoded = [token.encode("utf-8", "surrogatepass") for token in tokens]
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    # +1 so that a NUL byte still changes the hash; the length is mixed in below as well.
    data = np.frombuffer(b"".join(encoded), dtype=np.uint8).astype(np.uint64) + np.uint64(1)
    prefix = np.zeros(data.size + 1, dtype=np.uint64)
    np.cumsum(data * _powers(_BASE, data.size), out=prefix[1:])
    ends = np.cumsum(lengths)
    starts = ends - lengths
    # sum(byte_i * BASE**i) over the token, shifted down to start at BASE**0.
    polynomial = (prefix[ends] - prefix[starts]) * _powers(_BASE_INVERSE, data.size + 1)[starts]
    return _finalise(polynomial ^ (lengths.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)))


def token_hashes(tokens: Iterable[str]) -> np.ndarray:
    """uint64 hash of each token, stable across processes and machines."""
    tokens = list(tokens)
    if not tokens:
        return np.empty(0, dtype=np.uint64)
    chunks = [_hash_chunk(tokens[i : i + TOKENS_PER_CHUNK]) for i in range(0, len(tokens), TOKENS_PER_CHUNK)]
    return np.concatenate(chunks)


@dataclass(frozen=True)
class HashTable:
    """Sorted unique word hashes and, for each, the row of the first word with that hash."""

    hashes: np.ndarray  # uint64, sorted
    rows: np.ndarray  # int64

    @classmethod
    def build(cls, words: list[str]) -> HashTable:
        hashes, rows = np.unique(token_hashes(words), return_index=True)
        return cls(hashes, rows.astype(np.int64))

    def find(self, tokens: Iterable[str]) -> np.ndarray:
        """Row of each token, -1 where absent."""
        wanted = token_hashes(tokens)
        if self.hashes.size == 0:
            return np.full(wanted.size, -1, dtype=np.int64)
        positions = np.minimum(np.searchsorted(self.hashes, wanted), self.hashes.size - 1)
        return np.where(self.hashes[positions] == wanted, self.rows[positions], -1)
