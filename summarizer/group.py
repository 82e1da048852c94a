"""One summary per group of texts (e.g. all reviews of a product): what buyers say, theme by theme.

**Themes.** A theme is a few words that many of the group's texts use and that say what they are
about: "crunchy, crispy, crunch", "salt, vinegar", "price, cheaper". A word is a candidate when
  * at least ``min(3, 2%)`` of the group's texts use it (one reviewer's story is not a theme) and
    at most 60% (there it names the product itself: "chips" on a page of chips);
  * it is a content word: outside GloVe's 300 most frequent words and outside ``GENERIC``, the
    words every review uses whatever it is about (great, love, bought, recommend...).
Candidates are ranked by how many texts use them times how much more often than in English at
large (the log of that ratio: GloVe's rows are in frequency order, and Zipf's law turns a row into
a frequency). The best 40 are joined into themes: plural and singular, words sharing a 5-letter
start, words written side by side in most of their uses ("salt and vinegar" is not, "sea salt"
is), and words whose vectors all have cosine >= 0.8 with each other. A theme's size is the number
of texts that use any of its words, and the group's k largest themes are kept.

**The budget**, k, is ``budget`` applied to the group's distinct sentences (exact repeats, ignoring
case and punctuation, pooled once), by default ``min(10, ceil(sqrt(n)))``. The group's summary
(``sentences``) is its themes' sentences, theme by theme, largest first, cut to k; ``themes`` has
each theme's own.

**What each theme says.** Its sentence is the one that best says it, among the group's distinct
sentences that use a theme word, 4 to 30 words long: most of its content words are the group's own
vocabulary (off-topic asides are not), it names a few of the group's candidate words, it is about
the product, not the reviewer (a first-person story loses: "I bought these at..."), and it is of
a readable length. A sentence is used once in a group.

**Stars.** Given each text's star rating (1 to 5; ``stars_column``), every theme gets the star
split of the texts that use it. Its sentence is then a 4-5 star text's when the theme has any, and
a theme whose texts are at least a quarter 1-2 star (two at least) gets a complaint from one of
those too. Praise and complaints are balanced: a quarter of the themes (at least one) are kept for
the themes with the most 1-2 star texts, when the largest themes leave them out.

**Groups without themes.** A group of k sentences or fewer is passed through. One too small or
too uniform for themes (no word in three of its texts) gets its best k sentences: the distinct
sentences are clustered by k-means, and each cluster gives its best sentence by similarity to the
whole pool, fullness, coming early in its review and being said more than once; near-duplicates
(cosine >= ``similarity``) are skipped.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from summarizer import schema
from summarizer.engine import Budget, Summarizer
from summarizer.kmeans import kmeans
from summarizer.split import split_sentences
from summarizer.tokens import SEPARATOR, tokenize_sentences

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

# Words that reviews of anything use: verdicts, buying and eating, people, intensifiers. They tell
# how a reviewer feels, not what about; a theme is what about.
GENERIC = frozenset(
    """
    great good love loved loves like liked buy bought buying purchase purchased order ordered
    ordering try tried trying eat eating ate eaten recommend recommended really ever know best
    better product products item items well much many also would could should will one two get
    got make made enjoy enjoyed enjoying favorite perfect excellent delicious awesome amazing
    wonderful nice fine bad terrible horrible disappointed happy thing things time times way
    little lot lots just even still think thought find found say said want wanted need needed use
    used using definitely highly always never again back only first since different pretty quite
    very too stars star review reviews people everyone someone anyone family friends husband wife
    kids son daughter yum yummy wow bit sure something anything everything nothing taste tasted
    tasty tastes flavor flavors flavored stuff kind sort actually usually especially however
    your yours their theirs you they them these those this that there here
    """.split()  # noqa: SIM905 (a word list reads better as words)
)
_COMMON_ROWS = 300  # GloVe's most frequent words: function words
_MIN_THEME_TEXTS, _MIN_THEME_SHARE, _MAX_THEME_SHARE = 3, 0.02, 0.6
_CANDIDATE_WORDS = 40
_SAME_THEME_COSINE = 0.8
_SIDE_BY_SIDE = 0.4  # share of the rarer word's texts that write the two words next to each other
_ZIPF_NORM = 13.0  # sum of 1/rank over GloVe's 400k rows: turns a row into a frequency
_FIRST_PERSON = frozenset(("i", "we", "my", "our", "me", "us"))
_STORY_VERB = re.compile(
    r"\b(?:\w+ed|bought|got|found|went|ate|tried|gave|took|came|saw|had|was|were|grew|began|thought)\b"
)
_COMPLAINT_SHARE = 0.25
# A sentence whose words are mostly (this share) one already picked in the group says it again.
_NEAR_DUPLICATE = 0.7


@dataclass
class Theme:
    words: list[str]  # the words that name it, the most used first
    texts: int  # the group's texts that use one of them
    sentences: list[str]  # what they say: its best sentence, and with stars maybe a complaint too
    mentions: int  # the group's distinct sentences that use one of them
    stars: dict[int, int] = field(default_factory=dict)  # star -> texts among `texts` (with stars)


@dataclass
class GroupSummary:
    key: Hashable
    sentences: list[str]
    n_texts: int  # texts in the group
    n_sentences: int  # distinct sentences in the group
    status: str  # "ok" | "passthrough" | "empty"
    themes: list[Theme] = field(default_factory=list)  # none: `sentences` summarize the whole group
    stars: dict[int, int] = field(default_factory=dict)  # star -> the group's texts with it

    @property
    def text(self) -> str:
        return " ".join(self.sentences)


def summarize_groups(
    items: Iterable[tuple[Hashable, str | None] | tuple[Hashable, str | None, object]] | pd.DataFrame,
    summarizer: Summarizer | None = None,
    *,
    budget: Budget | None = None,
    key_column: str = "ProductId",
    text_column: str = "Text",
    stars_column: str | None = None,
    similarity: float = DEFAULT_SIMILARITY,
) -> list[GroupSummary]:
    """Summaries of each group, in order of first appearance.

    ``items`` is an iterable of ``(group_key, text)`` or ``(group_key, text, stars)`` tuples, or a
    DataFrame with ``key_column``, ``text_column`` and, if given, ``stars_column`` (``Score`` in
    Amazon's reviews). ``summarizer`` (default ``Summarizer()``) gives the words' vectors;
    ``budget`` applies to each group's distinct sentences (``summarize_group``)."""
    if hasattr(items, "columns"):  # a DataFrame
        columns = [items[key_column], items[text_column]]
        if stars_column is not None:
            columns.append(items[stars_column])
        items = zip(*columns, strict=True)
    texts_by_key: dict[Hashable, list[str | None]] = {}
    stars_by_key: dict[Hashable, list[int | None]] = {}
    for key, text, *stars in items:
        texts_by_key.setdefault(key, []).append(text)
        stars_by_key.setdefault(key, []).append(star_rating(stars[0]) if stars else None)
    summarizer = summarizer or Summarizer()
    return [
        summarize_group(key, texts, summarizer, budget, stars_by_key[key], similarity)
        for key, texts in texts_by_key.items()
    ]


def star_rating(value: object) -> int | None:
    """A star rating of 1 to 5 as an int (5, 5.0, "5"), or None for anything else."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return int(number) if number in schema.STAR_RATINGS else None


def summarize_group(
    key: Hashable,
    texts: Sequence[str | None],
    summarizer: Summarizer,
    budget: Budget | None = None,
    stars: Sequence[int | None] | None = None,
    similarity: float = DEFAULT_SIMILARITY,
) -> GroupSummary:
    """One group's summary: its themes, or without themes its best sentences. ``stars``: each
    text's star rating (1-5) or None, in the order of ``texts``.

    The budget, k sentences, is ``budget`` applied to the group's distinct sentences, by default
    ``min(10, ceil(sqrt(n)))``. There are k themes at most; ``sentences`` are the themes'
    sentences, theme by theme, largest first, cut to k."""
    stars = list(stars) if stars is not None else [None] * len(texts)
    pool = _Pool(texts)
    star_split = dict(sorted(Counter(s for s in stars if s is not None).items()))
    n = len(pool.sentences)
    if n == 0:
        return GroupSummary(key, [], len(texts), 0, schema.EMPTY, stars=star_split)
    k = budget.size(n) if budget else min(DEFAULT_MAX_SENTENCES, math.ceil(math.sqrt(n)))
    if n <= k:
        return GroupSummary(key, pool.sentences, len(texts), n, schema.PASSTHROUGH, stars=star_split)
    themes, sentences = _themes(pool, summarizer, stars, k)
    if themes:
        return GroupSummary(key, sentences, len(texts), n, schema.OK, themes, star_split)
    picks = _pick_by_theme(
        pool.sentences,
        np.asarray(pool.lead),
        np.asarray(pool.repeats),
        summarizer.embed(pool.sentences),
        k,
        similarity,
    )
    sentences = [pool.sentences[p] for p in sorted(picks)]
    return GroupSummary(key, sentences, len(texts), n, schema.OK, stars=star_split)


class _Pool:
    """A group's distinct sentences (exact repeats, ignoring case and punctuation, pooled once and
    counted), with each one's texts and tokens."""

    def __init__(self, texts: Sequence[str | None]) -> None:
        self.sentences: list[str] = []
        self.lead: list[float] = []  # 1 for a review's first sentence, down to 1/len for its last
        self.repeats: list[int] = []  # how many times each was said
        self.texts: list[set[int]] = []  # the texts that said it
        index: dict[str, int] = {}
        for t, text in enumerate(texts):
            review = split_sentences(text) if isinstance(text, str) else []
            for i, sentence in enumerate(review):
                normalized = _NON_WORD.sub(" ", sentence.lower()).strip()
                if normalized in index:
                    self.repeats[index[normalized]] += 1
                    self.texts[index[normalized]].add(t)
                    continue
                index[normalized] = len(self.sentences)
                self.sentences.append(sentence)
                self.lead.append(1.0 - i / len(review))
                self.repeats.append(1)
                self.texts.append({t})
        self.tokens = _split_tokens(tokenize_sentences(self.sentences))
        # each sentence's words, plural folded into singular
        self.words = [{_singular(token) for token in tokens if token.isalpha()} for tokens in self.tokens]


