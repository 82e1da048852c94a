"""Tokens as GloVe 6B knows them (Stanford PTB-style tokenizer, lowercased).

"don't" -> "do" "n't", "can't" -> "ca" "n't", "it's" -> "it" "'s", "$3.99" -> "$" "3.99",
"2.5oz" -> "2.5" "oz", "e.g." and "u.s." stay whole, hyphenated words stay whole, "!!" and
"..." stay whole, every other punctuation mark is its own token.

Speed matters (the batch path tokenizes ~100 tokens per review): lowercasing and the clitic split
are plain ``str`` methods, and ``tokenize_sentences`` runs one ``findall`` over a whole batch.
"""

from __future__ import annotations

import re
import threading
from array import array
from collections.abc import Callable
from functools import lru_cache
from itertools import chain, repeat
from typing import Any

import numpy as np

# Each match first swallows the whitespace before its token (possessively; the token is group 1):
# otherwise `findall` would try, and fail, every alternative at every space, which was a third of
# the tokenizer's time. No alternative can start with whitespace, so the tokens are the same.
_TOKEN = re.compile(
    r"\s*+("
    r"[a-z]++(?=[ ,])"  # fast path for the most common token: a plain word before a space/comma
    # and for the commonest marks, before the alternatives they would fail one by one; no other
    # alternative can start with them, so the tokens are the same
    r"|[,\x00]|\.(?!\.)"
    # a URL to the next space, less the punctuation ending it; greedy then one class, so it
    # can't backtrack over a run ("www." and 100,000 dots)
    r"|(?:https?://|www\.)(?:[^\s\x00]*[^\s\x00.!?,;:)\]\"']|[^\s\x00])"
    r"|(?:[^\W\d_]\.){2,}"  # dotted abbreviations: "e.g.", "u.s.", "p.m."
    r"|[^\W\d_]+(?:-[^\W_]+|'(?!(?:s|m|re|ve|ll|d)\b)[^\W_]+)*"  # "gluten-free", "o'clock", "n't"
    r"|'(?:s|m|re|ve|ll|d)\b"  # clitics: "it|'s", "i|'m"
    r"|\d+(?:[.,:/]\d+)*(?:-[^\W_]+)*"  # numbers: "3.99", "1,000", "1/2", "10:30", "5-star"
    r"|[:;=][-']?[()\[\]dp/\\|]+(?![^\s\x00])"  # emoticons, after lowercasing
    r"|\.{2,}|!+|\?+|-{2,}|[^\w\s]"
    r")"
)
# Ends every sentence in tokenize_sentences' output; a token no text can produce (see there).
SEPARATOR = "\x00"


def _normalize(text: str) -> str:
    text = text.lower()
    if not text.isascii():
        for fancy, plain in (("’", "'"), ("‘", "'"), ("“", '"'), ("”", '"'), ("…", "...")):
            text = text.replace(fancy, plain)
    return text.replace("n't", " n't")


def tokenize(sentence: str) -> list[str]:
    """GloVe-style tokens of ``sentence`` (lowercased)."""
    return tokenize_sentences([sentence])[:-1]


def tokenize_sentences(sentences: list[str]) -> list[str]:
    """Tokens of all ``sentences`` in one pass, each sentence followed by a ``"\\x00"`` token."""
    joined = _normalize(SEPARATOR.join(sentences) + SEPARATOR)
    if joined.count(SEPARATOR) != len(sentences):  # a sentence contained the separator itself
        joined = _normalize(SEPARATOR.join(s.replace(SEPARATOR, " ") for s in sentences) + SEPARATOR)
    return _TOKEN.findall(joined)


# What `WordRows.of` gives for a sentence's end (vocabulary rows are >= 0, unknown tokens -1).
SEPARATOR_ROW = -2
# A word that is not exactly one token has the entry _FIRST_SPAN - i: its rows are span i of
# WordRows' span tables.
_FIRST_SPAN = -3
# Not an entry: what a word not yet in the memo is looked up as.
_NEW = 1 << 62


# Rows of a list of tokens in the vocabulary (int64), -1 for a token not in it.
Lookup = Callable[[list[str]], np.ndarray]


