"""Tokens as GloVe 6B knows them (Stanford PTB-style tokenizer, lowercased).

"don't" -> "do" "n't", "can't" -> "ca" "n't", "it's" -> "it" "'s", "$3.99" -> "$" "3.99",
"2.5oz" -> "2.5" "oz", "e.g." and "u.s." stay whole, hyphenated words stay whole, "!!" and
"..." stay whole, every other punctuation mark is its own token.

Speed matters (the batch path tokenizes ~100 tokens per review): lowercasing and the clitic split
are plain ``str`` methods, and ``tokenize_sentences`` runs one ``findall`` over a whole batch.
"""

from __future__ import annotations

import re

# Each match first swallows the whitespace before its token (possessively; the token is group 1):
# otherwise `findall` would try, and fail, every alternative at every space, which was a third of
# the tokenizer's time. No alternative can start with whitespace, so the tokens are the same.
_TOKEN = re.compile(
    r"\s*+("
    r"[a-z]++(?=[ ,])"  # fast path for the most common token: a plain word before a space/comma
    # and for the commonest marks, before the alternatives they would fail one by one; no other
    # alternative can start with them, so the tokens are the same
    r"|[,\x00]|\.(?!\.)"
    # a URL to the next space, less the punctuation ending it; greedy then one class, so it
    # can't backtrack over a run ("www." and 100,000 dots)
    r"|(?:https?://|www\.)(?:[^\s\x00]*[^\s\x00.!?,;:)\]\"']|[^\s\x00])"
    r"|(?:[^\W\d_]\.){2,}"  # dotted abbreviations: "e.g.", "u.s.", "p.m."
    r"|[^\W\d_]+(?:-[^\W_]+|'(?!(?:s|m|re|ve|ll|d)\b)[^\W_]+)*"  # "gluten-free", "o'clock", "n't"
    r"|'(?:s|m|re|ve|ll|d)\b"  # clitics: "it|'s", "i|'m"
    r"|\d+(?:[.,:/]\d+)*(?:-[^\W_]+)*"  # numbers: "3.99", "1,000", "1/2", "10:30", "5-star"
    r"|[:;=][-']?[()\[\]dp/\\|]+(?![^\s\x00])"  # emoticons, after lowercasing
    r"|\.{2,}|!+|\?+|-{2,}|[^\w\s]"
    r")"
)
# Ends every sentence in tokenize_sentences' output; a token no text can produce (see there).
SEPARATOR = "\x00"


def _normalize(text: str) -> str:
    text = text.lower()
    if not text.isascii():
        for fancy, plain in (("’", "'"), ("‘", "'"), ("“", '"'), ("”", '"'), ("…", "...")):
            text = text.replace(fancy, plain)
    return text.replace("n't", " n't")


def tokenize(sentence: str) -> list[str]:
    """GloVe-style tokens of ``sentence`` (lowercased)."""
    return tokenize_sentences([sentence])[:-1]


def tokenize_sentences(sentences: list[str]) -> list[str]:
    """Tokens of all ``sentences`` in one pass, each sentence followed by a ``"\\x00"`` token."""
    joined = _normalize(SEPARATOR.join(sentences) + SEPARATOR)
    if joined.count(SEPARATOR) != len(sentences):  # a sentence contained the separator itself
        joined = _normalize(SEPARATOR.join(s.replace(SEPARATOR, " ") for s in sentences) + SEPARATOR)
    return _TOKEN.findall(joined)