def _split_tokens(tokens: list[str]) -> list[list[str]]:
    sentences: list[list[str]] = [[]]
    for token in tokens:
        if token == SEPARATOR:
            sentences.append([])
        else:
            sentences[-1].append(token)
    return sentences[:-1]


def _singular(word: str) -> str:
    return word[:-1] if len(word) > 4 and word.endswith("s") and not word.endswith("ss") else word


def _themes(
    pool: _Pool, summarizer: Summarizer, stars: list[int | None], wanted: int
) -> tuple[list[Theme], list[str]]:
    """Up to `wanted` themes, and the group's summary: their sentences, theme by theme, cut to
    `wanted`; when they have fewer, each theme's next best sentence in turn fills it."""
    n_texts = len(stars)
    texts_with: dict[str, set[int]] = {}  # word -> the texts that use it
    for words, texts in zip(pool.words, pool.texts, strict=True):
        for word in words:
            texts_with.setdefault(word, set()).update(texts)
    min_texts = max(_MIN_THEME_TEXTS, math.ceil(_MIN_THEME_SHARE * n_texts))
    words = [
        word
        for word, texts in texts_with.items()
        if min_texts <= len(texts) <= _MAX_THEME_SHARE * n_texts and len(word) >= 3 and word not in GENERIC
    ]
    rows = summarizer.word_rows(words)
    known = rows >= _COMMON_ROWS
    words = [word for word, ok in zip(words, known.tolist(), strict=True) if ok]
    rows = rows[known]
    if not words:
        return [], []
    share = np.array([len(texts_with[word]) for word in words]) / n_texts
    english = 1.0 / ((rows + 1) * _ZIPF_NORM)
    weight = share * np.log(np.maximum(share / english, 1.0))
    best = np.argsort(-weight, kind="stable")[:_CANDIDATE_WORDS]
    words = [words[i] for i in best.tolist()]
    unit = _unit_rows(summarizer.word_vectors(rows[best]))
    candidates = set(words)
    side_by_side = Counter(
        pair
        for tokens in pool.tokens
        for pair in zip(map(_singular, tokens), map(_singular, tokens[1:]), strict=False)
        if pair[0] in candidates and pair[1] in candidates
    )
    joined: list[list[int]] = []
    for i in range(len(words)):
        for theme in joined:
            if all(_same_theme(i, j, words, unit, side_by_side, texts_with) for j in theme):
                theme.append(i)
                break
        else:
            joined.append([i])
    found = []
    for theme in joined:
        theme_words = sorted((words[i] for i in theme), key=lambda w: -len(texts_with[w]))
        texts = set().union(*(texts_with[word] for word in theme_words))
        found.append((theme_words, texts))
    found.sort(key=lambda theme: -len(theme[1]))
    high = {t for t, star in enumerate(stars) if star is not None and star >= 4}
    low = {t for t, star in enumerate(stars) if star is not None and star <= 2}
    kept = _balanced(found, low, wanted)
    vocabulary = {word for word, texts in texts_with.items() if len(texts) >= min_texts}
    chooser = _Chooser(pool, vocabulary, candidates, high, low)
    themes = []
    said_by_theme = []
    for theme_words, texts in kept:
        said = [s for s, words in enumerate(pool.words) if words.intersection(theme_words)]
        split = dict(sorted(Counter(stars[t] for t in texts if stars[t] is not None).items()))
        picks = chooser.theme_sentences(theme_words, said, split)
        if picks:
            sentences = [pool.sentences[s] for s in picks]
            themes.append(Theme(theme_words, len(texts), sentences, len(said), split))
            said_by_theme.append((theme_words, said))
    summary = [sentence for theme in themes for sentence in theme.sentences][:wanted]
    while len(summary) < wanted:
        more = [chooser.best(theme_words, said) for theme_words, said in said_by_theme]
        more = [pool.sentences[s] for s in more if s is not None][: wanted - len(summary)]
        if not more:
            break
        summary += more
    return themes, summary


