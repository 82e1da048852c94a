"""One summary per group of texts (e.g. all reviews of a product): what buyers say.

All sentences of a group's reviews are pooled; exact repeats (same words, ignoring case and
punctuation) are counted once; the pool is ranked with the default method's score (similarity to
the pooled document, the sentence's position within its own review, length, topic share from
k-means); then sentences are taken best first, skipping any whose embedding has cosine >=
``similarity`` with one already taken, until the budget is filled. Picks are returned in input
order (review by review, sentence by sentence).

Budget for groups: ``budget`` applied to the number of distinct sentences in the group; by
default (``budget=None``) ``min(10, ceil(sqrt(distinct sentences)))``, so a product with
hundreds of reviews still gets a readable paragraph.
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from summarizer.engine import Budget, Summarizer
from summarizer.split import split_sentences

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_MAX_SENTENCES = 10
DEFAULT_SIMILARITY = 0.95
_NON_WORD = re.compile(r"[\W_]+")


@dataclass
class GroupSummary:
    key: Hashable
    sentences: list[str]
    n_texts: int  # texts in the group
    n_sentences: int  # distinct sentences in the group
    status: str  # "ok" | "passthrough" | "empty"

    @property
    def text(self) -> str:
        return " ".join(self.sentences)


def summarize_groups(
    items: Iterable[tuple[Hashable, str | None]] | pd.DataFrame,
    summarizer: Summarizer | None = None,
    *,
    budget: Budget | None = None,
    key_column: str = "ProductId",
    text_column: str = "Text",
    similarity: float = DEFAULT_SIMILARITY,
) -> list[GroupSummary]:
    """Summaries of each group, in order of first appearance.

    ``items`` is an iterable of ``(group_key, text)`` pairs, or a DataFrame with ``key_column``
    and ``text_column``. ``summarizer`` defaults to ``Summarizer()`` (its method and budget are
    not used: groups are always ranked with the default score and use ``budget``)."""
    if hasattr(items, "columns"):  # a DataFrame
        items = zip(items[key_column], items[text_column], strict=True)
    texts_by_key: dict[Hashable, list[str | None]] = {}
    for key, text in items:
        texts_by_key.setdefault(key, []).append(text)
    summarizer = summarizer or Summarizer()
    return [
        _summarize_group(key, texts, summarizer, budget, similarity) for key, texts in texts_by_key.items()
    ]


def _summarize_group(
    key: Hashable,
    texts: list[str | None],
    summarizer: Summarizer,
    budget: Budget | None,
    similarity: float,
) -> GroupSummary:
    sentences: list[str] = []
    lead: list[float] = []
    seen: set[str] = set()
    for text in texts:
        review = split_sentences(text) if isinstance(text, str) else []
        for i, sentence in enumerate(review):
            normalized = _NON_WORD.sub(" ", sentence.lower()).strip()
            if normalized in seen:
                continue
            seen.add(normalized)
            sentences.append(sentence)
            lead.append(1.0 - i / len(review))
    n = len(sentences)
    if n == 0:
        return GroupSummary(key, [], len(texts), 0, "empty")
    k = budget.size(n) if budget else min(DEFAULT_MAX_SENTENCES, math.ceil(math.sqrt(n)))
    if n <= k:
        return GroupSummary(key, sentences, len(texts), n, "passthrough")
    order, emb = summarizer.rank_sentences(sentences, np.asarray(lead))
    unit = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    picks: list[int] = []
    for i in order:
        if picks and float((unit[picks] @ unit[i]).max()) >= similarity:
            continue
        picks.append(int(i))
        if len(picks) == k:
            break
    picks.sort()
    return GroupSummary(key, [sentences[p] for p in picks], len(texts), n, "ok")
