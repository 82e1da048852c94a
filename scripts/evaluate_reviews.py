"""Weak-reference checks on real reviews, which have no human summaries: each review's title (the
`Summary` column of Amazon's reviews) says what its writer thought mattered, and a product's
titles say what its buyers did.

Per review (reviews of at least 3 sentences): each method keeps one sentence, scored by the share
of the title's words it uses (ROUGE-1 recall, stemmed, as `rouge-score` counts it):
  default, kmeans   summarizer.Summarizer(method).summarize_many(texts, Budget(sentences=1))
  lead              the first sentence

Per product (at least 20 reviews): the product's "title words" are the words (stemmed, not
scikit-learn's English stop words) that at least 5% of its titles use, weighted by how many do.
A summary's coverage is the weighted share of those it uses. Every method gets as many sentences
as the product's themes have:
  themes            `summarize --group-by`'s rows (summarizer.group.summarize_group): the theme
                    words and sentences
  pooled            default on all the product's reviews as one text
  lead              the first sentence of each review, in order

Means with a 95% bootstrap interval (reviews or products resampled), and the paired difference of
`default` (`themes`) and each other method.

    python scripts/evaluate_reviews.py [--reviews PATH] [--limit N] [--json]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from rouge_score.rouge_scorer import RougeScorer
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from summarizer import Budget, Summarizer, split_sentences
from summarizer.group import star_rating, summarize_group

REPO = Path(__file__).resolve().parents[1]
DEFAULT_REVIEWS = REPO.parent / "shared" / "data" / "amazon-fine-food-reviews" / "Reviews.csv"
MIN_SENTENCES = 3
MIN_PRODUCT_REVIEWS = 20
TITLE_WORD_SHARE = 0.05
BOOTSTRAP_SAMPLES = 1000
_WORD = re.compile(r"[a-z]+")


def bootstrap(values: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the mean (rows of `values` resampled with replacement)."""
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (BOOTSTRAP_SAMPLES, len(values)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def per_review(reviews: pd.DataFrame) -> dict[str, np.ndarray]:
    rows = [
        (title, text, sentences)
        for title, text in zip(reviews["Summary"], reviews["Text"], strict=True)
        if isinstance(title, str) and isinstance(text, str)
        for sentences in [split_sentences(text)]
        if len(sentences) >= MIN_SENTENCES
    ]
    titles = [title for title, _, _ in rows]
    texts = [text for _, text, _ in rows]
    picked = {
        method: [s.text for s in Summarizer(method).summarize_many(texts, Budget(sentences=1))]
        for method in ("default", "kmeans")
    }
    picked["lead"] = [sentences[0] for _, _, sentences in rows]
    scorer = RougeScorer(["rouge1"], use_stemmer=True)
    return {
        method: np.array(
            [scorer.score(t, s)["rouge1"].recall for t, s in zip(titles, sentences, strict=True)]
        )
        for method, sentences in picked.items()
    }


def _stems(text: str, stem) -> list[str]:
    return [stem(word) for word in _WORD.findall(text.lower()) if word not in ENGLISH_STOP_WORDS]


def per_product(reviews: pd.DataFrame) -> dict[str, np.ndarray]:
    from nltk.stem.porter import PorterStemmer

    stem = PorterStemmer().stem
    summarizer = Summarizer()
    counts = reviews["ProductId"].value_counts()
    scores: dict[str, list[float]] = {"themes": [], "pooled": [], "lead": []}
    for product in counts[counts >= MIN_PRODUCT_REVIEWS].index:
        rows = reviews[reviews["ProductId"] == product]
        with_text = rows[rows["Text"].map(lambda text: isinstance(text, str))]
        texts = with_text["Text"].tolist()
        title_words = Counter(
            word for title in rows["Summary"] if isinstance(title, str) for word in set(_stems(title, stem))
        )
        weights = {w: n for w, n in title_words.items() if n >= TITLE_WORD_SHARE * len(rows)}
        if not weights:
            continue
        stars = [star_rating(s) for s in with_text["Score"]] if "Score" in rows else None
        group = summarize_group(product, texts, summarizer, stars=stars)
        k = max(1, len(group.sentences))
        summaries = {
            "themes": " ".join([*(w for t in group.themes for w in t.words), *group.sentences]),
            "pooled": summarizer.summarize(" ".join(texts), Budget(sentences=k)).text,
            "lead": " ".join(first for text in texts[:k] for first in split_sentences(text)[:1]),
        }
        total = sum(weights.values())
        for method, summary in summaries.items():
            used = set(_stems(summary, stem))
            scores[method].append(sum(n for w, n in weights.items() if w in used) / total)
    return {method: np.array(values) for method, values in scores.items()}


def report(name: str, scores: dict[str, np.ndarray], ours: str) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    if not len(scores[ours]):
        print(f"{name}: nothing to score", file=sys.stderr)
        return rows
    for method, values in scores.items():
        rows.append(
            {
                "check": name,
                "method": method,
                "mean": float(values.mean()),
                "ci": bootstrap(values),
                "n": len(values),
            }
        )
    for method, values in scores.items():
        if method != ours:
            difference = scores[ours] - values
            rows.append(
                {
                    "check": name,
                    "method": f"{ours} - {method}",
                    "mean": float(difference.mean()),
                    "ci": bootstrap(difference),
                    "n": len(values),
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reviews", type=Path, default=DEFAULT_REVIEWS)
    parser.add_argument("--limit", type=int, help="the first N reviews only")
    parser.add_argument("--json", action="store_true", help="JSON instead of a table")
    args = parser.parse_args(argv)
    if not args.reviews.exists():
        print(f"{args.reviews}: not found (the shared Amazon reviews; --reviews PATH)", file=sys.stderr)
        return 2
    reviews = pd.read_csv(args.reviews, nrows=args.limit)
    missing = {"ProductId", "Summary", "Text"} - set(reviews.columns)
    if missing:
        print(f"{args.reviews}: no column {', '.join(sorted(missing))}", file=sys.stderr)
        return 2
    rows = report("review title, top sentence (ROUGE-1 recall)", per_review(reviews), "default")
    rows += report("product titles' words covered", per_product(reviews), "themes")
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print("| check | method | mean [95% CI] | n |\n|---|---|---|---|")
    for row in rows:
        low, high = row["ci"]  # type: ignore[misc]
        print(
            f"| {row['check']} | {row['method']} | {row['mean']:.3f} [{low:.3f}, {high:.3f}] | {row['n']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
