"""Tokens match the GloVe 6B vocabulary's conventions."""

from functools import partial

import numpy as np
import pytest

from summarizer import tokenize
from summarizer.tokens import SEPARATOR, SEPARATOR_ROW, WordRows, tokenize_sentences


@pytest.mark.parametrize(
    ("sentence", "expected"),
    [
        ("Don't do it", ["do", "n't", "do", "it"]),
        ("I can't, I won't", ["i", "ca", "n't", ",", "i", "wo", "n't"]),
        ("It's what I'm sure they'll do", ["it", "'s", "what", "i", "'m", "sure", "they", "'ll", "do"]),
        ("It’s curly", ["it", "'s", "curly"]),
        ("$3.99 for 2.5oz", ["$", "3.99", "for", "2.5", "oz"]),
        ("10% off 1,000 at 10:30", ["10", "%", "off", "1,000", "at", "10:30"]),
        ("E.g. the U.S. rocks", ["e.g.", "the", "u.s.", "rocks"]),
        ("Gluten-free o'clock 5-star", ["gluten-free", "o'clock", "5-star"]),
        ("Wow!! Really?", ["wow", "!!", "really", "?"]),
        ("Hmm... ok :)", ["hmm", "...", "ok", ":)"]),
        ("See www.amazon.com/x. Done", ["see", "www.amazon.com/x", ".", "done"]),
    ],
)
def test_tokens_like_glove(sentence, expected):
    assert tokenize(sentence) == expected


def test_batch_tokens_end_each_sentence_with_a_separator():
    tokens = tokenize_sentences(["A b.", "", "c\x00d"])
    assert tokens == ["a", "b", ".", SEPARATOR, SEPARATOR, "c", "d", SEPARATOR]


def test_tokens_are_in_the_glove_vocabulary():
    import glove

    index = glove.load().index
    tokens = tokenize("Don't worry, it's $3.99 and I can't stop :) e.g. the U.S. gluten-free!!")
    assert [t for t in tokens if t not in index] == []


@pytest.mark.parametrize("arrow", [True, False], ids=["pyarrow", "without-pyarrow"])
def test_word_rows_are_the_batch_tokens_looked_up(arrow, monkeypatch):
    # The memo tokenizes each word alone; the rows must be those of tokenizing the whole batch,
    # also across a memo emptied between batches (max_words), with the separator in a text and
    # with any whitespace (pyarrow splits the batch at spaces only).
    import random

    import summarizer.tokens

    if not arrow:
        monkeypatch.setattr(summarizer.tokens, "_pyarrow", lambda: None)
    index = {"the": 0, "cat": 1, "n't": 2, "do": 3, ".": 4, "'s": 5, "e.g.": 6, "www.x.com": 7, "...": 8}
    rows = WordRows(partial(_rows_in, index), max_words=50)
    alphabet = [
        *"aAtT .,!?'\"-:;()=/_0\x00\t\u2019\u2026\u03a3\xa0\u3000\x1c\ud800",
        "  ",
        "the",
        "cat",
        "n't",
        "e.g.",
        "www.x.com",
        "...",
    ]
    rng = random.Random(0)
    for _ in range(3000):
        sentences = ["".join(rng.choices(alphabet, k=rng.randint(0, 12))) for _ in range(rng.randint(1, 4))]
        expected = [
            SEPARATOR_ROW if t == SEPARATOR else index.get(t, -1) for t in tokenize_sentences(sentences)
        ]
        assert rows.of(sentences).tolist() == expected, sentences


def test_word_rows_are_shared_safely_by_threads_and_pickle_as_their_lookup():
    import pickle
    from concurrent.futures import ThreadPoolExecutor

    index = {f"w{i}": i for i in range(1000)}
    # emptied now and then, while other threads look up
    rows = WordRows(partial(_rows_in, index), max_words=200)
    batches = [
        [f"w{i}. w{i + 1}, w{i * 7 % 1000}'s" for i in range(start, start + 50)] for start in range(0, 900, 9)
    ]

    def expected(sentences):
        tokens = tokenize_sentences(sentences)
        return [SEPARATOR_ROW if t == SEPARATOR else index.get(t, -1) for t in tokens]

    with ThreadPoolExecutor(8) as pool:
        for batch, got in zip(batches, pool.map(rows.of, batches), strict=True):
            assert got.tolist() == expected(batch)
    copy = pickle.loads(pickle.dumps(rows))  # noqa: S301 - our own bytes
    assert copy.of(batches[0]).tolist() == expected(batches[0])


def _rows_in(index: dict[str, int], tokens: list[str]) -> np.ndarray:
    return np.array([index.get(token, -1) for token in tokens], dtype=np.int64)
