"""Fast, offline sentence splitting for real-world English text (product reviews, news).

A single regex finds candidate boundaries (a run of terminal punctuation, optional closing
quotes/brackets and an optional trailing emoticon, followed by whitespace, by a capital letter
when the writer forgot the space, or by the end); a few cheap rules then reject candidates that
are abbreviations, initials or dotted acronyms. Punkt would be more principled but costs ~15x
more per review, and the batch pipeline has a budget of a few tens of microseconds per text.

Sentences are returned verbatim: substrings of the cleaned text (HTML tags removed, whitespace
runs collapsed to one space), in document order.

Linear time by construction, whatever the text (a cell of 100,000 dots, a URL of dots, no spaces at
all): no pattern can backtrack over a run (a punctuation run is matched possessively and only from
its first mark; a URL is matched greedily and trimmed by one class), every look-back is bounded,
and URL spans are walked with the candidates, not searched for each one.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# Abbreviations that are almost never the end of a sentence (titles, Latin, units before numbers).
# Lowercase, without the final period. Partly from Punkt's English model, plus what reviews use.
_NEVER_FINAL = frozenset(
    (
        *("mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "ft", "gen", "col", "lt", "sgt"),
        *("capt", "rev", "hon", "gov", "sen", "rep", "pres", "supt", "messrs"),
        *("e.g", "i.e", "cf", "viz", "vs", "approx", "appt", "apt", "dept", "est", "fig"),
        *("vol", "vols", "op", "pp", "ca", "inc", "corp", "co", "ltd", "bros", "assn"),
        *("jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec"),
        *("oz", "lb", "lbs", "tbsp", "tsp", "pkg", "qty"),
    )
)
# Abbreviations that often do end a sentence ("... apples, pears, etc. The box was"): split only
# when the next word is capitalised.
_MAYBE_FINAL = frozenset(
    ("etc", "al", "ave", "blvd", "hwy", "u.s", "u.k", "a.m", "p.m", "min", "max", "hr", "hrs", "yr", "yrs")
)

# Line/paragraph breaks end a sentence even without punctuation (reviews use them for lists);
# any other tag is just removed.
_BREAKS = re.compile(r"<\s*(?:br|/?p|/?div|/?li)\b[^>]{0,100}>", re.IGNORECASE)
_TAGS = re.compile(r"<[^>]{0,200}>")
_EMOTICON = r"(?:[:;=8][-'o^]?[()\[\]DPp/\\|*]+|<3|\^_\^)"
# A URL runs to the next whitespace, less the punctuation that ends it ("see www.x.com."); at
# least one character follows the scheme. Greedy then one class, so a failed end costs nothing.
_URL = re.compile(r"(?:https?://|www\.)(?:\S*[^\s.!?,;:)\]\"']|\S)", re.IGNORECASE)
# How far back `_is_boundary` looks for the word before a period: abbreviations, initials and
# acronyms are short; a longer "word" is none of them (and looking further would cost O(n) per
# candidate in text without spaces).
_WORD_WINDOW = 64

# Group 3 of _BOUNDARY is set after a lone period with three lowercase letters before it and no
# period in the five before those (so no dotted acronym of up to 8 characters ends there). Unless
# those letters end an abbreviation (_ABBREVIATION_ENDINGS), `_is_boundary` would let it end the
# sentence when no comma follows: most candidates (a period after an ordinary word) need only that
# check instead of all of `_is_boundary`'s. (In the regex, the abbreviations would cost more than
# they save: an alternation is tried branch by branch.)
_PLAIN_WORD_PERIOD = r"(?<=[a-z]{3}\.)" + "".join(rf"(?<!\.[\s\S]{{{gap}}}[a-z]{{3}}\.)" for gap in range(5))
_ABBREVIATION_ENDINGS = frozenset(
    word[-3:] for word in _NEVER_FINAL | _MAYBE_FINAL | {"no", "nos"} if word.isalpha() and len(word) >= 3
)

# A candidate boundary is a run of terminal punctuation (group 1 its first mark, group 2 the
# rest, group 3 as above), then closers, then an optional emoticon that belongs to the sentence
# it ends; the boundary is either whitespace (consumed), a capital/opening quote glued on, or the
# end of text. Or an emoticon after a space standing in for the punctuation (group 2 is None).
# The pattern starts with one character class so that `finditer` can skip to candidates in C;
# written as two alternatives it tried both at every character, 3/4 of the splitter's time.
_BOUNDARY = re.compile(
    r"([.!?…:;=8<^])(?:"
    # Only from the first mark of a run, and the run taken whole (possessive): what follows a
    # run is the same from any of its marks, so trying each one again made a run of n marks cost n².
    r"(?<=[.!?…])(?<![.!?…]{2})([.!?…]*+)(?:" + _PLAIN_WORD_PERIOD + r"())?"
    r"[\"'”’)\]]*(?:\s*" + _EMOTICON + r"(?=\s|$))?(?:\s+|(?=[A-Z\"“])|$)"
    r"|(?:(?<=\s[:;=8])[-'o^]?[()\[\]DPp/\\|*]+|(?<=\s<)3|(?<=\s\^)_\^)(?=\s+[A-Z]|$)(?:\s+|$)"
    r")"
)


def clean(text: str) -> str:
    """Remove HTML tags (``<br />`` becomes a space) and collapse whitespace."""
    return " ".join(p for p in map(_collapse_spaces, _lines(text)) if p)


def _lines(text: str) -> list[str] | tuple[str]:
    """The lines of `text`, its tags removed (a line break is one)."""
    if "<" in text:
        text = _TAGS.sub(" ", _BREAKS.sub("\n", text))
    return text.splitlines() if ("\n" in text or "\r" in text) else (text,)


def _collapse_spaces(part: str) -> str:
    """``" ".join(part.split())``, mostly without splitting `part` into words (~5 us a review):
    every whitespace character but the ASCII space is unprintable (Unicode Cc, Zs, Zl, Zp), so a
    printable part's only whitespace is spaces, and collapsing their runs is C-speed replaces
    (each halves the longest run)."""
    if not part.isprintable():
        return " ".join(part.split())
    while "  " in part:
        part = part.replace("  ", " ")
    return part.strip(" ")


def _is_boundary(text: str, mark: int, rest_end: int, end: int) -> bool:
    """Whether the candidate whose run of terminal punctuation is ``text[mark:rest_end]`` (group 1,
    then group 2), and which ends at `end`, ends a sentence. (Called by the native scan too.)"""
    first = text[mark]
    rest = text[mark + 1 : rest_end]
    nxt = text[end : end + 1]
    if nxt == ",":
        return False
    if rest or first != ".":
        # "!", "?!", "!!": always a boundary. An ellipsis only before a capital (or the end).
        return not (first == "." and rest[:1] == ".") or not nxt.islower()
    window = max(0, mark - _WORD_WINDOW)
    space = text.rfind(" ", window, mark)
    word = text[space + 1 if space >= 0 else window : mark].lstrip("\"'“‘([")
    if not word:
        return True
    low = word.lower()
    if low in _NEVER_FINAL:
        return False
    if low in ("no", "nos"):  # "No. 5" is a number; "I said no. Then" ends a sentence
        return not nxt.isdigit()
    if len(word) == 1 and word.isupper() and nxt.isupper():  # an initial: "C. S. Lewis"
        return False
    if "." in word and word.replace(".", "").isalpha() and len(word) <= 8:
        # dotted acronym ("U.S.", "C.S. Lewis", "p.m.")
        return low in _MAYBE_FINAL and nxt.isupper() and not word[-1:].isupper()
    if low in _MAYBE_FINAL:
        return nxt.isupper()
    return not (nxt.isdigit() and word.isdigit())  # "Section 3. 4 cups" is too ambiguous: keep


def split_sentences(text: str | None) -> list[str]:
    """Split ``text`` into sentences: verbatim substrings of ``clean(text)``, in order."""
    if not text:
        return []
    sentences: list[str] = []
    for line in _lines(text):
        _scan(line, sentences, _ABBREVIATION_ENDINGS, _is_boundary, _url_spans)
    return sentences


def _url_spans(paragraph: str) -> list[tuple[int, int]]:
    return [m.span() for m in _URL.finditer(paragraph)]


def _split_paragraph(
    line: str,
    sentences: list[str],
    endings: frozenset[str],
    is_boundary: Callable[[str, int, int, int], bool],
    url_spans: Callable[[str], list[tuple[int, int]]],
) -> None:
    """Appends the sentences of one `line` of text, its whitespace collapsed, to `sentences`. The
    reference for the native scan (`summarizer._splitter`, the same arguments), and what runs where
    that isn't built."""
    text = _collapse_spaces(line)
    urls = url_spans(text) if ("www." in text or "://" in text) else []
    url = 0  # the first URL that doesn't end before the candidate (both come in text order)
    start = 0
    for m in _BOUNDARY.finditer(text):
        mark = m.start()
        if urls:
            while url < len(urls) and urls[url][1] <= mark:
                url += 1
            if url < len(urls) and urls[url][0] <= mark:
                continue
        end = m.end()
        if m.group(2) is None:  # an emoticon standing in for punctuation, before a capital
            pass
        elif m.group(3) is not None and text[mark - 3 : mark] not in endings:
            if text[end : end + 1] == ",":  # after an ordinary word, only a comma keeps the sentence going
                continue
        elif not is_boundary(text, mark, m.end(2), end):
            continue
        piece = text[start:end].strip()
        if piece:
            sentences.append(piece)
        start = end
    tail = text[start:].strip()
    if tail:
        sentences.append(tail)


# The same scan in C (summarizer/_splitter.c): the splitter in half the time, 12% of the CLI's CPU.
# Installing the project builds it (setup.py); the instance wheel and the Lambda zips run the reference.
try:
    from summarizer._splitter import split_paragraph as _scan
except ImportError:
    _scan = _split_paragraph
