"""ROUGE of the summarizer against baselines on the BBC News Summary dev half (1,124 articles).

For each article the title (line 1) is dropped and the body is summarized with as many
sentences as the reference summary has; every method is scored in the same run with
rouge-score (ROUGE-1/2/L F1, Porter stemming), averaged over articles, with a 95% bootstrap
confidence interval (articles resampled with replacement, percentile method).

Methods:
  default, kmeans  summarizer.Summarizer(method=...).summarize_many(texts, Budget(sentences=k))
  default-cv       default with its scorer's weights learned by 5-fold cross-validation: the
                   articles are split into 5 folds (seeded, whole articles), and each fold is
                   summarized with weights fit on the other four. `default`'s shipped weights
                   were fit on the BBC dev half, so on those articles only default-cv is an
                   honest figure; `--fit` prints the weights fit on all the given articles.
  lead             the first k sentences of the body (summarizer.split.split_sentences)
  lexrank, textrank, lsa, luhn
                   sumy's summarizers on the same sentences, English stemmer, no stop-word list
                   (sumy's default); "-stop" after the name (lexrank-stop) adds sumy's English
                   stop words. A peer is judged at its best: `--peers` runs every peer both
                   ways, and the closing lines compare `default` with each peer's better setting
                   (chosen on these same articles, which favours the peer) by a paired bootstrap
                   of the ROUGE-2 difference.

With `--feedback FILE` (the review page's export, GET /feedback.csv) the texts are the export's
instead of the BBC articles, and a text's reference is what its stakeholders wanted: the summary
shown when approved, the corrected summary when corrected, split into sentences like the texts
(summarizer.split_sentences); the budget is again the reference's sentence count. A text is one
text_id with one text (two batch files' row ids may collide). When a text has several decisions,
the latest by time is its decision: a reviewer's later decision supersedes (ties: the later row).
A text whose latest decision is a rejection has no reference and is left out. stderr accounts
for every row: used (approved, corrected), rejected, without reference sentences, superseded.
default-cv, --fit and --by-category need the BBC articles (their extractive references' labels,
their categories), so they are refused with --feedback.

    python scripts/evaluate.py                       # all articles, default/kmeans/lead/lexrank
    python scripts/evaluate.py --peers               # ... and every sumy peer, both settings
    python scripts/evaluate.py --limit 100 --methods lead,lexrank --json
    python scripts/evaluate.py --by-category         # also each news category on its own
    python scripts/evaluate.py --methods default-cv --peers   # the README's table
    python scripts/evaluate.py --fit                 # the scorer's weights (summarizer/scorer.py)
    python scripts/evaluate.py --feedback feedback.csv --peers   # against stakeholders' summaries
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from rouge_score.rouge_scorer import RougeScorer

from summarizer import Budget, Summarizer, scorer, split_sentences
from sumpipe.feedback import APPROVE, CORRECT, DECISIONS, EXPORT_COLUMNS, REJECT

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "bbc-news-summary-dev"
# Reference summaries are article sentences glued together with no separator.
REFERENCE_SPLIT = re.compile(r"(?<=[.!?])(?=[A-Z\"])")
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


@dataclass(frozen=True)
class Article:
    name: str  # "<category>/NNN", or a feedback text's text_id
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


class FeedbackError(ValueError):
    """The --feedback file can't be evaluated (the message is one line, for stderr)."""


