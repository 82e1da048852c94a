"""Summarizer throughput: library level and end to end (CSV in -> CSV out through `summarize`).

Reads the real reviews, replicates them to --rows (default 100,000) for the scale runs, and
measures in one process, with the baseline run again right before and after every measurement
(the machine's speed drifts), so that noise hits each ratio's two sides alike:
  * the baseline: the original algorithm written straightforwardly, one review at a time (Punkt
    sentence splitting, per-word GloVe dict lookups and a mean per sentence, sklearn
    KMeans(random_state=0) per review, single-threaded; see `baseline`) on the first
    --baseline-rows real reviews;
  * `Summarizer.summarize_many` for each method (one process);
  * `summarize reviews.csv -o out.csv` for each method, with no other flags (what a user runs: as
    many workers as usable cores), or `--workers N` (a subprocess; wall time and the
    peak memory (PSS) of its whole process tree, sampled from /proc).
Prints absolute figures and ratios against the baseline.

    .venv/bin/python scripts/bench_throughput.py [--reviews PATH] [--rows 100000] [--workers N]
"""

from __future__ import annotations

import argparse
import math
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DEFAULT_REVIEWS = REPO.parent / "shared" / "data" / "amazon-fine-food-reviews" / "Reviews.csv"
TARGET_RATE = 10_000  # reviews/s end to end on 2 cores
TARGET_SPEEDUP = 25
TARGET_PEAK_MB = 600
T = TypeVar("T")


def baseline(texts: list[str], vectors) -> float:
    """Reviews/s of the original algorithm, straightforwardly, one review at a time.

    Exactly: Punkt sentence splitting (``punkt.sent_tokenize``, nltk's Punkt algorithm and English
    parameters; nltk's own data can't be downloaded here); per sentence, lowercased ``\\w+`` words
    looked up one by one in the GloVe dict and averaged (a zero vector when none is known);
    sklearn ``KMeans(n_clusters=ceil(sqrt(n)), random_state=0)`` per review; the sentence nearest
    each centre, indexed in the review's full sentence list (the original's index bug fixed),
    joined in document order. Reviews with n <= k sentences are passed through. Single-threaded:
    threadpoolctl limits BLAS/OpenMP to 1 thread (on problems this small extra threads only add
    overhead, so this is the baseline's best setting, not a handicap)."""
    import punkt
    from sklearn.cluster import KMeans
    from sklearn.metrics import pairwise_distances_argmin_min
    from threadpoolctl import threadpool_limits

    table = np.asarray(vectors.vectors)
    index = vectors.index
    words = re.compile(r"\w+")

    def summarize(text: str) -> str:
        sentences = punkt.sent_tokenize(text)
        k = math.ceil(math.sqrt(len(sentences))) if sentences else 0
        if len(sentences) <= k:
            return " ".join(sentences)
        rows = []
        for sentence in sentences:
            known = [table[index[w]] for w in words.findall(sentence.lower()) if w in index]
            rows.append(np.mean(known, axis=0) if known else np.zeros(table.shape[1], np.float32))
        x = np.array(rows)
        model = KMeans(n_clusters=k, random_state=0).fit(x)
        closest, _ = pairwise_distances_argmin_min(model.cluster_centers_, x)
        return " ".join(sentences[i] for i in sorted(set(closest)))

    with threadpool_limits(1):
        for text in texts[:20]:  # warm up: Punkt's model and sklearn's first-call setup load once
            summarize(text)
        start = time.perf_counter()
        for text in texts:
            summarize(text)
        return len(texts) / (time.perf_counter() - start)


def library(texts: list[str], method: str, vectors) -> float:
    from summarizer import Summarizer

    summarizer = Summarizer(method, vectors=vectors)
    summarizer.summarize_many(texts[:200])  # warm up (first-use imports)
    start = time.perf_counter()
    summarizer.summarize_many(texts)
    return len(texts) / (time.perf_counter() - start)


