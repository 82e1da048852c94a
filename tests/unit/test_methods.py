"""The summarizer through its public API: budgets, statuses, order, fidelity, groups."""

import numpy as np
import pytest

import glove
from summarizer import METHODS, Budget, Summarizer, split_sentences
from summarizer.group import summarize_groups

REVIEW = (
    "I bought this coffee for my office and everyone loves the rich flavour. "
    "The beans arrived fresh and the bag was sealed well. "
    "Shipping took about a week, which was slower than I expected. "
    "The price is reasonable compared with the local grocery store. "
    "My only complaint is that the bag is hard to reseal after opening. "
    "I would definitely order this coffee again for the office. "
    "The customer service team answered my question within a day. "
    "Overall a great value for a daily coffee drinker."
)


@pytest.fixture(scope="module")
def vectors():
    return glove.load()


@pytest.fixture(scope="module", params=METHODS)
def summarizer(request, vectors):
    return Summarizer(method=request.param, vectors=vectors)


def test_default_budget_and_output_is_verbatim_in_document_order(summarizer):
    """default keeps a quarter of the sentences (2 of 8), kmeans the original's ceil(sqrt(8)) = 3."""
    summary = summarizer.summarize(REVIEW)
    assert summary.status == "ok"
    assert summary.n_input == 8
    assert len(summary.sentences) == (3 if summarizer.method == "kmeans" else 2)
    assert summary.positions == sorted(summary.positions)
    assert all(s in REVIEW for s in summary.sentences)
    assert summary.text == " ".join(summary.sentences)


@pytest.mark.parametrize(
    ("budget", "expected"),
    [
        (Budget(sentences=2), 2),
        (Budget(ratio=0.5), 4),
        (Budget(ratio=0.01), 1),
        (Budget(), 2),  # a quarter of 8
        (Budget(sqrt=True), 3),  # the original's ceil(sqrt(8))
    ],
)
def test_budgets(vectors, budget, expected):
    for method in METHODS:
        assert len(Summarizer(method, vectors=vectors).summarize(REVIEW, budget).sentences) == expected


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sentences": 0},
        {"ratio": 0.0},
        {"ratio": 1.5},
        {"sentences": 2, "ratio": 0.5},
        {"sentences": 2, "sqrt": True},
        {"ratio": 0.5, "sqrt": True},
    ],
)
def test_invalid_budgets_are_refused(kwargs):
    with pytest.raises(ValueError):
        Budget(**kwargs)


def test_the_default_budget_compresses_short_texts_too():
    """A quarter of the sentences, rounded up, at most ceil(sqrt(n)): 1 of 2 to 4, 2 of 5 to 8,
    3 of 9 to 12, 5 of 25, 10 of 100; the original's ceil(sqrt(n)) only with sqrt."""
    sizes = {n: Budget().size(n) for n in (1, 2, 3, 4, 5, 8, 9, 12, 16, 25, 100)}
    assert sizes == {1: 1, 2: 1, 3: 1, 4: 1, 5: 2, 8: 2, 9: 3, 12: 3, 16: 4, 25: 5, 100: 10}
    assert [Budget(sqrt=True).size(n) for n in (2, 3, 5, 100)] == [2, 2, 3, 10]
    with pytest.raises(TypeError, match=r"Budget\.sqrt must be True or False"):
        Budget(sqrt=1)  # type: ignore[arg-type]


def test_short_texts_pass_through_and_empty_texts_are_marked(summarizer, vectors):
    two = "Great coffee. Fast shipping."
    # (the default budget keeps one of two sentences; the original's, ceil(sqrt(2)) = 2, all)
    texts = [two, "", None, "   ", float("nan"), "One sentence only"]
    results = summarizer.summarize_many(texts, Budget(sqrt=True))
    assert [r.status for r in results] == ["passthrough", "empty", "empty", "empty", "empty", "passthrough"]
    assert results[0].sentences == ["Great coffee.", "Fast shipping."]
    assert results[0].positions == [0, 1]


def test_batch_equals_one_by_one_and_is_deterministic(summarizer):
    texts = [REVIEW, REVIEW.replace("coffee", "tea"), "Short. Text.", REVIEW[:300]] * 3
    batch = summarizer.summarize_many(texts)
    single = [summarizer.summarize(t) for t in texts]
    assert batch == single
    assert summarizer.summarize_many(texts) == batch


@pytest.mark.parametrize(
    "text",
    [
        "Zzqxv qqwvx xyzqq. Bbqzz cqqzq dqzqq. Eqzqq fqzqz gzqqq. Hqzqz iqqzz jqqzq.",  # no known word
        "Same words here. Same words here. Same words here. Same words here. Same words here.",
        "Hi. Yo. Ok. No. Up.",  # nothing long enough to cluster
    ],
)
def test_degenerate_texts_still_get_a_full_budget(summarizer, text):
    summary = summarizer.summarize(text)
    assert summary.status == "ok"
    assert len(summary.sentences) == summarizer.default_budget.size(summary.n_input)
    assert summary.positions == sorted(set(summary.positions))


