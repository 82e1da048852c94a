"""The summarizer as a notebook uses it: a pandas column in, a DataFrame out, the same rows the
`summarize` CLI writes; arguments of the wrong type refused where they are given (the Summarizer's
when it is made, a budget at the call); type information shipped for every package."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_run import REVIEWS, read_csv, run_script

from glove import GloveError
from summarizer import Budget, Summarizer
from sumpipe.ops import package

COLUMNS = ["summary", "n_sentences_in", "n_sentences_out", "status"]


@pytest.fixture(scope="module")
def summarizer() -> Summarizer:
    return Summarizer()


@pytest.fixture(scope="module")
def reviews() -> pd.DataFrame:
    return pd.read_csv(REVIEWS, dtype=str, keep_default_na=False)


def test_a_dataframe_column_gives_the_cli_rows(
    summarizer: Summarizer, reviews: pd.DataFrame, tmp_path: Path
) -> None:
    assert run_script(REVIEWS, "-q", "-o", tmp_path / "cli.csv").returncode == 0
    cli = read_csv(tmp_path / "cli.csv")
    frame = summarizer.summarize_column(reviews, "Text")
    assert list(frame.columns) == COLUMNS
    assert frame.index.equals(reviews.index)
    assert frame["summary"].tolist() == cli["summary"].tolist()
    assert frame["status"].tolist() == cli["status"].tolist()
    assert frame["n_sentences_out"].tolist() == cli["n_sentences_out"].astype(int).tolist()


def test_a_series_keeps_its_index_and_missing_cells_are_empty(summarizer: Summarizer) -> None:
    texts = pd.Series(
        ["The tea is fresh. The tin keeps it dry. Shipping took two days. I would buy it again.", None, 42],
        index=["a", "b", "c"],
    )
    frame = summarizer.summarize_column(texts)
    assert frame.index.tolist() == ["a", "b", "c"]
    assert frame["status"].tolist() == ["ok", "empty", "passthrough"]
    assert frame.loc["c", "summary"] == "42"
    joined = pd.DataFrame({"Text": texts}).join(frame)
    assert joined.loc["a", "n_sentences_in"] == 4


def test_a_missing_column_lists_the_ones_there_are(summarizer: Summarizer, reviews: pd.DataFrame) -> None:
    with pytest.raises(KeyError, match="column 'Body' not found; available columns: Id, ProductId"):
        summarizer.summarize_column(reviews, "Body")
    with pytest.raises(TypeError, match="expected a pandas Series or DataFrame, got list"):
        summarizer.summarize_column(["a text"])


@pytest.mark.parametrize(
    ("budget", "message"),
    [
        (3, r"budget must be a Budget, e\.g\. Budget\(sentences=3\) .*; got int 3"),
        ("3", "budget must be a Budget"),
    ],
)
def test_a_budget_of_the_wrong_type_fails_at_the_call(
    summarizer: Summarizer, reviews: pd.DataFrame, budget: object, message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        summarizer.summarize("A text. Of two sentences.", budget)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=message):
        summarizer.summarize_many(iter(["A text."]), budget)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=message):
        summarizer.summarize_column(reviews, "Text", budget)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"budget": Budget(sentences=3)}, TypeError, "unexpected keyword argument 'budget'"),
        ({"method": 3}, ValueError, "unknown method 3; choose one of default, kmeans"),
        ({"method": "lexrank"}, ValueError, "unknown method 'lexrank'"),
        ({"vectors": 123}, TypeError, r"vectors must be a glove\.WordVectors .*; got int"),
    ],
)
def test_wrong_arguments_fail_when_made(arguments: dict[str, object], error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        Summarizer(**arguments)  # type: ignore[arg-type]


def test_vectors_by_path(tmp_path: Path) -> None:
    with pytest.raises(GloveError, match="nonexistent"):
        Summarizer(vectors=str(tmp_path / "nonexistent"))
    vectors = tmp_path / "tiny.txt"
    vectors.write_text("tea 1 0\nfresh 0 1\ntin 1 1\n")
    tiny = Summarizer(vectors=vectors)
    summary = tiny.summarize("Tea is fresh. The tin. Fresh tea.", Budget(sentences=1))
    assert summary.status == "ok"
    assert len(summary.sentences) == 1


def test_budget_types() -> None:
    with pytest.raises(TypeError, match=r"Budget\.sentences must be an int, got str '3'"):
        Budget(sentences="3")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Budget\.sentences must be an int, got float 2\.5"):
        Budget(sentences=2.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Budget\.ratio must be a number, got bool True"):
        Budget(ratio=True)
    assert Budget(sentences=np.int64(2)).size(10) == 2
    assert Budget(ratio=np.float32(0.5)).size(10) == 5


def test_every_package_ships_its_type_information(tmp_path: Path) -> None:
    wheel = package.build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in package.WHEEL_PACKAGES:
        assert f"{name}/py.typed" in names


def test_the_instance_wheel_is_pure_python_whatever_the_checkout_has_built(tmp_path: Path) -> None:
    # The checkout holds the native splitter built for its own Python; the instances may run
    # another, so their wheel carries the splitter's Python reference only.
    assert list((package.REPO_ROOT / "summarizer").glob("_splitter*.so")), "the native splitter isn't built"
    wheel = package.build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    assert wheel.name.endswith("-py3-none-any.whl")
    assert "summarizer/split.py" in names
    assert [name for name in names if name.endswith((".so", ".c"))] == []
