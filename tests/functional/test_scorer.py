"""The default method's learned sentence scorer: weights given to a Summarizer change what it
keeps, and bad weights are refused when it is made. How the shipped weights are learned and what
they score is tested with scripts/evaluate.py (test_evaluate.py)."""

from __future__ import annotations

import pytest

from summarizer import Budget, Summarizer, scorer

TEXT = (
    "Good morning to everyone reading this short note today. "
    "It rained a little while I was walking the dog outside. "
    "The kettle chips are thick, crunchy and salty. "
    "These kettle chips stay crunchy and thick to the last bag. "
    "I also bought a new hat."
)


def test_weights_decide_what_is_kept() -> None:
    lead_only = Summarizer(weights=[0, 1, 0, 0, 0]).summarize(TEXT, Budget(sentences=2))
    assert lead_only.positions == [0, 1]
    # Weighting only what the text repeats picks the two sentences about the chips.
    salient = Summarizer(weights=[0, 0, 0, 1, 0]).summarize(TEXT, Budget(sentences=2))
    assert salient.positions == [2, 3]
    shipped = Summarizer().summarize(TEXT, Budget(sentences=2))
    assert (
        shipped.positions == Summarizer(weights=scorer.WEIGHTS).summarize(TEXT, Budget(sentences=2)).positions
    )


@pytest.mark.parametrize(
    ("weights", "error", "message"),
    [
        ([1, 2], ValueError, "weights must be 5 finite numbers (centrality, lead, length, salience, topic)"),
        ([0, 0, float("nan"), 0, 0], ValueError, "weights must be 5 finite numbers"),
        ("heavy", TypeError, "weights must be 5 numbers"),
    ],
)
def test_bad_weights_are_refused_when_made(weights: object, error: type, message: str) -> None:
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        Summarizer(weights=weights)
