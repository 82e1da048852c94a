"""Worst-case throughput on hostile text, against ordinary reviews in the same process.

Each hostile family (punctuation runs, a URL of dots, abbreviations, tags, text without spaces,
many distinct sentences under `--method kmeans --ratio 0.99`) is built at --chars characters and
summarized end to end; the baseline is the same number of characters of real reviews. Prints each
family's characters/s and its ratio to the baseline (this machine's noise cancels in the ratio),
then the worst case.

    .venv/bin/python scripts/bench_hostile.py [--chars 100000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from summarizer import Budget, Summarizer  # noqa: E402

SAMPLE = REPO / "tests" / "data" / "reviews_sample.csv"


def families(chars: int) -> dict[str, str]:
    words = ["good", "bad", "taste", "coffee", "dog", "food", "price", "box", "great", "chips"]
    distinct = " ".join(
        f"{words[i % 10].capitalize()} {words[i // 10 % 10]} {words[i // 100 % 10]} {i}."
        for i in range(chars // 20)
    )
    units = {
        "dots": ".",
        "bangs": "!",
        "ellipses": "…",
        "url of dots": None,
        "abbreviations": "e.g. U.S. Mr. etc. ",
        "tags": "<br /><b>x</b><",
        "no spaces": "a.B",
    }
    built = {
        name: (unit * (chars // len(unit)) + "a") if unit else "www." + "." * chars + "a"
        for name, unit in units.items()
    }
    built["distinct sentences"] = distinct[:chars]
    return built


def chars_per_s(summarizer: Summarizer, budget: Budget | None, text: str, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        summarizer.summarize(text, budget)
        best = min(best, time.perf_counter() - started)
    return len(text) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chars", type=int, default=100_000)
    args = parser.parse_args()
    import pandas as pd

    reviews = " ".join(pd.read_csv(SAMPLE)["Text"].fillna(""))
    baseline_text = (reviews * (args.chars // len(reviews) + 1))[: args.chars]
    methods = {
        "default": (Summarizer(), None),
        "kmeans --ratio 0.99": (Summarizer("kmeans"), Budget(ratio=0.99)),
    }
    worst = (float("inf"), "")
    for method, (summarizer, budget) in methods.items():
        baseline = chars_per_s(summarizer, budget, baseline_text)
        print(f"{method}: real reviews {baseline:,.0f} chars/s (baseline)")
        for name, text in families(args.chars).items():
            rate = chars_per_s(summarizer, budget, text)
            print(f"  {name:20} {rate:>12,.0f} chars/s   {rate / baseline:6.2f}x baseline")
            worst = min(worst, (rate, f"{name}, {method}"))
    print(f"worst case: {worst[0]:,.0f} chars/s ({worst[1]}) at {args.chars:,} characters")


if __name__ == "__main__":
    main()
