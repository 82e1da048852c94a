"""The binary cache: one directory per converted source, memory-mapped on load.

Layout of a cache directory::

    meta.json    {"format": 1, "source": ..., "vectors": "vectors.npy", "words": N, "dim": D}
    vectors.npy  float32 (N, D); "vectors" may instead be an absolute path to an existing .npy
                 (the default package already ships one, so only its vocabulary is cached)
    words.txt    the N words, UTF-8, joined by "\\n" (no GloVe token can contain a newline)
    hashes.npy   uint64, sorted hashes of the words, and
    rows.npy     int64, their rows: the lookup table of ``glove.hashing``, so a new process
                 can look tokens up without reading the words or building a dict

A directory is built in a staging directory next to it and renamed into place, so readers
never see a half-written cache and concurrent builders don't corrupt each other.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from glove.hashing import HashTable
from glove.vectors import GloveError, WordVectors

CACHE_ENV = "SUMPIPE_GLOVE_CACHE"
FORMAT = 1
META = "meta.json"
WORDS = "words.txt"
VECTORS = "vectors.npy"
HASHES = "hashes.npy"
ROWS = "rows.npy"


def cache_root() -> Path:
    configured = os.environ.get(CACHE_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "sumpipe" / "glove"


def cache_dir_for(source: Path, member: str | None = None) -> Path:
    """The cache directory of a source file: changes whenever the file is replaced or edited."""
    stat = source.stat()
    # FORMAT is part of the key so a new layout never trips over an old directory.
    identity = f"{FORMAT}\0{source.resolve()}\0{member or ''}\0{stat.st_size}\0{stat.st_mtime_ns}"
    key = hashlib.sha256(identity.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    stem = Path(member).stem if member else source.stem
    return cache_root() / f"{stem}-{key}"


def is_cache_dir(path: Path) -> bool:
    return (path / META).is_file()


def read_cache(directory: Path) -> WordVectors:
    """Memory-map a cache directory; GloveError naming it when anything in it is inconsistent."""

    def corrupt(reason: str) -> GloveError:
        return GloveError(f"{directory}: corrupt GloVe cache ({reason}); delete the directory to rebuild it")

    try:
        meta = json.loads((directory / META).read_text(encoding="utf-8"))
        n_words, dim, vectors_name = int(meta["words"]), int(meta["dim"]), str(meta["vectors"])
        if meta.get("format") != FORMAT:
            raise corrupt(f"format {meta.get('format')!r}, expected {FORMAT}")
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise corrupt(f"{META}: {error}") from error
    vectors_path = directory / vectors_name  # an absolute name replaces the directory
    vectors, hashes, rows = (
        _map_array(path, corrupt) for path in (vectors_path, directory / HASHES, directory / ROWS)
    )
    if vectors.dtype != np.float32 or vectors.shape != (n_words, dim):
        raise corrupt(f"vectors are {vectors.dtype} {vectors.shape}, expected float32 {(n_words, dim)}")
    if hashes.dtype != np.uint64 or rows.dtype != np.int64 or hashes.shape != rows.shape or hashes.ndim != 1:
        raise corrupt(f"{HASHES} and {ROWS} are not a lookup table")
    words_path = directory / WORDS
    if not words_path.is_file():
        raise corrupt(f"{WORDS} is missing")

    def read_words() -> list[str]:
        try:
            words = words_path.read_bytes().decode("utf-8").split("\n")
        except (OSError, UnicodeDecodeError) as error:
            raise corrupt(f"{WORDS}: {error}") from error
        if len(words) != n_words:
            raise corrupt(f"{WORDS} has {len(words)} words, expected {n_words}")
        return words

    source = str(meta.get("source", directory))
    return WordVectors(vectors, read_words, source=source, table=HashTable(hashes, rows))


def _map_array(path: Path, corrupt: Callable[[str], GloveError]) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as error:
        raise corrupt(f"{path.name}: {error}") from error


def write_vocabulary(directory: Path, words: list[str]) -> None:
    """The words and their lookup table."""
    if any("\n" in word for word in words):
        raise GloveError(f"{directory}: a word contains a newline, which {WORDS} can't hold")
    (directory / WORDS).write_bytes("\n".join(words).encode("utf-8"))
    table = HashTable.build(words)
    np.save(directory / HASHES, table.hashes)
    np.save(directory / ROWS, table.rows)


def write_meta(directory: Path, *, source: str, vectors: str, n_words: int, dim: int) -> None:
    meta = {"format": FORMAT, "source": source, "vectors": vectors, "words": n_words, "dim": dim}
    (directory / META).write_text(json.dumps(meta, indent=1), encoding="utf-8")


@contextmanager
def building(target: Path) -> Iterator[Path]:
    """Yield an empty staging directory; when the block succeeds it becomes ``target`` atomically."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    except OSError as error:
        raise GloveError(
            f"{target.parent}: can't write the GloVe cache ({error}); set {CACHE_ENV} to a writable directory"
        ) from error
    try:
        yield staging
        staging.chmod(0o755)  # mkdtemp makes it private; a cache built for a service user must be readable
        try:
            staging.rename(target)
        except OSError as error:
            if not is_cache_dir(target):
                raise GloveError(f"{target}: can't move the new GloVe cache into place ({error})") from error
            # Another process finished the same conversion first; its copy is as good as ours.
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # nothing left to remove after a successful rename
