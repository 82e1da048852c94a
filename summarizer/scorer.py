"""The default method's sentence scorer: a linear model over five features of each sentence,
learned from extractive references.

Features, each in [0, 1] within its document (computed for the sentences long enough to cluster):
  centrality  cosine similarity to the centroid of the document's sentence embeddings
  lead        1 for the first sentence, falling linearly to 0 after the last
  length      log word count relative to the document's longest sentence
  salience    how much of the document's repeated vocabulary the sentence carries: the sum, over
              its content words (SIF weight >= 1/2: not GloVe's ~80 commonest words), of (the
              word's count in the document - 1) weighted by the word's SIF weight, as log1p
              relative to the document's most salient sentence. The idea of Luhn (1958) and of
              sumy's best peers here, on the embedding's own vocabulary and weights, with no
              stop-word list. Counting "it" and "the" too (at their small weights) made the
              sentence that repeats them the most salient of a short review: normalized to the
              largest, noise ranked its sentences.
  topic       the share of the document's sentences in the sentence's k-means cluster
              (k = ceil(sqrt(n))): a sentence about what the document mostly says beats a digression

A sentence's score is WEIGHTS @ features; a summary keeps the best `budget` sentences.

WEIGHTS are a logistic regression of "this sentence is in the human reference" on the features,
over the 1,124 articles of the BBC News Summary dev half (`scripts/evaluate.py --fit` reproduces
them). Their quality is reported by 5-fold cross-validation (`--methods default-cv`: every fold
summarized with weights fit on the other four), never on the articles they were fit to.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FEATURES: tuple[str, ...] = ("centrality", "lead", "length", "salience", "topic")
# scripts/evaluate.py --fit, on the BBC News Summary dev half (1,124 articles)
WEIGHTS = np.array([1.8977, 0.6667, -2.3146, 7.8071, 0.3169], dtype=np.float32)


def check_weights(weights: object) -> np.ndarray:
    """`weights` as the scorer's float32 vector; TypeError/ValueError naming what is expected."""
    try:
        array = np.asarray(weights, dtype=np.float32)
    except (TypeError, ValueError):
        raise TypeError(f"weights must be {len(FEATURES)} numbers ({', '.join(FEATURES)})") from None
    if array.shape != (len(FEATURES),) or not np.isfinite(array).all():
        raise ValueError(
            f"weights must be {len(FEATURES)} finite numbers ({', '.join(FEATURES)}), got {weights!r}"
        )
    return array


def _relative_log(values: np.ndarray) -> np.ndarray:
    """log1p(values) over its largest in the document (last axis): [0, 1], 0 where all are 0."""
    logs = np.log1p(values)
    return logs / np.maximum(logs.max(axis=-1, keepdims=True), 1e-12)


def features(
    x: np.ndarray,
    labels: np.ndarray,
    clusters: int,
    positions: np.ndarray,
    n_sentences: np.ndarray | int,
    words: np.ndarray,
    salience: np.ndarray,
) -> np.ndarray:
    """(B, n, len(FEATURES)) for B documents of n scored sentences each: embeddings x (B, n, d),
    their k-means labels (B, n) among `clusters`, their positions among the document's
    `n_sentences` (B, n; n_sentences (B, 1) or one int), word counts (B, n), and each sentence's
    raw salience (B, n; see the module's docstring)."""
    n = x.shape[1]
    lead = 1.0 - positions / n_sentences
    centroid = x.mean(axis=1, keepdims=True)
    centrality = (x * centroid).sum(axis=-1) / np.maximum(
        np.linalg.norm(x, axis=-1) * np.linalg.norm(centroid, axis=-1), 1e-12
    )
    cluster_share = (labels[:, :, None] == np.arange(clusters)).sum(axis=1) / n  # (B, clusters)
    return np.stack(
        (
            centrality,
            lead,
            _relative_log(words.astype(np.float32)),
            _relative_log(salience),
            np.take_along_axis(cluster_share, labels, axis=1),
        ),
        axis=-1,
    ).astype(np.float32)


def fit(features_per_document: Sequence[np.ndarray], labels_per_document: Sequence[np.ndarray]) -> np.ndarray:
    """Weights learned from documents' sentence features (n_i, len(FEATURES)) and 0/1 labels (n_i):
    an L2-regularised logistic regression (scikit-learn, C=1). Only the ranking matters, so the
    intercept is dropped."""
    from sklearn.linear_model import LogisticRegression

    x = np.vstack(features_per_document)
    y = np.concatenate(labels_per_document)
    model = LogisticRegression(C=1.0, max_iter=5000).fit(x, y)
    return model.coef_[0].astype(np.float32)
