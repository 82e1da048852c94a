"""glove.load on real files: Stanford text and zips built here, the binary cache, the bundled default."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import glove
from glove import GloveError

# 3-d vectors with what the Stanford files hold: a token with spaces (glove.840B), a duplicate
# (the first one wins), a blank line and a CRLF line ending.
TEXT_3D = "the 0.1 0.2 0.3\n, -1 -2.5 3e-2\nnew york 1 2 3\nthe 9 9 9\n\n. . . 4 5 6\r\nnaïve 7 8 9\n"
WORDS_3D = ["the", ",", "new york", ". . .", "naïve"]
VECTORS_3D = [[0.1, 0.2, 0.3], [-1, -2.5, 0.03], [1, 2, 3], [4, 5, 6], [7, 8, 9]]


def text_7d(words: list[str]) -> str:
    return "".join(
        f"{word} " + " ".join(f"{row}.{col}" for col in range(7)) + "\n" for row, word in enumerate(words)
    )


@pytest.fixture(autouse=True)
def cache_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("SUMPIPE_GLOVE_CACHE", str(root))
    monkeypatch.delenv("SUMPIPE_GLOVE", raising=False)
    return root


@pytest.fixture
def text_3d(tmp_path: Path) -> Path:
    path = tmp_path / "glove.tiny.3d.txt"
    path.write_bytes(TEXT_3D.encode("utf-8"))
    return path


@pytest.fixture
def zip_of_two(tmp_path: Path) -> Path:
    path = tmp_path / "glove.tiny.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("README", "not vectors")
        archive.writestr("glove.tiny.3d.txt", TEXT_3D)
        archive.writestr("glove.tiny.7d.txt", text_7d(["cat", "dog", "new  york"]))
    return path


def assert_is_3d(wv: glove.WordVectors) -> None:
    assert wv.words == WORDS_3D
    assert wv.dim == 3
    assert wv.vectors.dtype == np.float32
    np.testing.assert_allclose(wv.vectors, VECTORS_3D, rtol=1e-6)
    assert wv.lookup(["new york", "the", "york", "naïve", ". . ."]).tolist() == [2, 0, -1, 4, 3]


def test_text_file_3d(text_3d: Path) -> None:
    assert_is_3d(glove.load(text_3d))


def test_text_file_7d_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "glove.7d.txt"
    path.write_text(text_7d(["a", "b", "c", "d"]), encoding="utf-8")
    monkeypatch.setenv("SUMPIPE_GLOVE", str(path))
    wv = glove.load()
    assert (len(wv), wv.dim) == (4, 7)
    assert wv.vectors[2].tolist() == pytest.approx([2.0, 2.1, 2.2, 2.3, 2.4, 2.5, 2.6])
    assert wv.index == {"a": 0, "b": 1, "c": 2, "d": 3}


def test_tokens_with_unicode_line_separators_and_bad_utf8(tmp_path: Path) -> None:
    # Only "\n" ends a line: U+2028, U+0085 and a form feed are part of tokens (the crawl files
    # have such tokens). An invalid UTF-8 token is kept with a replacement character.
    path = tmp_path / "glove.odd.txt"
    path.write_bytes("a\u2028b 1 1\nc\x85d 2 2\ne\x0cf 3 3\n".encode() + b"bad\xff 4 4\n")
    wv = glove.load(path)
    assert wv.words == ["a\u2028b", "c\x85d", "e\x0cf", "bad\ufffd"]
    assert wv.lookup(["c\x85d", "e\x0cf", "a"]).tolist() == [1, 2, -1]
    assert glove.load(path).words == wv.words  # and the same words come back from the cache


def test_zip_member_chosen_with_double_colon(zip_of_two: Path) -> None:
    wv = glove.load(f"{zip_of_two}::glove.tiny.7d.txt")
    assert wv.words == ["cat", "dog", "new  york"]
    assert wv.dim == 7
    assert wv.vectors[1, 6] == pytest.approx(1.6)


def test_bare_zip_takes_the_first_txt_member(zip_of_two: Path) -> None:
    assert_is_3d(glove.load(zip_of_two))


def test_zip_member_missing_lists_the_members(zip_of_two: Path) -> None:
    with pytest.raises(GloveError, match=r"no member 'glove.tiny.50d.txt'.*glove.tiny.7d.txt"):
        glove.load(f"{zip_of_two}::glove.tiny.50d.txt")


def test_bad_zip(tmp_path: Path) -> None:
    path = tmp_path / "glove.6B.zip"
    path.write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(GloveError, match=f"{path}: not a readable zip file"):
        glove.load(path)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "glove.6B.50d.txt"
    with pytest.raises(GloveError, match=f"{path}: no such GloVe file"):
        glove.load(path)


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("cat 1 2\n", r"line 4: expected a word and 3 numbers, found 3 fields"),
        ("cat 1 two 3\n", r"line 4: not a number: b'two'"),
    ],
)
def test_corrupt_line_names_path_and_line(
    tmp_path: Path, cache_root: Path, bad_line: str, message: str
) -> None:
    path = tmp_path / "glove.bad.txt"
    path.write_text("a 1 2 3\nb 1 2 3\nc 1 2 3\n" + bad_line + "d 1 2 3\n", encoding="utf-8")
    with pytest.raises(GloveError, match=f"{path}, {message}"):
        glove.load(path)
    assert list(cache_root.iterdir()) == []  # the half-built cache was removed


def test_corrupt_line_inside_zip(tmp_path: Path) -> None:
    path = tmp_path / "glove.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("glove.txt", "a 1 2\nb 1 x\n")
    with pytest.raises(GloveError, match=rf"{path}::glove.txt, line 2: not a number"):
        glove.load(path)


def test_second_load_maps_the_cache_without_parsing(text_3d: Path, cache_root: Path) -> None:
    first = glove.load(text_3d)
    [cache_dir] = cache_root.iterdir()
    assert Path(first.vectors.filename) == cache_dir / "vectors.npy"
    # Change the cached values: a second load that re-parsed the text would not see this.
    cached = np.load(cache_dir / "vectors.npy", mmap_mode="r+")
    cached[0] = [42, 42, 42]
    cached.flush()
    del cached
    assert glove.load(text_3d).vectors[0].tolist() == [42, 42, 42]
    # Editing the source makes a new cache entry.
    text_3d.write_text("the 5 5 5\n", encoding="utf-8")
    assert glove.load(text_3d).vectors.tolist() == [[5, 5, 5]]
    assert len(list(cache_root.iterdir())) == 2


def test_cache_directory_is_loadable_by_itself(text_3d: Path, cache_root: Path) -> None:
    glove.load(text_3d)
    [cache_dir] = cache_root.iterdir()
    text_3d.unlink()
    assert_is_3d(glove.load(cache_dir))


def test_corrupt_cache_names_the_cache(text_3d: Path, cache_root: Path) -> None:
    glove.load(text_3d)
    [cache_dir] = cache_root.iterdir()
    vectors = cache_dir / "vectors.npy"
    vectors.write_bytes(vectors.read_bytes()[:-8])
    with pytest.raises(GloveError, match=f"{cache_dir}: corrupt GloVe cache"):
        glove.load(text_3d)


def test_cache_with_wrong_word_count_fails_when_words_are_read(text_3d: Path, cache_root: Path) -> None:
    glove.load(text_3d)
    [cache_dir] = cache_root.iterdir()
    (cache_dir / "words.txt").write_text("the\n,", encoding="utf-8")
    wv = glove.load(cache_dir)
    with pytest.raises(GloveError, match=f"{cache_dir}: corrupt GloVe cache.*2 words, expected 5"):
        _ = wv.words


def test_cache_with_bad_meta(text_3d: Path, cache_root: Path) -> None:
    glove.load(text_3d)
    [cache_dir] = cache_root.iterdir()
    (cache_dir / "meta.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(GloveError, match=f"{cache_dir}: corrupt GloVe cache.*meta.json"):
        glove.load(cache_dir)


def test_unwritable_cache_root_says_what_to_set(
    text_3d: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    monkeypatch.setenv("SUMPIPE_GLOVE_CACHE", str(blocker / "cache"))
    with pytest.raises(GloveError, match="set SUMPIPE_GLOVE_CACHE to a writable directory"):
        glove.load(text_3d)


def test_concurrent_conversions_agree(tmp_path: Path, cache_root: Path) -> None:
    path = tmp_path / "glove.7d.txt"
    path.write_text(text_7d([f"w{i}" for i in range(20_000)]), encoding="utf-8")
    code = (
        "import glove, sys; wv = glove.load(sys.argv[1]); "
        "print(len(wv), wv.words[-1], round(float(wv.vectors[-1, -1]), 3))"
    )
    env = {**os.environ, "SUMPIPE_GLOVE_CACHE": str(cache_root)}
    runs = [
        subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=120)[0].strip() for run in runs]
    assert [run.returncode for run in runs] == [0, 0]
    assert outputs == ["20000 w19999 19999.6"] * 2
    [cache_dir] = cache_root.iterdir()  # one cache, no staging directory left behind
    assert json.loads((cache_dir / "meta.json").read_text())["words"] == 20_000


def test_default_is_the_bundled_6b_50d(cache_root: Path) -> None:
    wv = glove.load()
    assert (len(wv), wv.dim) == (400_000, 50)
    assert isinstance(wv.vectors, np.memmap)
    assert wv.vectors.dtype == np.float32
    assert wv.lookup(["the", ",", "cat", "qwxzzyq"]).tolist() == [0, 1, wv.index["cat"], -1]
    assert wv.words[:3] == ["the", ",", "."]
    # Loaded again from the vocabulary cache it just wrote: the same vectors and words.
    again = glove.load()
    assert again.words == wv.words
    assert again.vectors.filename == wv.vectors.filename  # the package's own .npy, never copied
    assert len(list(cache_root.iterdir())) == 1


def test_default_still_loads_when_the_cache_is_unwritable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    monkeypatch.setenv("SUMPIPE_GLOVE_CACHE", str(blocker / "cache"))
    wv = glove.load()
    assert (len(wv), wv.dim) == (400_000, 50)
    assert wv.lookup(["of", "qwxzzyq"]).tolist() == [3, -1]
