"""Fast offline extractive summarizer: GloVe sentence embeddings + k-means.

from summarizer import Summarizer, Budget
Summarizer().summarize("text").text
"""

from summarizer.engine import METHODS, Budget, Summarizer, Summary
from summarizer.split import split_sentences
from summarizer.tokens import tokenize

__all__ = ["METHODS", "Budget", "Summarizer", "Summary", "split_sentences", "tokenize"]
