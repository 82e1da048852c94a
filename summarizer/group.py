"""One summary per group of texts (e.g. all reviews of a product): what buyers say.

All sentences of a group's reviews are pooled; exact repeats (same words, ignoring case and
punctuation) are pooled once and counted. Readable sentences (4 to 30 words; all of them when too
few are) are clustered with k-means, k = ceil(sqrt(n)): each cluster is a theme, and its size (with
repeats) says how much of what buyers wrote is about it. Themes are visited largest first, and each
gives its best sentence, by similarity to the whole pool plus bonuses for a full sentence (up to
15 words), for coming early in its review (where reviewers put their verdict) and for being said
more than once. A sentence whose embedding has cosine >= ``similarity`` with one already taken
is skipped as a near-duplicate. When the budget outlasts the themes, the best remaining
sentences fill it. Picks are returned in input order (review by review, sentence by sentence).

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
from summarizer.kmeans import kmeans
from summarizer.split import split_sentences

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_MAX_SENTENCES = 10
DEFAULT_SIMILARITY = 0.95
# Sentences a reader takes in at a glance; longer ones ramble, shorter ones say little.
MIN_WORDS, MAX_WORDS = 4, 30
FULL_SENTENCE_WORDS = 15
_W_LENGTH = 0.3
_W_LEAD = 0.1
_W_REPEATS = 0.1
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
    and ``text_column``. ``summarizer`` (default ``Summarizer()``) embeds the sentences; its
    budget is not used: groups use ``budget``."""
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
    repeats: list[int] = []  # how many times each pooled sentence was said
    index: dict[str, int] = {}
    for text in texts:
        review = split_sentences(text) if isinstance(text, str) else []
        for i, sentence in enumerate(review):
            normalized = _NON_WORD.sub(" ", sentence.lower()).strip()
            if normalized in index:
                repeats[index[normalized]] += 1
                continue
            index[normalized] = len(sentences)
            sentences.append(sentence)
            lead.append(1.0 - i / len(review))
            repeats.append(1)
    n = len(sentences)
    if n == 0:
        return GroupSummary(key, [], len(texts), 0, "empty")
    k = budget.size(n) if budget else min(DEFAULT_MAX_SENTENCES, math.ceil(math.sqrt(n)))
    if n <= k:
        return GroupSummary(key, sentences, len(texts), n, "passthrough")
    picks = _pick_by_theme(
        sentences, np.asarray(lead), np.asarray(repeats), summarizer.embed(sentences), k, similarity
    )
    return GroupSummary(key, [sentences[p] for p in sorted(picks)], len(texts), n, "ok")


def _pick_by_theme(
    sentences: list[str],
    lead: np.ndarray,
    repeats: np.ndarray,
    embeddings: np.ndarray,
    k: int,
    similarity: float,
) -> list[int]:
    words = np.array([sentence.count(" ") + 1 for sentence in sentences])
    readable = np.flatnonzero((words >= MIN_WORDS) & (words <= MAX_WORDS))
    candidates = readable if readable.size >= k else np.arange(len(sentences))
    unit = _unit_rows(embeddings[candidates])
    score = (
        unit @ _unit_rows(unit.mean(axis=0, keepdims=True))[0]
        + _W_LENGTH * np.minimum(words[candidates], FULL_SENTENCE_WORDS) / FULL_SENTENCE_WORDS
        + _W_LEAD * lead[candidates]
        + _W_REPEATS * np.log(repeats[candidates])
    )
    themes = math.ceil(math.sqrt(candidates.size))
    labels = kmeans(unit[None], themes)[0][0] if candidates.size > 1 else np.zeros(candidates.size, int)
    theme_size = np.bincount(labels, weights=repeats[candidates], minlength=themes)
    best_first = np.argsort(-score, kind="stable")
    # First pass: each theme's best sentence, largest themes first. Second pass: the rest, best first.
    heads = {}
    for i in best_first.tolist():
        heads.setdefault(int(labels[i]), i)
    by_theme = sorted(heads.values(), key=lambda i: (-theme_size[labels[i]], -score[i]))
    picks: list[int] = []
    for i in (*by_theme, *best_first.tolist()):
        if i in picks or (picks and float((unit[picks] @ unit[i]).max()) >= similarity):
            continue
        picks.append(i)
        if len(picks) == k:
            break
    return [int(candidates[i]) for i in picks]


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