def read_feedback(path: Path, limit: int | None = None) -> tuple[list[Article], str]:
    """The export's texts that have a reference (see the module docstring), in the order of their
    first row, and one line accounting for every row read."""
    csv.field_size_limit(2**31 - 1)  # a pasted text may exceed csv's default 128 KB field
    try:
        with path.open(newline="", encoding="utf-8-sig") as file:
            reader = csv.DictReader(file)
            missing = [column for column in EXPORT_COLUMNS if column not in (reader.fieldnames or ())]
            if missing:
                raise FeedbackError(f"{path}: not a feedback export, missing column(s) {', '.join(missing)}")
            rows = list(reader)
    except (OSError, UnicodeDecodeError) as error:
        raise FeedbackError(f"{path}: can't read it ({error})") from None
    if not rows:
        raise FeedbackError(f"{path}: no decisions in the export")
    latest: dict[tuple[str, str], tuple[datetime, dict[str, str]]] = {}
    for number, row in enumerate(rows, start=1):
        if row["decision"] not in DECISIONS:
            raise FeedbackError(
                f"{path}: decision {number}: decision {row['decision']!r} is not one of {DECISIONS}"
            )
        try:
            when = datetime.fromisoformat(row["time"])
        except ValueError:
            raise FeedbackError(f"{path}: decision {number}: time {row['time']!r} is not ISO 8601") from None
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
        key = (row["text_id"], row["text"])
        if key not in latest or when >= latest[key][0]:
            latest[key] = (when, row)
    articles, used = [], {APPROVE: 0, CORRECT: 0}
    rejected = empty = 0
    for (text_id, text), (_, row) in latest.items():
        if row["decision"] == REJECT:
            rejected += 1
            continue
        summary = row["summary_shown"] if row["decision"] == APPROVE else row["corrected_summary"]
        reference = split_sentences(summary)
        if not reference:
            empty += 1
            continue
        used[row["decision"]] += 1
        articles.append(Article(text_id, text, reference))
    counts = (
        f"{path}: {len(rows)} decisions on {len(latest)} texts: {len(articles)} texts used "
        f"({used[APPROVE]} approved, {used[CORRECT]} corrected), {rejected} rejected (its latest decision), "
        f"{empty} without reference sentences; {len(rows) - len(latest)} decisions superseded by a later "
        "one on the same text"
    )
    if not articles:
        raise FeedbackError(f"{counts}: no text has a reference to evaluate against")
    return articles[:limit], counts


def summarize_with_library(method: str) -> Callable[[list[Article]], list[str]]:
    def summarize(articles: list[Article]) -> list[str]:
        return library_summaries(articles, method)

    return summarize


def library_summaries(articles: list[Article], method: str, weights: np.ndarray | None = None) -> list[str]:
    import glove

    summarizer = Summarizer(method=method, vectors=glove.load(), weights=weights)
    # The budget is per call, so articles are batched by reference length.
    by_budget: dict[int, list[int]] = defaultdict(list)
    for i, article in enumerate(articles):
        by_budget[len(article.reference)].append(i)
    summaries = [""] * len(articles)
    for k, indices in by_budget.items():
        bodies = [articles[i].body for i in indices]
        for i, summary in zip(indices, summarizer.summarize_many(bodies, Budget(sentences=k)), strict=True):
            summaries[i] = summary.text
    return summaries


FOLDS = 5


