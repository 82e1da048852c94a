"""Sentence splitting on the things real reviews contain."""

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from summarizer import split_sentences
from summarizer.split import clean

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("It is good. I like it.", ["It is good.", "I like it."]),
        # HTML line breaks end a sentence and never reach the output
        ("Great product!<br />Would buy again.", ["Great product!", "Would buy again."]),
        ("First line<br /><br />Second line", ["First line", "Second line"]),
        ("A <b>bold</b> claim. Next.", ["A bold claim.", "Next."]),
        # a missing space after the period
        ("This is great.I love it.", ["This is great.", "I love it."]),
        # runs of terminal punctuation stay with their sentence
        ("Wow!! Really?! Yes... It works.", ["Wow!!", "Really?!", "Yes...", "It works."]),
        # an ellipsis before a lowercase word is a pause, not an end
        ("I thought... maybe not. Fine.", ["I thought... maybe not.", "Fine."]),
        # emoticons belong to the sentence they end, and may end it without punctuation
        ("Love it :) Will buy again.", ["Love it :)", "Will buy again."]),
        ("So sad :-( Never again ;)", ["So sad :-(", "Never again ;)"]),
        ("Great taste! :) Will buy.", ["Great taste! :)", "Will buy."]),
        # abbreviations
        ("Mix it, e.g. with milk. Then drink.", ["Mix it, e.g. with milk.", "Then drink."]),
        ("Sweet, i.e. too sweet. Skip.", ["Sweet, i.e. too sweet.", "Skip."]),
        ("Apples, pears, etc. The box was fine.", ["Apples, pears, etc.", "The box was fine."]),
        ("Apples, pears, etc. and more.", ["Apples, pears, etc. and more."]),
        ("Coke vs. Pepsi is old. Ok.", ["Coke vs. Pepsi is old.", "Ok."]),
        ("Mr. Smith and Dr. Jones agree. Good.", ["Mr. Smith and Dr. Jones agree.", "Good."]),
        ("Made in the U.S. and sold here.", ["Made in the U.S. and sold here."]),
        ("I love C.S. Lewis. Narnia too.", ["I love C.S. Lewis.", "Narnia too."]),
        # decimals and prices
        ("It costs $3.99 for 2.5oz. Cheap.", ["It costs $3.99 for 2.5oz.", "Cheap."]),
        # quotes close the sentence they end
        ('He said "wow." Then he left.', ['He said "wow."', "Then he left."]),
        ('"Great," she said. Ok.', ['"Great," she said.', "Ok."]),
        # URLs are not split at their dots; a period after a URL still ends the sentence
        ("See www.amazon.com/dp/B00.X for it. Next.", ["See www.amazon.com/dp/B00.X for it.", "Next."]),
        ("Visit http://example.com. Then buy.", ["Visit http://example.com.", "Then buy."]),
        ("I said no. Then he left. See No. 5 here.", ["I said no.", "Then he left.", "See No. 5 here."]),
        ("no punctuation at all", ["no punctuation at all"]),
    ],
)
def test_splits_like_a_reader_would(text, expected):
    assert split_sentences(text) == expected


@pytest.mark.parametrize("text", [None, "", "   ", "<br /><br />", "\n\t"])
def test_nothing_to_split(text):
    assert split_sentences(text) == []


def test_sentences_are_verbatim_substrings_of_the_cleaned_text_in_order():
    text = "Great!!  Really<br />good :) I paid $3.99.It was   fine... The end"
    cleaned = clean(text)
    assert "<" not in cleaned and "  " not in cleaned
    sentences = split_sentences(text)
    offset = 0
    for sentence in sentences:
        found = cleaned.find(sentence, offset)
        assert found >= offset, sentence
        offset = found + len(sentence)
    assert " ".join(sentences).replace(" ", "") == cleaned.replace(" ", "")


