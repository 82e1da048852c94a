"""The extractive summarizer: GloVe sentence embeddings + k-means.

Both methods split a text into sentences (``summarizer.split``), embed each sentence as the
weighted mean of its words' GloVe vectors (punctuation weighs 0), and leave sentences of <= 2
words out of the clustering (they say little) without ever shifting positions: positions always
index the full sentence list. Output is always in document order.

``kmeans``: the original algorithm, index bug fixed. Plain mean word vectors; k-means with
k = budget, seeded and iterated exactly like sklearn's ``KMeans(random_state=0)``
(``summarizer.kmeans``); from each cluster the member nearest its centre. Tie-break: when two
members are equally near (a two-member cluster's centre is their midpoint), the earlier
sentence wins; sklearn leaves that to floating-point rounding.

``default``: SIF-weighted word vectors (a / (a + p(w))); k-means with k = ceil(sqrt(n)) finds the
document's topics; every sentence gets a learned score (``summarizer.scorer``: similarity to the
whole document, position, length, how much of the document's repeated vocabulary it carries, the
size of its topic) and the best ``budget`` sentences are kept. On BBC news (ROUGE, 5-fold
cross-validated) it beats every sumy peer at its best setting (scripts/evaluate.py); ``kmeans``
loses to all of them.

If fewer sentences than the budget are long enough to cluster, all of them are kept and the
budget is filled with the earliest short ones.

At most ``MAX_CLUSTERS`` clusters, whatever the budget: k-means costs O(n * k) per iteration and
its seeding O(k) steps, so a budget near the sentence count (``--ratio 0.99``) would make them
quadratic. A ``kmeans`` budget above the cap takes each cluster's nearest members in turn.

``Summarizer.summarize_many`` is the fast path: it splits and tokenizes a chunk of texts, builds
all sentence embeddings in one sparse matrix product, then clusters all texts that share a
shape (points, clusters) in one batched k-means. ``summarize(text)`` is
``summarize_many([text])[0]``.
"""

from __future__ import annotations

import math
import numbers
import os
import string
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import chain, islice, repeat
from typing import Any, Literal

import numpy as np

from summarizer import scorer
from summarizer.kmeans import kmeans
from summarizer.split import split_sentences
from summarizer.tokens import SEPARATOR_ROW, Lookup, WordRows

Method = Literal["default", "kmeans"]
METHODS: tuple[str, ...] = ("default", "kmeans")
MAX_CLUSTERS = 100
# Sentences of at most this many words are not scored or clustered (they carry little content).
_MAX_SHORT_WORDS = 2
# Texts per internal batch: large enough to amortise numpy call overhead, small enough that the
# batch's arrays stay a few MB.
_CHUNK = 2048


@dataclass(frozen=True)
class Budget:
    """How many sentences a summary keeps: ``sentences`` fixed, or ``ratio`` of the input
    (``ceil(ratio * n)``, at least 1), or with ``sqrt`` the original algorithm's ``ceil(sqrt(n))``.

    By default a quarter of the sentences, rounded up and never more than ``ceil(sqrt(n))``: one
    sentence of a 3- or 4-sentence review, two of 5 to 8, ten of a hundred. ``ceil(sqrt(n))``
    keeps two of three sentences, and 54% of the characters of real reviews (38% this way).
    (The ``kmeans`` method, the original algorithm, keeps ``sqrt`` by default.)"""

    sentences: int | None = None
    ratio: float | None = None
    sqrt: bool = False

    def __post_init__(self) -> None:
        _check_type("Budget.sentences", self.sentences, numbers.Integral, "an int")
        _check_type("Budget.ratio", self.ratio, numbers.Real, "a number")
        if not isinstance(self.sqrt, bool):
            raise TypeError(f"Budget.sqrt must be True or False, got {self.sqrt!r}")
        if (self.sentences is not None) + (self.ratio is not None) + bool(self.sqrt) > 1:
            raise ValueError("give one of Budget(sentences=...), Budget(ratio=...), Budget(sqrt=True)")
        if self.sentences is not None and self.sentences < 1:
            raise ValueError(f"Budget.sentences must be >= 1, got {self.sentences}")
        if self.ratio is not None and not 0.0 < self.ratio <= 1.0:
            raise ValueError(f"Budget.ratio must be in (0, 1], got {self.ratio}")

    def size(self, n_sentences: int) -> int:
        if self.sentences is not None:
            return self.sentences
        if self.ratio is not None:
            return max(1, math.ceil(self.ratio * n_sentences))
        square_root = math.ceil(math.sqrt(n_sentences))
        return square_root if self.sqrt else min(math.ceil(n_sentences / 4), square_root)