def _tree_pss_kb(root: int) -> int:
    """Proportional set size (kB) of `root` and all its descendants: shared pages (the
    memory-mapped GloVe vectors, libraries) counted once across the tree, not once per process."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        children.setdefault(parent, []).append(int(entry.name))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            with open(f"/proc/{pid}/smaps_rollup") as rollup:
                total += next(int(line.split()[1]) for line in rollup if line.startswith("Pss:"))
        except (OSError, StopIteration):
            continue
    return total


def end_to_end(
    csv_path: Path, rows: int, method: str, workers: int | None, out_dir: Path
) -> tuple[float, float]:
    """(reviews/s, peak MB (PSS) of the whole process tree) of the `summarize` CLI."""
    output = out_dir / f"summary-{method}.csv"
    command = [str(Path(sys.executable).parent / "summarize"), str(csv_path), "-o", str(output)]
    command += ["--method", method, "--quiet"] + (["--workers", str(workers)] if workers else [])
    peak_kb = 0
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak_kb
        while not done.is_set():
            peak_kb = max(peak_kb, _tree_pss_kb(process.pid))
            done.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = process.wait()
    elapsed = time.perf_counter() - start
    done.set()
    sampler.join()
    if code != 0:
        raise SystemExit(f"summarize exited with {code}")
    written = len(pd.read_csv(output, usecols=[0]))
    if written != rows:
        raise SystemExit(f"summarize wrote {written} rows, expected {rows}")
    return rows / elapsed, peak_kb / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reviews", type=Path, default=DEFAULT_REVIEWS, help="Amazon fine food Reviews.csv")
    parser.add_argument("--rows", type=int, default=100_000, help="rows for the scale runs (replicated)")
    parser.add_argument("--baseline-rows", type=int, default=1000, help="reviews for the baseline")
    parser.add_argument("--workers", type=int, help="--workers for the CLI runs (default: the CLI's own)")
    parser.add_argument("--methods", nargs="+", default=["default", "kmeans"])
    parser.add_argument("--no-cli", dest="cli", action="store_false", help="library figures only")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(REPO))
    import glove

    reviews = pd.read_csv(args.reviews)
    copies = math.ceil(args.rows / len(reviews))
    scaled = pd.concat([reviews] * copies, ignore_index=True).iloc[: args.rows]
    scaled["Id"] = np.arange(1, len(scaled) + 1)
    texts = scaled["Text"].tolist()
    vectors = glove.load()
    print(f"{len(reviews)} real reviews replicated to {len(scaled)} rows; {os.cpu_count()} CPUs")

    baseline_texts = reviews["Text"].tolist()[: args.baseline_rows]

    def against_baseline(measure: Callable[[], T]) -> tuple[T, float]:
        """(what `measure` returns, the baseline's rate): the baseline is run just before and just
        after, and averaged. These machines drift by tens of percent within minutes; a baseline
        measured once at the start would make the ratios of later runs a lottery."""
        before = baseline(baseline_texts, vectors)
        result = measure()
        return result, (before + baseline(baseline_texts, vectors)) / 2

    print(
        f"baseline: Punkt + per-word lookups + sklearn KMeans per review, 1 thread, "
        f"{args.baseline_rows} reviews, run just before and after each measurement"
    )
    for method in args.methods:
        rate, base = against_baseline(lambda method=method: library(texts, method, vectors))
        print(
            f"library  {method:8s} summarize_many, 1 process: {rate:9,.0f} reviews/s  {rate / base:5.1f}x"
            f"  (baseline {base:,.0f}/s)"
        )
    if args.cli:
        workers_flag = f"--workers {args.workers}" if args.workers else "no flags"
        with tempfile.TemporaryDirectory() as tmp:
            csv_path = Path(tmp) / "reviews.csv"
            scaled.to_csv(csv_path, index=False)
            for method in args.methods:
                (rate, peak_mb), base = against_baseline(
                    lambda method=method: end_to_end(csv_path, len(scaled), method, args.workers, Path(tmp))
                )
                missed = [
                    name
                    for name, met in (
                        ("rate", rate >= TARGET_RATE),
                        ("speedup", rate / base >= TARGET_SPEEDUP),
                        ("memory", peak_mb <= TARGET_PEAK_MB),
                    )
                    if not met
                ]
                verdict = "all targets met" if not missed else "target missed: " + ", ".join(missed)
                print(
                    f"cli      {method:8s} CSV->CSV, {workers_flag:13s}: {rate:9,.0f} reviews/s"
                    f"  {rate / base:5.1f}x  (baseline {base:,.0f}/s)  peak {peak_mb:.0f} MB PSS  [{verdict}]"
                )
    print(
        f"targets: >= {TARGET_RATE:,} reviews/s end to end, >= {TARGET_SPEEDUP}x the baseline, "
        f"peak <= {TARGET_PEAK_MB} MB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
