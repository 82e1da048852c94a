"""Hostile text costs linear time in every stage: property tests over generated texts.

Hypothesis generates a short unit (punctuation-heavy, abbreviation-heavy, tag-heavy, or without any
whitespace) and the test repeats it to ~20,000 characters: a stage that backtracks over a run or
looks back to the start of the text for each candidate is quadratic there (the splitter took 16 s
on 16,000 dots), while a linear one takes milliseconds. The budget per character is generous (a
busy 2-core machine must not fail it) and still far below what a quadratic stage needs. Time is
the process's CPU time, which another process's load doesn't inflate."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from summarizer import Budget, Summarizer
from summarizer.group import summarize_groups
from summarizer.split import split_sentences
from summarizer.tokens import tokenize_sentences

TARGET_CHARS = 20_000
# 25 µs a character: 0.5 s for 20,000 (linear stages take 2-50 ms; the old splitter took 30 s).
BUDGET_S_PER_CHAR = 25e-6
SLACK_S = 0.25

PUNCTUATION = ".!?…:;,'\"“”‘’()[]-/\\*^_=8<>3"
ABBREVIATIONS = ["e.g.", "i.e.", "U.S.", "Mr.", "etc.", "No.", "vs.", "C.S.", "www.", "http://", "..."]
TAGS = ["<br />", "<p>", "</div>", "<b>", "<", ">", "< br", "<li", "/>"]
LETTERS = "aAbBzZ09"

units = st.one_of(
    st.text(alphabet=PUNCTUATION + " ", min_size=1, max_size=8),
    st.text(alphabet=PUNCTUATION + LETTERS, min_size=1, max_size=8),  # no whitespace at all
    st.lists(st.sampled_from([*ABBREVIATIONS, " ", "", "A", "a", "3"]), min_size=1, max_size=6).map("".join),
    st.lists(st.sampled_from([*TAGS, " ", "x", "."]), min_size=1, max_size=6).map("".join),
).filter(lambda unit: unit.strip() != "")


def hostile(unit: str) -> str:
    return unit * (TARGET_CHARS // len(unit) + 1)


def assert_linear(stage: Callable[[], object], text: str, what: str) -> None:
    started = time.process_time()
    stage()
    spent = time.process_time() - started
    budget = BUDGET_S_PER_CHAR * len(text) + SLACK_S
    assert spent <= budget, f"{what}: {spent:.2f}s of CPU for {len(text)} characters (budget {budget:.2f}s)"


@pytest.fixture(scope="module")
def summarizers() -> dict[str, Summarizer]:
    return {method: Summarizer(method=method) for method in BUDGETS}


# Each method's budget here: kmeans with the budget that once made its clustering quadratic.
BUDGETS = {"default": None, "kmeans": Budget(ratio=0.99)}


common = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@common
@given(unit=units)
def test_splitting_and_tokenizing_are_linear(unit: str) -> None:
    text = hostile(unit)
    assert_linear(lambda: split_sentences(text), text, f"split {unit!r}")
    sentences = split_sentences(text)
    assert_linear(lambda: tokenize_sentences(sentences), text, f"tokenize {unit!r}")


@common
@given(unit=units)
def test_summarizing_is_linear_with_either_method_and_any_budget(unit: str, summarizers) -> None:
    text = hostile(unit)
    for method, summarizer in summarizers.items():
        budget = BUDGETS[method]
        assert_linear(lambda s=summarizer, b=budget: s.summarize(text, b), text, f"{method} on {unit!r}")


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(unit=units)
def test_grouping_is_linear(unit: str, summarizers) -> None:
    texts = [hostile(unit)[: TARGET_CHARS // 10]] * 10
    items = [("product", text) for text in texts]
    assert_linear(lambda: summarize_groups(items, summarizers["default"]), "".join(texts), f"group {unit!r}")


@pytest.mark.parametrize("unit", [".", "!", "…", "www.", "a.B", "?!"])
def test_the_runs_that_made_the_splitter_quadratic(unit: str) -> None:
    """The regressions found by hand, kept as fixed examples (sizes as reported: up to 100 KB)."""
    text = unit * (100_000 // len(unit)) + "a"
    assert_linear(lambda: split_sentences(text), text, f"split {unit!r} x {len(text)}")
    assert_linear(lambda: tokenize_sentences(split_sentences(text)), text, f"tokenize {unit!r}")


def test_the_cluster_count_is_capped_whatever_the_budget(summarizers) -> None:
    """--method kmeans --ratio 0.99 on many distinct sentences: k would equal the sentence count."""
    words = ["good", "bad", "taste", "coffee", "dog", "food", "price", "box", "great", "chips"]
    text = " ".join(
        f"{words[i % 10].capitalize()} {words[i // 10 % 10]} {words[i // 100 % 10]} {i}." for i in range(2000)
    )
    kmeans = summarizers["kmeans"]
    summary = kmeans.summarize(text, BUDGETS["kmeans"])
    assert summary.status == "ok" and len(summary.sentences) == 1980
    assert summary.positions == sorted(set(summary.positions))
    assert_linear(
        lambda: kmeans.summarize(text, BUDGETS["kmeans"]), text, "kmeans, ratio 0.99, 2,000 sentences"
    )