def _check_type(name: str, value: object, kind: type, expected: str) -> None:
    """TypeError unless `value` is None or a `kind` (numpy's numbers count; True and False don't)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
        raise TypeError(f"{name} must be {expected}, got {type(value).__name__} {value!r}")


@dataclass
class Summary:
    sentences: list[str]
    positions: list[int]  # index of each sentence in split_sentences(text)
    n_input: int  # number of sentences in the input
    status: str  # "ok" | "passthrough" | "empty" | "error: <reason>"

    @property
    def text(self) -> str:
        return " ".join(self.sentences)


@dataclass
class _Doc:
    """A text on its way through summarize_many."""

    sentences: list[str]
    k: int
    first_row: int = 0  # its first sentence's row in the batch embedding matrix
    picks: list[int] = field(default_factory=list)


class Summarizer:
    """Extractive summaries by ``method`` from ``vectors`` (a ``glove.WordVectors``, a path
    ``glove.load`` reads, or None for the bundled GloVe 6B 50d), each as long as the ``budget``
    of the call: a ``Budget``, or None for the method's ``default_budget`` (``Budget()``; the
    original's ``Budget(sqrt=True)`` for ``kmeans``).

    Arguments of the wrong type fail where they are given, with what was expected, not at the
    first text.
    """

    def __init__(self, method: Method = "default", *, vectors: Any = None, weights: Any = None) -> None:
        """``weights``: the default method's scorer weights, one per ``scorer.FEATURES`` (None: the
        shipped ``scorer.WEIGHTS``); for evaluating weights learned on other data."""
        if not isinstance(method, str) or method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        if vectors is None or isinstance(vectors, str | os.PathLike):
            import glove

            vectors = glove.load(vectors)
        elif not (hasattr(vectors, "vectors") and hasattr(vectors, "lookup") and hasattr(vectors, "words")):
            raise TypeError(
                "vectors must be a glove.WordVectors (glove.load(path)), a path, or None; "
                f"got {type(vectors).__name__}"
            )
        self.method = method
        self.default_budget = Budget(sqrt=method == "kmeans")
        self._vectors = np.asarray(vectors.vectors, dtype=np.float32)
        self._vocabulary_rows = _exact_lookup(vectors)
        self._word_rows = WordRows(self._vocabulary_rows)
        self._weights = _word_weights(len(self._vectors), self._vocabulary_rows, method)
        self._scorer_weights = scorer.WEIGHTS if weights is None else scorer.check_weights(weights)

    def summarize(self, text: str | None, budget: Budget | None = None) -> Summary:
        return self.summarize_many([text], budget)[0]

    def summarize_column(self, data: Any, column: str = "Text", budget: Budget | None = None) -> Any:
        """Summaries of a pandas Series, or of a DataFrame's ``column``, as a DataFrame with the
        same index and the `summarize` CLI's columns: summary, n_sentences_in, n_sentences_out,
        status (missing cells are ``empty``, numbers are summarized as their text, a text over
        200,000 characters gets ``error: text too long``)::

            reviews.join(Summarizer().summarize_column(reviews, "Text"))
        """
        import pandas as pd

        from summarizer.batch import DEFAULT_MAX_CHARS, summarize_texts

        if isinstance(data, pd.DataFrame):
            if column not in data.columns:
                listing = ", ".join(map(str, data.columns)) or "(none)"
                raise KeyError(f"column {column!r} not found; available columns: {listing}")
            data = data[column]
        if not isinstance(data, pd.Series):
            raise TypeError(f"expected a pandas Series or DataFrame, got {type(data).__name__}")
        # checked here: summarize_texts makes a text that fails the engine a row with an error status
        budget = self._checked_budget(budget)
        results = summarize_texts(self, data.tolist(), max_chars=DEFAULT_MAX_CHARS, budget=budget)
        return pd.DataFrame(results, index=data.index)

    def summarize_many(self, texts: Iterable[str | None], budget: Budget | None = None) -> list[Summary]:
        """Summaries of ``texts``, in order. Any iterable; consumed in chunks of _CHUNK texts so
        that temporary arrays stay small whatever the input size."""
        budget = self._checked_budget(budget)
        results: list[Summary] = []
        iterator = iter(texts)
        while chunk := list(islice(iterator, _CHUNK)):
            results.extend(self._summarize_chunk(chunk, budget))
        return results

    def _checked_budget(self, budget: Budget | None) -> Budget:
        """The call's budget, the method's default for None; TypeError for anything but a Budget."""
        if budget is None:
            return self.default_budget
        if not isinstance(budget, Budget):
            raise TypeError(
                f"budget must be a Budget, e.g. Budget(sentences=3) or Budget(ratio=0.3); "
                f"got {type(budget).__name__} {budget!r}"
            )
        return budget

    def _summarize_chunk(self, texts: list[str | None], budget: Budget) -> list[Summary]:
        results: list[Summary | None] = []
        docs: dict[int, _Doc] = {}
        for i, text in enumerate(texts):
            try:
                sentences = split_sentences(text) if isinstance(text, str) else []
            except Exception as exc:  # one bad text must not fail the batch
                results.append(Summary([], [], 0, f"error: {type(exc).__name__}: {exc}"))
                continue
            n = len(sentences)
            k = budget.size(n) if n else 0
            if n == 0:
                results.append(Summary([], [], 0, "empty"))
            elif n <= k:
                results.append(Summary(sentences, list(range(n)), n, "passthrough"))
            else:
                results.append(None)
                docs[i] = _Doc(sentences, k)
        if docs:
            self._pick(list(docs.values()))
        for i, doc in docs.items():
            results[i] = Summary([doc.sentences[p] for p in doc.picks], doc.picks, len(doc.sentences), "ok")
        return results  # type: ignore[return-value]

    def embed(self, sentences: list[str]) -> np.ndarray:
        """The sentences' embeddings (n, dim), as this method builds them."""
        return self._embed([_Doc(sentences, k=len(sentences))], with_salience=False)[0]

    def word_rows(self, words: Sequence[str]) -> np.ndarray:
        """Each word's row in the vectors, -1 when unknown. GloVe's rows are in order of frequency,
        so a row is also the word's frequency rank in GloVe's corpus."""
        return self._vocabulary_rows(list(words)).astype(np.int64)

    def word_vectors(self, rows: np.ndarray) -> np.ndarray:
        """The vectors of vocabulary ``rows`` (from ``word_rows``), (len(rows), dim)."""
        return self._vectors[rows]

    def sentence_features(self, text: str) -> tuple[list[str], np.ndarray, np.ndarray]:
        """What the default method scores in ``text``: its sentences, the positions of those long
        enough to be scored (m,), and their features (m, len(scorer.FEATURES)). For learning
        ``weights`` (scripts/evaluate.py); the same computation as ``summarize``."""
        sentences = split_sentences(text)
        empty = np.zeros((0, len(scorer.FEATURES)), dtype=np.float32)
        if not sentences:
            return sentences, np.zeros(0, dtype=np.int64), empty
        emb, salience = self._embed([_Doc(sentences, k=1)], with_salience=True)
        assert salience is not None
        words = np.array([sentence.count(" ") + 1 for sentence in sentences])
        positions = np.flatnonzero(words > _MAX_SHORT_WORDS)
        if positions.size == 0:
            return sentences, positions, empty
        clusters = _topics(positions.size)
        x = emb[positions][None]
        labels, _ = kmeans(x, clusters)
        found = scorer.features(
            x,
            labels,
            clusters,
            positions[None],
            len(sentences),
            words[positions][None],
            salience[positions][None],
        )
        return sentences, positions, found[0]

    def _embed(self, docs: Sequence[_Doc], *, with_salience: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Weighted mean word vector of every sentence of every doc, (n_sentences, dim), and, when
        asked (only the default method scores it), each sentence's salience (n_sentences,): the sum
        over its content words of weight * (the word's count in its doc - 1)."""
        sentences: list[str] = []
        for doc in docs:
            doc.first_row = len(sentences)
            sentences.extend(doc.sentences)
        rows = self._word_rows.of(sentences)
        ends = np.flatnonzero(rows == SEPARATOR_ROW)  # every sentence ends with one
        known = rows >= 0
        indptr = np.concatenate(([0], np.cumsum(known)[ends]))
        rows = rows[known]
        weights = self._weights[rows]
        # Only the rows this batch uses: the products below cost O(size of the table they read).
        # Found with a vocabulary-sized mask and slot table, not np.unique (a sort of all tokens).
        in_batch = np.zeros(len(self._weights), dtype=bool)
        in_batch[rows] = True
        used = np.flatnonzero(in_batch)
        slot = np.empty(len(self._weights), dtype=np.int64)
        slot[used] = np.arange(used.size)
        sums = _weighted_sums(weights, slot[rows], indptr, self._vectors[used])
        lengths = np.diff(indptr)
        wsum = np.add.reduceat(np.append(weights, 0.0), indptr[:-1]) * (lengths > 0)
        emb = sums / np.maximum(wsum, 1e-12)[:, None].astype(np.float32)
        if not with_salience:
            return emb, None
        # Each token's count in its own doc: one sort of (doc, word) keys for the whole batch.
        doc_sizes = [len(doc.sentences) for doc in docs]
        token_doc = np.repeat(np.repeat(np.arange(len(docs)), doc_sizes), lengths)
        _, where, counts = np.unique(
            token_doc * len(self._weights) + rows, return_inverse=True, return_counts=True
        )
        # Content words only: in a short text the only repeats are "it" and "the", and their
        # small weights, normalized by the text's largest, would still rank its sentences.
        repeated = np.where(weights >= _CONTENT_WEIGHT, weights, 0.0) * (counts[where] - 1)
        salience = np.add.reduceat(np.append(repeated, 0.0), indptr[:-1]) * (lengths > 0)
        return emb, salience.astype(np.float32)

    def _pick(self, docs: list[_Doc]) -> None:
        emb, salience = self._embed(docs, with_salience=self.method == "default")
        # Per-sentence and per-doc facts as arrays for the whole batch: per-doc numpy calls cost
        # more than the arithmetic at ~5 sentences a review.
        first = np.fromiter((doc.first_row for doc in docs), dtype=np.int64, count=len(docs))
        sizes = np.fromiter((len(doc.sentences) for doc in docs), dtype=np.int64, count=len(docs))
        spaces = np.fromiter(
            map(str.count, chain.from_iterable(doc.sentences for doc in docs), repeat(" ")),
            dtype=np.int64,
            count=int(sizes.sum()),
        )
        # Sentences of <= 2 words carry little content; they are not clustered, but positions
        # always refer to the full sentence list.
        eligible = spaces + 1 > _MAX_SHORT_WORDS
        eligible_rows = np.flatnonzero(eligible)
        n_eligible = np.add.reduceat(eligible.astype(np.int64), first)  # every doc has >= 2 sentences
        eligible_start = np.cumsum(n_eligible) - n_eligible  # each doc's first entry in eligible_rows
        groups: dict[tuple[int, int, int], list[int]] = defaultdict(list)
        for i, (doc, m) in enumerate(zip(docs, n_eligible.tolist(), strict=True)):
            if m <= doc.k:
                rows = np.arange(first[i], first[i] + sizes[i])
                short = rows[~eligible[rows]][: doc.k - m]
                doc.picks = sorted((np.concatenate((rows[eligible[rows]], short)) - first[i]).tolist())
                continue
            clusters = min(MAX_CLUSTERS, doc.k) if self.method == "kmeans" else _topics(m)
            groups[(m, clusters, doc.k)].append(i)
        for (m, clusters, k), members in groups.items():
            idx = np.array(members)
            rows = eligible_rows[eligible_start[idx, None] + np.arange(m)]  # (B, m) batch rows
            positions = rows - first[idx, None]
            x = emb[rows]
            labels, centers = kmeans(x, clusters)
            if self.method == "kmeans" and k > clusters:
                picks = _nearest_members_in_turn(x, labels, centers, positions, k)
            elif self.method == "kmeans":
                picks = _nearest_member_per_cluster(x, labels, centers, positions)
            else:
                assert salience is not None
                found = scorer.features(
                    x, labels, clusters, positions, sizes[idx, None], spaces[rows] + 1, salience[rows]
                )
                score = found @ self._scorer_weights
                best = np.argsort(-score, axis=1, kind="stable")[:, :k]  # ties: the earliest
                picks = np.take_along_axis(positions, best, axis=1)
            # k-means can leave a cluster empty (identical sentences): -1, filled in document order
            complete = (picks >= 0).all(axis=1)
            for i, doc_picks in zip(members, np.sort(picks, axis=1).tolist(), strict=True):
                docs[i].picks = doc_picks
            for j in np.flatnonzero(~complete).tolist():
                chosen = {p for p in picks[j].tolist() if p >= 0}
                spare = (p for p in positions[j].tolist() if p not in chosen)
                while len(chosen) < k:
                    chosen.add(next(spare))
                docs[members[j]].picks = sorted(chosen)


def _topics(m: int) -> int:
    """The default method's k-means k for m scored sentences (its topics)."""
    return min(MAX_CLUSTERS, math.ceil(math.sqrt(m)))


@lru_cache(maxsize=1)
def _csr_matrix() -> Any:
    """scipy's CSR matrix class, or None without scipy. Imported on first use (~0.1 s), not at import."""
    try:
        from scipy.sparse import csr_matrix
    except ImportError:
        return None
    return csr_matrix


def _weighted_sums(
    weights: np.ndarray, columns: np.ndarray, indptr: np.ndarray, table: np.ndarray
) -> np.ndarray:
    """Row i of the result is sum(weights[t] * table[columns[t]] for t in indptr[i]:indptr[i+1]).

    A sparse (rows x table) matrix product in scipy: one pass in C, no (tokens x dim) temporary, 5x
    faster than the numpy way below on a batch of reviews. The numpy way (tokens grouped by
    sentence length into padded blocks, one einsum each) serves where scipy is absent: the realtime
    API's Lambda, where scipy does not fit beside the vectors in Lambda's 250 MB."""
    csr_matrix = _csr_matrix()
    n_rows = len(indptr) - 1
    if csr_matrix is not None:
        matrix = csr_matrix((weights, columns, indptr), shape=(n_rows, len(table)))
        return np.asarray(matrix @ table, dtype=np.float32)
    padded = np.vstack((table, np.zeros((1, table.shape[1]), dtype=table.dtype)))  # last row: padding
    lengths = np.diff(indptr)
    width_class = np.ceil(np.log2(np.maximum(lengths, 1))).astype(np.int64)  # pad to a power of 2
    sums = np.zeros((n_rows, table.shape[1]), dtype=np.float32)
    for width_log2 in np.unique(width_class).tolist():
        members = np.flatnonzero(width_class == width_log2)
        offsets = np.arange(1 << width_log2)
        real = offsets < lengths[members, None]
        token = np.where(real, indptr[members, None] + offsets, 0)
        block_columns = np.where(real, columns[token] if len(columns) else 0, len(table))
        block_weights = np.where(real, weights[token] if len(weights) else 0, 0).astype(np.float32)
        sums[members] = np.einsum("sl,sld->sd", block_weights, padded[block_columns])
    return sums


def _nearest_member_per_cluster(
    x: np.ndarray, labels: np.ndarray, centers: np.ndarray, positions: np.ndarray
) -> np.ndarray:
    """Per problem and cluster, the position of the member nearest the centre (ties: the
    earliest), -1 for an empty cluster: (B, k). x (B, n, d) as given to kmeans()."""
    k = centers.shape[1]
    xc = x - x.mean(axis=1, keepdims=True)  # kmeans() centres are in centred coordinates
    own = np.take_along_axis(centers, labels[:, :, None], axis=1)
    d = ((xc - own) ** 2).sum(axis=2)  # (B, n)
    member = labels[:, :, None] == np.arange(k)  # (B, n, k)
    nearest = np.where(member, d[:, :, None], np.inf).argmin(axis=1)  # (B, k)
    picked = np.take_along_axis(positions, nearest, axis=1)
    return np.where(member.any(axis=1), picked, -1)


def _nearest_members_in_turn(
    x: np.ndarray, labels: np.ndarray, centers: np.ndarray, positions: np.ndarray, k: int
) -> np.ndarray:
    """Per problem, the positions of `k` members: every cluster's nearest, then every cluster's
    second nearest, and so on (ties: the earliest): (B, k). For a budget above the cluster cap."""
    xc = x - x.mean(axis=1, keepdims=True)
    own = np.take_along_axis(centers, labels[:, :, None], axis=1)
    d = ((xc - own) ** 2).sum(axis=2)  # (B, n)
    order = np.lexsort((positions, d, labels), axis=-1)  # by cluster, then distance
    sorted_labels = np.take_along_axis(labels, order, axis=1)
    n = labels.shape[1]
    changed = np.ones_like(sorted_labels, dtype=bool)
    changed[:, 1:] = sorted_labels[:, 1:] != sorted_labels[:, :-1]
    starts = np.maximum.accumulate(np.where(changed, np.arange(n), 0), axis=1)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(n) - starts, axis=1)  # rank within its cluster
    chosen = np.lexsort((positions, labels, rank), axis=-1)[:, :k]
    return np.take_along_axis(positions, chosen, axis=1)


# SIF (Arora et al. 2017): weight a / (a + p(w)). GloVe rows are in frequency order, so p(w) is
# estimated from the row rank with Zipf's law.
_SIF_A = 1e-3
# SIF weight 1/2 is where p(w) = a: GloVe's ~80 commonest words (the, it, 's...) weigh less.
_CONTENT_WEIGHT = 0.5
# What the tokenizer emits for punctuation: one mark, or a run of dots / "!" / "?" / "-".
_PUNCTUATION = (
    [*string.punctuation, *"–—“”‘’…«»•·¡¿"]
    + [mark * n for mark in ".!?-" for n in range(2, 12)]
    + ["``", "''"]
)


def _word_weights(n_words: int, vocabulary_rows: Lookup, method: str) -> np.ndarray:
    """Weight of each vocabulary row in a sentence embedding; 0 for punctuation."""
    if method == "kmeans":  # the original: a plain mean of the words' vectors
        weights = np.ones(n_words, dtype=np.float32)
    else:
        zipf = 1.0 / np.arange(1, n_words + 1)
        weights = (_SIF_A / (_SIF_A + zipf / zipf.sum())).astype(np.float32)
    rows = vocabulary_rows(_PUNCTUATION)
    weights[rows[rows >= 0]] = 0.0
    return weights


def _exact_lookup(vectors: Any) -> Lookup:
    """`vectors.lookup`, its hash table's rows checked against the words: a token not in the
    vocabulary could share a 64-bit hash with one that is. (Not `vectors.index`: building that
    400,000-word dict cost every run ~0.3 s before its first summary; the words alone ~0.07 s.)"""
    words = vectors.words

    def rows(tokens: list[str]) -> np.ndarray:
        found = vectors.lookup(tokens)
        rows = found.tolist()
        for position in np.flatnonzero(found >= 0).tolist():
            if words[rows[position]] != tokens[position]:
                found[position] = -1
        return found

    return rows
