"""Sentence splitting on the things real reviews contain."""

import pytest

from summarizer import split_sentences
from summarizer.split import clean


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

    from summarizer.split import _ABBREVIATION_ENDINGS, _BOUNDARY, _is_boundary, _paragraphs

    pieces = [*"aAbxyzT .,!?'\"()[]:;-…”’0123456789", "etc", "Etc", "mrs", "prof", "nos", "e.g.", "U.S."]
    pieces += ["approx", "...", ":)", "good", "xyz.", " No. 5", "a.b.c", "ſ"]
    rng = random.Random(0)
    checked = 0
    for _ in range(20_000):
        text = "".join(rng.choices(pieces, k=rng.randint(0, 25)))
        for paragraph in _paragraphs(text):
            for m in _BOUNDARY.finditer(paragraph):
                mark, end = m.start(), m.end()
                if m.group(3) is not None and paragraph[mark - 3 : mark] not in _ABBREVIATION_ENDINGS:
                    checked += 1
                    assert _is_boundary(paragraph, m, end) == (paragraph[end : end + 1] != ","), paragraph
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