class WordRows(dict[str, int]):
    """Vocabulary rows of the tokens of each whitespace-separated word, memoized per word.

    A word's tokens don't depend on the words around it: no token spans whitespace or the
    separator (only the leading ``\\s*+`` consumes them), and no lookahead at a word's end tells a
    space from the separator or the end of text. So tokenizing each distinct word once gives the
    same tokens as ``tokenize_sentences``, and a batch costs one C-level dict lookup per distinct
    word where ``findall`` and a lookup per token cost over twice as much (with pyarrow, the batch
    is split into words and they are told apart in C: no Python string per word). A word of one
    token (most are) maps to its row; any other ("good.", "it's") to a span of rows in flat tables,
    expanded with array operations. The words new to the memo are looked up with one ``lookup``
    call a batch. Real text repeats most of its words (Zipf), so the memo stays small; it is
    emptied before a batch once it holds ``max_words``.

    ``of`` holds a lock: a Summarizer is shared by threads (the API's), and a word's span is
    written in three steps. (The lookups hold the interpreter anyway; a lock costs nothing more.)
    Pickled, it is its lookup: the memo is rebuilt as it is used.
    """

    def __init__(self, lookup: Lookup, max_words: int = 1 << 17) -> None:
        super().__init__()
        self._lookup = lookup
        self._max_words = max_words
        self._lock = threading.Lock()
        self._empty()

    def __reduce__(self) -> tuple[type[WordRows], tuple[Lookup, int]]:
        return WordRows, (self._lookup, self._max_words)

    def _empty(self) -> None:
        self.clear()
        self[SEPARATOR] = SEPARATOR_ROW
        # array.array: appended to at C speed, read by numpy without a copy
        self._span_starts = array("q")
        self._span_lengths = array("q")
        self._span_rows = array("q")
        # The empty "word" that splitting at each space leaves between two spaces (str.split
        # drops it): a span of no rows.
        self[""] = _FIRST_SPAN
        self._span_starts.append(0)
        self._span_lengths.append(0)

    def _memoize(self, words: list[str]) -> None:
        """Adds `words` (distinct, none in the memo yet) with their tokens' rows."""
        tokens = [_TOKEN.findall(word) for word in words]
        rows = self._lookup(list(chain.from_iterable(tokens))).tolist()
        start = 0
        for word, word_tokens in zip(words, tokens, strict=True):
            end = start + len(word_tokens)
            if end - start == 1:
                self[word] = rows[start]
            else:
                self[word] = _FIRST_SPAN - len(self._span_lengths)
                self._span_starts.append(len(self._span_rows))
                self._span_lengths.append(end - start)
                self._span_rows.extend(rows[start:end])
            start = end

    def of(self, sentences: list[str]) -> np.ndarray:
        """The rows of the tokens of all ``sentences`` (int64), each sentence followed by
        SEPARATOR_ROW: ``tokenize_sentences`` looked up in the index."""
        with self._lock:
            return self._rows_of(sentences)

    def _rows_of(self, sentences: list[str]) -> np.ndarray:
        if len(self) >= self._max_words:  # (between batches: a batch's spans must stay put)
            self._empty()
        spaced = f" {SEPARATOR} "
        joined = _normalize(spaced.join(sentences) + spaced)
        if joined.count(SEPARATOR) != len(sentences):  # a sentence contained the separator itself
            joined = _normalize(spaced.join(s.replace(SEPARATOR, " ") for s in sentences) + spaced)
        entries = self._word_entries(joined)
        spans = np.flatnonzero(entries <= _FIRST_SPAN)
        if not spans.size:
            return entries
        ids = _FIRST_SPAN - entries[spans]
        lengths = np.frombuffer(self._span_lengths, dtype=np.int64)[ids]
        counts = np.ones(len(entries), dtype=np.int64)
        counts[spans] = lengths
        rows = np.repeat(entries, counts)  # each span word's entry repeated, then overwritten
        within = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        targets = np.repeat((np.cumsum(counts) - counts)[spans], lengths) + within
        sources = np.repeat(np.frombuffer(self._span_starts, dtype=np.int64)[ids], lengths) + within
        rows[targets] = np.frombuffer(self._span_rows, dtype=np.int64)[sources]
        return rows

    def _word_entries(self, text: str) -> np.ndarray:
        """The memo entry of each word of `text`, int64: of each part between spaces, with
        pyarrow (split and told apart in C); else of each ``text.split()`` word. The rows are the
        same: a part holding other whitespace ("a\\tb") is tokenized whole, and its tokens are
        those of its words, as whitespace never joins or splits a token (see the class)."""
        arrow = _pyarrow()
        if arrow is not None:
            pa, pc = arrow
            try:
                column = pa.array([text], type=pa.large_string())
            except UnicodeEncodeError:  # a lone surrogate: not UTF-8, so not an arrow string
                pass
            else:
                # (split_pattern, not utf8_split_whitespace: that one can misplace a break at a
                # text's end, depending on memory past it; pyarrow 26.)
                words = pc.split_pattern(column, " ").values.dictionary_encode()
                return self._entries(words.dictionary.to_pylist())[words.indices.to_numpy()]
        return self._entries(text.split())

    def _entries(self, words: list[str]) -> np.ndarray:
        """The memo entry of each of `words`, int64; words new to the memo are added first."""
        entries = np.fromiter(map(self.get, words, repeat(_NEW)), dtype=np.int64, count=len(words))
        new = np.flatnonzero(entries == _NEW).tolist()
        if new:
            self._memoize(list(dict.fromkeys(words[i] for i in new)))
            entries[new] = [self[words[i]] for i in new]
        return entries


@lru_cache(maxsize=1)
def _pyarrow() -> tuple[Any, Any] | None:
    """pyarrow and pyarrow.compute, or None where pyarrow is absent (the realtime API's Lambda,
    whose 250 MB it would not fit in). Imported on first use, not at import."""
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
    except ImportError:
        return None
    return pa, pc