def training_set(articles: list[Article]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per article, the default scorer's features of its scored sentences and whether each is in
    the reference (whitespace-normalized equality; the references are copied sentences)."""
    summarizer = Summarizer("default")
    features, labels = [], []
    for article in articles:
        reference = {" ".join(sentence.split()) for sentence in article.reference}
        sentences, positions, found = summarizer.sentence_features(article.body)
        features.append(found)
        labels.append(np.array([" ".join(sentences[p].split()) in reference for p in positions.tolist()]))
    return features, labels


def folds(n: int, k: int = FOLDS, seed: int = 0) -> list[np.ndarray]:
    """k disjoint sets of article indices covering all n (a seeded permutation, cut in k)."""
    return np.array_split(np.random.default_rng(seed).permutation(n), k)


def summarize_cross_validated(articles: list[Article]) -> list[str]:
    """Each fold summarized with scorer weights fit on the other folds only."""
    if len(articles) < FOLDS:
        raise SystemExit(f"default-cv needs at least {FOLDS} articles, got {len(articles)}")
    features, labels = training_set(articles)
    summaries = [""] * len(articles)
    for held_out in folds(len(articles)):
        held = set(held_out.tolist())
        train = [i for i in range(len(articles)) if i not in held]
        weights = scorer.fit([features[i] for i in train], [labels[i] for i in train])
        for i, summary in zip(
            held_out.tolist(),
            library_summaries([articles[i] for i in held_out], "default", weights),
            strict=True,
        ):
            summaries[i] = summary
    return summaries


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


# sumy's summarizers: module, class.
SUMY_PEERS = {
    "lexrank": ("sumy.summarizers.lex_rank", "LexRankSummarizer"),
    "textrank": ("sumy.summarizers.text_rank", "TextRankSummarizer"),
    "lsa": ("sumy.summarizers.lsa", "LsaSummarizer"),
    "luhn": ("sumy.summarizers.luhn", "LuhnSummarizer"),
}
STOP_SUFFIX = "-stop"


def summarize_with_sumy(peer: str, stop_words: bool) -> Callable[[list[Article]], list[str]]:
    def summarize(articles: list[Article]) -> list[str]:
        import importlib

        from sumy.models.dom import ObjectDocumentModel, Paragraph, Sentence
        from sumy.nlp.stemmers import Stemmer
        from sumy.utils import get_stop_words

        module, name = SUMY_PEERS[peer]
        tokenizer = _WordTokenizer()
        summarizer = getattr(importlib.import_module(module), name)(Stemmer("english"))
        if stop_words:
            summarizer.stop_words = get_stop_words("english")
        summaries = []
        for article in articles:
            sentences = [Sentence(text, tokenizer) for text in split_sentences(article.body)]
            document = ObjectDocumentModel([Paragraph(sentences)])
            chosen = summarizer(document, len(article.reference))
            summaries.append(" ".join(str(sentence) for sentence in chosen))
        return summaries

    return summarize


METHODS: dict[str, Callable[[list[Article]], list[str]]] = {
    "default": summarize_with_library("default"),
    "default-cv": summarize_cross_validated,
    "kmeans": summarize_with_library("kmeans"),
    "lead": summarize_lead,
    **{
        peer + suffix: summarize_with_sumy(peer, stop_words=bool(suffix))
        for peer in SUMY_PEERS
        for suffix in ("", STOP_SUFFIX)
    },
}
DEFAULT_METHODS = ("default", "kmeans", "lead", "lexrank")
BOOTSTRAP_SAMPLES = 1000


def article_scores(articles: list[Article], summaries: list[str]) -> np.ndarray:
    """(articles, ROUGE_TYPES) F1 of each summary against its reference."""
    scorer = RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    return np.array(
        [
            [scores[kind].fmeasure for kind in ROUGE_TYPES]
            for scores in (
                scorer.score(" ".join(article.reference), summary)
                for article, summary in zip(articles, summaries, strict=True)
            )
        ]
    ).reshape(len(articles), len(ROUGE_TYPES))


def score(articles: list[Article], summaries: list[str]) -> dict[str, float]:
    means = article_scores(articles, summaries).mean(axis=0)
    return {kind: float(mean) for kind, mean in zip(ROUGE_TYPES, means, strict=True)}


def resamples(n: int, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> np.ndarray:
    """(samples, n) article indices drawn with replacement: the same draws for every method, so
    differences between methods are paired."""
    return np.random.default_rng(seed).integers(0, n, size=(samples, n))


def interval(values: np.ndarray, draws: np.ndarray) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean of `values` (per article) over `draws`."""
    means = values[draws].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def evaluate(
    articles: list[Article], methods: list[str], by_category: bool = False
) -> list[dict[str, float | int | str]]:
    """One row per method (and, with `by_category`, per method and category after them); after
    them, with `default` and peers among `methods`, one row per peer comparing `default` with the
    peer's better setting (the ROUGE-2 difference and its paired bootstrap interval)."""
    rows: list[dict[str, float | int | str]] = []
    categories: list[dict[str, float | int | str]] = []
    per_method: dict[str, np.ndarray] = {}
    draws = resamples(len(articles))
    for method in methods:
        started = time.perf_counter()
        summaries = METHODS[method](articles)
        seconds = time.perf_counter() - started
        values = per_method[method] = article_scores(articles, summaries)
        row: dict[str, float | int | str] = {"method": method}
        for column, kind in enumerate(ROUGE_TYPES):
            row[kind] = float(values[:, column].mean())
            row[f"{kind}_ci"] = interval(values[:, column], draws)  # type: ignore[assignment]
        rows.append({**row, "articles": len(articles), "seconds": seconds})
        if by_category:
            chosen: dict[str, list[int]] = defaultdict(list)
            for i, article in enumerate(articles):
                chosen[article.name.split("/")[0]].append(i)
            for category, indices in sorted(chosen.items()):
                scores = score([articles[i] for i in indices], [summaries[i] for i in indices])
                categories.append({"method": f"{method} ({category})", **scores, "articles": len(indices)})
    comparisons = compare_with_peers(per_method, draws)
    return rows + sorted(categories, key=lambda row: str(row["method"]).split(" ", 1)[1]) + comparisons


def compare_with_peers(
    per_method: dict[str, np.ndarray], draws: np.ndarray
) -> list[dict[str, float | int | str]]:
    """`default` against each sumy peer at its better setting (by mean ROUGE-2 here); its
    cross-validated figure (default-cv) when there is one."""
    ours = next((name for name in ("default-cv", "default") if name in per_method), None)
    if ours is None:
        return []
    rouge2 = ROUGE_TYPES.index("rouge2")
    rows: list[dict[str, float | int | str]] = []
    for peer in SUMY_PEERS:
        settings = [name for name in (peer, peer + STOP_SUFFIX) if name in per_method]
        if not settings:
            continue
        best = max(settings, key=lambda name: per_method[name][:, rouge2].mean())
        difference = per_method[ours][:, rouge2] - per_method[best][:, rouge2]
        rows.append(
            {
                "method": f"{ours} vs {best}",
                "rouge2_difference": float(difference.mean()),
                "rouge2_difference_ci": interval(difference, draws),  # type: ignore[dict-item]
                "articles": len(difference),
            }
        )
    return rows


def markdown(rows: list[dict[str, float | int | str]]) -> str:
    lines = [
        "| method | ROUGE-1 F1 | ROUGE-2 F1 | ROUGE-L F1 | articles | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for row in (row for row in rows if "rouge1" in row):
        seconds = f"{row['seconds']:.2f}" if "seconds" in row else ""  # a category has no time of its own
        cells = [_score_cell(row, kind) for kind in ROUGE_TYPES]
        lines.append(f"| {row['method']} | {' | '.join(cells)} | {row['articles']} | {seconds} |")
    comparisons = [row for row in rows if "rouge2_difference" in row]
    if comparisons:
        lines += ["", "| comparison | ROUGE-2 difference | 95% CI | articles |", "|---|---|---|---|"]
        for row in comparisons:
            low, high = row["rouge2_difference_ci"]  # type: ignore[misc]
            difference = f"{row['rouge2_difference']:+.4f} | [{low:+.4f}, {high:+.4f}]"
            lines.append(f"| {row['method']} | {difference} | {row['articles']} |")
    return "\n".join(lines)


def _score_cell(row: dict[str, float | int | str], kind: str) -> str:
    """ "0.6912 [0.6801, 0.7020]": the mean and, when there is one, its interval."""
    cell = f"{row[kind]:.4f}"
    if f"{kind}_ci" in row:
        low, high = row[f"{kind}_ci"]  # type: ignore[misc]
        cell += f" [{low:.4f}, {high:.4f}]"
    return cell


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help=f"dataset folder (default {DEFAULT_DATA})"
    )
    source.add_argument(
        "--feedback",
        type=Path,
        metavar="FILE",
        help="evaluate on a feedback export's texts (GET /feedback.csv) against stakeholders' summaries",
    )
    parser.add_argument(
        "--limit",
        type=int,
        help="evaluate only the first N articles (categories interleaved) or feedback texts",
    )
    parser.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        help=f"comma-separated, from {', '.join(METHODS)} (default {','.join(DEFAULT_METHODS)})",
    )
    parser.add_argument(
        "--peers",
        action="store_true",
        help="also every sumy peer with and without stop words, and default against each one's best",
    )
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a markdown table")
    parser.add_argument(
        "--by-category",
        action="store_true",
        help="also score each news category on its own (are the gains the same everywhere?)",
    )
    parser.add_argument(
        "--fit",
        action="store_true",
        help="print the default scorer's weights fit on the given articles (summarizer/scorer.py)",
    )
    args = parser.parse_args(argv)
    methods = [method.strip() for method in args.methods.split(",") if method.strip()]
    if args.peers:
        methods += [
            method for method in METHODS if method not in methods and method not in ("kmeans", "default-cv")
        ]
    unknown = [method for method in methods if method not in METHODS]
    if unknown or not methods:
        parser.error(
            f"unknown method(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(METHODS)}"
        )
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    if args.feedback is not None:
        refused = [
            name for name, given in (("--fit", args.fit), ("--by-category", args.by_category)) if given
        ]
        refused += ["--methods default-cv"] if "default-cv" in methods else []
        if refused:
            parser.error(
                f"{', '.join(refused)}: not with --feedback (they need the BBC articles' extractive "
                "references and categories)"
            )
        try:
            articles, counts = read_feedback(args.feedback, args.limit)
        except FeedbackError as error:
            print(error, file=sys.stderr)
            raise SystemExit(2) from None
        print(counts + (f"; evaluating the first {len(articles)}" if args.limit else ""), file=sys.stderr)
    else:
        articles = read_articles(args.data, args.limit)
        if not articles:
            raise SystemExit(f"{args.data}: no articles found")
        if args.fit:
            weights = scorer.fit(*training_set(articles))
            print(f"WEIGHTS = np.array([{', '.join(f'{w:.4f}' for w in weights)}], dtype=np.float32)")
            return
    rows = evaluate(articles, methods, args.by_category)
    print(json.dumps(rows, indent=1) if args.json else markdown(rows))


if __name__ == "__main__":
    main()