@pytest.mark.parametrize("method", METHODS)
def test_a_large_budget_on_a_long_text(vectors, method):
    """Hundreds of clusters need more k-means++ random draws than usual."""
    summary = Summarizer(method, vectors=vectors).summarize("Ab cd ef. " * 1000, Budget(ratio=0.9))
    assert (summary.status, len(summary.sentences)) == ("ok", 900)


def test_unknown_method_is_refused(vectors):
    with pytest.raises(ValueError, match="unknown method"):
        Summarizer(method="magic", vectors=vectors)


def test_kmeans_short_sentences_do_not_shift_the_picks(vectors):
    """The original clustered only sentences of > 2 words but indexed the full list with those
    positions, so a short sentence before a pick shifted it to the wrong sentence."""
    summarizer = Summarizer("kmeans", vectors=vectors)
    plain = summarizer.summarize(REVIEW, Budget(sentences=3))
    with_short = REVIEW.replace(
        "fresh and the bag was sealed well. ", "fresh and the bag was sealed well. Wow. Yum! "
    )
    shifted = summarizer.summarize(with_short, Budget(sentences=3))
    assert shifted.n_input == plain.n_input + 2
    assert shifted.sentences == plain.sentences
    full = split_sentences(with_short)  # positions index the full sentence list
    assert [full[p] for p in shifted.positions] == shifted.sentences
    assert shifted.positions == [p if p < 2 else p + 2 for p in plain.positions]


def test_kmeans_picks_the_sentence_nearest_each_centroid_like_sklearn(vectors):
    """A text with three obvious topics: one sentence from each."""
    text = (
        "The dog loves this dog food and eats every bite. "
        "The coffee beans smell rich and roasted. "
        "My dog begs for this dog food daily. "
        "Shipping by the courier was quick and the parcel arrived on time. "
        "The roasted coffee tastes smooth and rich. "
        "The courier delivered the parcel quickly."
    )
    summary = Summarizer("kmeans", vectors=vectors).summarize(text, Budget(sentences=3))
    topics = [("dog",), ("coffee",), ("courier", "parcel")]
    assert sorted(
        next(i for i, t in enumerate(topics) if any(w in s for w in t)) for s in summary.sentences
    ) == [0, 1, 2]


def test_group_summary_removes_near_duplicates(vectors):
    summarizer = Summarizer(vectors=vectors)
    reviews = [
        ("p1", "This coffee tastes really great. The bag arrived torn. I will buy again."),
        ("p1", "This coffee tastes really great!! Shipping was very quick. Good value for the money."),
        ("p1", "The coffee tastes really great. My wife likes the aroma too. Five stars from us."),
        ("p2", "Only one sentence here."),
        ("p3", ""),
    ]
    groups = summarize_groups(reviews, summarizer, budget=Budget(sentences=4))
    assert [g.key for g in groups] == ["p1", "p2", "p3"]
    p1, p2, p3 = groups
    assert p1.n_texts == 3
    assert p1.n_sentences == 8  # "This coffee tastes really great!!" repeats the first review's sentence
    assert len(p1.sentences) == 4
    assert sum("tastes really great" in s for s in p1.sentences) == 1
    assert (p2.status, p2.sentences) == ("passthrough", ["Only one sentence here."])
    assert p3.status == "empty"


def test_group_summary_accepts_a_dataframe(vectors):
    import pandas as pd

    df = pd.DataFrame(
        {"ProductId": ["a", "b", "a"], "Text": [REVIEW, "Fine.", REVIEW.replace("office", "home")]}
    )
    groups = summarize_groups(df, Summarizer(vectors=vectors))
    assert [(g.key, g.n_texts) for g in groups] == [("a", 2), ("b", 1)]
    assert all(s in REVIEW or s in REVIEW.replace("office", "home") for s in groups[0].sentences)


def test_vocabulary_rows_are_checked_against_the_words():
    # The summarizer looks tokens up in the vectors' hash table, whose answer for a token outside
    # the vocabulary could be a word with the same 64-bit hash: every answer is checked.
    from summarizer.engine import _exact_lookup

    class CollidingVectors:
        def __init__(self):
            self.words = ["good", "bad"]

        def lookup(self, tokens):  # "zzz" shares a hash with "bad"
            rows = {"good": 0, "bad": 1, "zzz": 1}
            return np.array([rows.get(token, -1) for token in tokens], dtype=np.int64)

    assert _exact_lookup(CollidingVectors())(["zzz", "bad", "good", "x"]).tolist() == [-1, 1, 0, -1]
