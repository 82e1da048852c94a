"""Fast offline extractive summarizer: GloVe sentence embeddings + k-means.

from summarizer import Summarizer, Budget
Summarizer().summarize("text").text

The names below are imported on first use, not with the package: the instance's job runner
imports `summarizer.schema` alone and must not pay for numpy and the engine (~0.2 s).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from summarizer.engine import METHODS, Budget, Summarizer, Summary
    from summarizer.split import split_sentences
    from summarizer.tokens import tokenize

__all__ = ["METHODS", "Budget", "Summarizer", "Summary", "split_sentences", "tokenize"]

_MODULES = {
    "METHODS": "summarizer.engine",
    "Budget": "summarizer.engine",
    "Summarizer": "summarizer.engine",
    "Summary": "summarizer.engine",
    "split_sentences": "summarizer.split",
    "tokenize": "summarizer.tokens",
}


def __getattr__(name: str) -> object:
    if name not in _MODULES:
        raise AttributeError(f"module 'summarizer' has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULES[name]), name)
    globals()[name] = value  # once: later lookups find it without coming here
    return value
