"""ROUGE of the summarizer against baselines on the BBC News Summary dev half (1,124 articles).

For each article the title (line 1) is dropped and the body is summarized with as many
sentences as the reference summary has; every method is scored in the same run with
rouge-score (ROUGE-1/2/L F1, Porter stemming), averaged over articles.

Methods:
  default, kmeans  summarizer.Summarizer(method=..., budget=Budget(sentences=k))
  lead             the first k sentences of the body (summarizer.split.split_sentences)
  lexrank          sumy's LexRank on the same sentences (English stemmer and stop words)

    python scripts/evaluate.py                       # all articles, all methods, markdown table
    python scripts/evaluate.py --limit 100 --methods lead,lexrank --json
    python scripts/evaluate.py --by-category         # also each news category on its own
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rouge_score.rouge_scorer import RougeScorer

from summarizer import Budget, Summarizer, split_sentences

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "bbc-news-summary-dev"
# Reference summaries are article sentences glued together with no separator.
REFERENCE_SPLIT = re.compile(r"(?<=[.!?])(?=[A-Z\"])")
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


@dataclass(frozen=True)
class Article:
    name: str  # "<category>/NNN"
    body: str
    reference: list[str]  # the reference summary's sentences


def read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")  # sport/199.txt: a Latin-1 '£'


def read_articles(data: Path, limit: int | None = None) -> list[Article]:
    """Articles with their references, categories interleaved (001 of each, then 002...) so that
    ``limit`` takes a sample of every category rather than the first one."""
    articles_dir, summaries_dir = data / "News Articles", data / "Summaries"
    if not articles_dir.is_dir() or not summaries_dir.is_dir():
        raise SystemExit(f"{data}: expected 'News Articles/' and 'Summaries/' folders (see --data)")
    paths = sorted(articles_dir.glob("*/*.txt"), key=lambda path: (path.name, path.parent.name))
    articles = []
    for path in paths[:limit]:
        _title, _, body = read_text(path).strip().partition("\n")
        summary = read_text(summaries_dir / path.parent.name / path.name).strip()
        reference = [sentence.strip() for sentence in REFERENCE_SPLIT.split(summary) if sentence.strip()]
        articles.append(Article(f"{path.parent.name}/{path.stem}", body.strip(), reference))
    return articles


def summarize_with_library(method: str) -> Callable[[list[Article]], list[str]]:
    def summarize(articles: list[Article]) -> list[str]:
        import glove

        vectors = glove.load()
        # The budget is per Summarizer, so articles are batched by reference length.
        by_budget: dict[int, list[int]] = defaultdict(list)
        for i, article in enumerate(articles):
            by_budget[len(article.reference)].append(i)
        summaries = [""] * len(articles)
        for k, indices in by_budget.items():
            summarizer = Summarizer(method=method, budget=Budget(sentences=k), vectors=vectors)
            for i, summary in zip(
                indices, summarizer.summarize_many([articles[i].body for i in indices]), strict=True
            ):
                summaries[i] = summary.text
        return summaries

    return summarize


def summarize_lead(articles: list[Article]) -> list[str]:
    return [" ".join(split_sentences(article.body)[: len(article.reference)]) for article in articles]


class _WordTokenizer:
    """What sumy's document model asks of a tokenizer. Sumy's own needs NLTK's punkt data,
    which can't be downloaded here; sentences come from our splitter instead."""

    _WORD = re.compile(r"\w+(?:['’]\w+)*")

    def to_sentences(self, paragraph: str) -> tuple[str, ...]:
        return tuple(split_sentences(paragraph))

    def to_words(self, sentence: str) -> tuple[str, ...]:
        return tuple(self._WORD.findall(sentence))


def summarize_lexrank(articles: list[Article]) -> list[str]:
    from sumy.models.dom import ObjectDocumentModel, Paragraph, Sentence
    from sumy.nlp.stemmers import Stemmer
    from sumy.summarizers.lex_rank import LexRankSummarizer
    from sumy.utils import get_stop_words

    tokenizer = _WordTokenizer()
    lexrank = LexRankSummarizer(Stemmer("english"))
    lexrank.stop_words = get_stop_words("english")
    summaries = []
    for article in articles:
        sentences = [Sentence(text, tokenizer) for text in split_sentences(article.body)]
        document = ObjectDocumentModel([Paragraph(sentences)])
        summaries.append(" ".join(str(sentence) for sentence in lexrank(document, len(article.reference))))
    return summaries


METHODS: dict[str, Callable[[list[Article]], list[str]]] = {
    "default": summarize_with_library("default"),
    "kmeans": summarize_with_library("kmeans"),
    "lead": summarize_lead,
    "lexrank": summarize_lexrank,
}


def score(articles: list[Article], summaries: list[str]) -> dict[str, float]:
    scorer = RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    per_article = [
        scorer.score(" ".join(article.reference), summary)
        for article, summary in zip(articles, summaries, strict=True)
    ]
    return {kind: statistics.fmean(scores[kind].fmeasure for scores in per_article) for kind in ROUGE_TYPES}


def evaluate(
    articles: list[Article], methods: list[str], by_category: bool = False
) -> list[dict[str, float | int | str]]:
    """One row per method (and, with `by_category`, per method and category after them)."""
    rows: list[dict[str, float | int | str]] = []
    categories: list[dict[str, float | int | str]] = []
    for method in methods:
        started = time.perf_counter()
        summaries = METHODS[method](articles)
        seconds = time.perf_counter() - started
        rows.append(
            {"method": method, **score(articles, summaries), "articles": len(articles), "seconds": seconds}
        )
        if by_category:
            chosen: dict[str, list[int]] = defaultdict(list)
            for i, article in enumerate(articles):
                chosen[article.name.split("/")[0]].append(i)
            for category, indices in sorted(chosen.items()):
                scores = score([articles[i] for i in indices], [summaries[i] for i in indices])
                categories.append(
                    {"method": f"{method} ({category})", **scores, "articles": len(indices)}
                )
    return rows + sorted(categories, key=lambda row: str(row["method"]).split(" ", 1)[1])


def markdown(rows: list[dict[str, float | int | str]]) -> str:
    lines = [
        "| method | ROUGE-1 F1 | ROUGE-2 F1 | ROUGE-L F1 | articles | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        seconds = f"{row['seconds']:.2f}" if "seconds" in row else ""  # a category has no time of its own
        lines.append(
            f"| {row['method']} | {row['rouge1']:.4f} | {row['rouge2']:.4f} | {row['rougeL']:.4f} "
            f"| {row['articles']} | {seconds} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help=f"dataset folder (default {DEFAULT_DATA})"
    )
    parser.add_argument(
        "--limit", type=int, help="evaluate only the first N articles (categories interleaved)"
    )
    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        help=f"comma-separated, from {', '.join(METHODS)} (default all)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a markdown table")
    parser.add_argument(
        "--by-category",
        action="store_true",
        help="also score each news category on its own (are the gains the same everywhere?)",
    )
    args = parser.parse_args(argv)
    methods = [method.strip() for method in args.methods.split(",") if method.strip()]
    unknown = [method for method in methods if method not in METHODS]
    if unknown or not methods:
        parser.error(
            f"unknown method(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(METHODS)}"
        )
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")

    articles = read_articles(args.data, args.limit)
    if not articles:
        raise SystemExit(f"{args.data}: no articles found")
    rows = evaluate(articles, methods, args.by_category)
    print(json.dumps(rows, indent=1) if args.json else markdown(rows))


if __name__ == "__main__":
    main()