def test_a_period_after_an_ordinary_word_is_decided_as_the_full_checks_would():
    # The splitter skips `_is_boundary` for a period after three lowercase letters that end no
    # abbreviation (group 3 of _BOUNDARY); on such candidates the full checks must agree.
    import random

    from summarizer.split import _ABBREVIATION_ENDINGS, _BOUNDARY, _collapse_spaces, _is_boundary, _lines

    pieces = [*"aAbxyzT .,!?'\"()[]:;-…”’0123456789", "etc", "Etc", "mrs", "prof", "nos", "e.g.", "U.S."]
    pieces += ["approx", "...", ":)", "good", "xyz.", " No. 5", "a.b.c", "ſ"]
    rng = random.Random(0)
    checked = 0
    for _ in range(20_000):
        text = "".join(rng.choices(pieces, k=rng.randint(0, 25)))
        for paragraph in map(_collapse_spaces, _lines(text)):
            for m in _BOUNDARY.finditer(paragraph):
                mark, end = m.start(), m.end()
                if m.group(3) is not None and paragraph[mark - 3 : mark] not in _ABBREVIATION_ENDINGS:
                    checked += 1
                    verdict = _is_boundary(paragraph, mark, m.end(2), end)
                    assert verdict == (paragraph[end : end + 1] != ","), paragraph
    assert checked > 500


def test_whitespace_is_collapsed_as_str_split_would():
    # _collapse_spaces skips the split for printable text, relying on every whitespace character
    # but the ASCII space being unprintable.
    import random
    import sys

    from summarizer.split import _collapse_spaces

    spaces = [chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()]
    assert [c for c in spaces if c != " " and c.isprintable()] == []
    pieces = [*spaces, " ", " ", "  ", "a", "bc", "é", "\u200b", "\x00"]
    rng = random.Random(0)
    for _ in range(3000):
        part = "".join(rng.choices(pieces, k=rng.randint(0, 10)))
        assert _collapse_spaces(part) == " ".join(part.split()), repr(part)


# The native scan (summarizer/_splitter.c, built on install) against split.py's own loop,
# its reference: the same sentences for any text. Imported directly, so that a checkout where the
# extension failed to build fails here rather than quietly testing the reference against itself.
_SCAN_ARGUMENTS = ("_ABBREVIATION_ENDINGS", "_is_boundary", "_url_spans")


def _both_scans(text: str) -> tuple[list[str], list[str]]:
    from summarizer._splitter import split_paragraph as native

    from summarizer import split

    extra = [getattr(split, name) for name in _SCAN_ARGUMENTS]
    reference: list[str] = []
    scanned: list[str] = []
    for line in split._lines(text):
        split._split_paragraph(line, reference, *extra)
        native(line, scanned, *extra)
    return reference, scanned


def test_the_splitter_uses_the_native_scan_where_it_is_built():
    from summarizer._splitter import split_paragraph

    from summarizer import split

    assert split._scan is split_paragraph


_PIECES = [
    *".!?…\"'”’“‘)](:;=8-o^DPp/\\|*<3_,",
    *" \t\n\r\u00a0\u2003\u3000\x0b\x0c",
    *"aAbZxyzT09é",
    *("...", "?!", "!!", " :) ", " :-( ", " <3 ", " ^_^ ", ":D", "8)", "'s"),
    *("www.", "http://", "https://x.co/a.b", "www.site.com.", "://"),
    *("Mr.", "mrs.", "e.g.", "U.S.", "etc.", "No. 5", "approx.", "vs.", "a.b.c", "xyz.", "good.", "St"),
    *("<br />", "<p>", "<b>x</b>", " The", " the", " I", "“Yes", '"No'),
]


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_PIECES), max_size=40).map("".join))
def test_the_native_scan_splits_generated_text_as_the_reference_does(text):
    reference, scanned = _both_scans(text)
    assert scanned == reference


def test_the_native_scan_splits_real_reviews_and_articles_as_the_reference_does():
    import csv

    texts = []
    with open(DATA / "reviews_sample.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            texts += [row["Text"], row["Summary"]]
    texts += [p.read_text("latin-1") for p in sorted((DATA / "bbc_sample").rglob("*.txt"))]
    sentences = 0
    for text in texts:
        reference, scanned = _both_scans(text)
        assert scanned == reference, text
        sentences += len(reference)
    assert len(texts) > 600 and sentences > 1500
