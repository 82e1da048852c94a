"""Stanford GloVe text files (``word v1 ... vD`` per line), plain or inside the original .zip.

The dimension is whatever the file holds. Some tokens contain spaces (glove.840B.300d has
". . ." and the like), so a line is split from the right: the last D fields are the numbers
and everything before them is the token. A token seen twice keeps its first vector.
"""

from __future__ import annotations

import logging
import shutil
import time
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import chain, islice
from pathlib import Path
from typing import BinaryIO

import numpy as np

from glove.cache import VECTORS, building, write_meta, write_vocabulary
from glove.vectors import GloveError

log = logging.getLogger(__name__)

# Lines sampled to find the dimension: GloVe files are sorted by frequency, so the first
# lines are ordinary one-field tokens even in files that have tokens with spaces further down.
DIM_SAMPLE_LINES = 100
ROWS_PER_WRITE = 8192


@contextmanager
def open_text_source(path: Path, member: str | None) -> Iterator[tuple[BinaryIO, str]]:
    """Yield the source as a binary stream and the label errors use (``file`` or ``file.zip::member``)."""
    if path.suffix.lower() != ".zip":
        if member:
            raise GloveError(f"{path}: '::{member}' selects a member of a .zip, and this is not a .zip")
        with path.open("rb") as stream:
            yield stream, str(path)
        return
    try:
        with zipfile.ZipFile(path) as archive:
            member = member or _default_member(path, archive)
            try:
                stream = archive.open(member)
            except KeyError:
                members = ", ".join(archive.namelist()) or "none"
                raise GloveError(f"{path}: no member {member!r} in the zip (members: {members})") from None
            with stream:
                yield stream, f"{path}::{member}"
    except (zipfile.BadZipFile, zlib.error, EOFError) as error:
        raise GloveError(f"{path}: not a readable zip file ({error})") from error


def _default_member(path: Path, archive: zipfile.ZipFile) -> str:
    texts = [name for name in archive.namelist() if name.lower().endswith(".txt")]
    if not texts:
        raise GloveError(f"{path}: the zip holds no .txt file")
    if len(texts) > 1:
        log.info(
            "zip has several GloVe files; using the first, choose another with path.zip::member",
            extra={"path": str(path), "member": texts[0], "members": texts},
        )
    return texts[0]


def convert(lines: Iterable[bytes], label: str, target: Path) -> None:
    """Parse GloVe text lines into the cache directory ``target`` (atomically)."""
    started = time.perf_counter()
    log.info("converting GloVe text into a binary cache, once", extra={"source": label, "cache": str(target)})
    numbered = _numbered_nonblank(lines)
    head = list(islice(numbered, DIM_SAMPLE_LINES))
    if not head:
        raise GloveError(f"{label}: no vectors in the file")
    dim = Counter(len(line.split(b" ")) for _, line in head).most_common(1)[0][0] - 1
    if dim < 1:
        raise GloveError(f"{label}, line {head[0][0]}: expected a word followed by numbers")
    words: list[str] = []
    seen: set[str] = set()
    with building(target) as staging:
        raw_path = staging / "vectors.f32"
        with raw_path.open("wb") as raw:
            rows = np.empty((ROWS_PER_WRITE, dim), dtype=np.float32)
            filled = 0
            for line_number, line in chain(head, numbered):
                fields = line.rsplit(b" ", dim)
                if len(fields) != dim + 1:
                    raise GloveError(
                        f"{label}, line {line_number}: expected a word and {dim} numbers, "
                        f"found {len(fields)} fields"
                    )
                # GloVe tokens are UTF-8 but a few in the crawl files are not; a replacement
                # character keeps the rest of the file usable.
                word = fields[0].decode("utf-8", "replace")
                if word in seen:
                    continue
                try:
                    rows[filled] = np.array(fields[1:], dtype=np.float32)
                except ValueError:
                    bad = next((field for field in fields[1:] if not _is_number(field)), fields[1])
                    raise GloveError(f"{label}, line {line_number}: not a number: {bad[:40]!r}") from None
                seen.add(word)
                words.append(word)
                filled += 1
                if filled == ROWS_PER_WRITE:
                    rows.tofile(raw)
                    filled = 0
            rows[:filled].tofile(raw)
        _raw_to_npy(raw_path, staging / VECTORS, shape=(len(words), dim))
        write_vocabulary(staging, words)
        write_meta(staging, source=label, vectors=VECTORS, n_words=len(words), dim=dim)
    seconds = round(time.perf_counter() - started, 1)
    log.info(
        "converted GloVe text", extra={"source": label, "words": len(words), "dim": dim, "seconds": seconds}
    )


def _numbered_nonblank(lines: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    for line_number, line in enumerate(lines, start=1):
        # Only the right end is stripped (it is always a number, or a CR from a Windows copy):
        # a token may start with a space.
        stripped = line.rstrip()
        if stripped:
            yield line_number, stripped


def _is_number(field: bytes) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


def _raw_to_npy(raw_path: Path, npy_path: Path, shape: tuple[int, int]) -> None:
    """Prefix raw float32 rows with an .npy header (the row count is only known at the end)."""
    descr = np.lib.format.dtype_to_descr(np.dtype(np.float32))
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    with npy_path.open("wb") as npy, raw_path.open("rb") as raw:
        np.lib.format.write_array_header_1_0(npy, header)
        shutil.copyfileobj(raw, npy, length=1 << 24)
    raw_path.unlink()