def _same_theme(
    i: int,
    j: int,
    words: list[str],
    unit: np.ndarray,
    side_by_side: Counter[tuple[str, str]],
    texts_with: dict[str, set[int]],
) -> bool:
    a, b = words[i], words[j]
    if a[:5] == b[:5] and min(len(a), len(b)) >= 5:  # crunch, crunchy; sweetened, sweetener
        return True
    together = side_by_side[(a, b)] + side_by_side[(b, a)]
    if together >= _SIDE_BY_SIDE * min(len(texts_with[a]), len(texts_with[b])):
        return True
    return float(unit[i] @ unit[j]) >= _SAME_THEME_COSINE


def _balanced(
    found: list[tuple[list[str], set[int]]], low: set[int], wanted: int
) -> list[tuple[list[str], set[int]]]:
    """The `wanted` largest themes, but with stars a quarter of them (at least one) kept for the
    themes most `low` (1-2 star) texts use, if the largest leave those out. In order of size."""
    if not low or wanted < 2:
        return found[:wanted]
    reserved = max(1, wanted // 4)
    by_complaints = sorted(
        (theme for theme in found[wanted - reserved :] if len(theme[1] & low) >= 2),
        key=lambda theme: -len(theme[1] & low),
    )
    kept = found[: wanted - reserved] + by_complaints[:reserved]
    kept += [theme for theme in found[wanted - reserved :] if theme not in kept][: wanted - len(kept)]
    return sorted(kept, key=lambda theme: -len(theme[1]))


class _Chooser:
    """Picks the sentence that best says a theme, never one used already in the group (nor one whose
    words are mostly those of a used one)."""

    def __init__(
        self, pool: _Pool, vocabulary: set[str], candidates: set[str], high: set[int], low: set[int]
    ) -> None:
        self.pool = pool
        self.vocabulary = vocabulary  # words enough of the group's texts use
        self.candidates = candidates  # the theme words of all themes
        self.high, self.low = high, low  # the group's 4-5 star and 1-2 star texts
        self.used: set[int] = set()

    def theme_sentences(self, theme_words: list[str], said: list[int], split: dict[int, int]) -> list[int]:
        """The theme's sentence (from a 4-5 star text when it has any) and, when a quarter of its
        starred texts (two at least) are 1-2 star, a complaint from one of those."""
        picks = []
        praise = self.best(theme_words, said, self.high) if split.get(4, 0) + split.get(5, 0) else None
        if praise is None:
            praise = self.best(theme_words, said)
        if praise is not None:
            picks.append(praise)
        complaints = split.get(1, 0) + split.get(2, 0)
        if complaints >= 2 and complaints >= _COMPLAINT_SHARE * sum(split.values()):
            complaint = self.best(theme_words, said, self.low)
            if complaint is not None:
                picks.append(complaint)
        return picks

    def best(self, theme_words: list[str], said: list[int], side: set[int] | None = None) -> int | None:
        """The best unused sentence of `said` (those using a theme word), from a text of `side` if
        given; it is then used. None when there is none."""
        pool = self.pool
        found = None
        for s in said:
            if s in self.used or (side is not None and not pool.texts[s] & side):
                continue
            n_words = pool.sentences[s].count(" ") + 1
            if not MIN_WORDS <= n_words <= MAX_WORDS:
                continue
            words = pool.words[s]
            if any(len(words & pool.words[u]) >= _NEAR_DUPLICATE * len(words) for u in self.used):
                continue
            content = words - GENERIC
            own = len(content & self.vocabulary) / max(len(content), 1)
            first_person = bool(_FIRST_PERSON.intersection(pool.tokens[s]))
            story = first_person and bool(_STORY_VERB.search(pool.sentences[s].lower()))
            score = (
                own
                + 0.3 * (theme_words[0] in words)
                + 0.2 * min(len(words & self.candidates), 3)
                - 0.3 * first_person
                - 0.6 * story
                - 0.02 * abs(n_words - 12)
                - 0.5 * pool.sentences[s].rstrip().endswith("?")  # asks, doesn't say
            )
            if found is None or score > found[0]:
                found = (score, s)
        if found is None:
            return None
        self.used.add(found[1])
        return found[1]


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
