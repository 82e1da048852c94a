"""The extractive summarizer: GloVe sentence embeddings + k-means, in four stages.

``Summarizer.summarize_many`` takes each chunk of texts through:

1. **split** (``_split``): each text into sentences (``summarizer.split``), and the budget into
   its number of sentences, k. An empty text, one of no more than k sentences (passed through
   whole) and one the splitter fails on are finished here; the others go on, together.
2. **embed** (``Summarizer._embed``): every sentence of the chunk as the weighted mean of its
   words' GloVe vectors (punctuation weighs 0), all in one sparse matrix product, with its word
   count and, for the default method, its salience (``summarizer.scorer``).
3. **cluster** (``Summarizer._cluster``): a text's sentences of > 2 words (shorter ones say
   little and are left out) clustered by k-means; texts that share a shape (sentences, clusters,
   budget) are one batch, and the batches with the same clusters and sentence counts within a
   factor of two one padded k-means call (``summarizer.kmeans``): that is the throughput. A text
   with no more such sentences than its budget is not clustered.
4. **select** (``Summarizer._select``): each method's k picks from a shape's clusters. A text
   that was not clustered keeps its long sentences and fills its budget with its earliest short
   ones (``_long_then_short``).

Leaving sentences out never shifts positions: positions always index the full sentence list.
Output is always in document order. ``summarize(text)`` is ``summarize_many([text])[0]``.

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

At most ``MAX_CLUSTERS`` clusters, whatever the budget: k-means costs O(n * k) per iteration and
its seeding O(k) steps, so a budget near the sentence count (``--ratio 0.99``) would make them
quadratic. A ``kmeans`` budget above the cap takes each cluster's nearest members in turn.
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
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from summarizer import schema, scorer
from summarizer.kmeans import kmeans, kmeans_ragged
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

# Sentence embeddings, one a row: (sentences, dim), or (texts, sentences, dim) batched by shape.
SentenceVectors = npt.NDArray[np.float32]
Floats = npt.NDArray[np.float32]
Ints = npt.NDArray[np.int64]
Flags = npt.NDArray[np.bool_]


@runtime_checkable
class WordVectorsLike(Protocol):
    """What a Summarizer needs of its word vectors; ``glove.WordVectors`` has it."""

    @property
    def vectors(self) -> npt.NDArray[np.floating[Any]]:
        """(words, dim): row i is the vector of ``words[i]``."""
        ...

    @property
    def words(self) -> list[str]: ...

    def lookup(self, tokens: Iterable[str]) -> Ints:
        """Each token's row, -1 when unknown. (The Summarizer checks each answer against ``words``:
        a hash table may answer for a token it does not hold.)"""
        ...


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
    status: str  # "ok" | "passthrough" | "empty" | "error: <reason>" (summarizer.schema)

    @property
    def text(self) -> str:
        return " ".join(self.sentences)


@dataclass
class _Text:
    """A text on its way through the stages: its sentences and its budget, k sentences; then the
    positions of the k it keeps, in document order."""

    sentences: list[str]
    k: int
    picks: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class _Embedded:
    """What the embed stage makes of a batch of texts: their sentences, text after text, one a row.
    Per-sentence and per-text facts are arrays for the whole batch: per-text numpy calls cost
    more than the arithmetic at ~5 sentences a review."""

    vectors: SentenceVectors  # (rows, dim)
    words: Ints  # (rows,) each sentence's word count
    long_enough: Flags  # (rows,) more than _MAX_SHORT_WORDS words: clustered and scored
    salience: Floats | None  # (rows,) for the default method's scorer, else None
    first_row: Ints  # (texts,) each text's first sentence's row
    n_sentences: Ints  # (texts,)


@dataclass(frozen=True)
class _Shape:
    """What the cluster stage makes of the texts of one shape: B texts, each with m long enough
    sentences, in `clusters` clusters, each text to keep k."""

    texts: Ints  # (B,) the texts' places in the batch
    k: int
    clusters: int
    rows: Ints  # (B, m) the sentences' rows in the batch (_Embedded)
    positions: Ints  # (B, m) their positions in their texts
    points: SentenceVectors  # (B, m, dim) their embeddings
    labels: Ints  # (B, m) their clusters
    centers: SentenceVectors  # (B, clusters, dim), in kmeans()' centred coordinates


class Summarizer:
    """Extractive summaries by ``method`` from ``vectors`` (a ``glove.WordVectors``, a path
    ``glove.load`` reads, or None for the bundled GloVe 6B 50d), each as long as the ``budget``
    of the call: a ``Budget``, or None for the method's ``default_budget`` (``Budget()``; the
    original's ``Budget(sqrt=True)`` for ``kmeans``).

    Arguments of the wrong type fail where they are given, with what was expected, not at the
    first text.
    """

    def __init__(
        self,
        method: Method = "default",
        *,
        vectors: WordVectorsLike | str | os.PathLike[str] | None = None,
        weights: npt.ArrayLike | None = None,
    ) -> None:
        """``weights``: the default method's scorer weights, one per ``scorer.FEATURES`` (None: the
        shipped ``scorer.WEIGHTS``); for evaluating weights learned on other data."""
        if not isinstance(method, str) or method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        if vectors is None or isinstance(vectors, str | os.PathLike):
            import glove

            vectors = glove.load(vectors)
        elif not isinstance(vectors, WordVectorsLike):
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
        """One chunk through the four stages (see the module's docstring)."""
        summaries, to_pick = _split(texts, budget)
        if to_pick:
            batch = list(to_pick.values())
            embedded = self._embed(batch, with_salience=self.method == "default")
            unclustered, shapes = self._cluster(batch, embedded)
            for i in unclustered:
                batch[i].picks = _long_then_short(embedded, i, batch[i].k)
            for shape in shapes:
                for i, picks in zip(shape.texts.tolist(), self._select(shape, embedded), strict=True):
                    batch[i].picks = picks
        for i, text in to_pick.items():
            picked = [text.sentences[p] for p in text.picks]
            summaries[i] = Summary(picked, text.picks, len(text.sentences), schema.OK)
        return summaries  # type: ignore[return-value]  # every None was filled above

    def embed(self, sentences: list[str]) -> SentenceVectors:
        """The sentences' embeddings (n, dim), as this method builds them."""
        return self._embed([_Text(sentences, k=len(sentences))], with_salience=False).vectors

    def word_rows(self, words: Sequence[str]) -> Ints:
        """Each word's row in the vectors, -1 when unknown. GloVe's rows are in order of frequency,
        so a row is also the word's frequency rank in GloVe's corpus."""
        return self._vocabulary_rows(list(words)).astype(np.int64)

    def word_vectors(self, rows: Ints) -> Floats:
        """The vectors of vocabulary ``rows`` (from ``word_rows``), (len(rows), dim)."""
        return self._vectors[rows]

    def sentence_features(self, text: str) -> tuple[list[str], Ints, Floats]:
        """What the default method scores in ``text``: its sentences, the positions of those long
        enough to be scored (m,), and their features (m, len(scorer.FEATURES)). For learning
        ``weights`` (scripts/evaluate.py); the same computation as ``summarize``, with the
        default method's topics whatever the budget."""
        sentences = split_sentences(text)
        empty = np.zeros((0, len(scorer.FEATURES)), dtype=np.float32)
        if not sentences:
            return sentences, np.zeros(0, dtype=np.int64), empty
        embedded = self._embed([_Text(sentences, k=1)], with_salience=True)
        positions = np.flatnonzero(embedded.long_enough)
        if positions.size == 0:
            return sentences, positions, empty
        clusters = _topics(positions.size)
        points = embedded.vectors[positions][None]
        labels, centers = kmeans(points, clusters)
        rows = positions[None]
        shape = _Shape(np.zeros(1, dtype=np.int64), 1, clusters, rows, rows, points, labels, centers)
        return sentences, positions, self._features(shape, embedded)[0]

    # ---- the stages (split is _split, below) -------------------------------------------------

    def _embed(self, texts: Sequence[_Text], *, with_salience: bool) -> _Embedded:
        """Stage 2: the weighted mean word vector of every sentence of every text, and its word
        count; when asked (only the default method scores it), each sentence's salience: the sum
        over its content words of weight * (the word's count in its text - 1)."""
        sentences = list(chain.from_iterable(text.sentences for text in texts))
        n_sentences = np.fromiter((len(text.sentences) for text in texts), dtype=np.int64, count=len(texts))
        words = np.fromiter(map(str.count, sentences, repeat(" ")), dtype=np.int64, count=len(sentences)) + 1
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
        vectors = sums / np.maximum(wsum, 1e-12)[:, None].astype(np.float32)
        salience = None
        if with_salience:
            # Each token's count in its own text: one sort of (text, word) keys for the whole batch.
            # Content words only: in a short text the only repeats are "it" and "the", and their
            # small weights, normalized by the text's largest, would still rank its sentences.
            # (Only they are counted, too: the sort costs half as much.)
            content = np.flatnonzero(weights >= _CONTENT_WEIGHT)
            token_text = np.repeat(np.repeat(np.arange(len(texts)), n_sentences), lengths)[content]
            _, where, counts = np.unique(
                token_text * len(self._weights) + rows[content], return_inverse=True, return_counts=True
            )
            repeated = np.zeros(len(weights))  # float64, as the counts make the products
            repeated[content] = weights[content] * (counts[where] - 1)
            salience = (np.add.reduceat(np.append(repeated, 0.0), indptr[:-1]) * (lengths > 0)).astype(
                np.float32
            )
        return _Embedded(
            vectors=vectors,
            words=words,
            long_enough=words > _MAX_SHORT_WORDS,
            salience=salience,
            first_row=np.cumsum(n_sentences) - n_sentences,
            n_sentences=n_sentences,
        )

    def _cluster(self, texts: Sequence[_Text], embedded: _Embedded) -> tuple[list[int], list[_Shape]]:
        """Stage 3: the texts (places in `texts`) with no more long enough sentences than their
        budget, left unclustered; and the others' long enough sentences clustered, the texts of
        each shape (m sentences, clusters, budget) as one batch, and the batches with the same
        clusters and m within a factor of two in one padded k-means call: kmeans k = the budget
        (at most MAX_CLUSTERS), default the text's topics."""
        long_rows = np.flatnonzero(embedded.long_enough)
        # (every text has sentences: no segment of reduceat is empty)
        n_long = np.add.reduceat(embedded.long_enough.astype(np.int64), embedded.first_row)
        long_start = np.cumsum(n_long) - n_long  # each text's first entry in long_rows
        unclustered: list[int] = []
        by_shape: dict[tuple[int, int, int], list[int]] = defaultdict(list)
        for i, (text, m) in enumerate(zip(texts, n_long.tolist(), strict=True)):
            if m <= text.k:
                unclustered.append(i)
                continue
            clusters = min(MAX_CLUSTERS, text.k) if self.method == "kmeans" else _topics(m)
            by_shape[(m, clusters, text.k)].append(i)
        # Shapes with the same clusters and sizes within a factor of two share one padded k-means
        # call (a chunk of reviews has dozens of shapes of a few texts each).
        by_call: dict[tuple[int, int], list[tuple[int, Ints, Ints]]] = defaultdict(list)
        for (m, clusters, k), members in by_shape.items():
            places = np.array(members)
            rows = long_rows[long_start[places, None] + np.arange(m)]
            by_call[(clusters, (m - 1).bit_length())].append((k, places, rows))
        shapes = []
        for (clusters, _), call in by_call.items():
            points = [embedded.vectors[rows] for _, _, rows in call]
            clustered = zip(call, points, kmeans_ragged(points, clusters), strict=True)
            for (k, places, rows), x, (labels, centers) in clustered:
                positions = rows - embedded.first_row[places, None]
                shapes.append(_Shape(places, k, clusters, rows, positions, x, labels, centers))
        return unclustered, shapes

    def _select(self, shape: _Shape, embedded: _Embedded) -> list[list[int]]:
        """Stage 4: each text's k picks (positions, in document order). kmeans: every cluster's
        member nearest its centre (a budget above the cluster cap: nearest, then second nearest, in
        turn); default: the k best by the scorer (ties: the earliest)."""
        if self.method == "kmeans" and shape.k > shape.clusters:
            picks = _nearest_members_in_turn(
                shape.points, shape.labels, shape.centers, shape.positions, shape.k
            )
        elif self.method == "kmeans":
            picks = _nearest_member_per_cluster(shape.points, shape.labels, shape.centers, shape.positions)
        else:
            # (Not `@`: numpy hands that to BLAS, whose AVX-512 kernels can raise a spurious
            # "invalid value encountered in matmul" warning on clean input.)
            score = np.einsum("bmf,f->bm", self._features(shape, embedded), self._scorer_weights)
            best = np.argsort(-score, axis=1, kind="stable")[:, : shape.k]
            picks = np.take_along_axis(shape.positions, best, axis=1)
        return _completed(picks, shape.positions, shape.k)

    def _features(self, shape: _Shape, embedded: _Embedded) -> Floats:
        """The default method's scorer features of a shape's sentences, (B, m, len(FEATURES))."""
        assert embedded.salience is not None
        return scorer.features(
            shape.points,
            shape.labels,
            shape.clusters,
            shape.positions,
            embedded.n_sentences[shape.texts, None],
            embedded.words[shape.rows],
            embedded.salience[shape.rows],
        )


def _split(texts: list[str | None], budget: Budget) -> tuple[list[Summary | None], dict[int, _Text]]:
    """Stage 1: each text's sentences, and its budget in sentences. The summaries of the texts that
    need no picking (empty, no longer than the budget, or an error of the splitter's: one bad text
    must not fail the batch); None in place of the others, which are returned by their place."""
    summaries: list[Summary | None] = []
    to_pick: dict[int, _Text] = {}
    for i, text in enumerate(texts):
        try:
            sentences = split_sentences(text) if isinstance(text, str) else []
        except Exception as exc:
            summaries.append(Summary([], [], 0, schema.error_status(f"{type(exc).__name__}: {exc}")))
            continue
        n = len(sentences)
        k = budget.size(n) if n else 0
        if n == 0:
            summaries.append(Summary([], [], 0, schema.EMPTY))
        elif n <= k:
            summaries.append(Summary(sentences, list(range(n)), n, schema.PASSTHROUGH))
        else:
            summaries.append(None)
            to_pick[i] = _Text(sentences, k)
    return summaries, to_pick


def _long_then_short(embedded: _Embedded, text: int, k: int) -> list[int]:
    """Stage 4 for a text (its place in the batch) with no more long enough sentences than its
    budget, k: all of them, and its earliest short ones up to k."""
    first = embedded.first_row[text]
    rows = np.arange(first, first + embedded.n_sentences[text])
    long_enough = embedded.long_enough[rows]
    short = rows[~long_enough][: k - int(long_enough.sum())]
    return sorted((np.concatenate((rows[long_enough], short)) - first).tolist())


def _completed(picks: Ints, positions: Ints, k: int) -> list[list[int]]:
    """Each text's picks (B, k) in document order. k-means can leave a cluster empty (identical
    sentences), picked as -1: such a text's budget is filled with its earliest unpicked sentences."""
    completed = np.sort(picks, axis=1).tolist()
    for j in np.flatnonzero(~(picks >= 0).all(axis=1)).tolist():
        chosen = {p for p in picks[j].tolist() if p >= 0}
        spare = (p for p in positions[j].tolist() if p not in chosen)
        while len(chosen) < k:
            chosen.add(next(spare))
        completed[j] = sorted(chosen)
    return completed


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


def _weighted_sums(weights: Floats, columns: Ints, indptr: Ints, table: Floats) -> Floats:
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
    x: SentenceVectors, labels: Ints, centers: SentenceVectors, positions: Ints
) -> Ints:
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
    x: SentenceVectors, labels: Ints, centers: SentenceVectors, positions: Ints, k: int
) -> Ints:
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


def _word_weights(n_words: int, vocabulary_rows: Lookup, method: str) -> Floats:
    """Weight of each vocabulary row in a sentence embedding; 0 for punctuation."""
    if method == "kmeans":  # the original: a plain mean of the words' vectors
        weights = np.ones(n_words, dtype=np.float32)
    else:
        zipf = 1.0 / np.arange(1, n_words + 1)
        weights = (_SIF_A / (_SIF_A + zipf / zipf.sum())).astype(np.float32)
    rows = vocabulary_rows(_PUNCTUATION)
    weights[rows[rows >= 0]] = 0.0
    return weights


def _exact_lookup(vectors: WordVectorsLike) -> Lookup:
    """`vectors.lookup`, its hash table's rows checked against the words: a token not in the
    vocabulary could share a 64-bit hash with one that is. (Not `vectors.index`: building that
    400,000-word dict cost every run ~0.3 s before its first summary; the words alone ~0.07 s.)"""
    words = vectors.words

    def rows(tokens: list[str]) -> Ints:
        found = vectors.lookup(tokens)
        rows = found.tolist()
        for position in np.flatnonzero(found >= 0).tolist():
            if words[rows[position]] != tokens[position]:
                found[position] = -1
        return found

    return rows
