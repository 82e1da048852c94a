"""Per-job options (sumpipe.options): what survives the trip through S3 metadata, and the flags
the runner gives `summarize`."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sumpipe.options import JobOptions, OptionError, from_metadata, from_strings

names = st.text(min_size=1, max_size=40).filter(str.isprintable)
options = st.builds(
    JobOptions,
    text_column=st.none() | names,
    id_column=st.none() | names,
    sentences=st.none() | st.integers(1, 50),
    method=st.none() | st.sampled_from(["default", "kmeans"]),
    format=st.sampled_from(["csv", "jsonl", "parquet"]),
)


@given(options)
def test_metadata_round_trip(chosen: JobOptions) -> None:
    metadata = chosen.as_metadata()
    assert all(value.isascii() for value in metadata.values())  # S3 metadata is ASCII
    assert from_metadata(metadata) == chosen
    assert from_strings(chosen.as_strings()) == chosen


def test_ratio_and_group_by_round_trip() -> None:
    chosen = JobOptions(ratio=0.3, group_by="Product Id %20")
    assert from_metadata(chosen.as_metadata()) == chosen


def test_theme_rows_and_a_stars_column_round_trip_and_become_flags() -> None:
    chosen = JobOptions(group_by="ProductId", stars="Étoiles", themes=True)
    assert chosen.as_strings() == {"group-by": "ProductId", "stars": "Étoiles", "themes": "true"}
    assert from_metadata(chosen.as_metadata()) == chosen
    flags = ["--group-by", "ProductId", "--stars", "Étoiles", "--themes"]
    assert chosen.summarize_args("default")[4:] == flags
    assert from_strings({"group-by": "p", "themes": " No "}) == JobOptions(group_by="p")
    assert from_strings({"themes": "false"}) == JobOptions()


def test_keys_are_matched_without_case_and_foreign_ones_ignored() -> None:
    assert from_metadata({"Sumpipe-Sentences": "3", "owner": "me"}) == JobOptions(sentences=3)


def test_flags_for_summarize() -> None:
    chosen = JobOptions(text_column="body", sentences=2, format="jsonl", group_by="ProductId")
    assert chosen.summarize_args("default") == [
        "--method", "default", "--output-format", "jsonl",
        "--text-column", "body", "--sentences", "2", "--group-by", "ProductId",
    ]  # fmt: skip
    assert JobOptions().summarize_args("kmeans") == ["--method", "kmeans", "--output-format", "csv"]
    assert JobOptions(format="parquet").summary_name == "summary.parquet"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"text-column": ""}, "job option sumpipe-text-column: is empty"),
        ({"id-column": "a\nb"}, "job option sumpipe-id-column: holds control characters"),
        ({"group-by": "x" * 300}, "job option sumpipe-group-by: is 300 characters, over 256"),
        ({"sentences": "0"}, "job option sumpipe-sentences: must be a whole number of at least 1, got 0"),
        ({"sentences": "2", "ratio": "0.5"}, "job option sumpipe-ratio: give sentences or ratio, not both"),
        ({"ratio": "nan"}, "job option sumpipe-ratio: must be a fraction in (0, 1], got nan"),
        ({"method": "lexrank"}, "job option sumpipe-method: must be one of default, kmeans"),
        ({"themes": "maybe"}, "job option sumpipe-themes: must be true or false, got 'maybe'"),
        ({"themes": "yes"}, "job option sumpipe-themes: is for group-by summaries"),
        ({"stars": "Score"}, "job option sumpipe-stars: is for group-by summaries"),
        ({"group-by": "p", "stars": "\x1b[2J"}, "job option sumpipe-stars: holds control characters"),
    ],
)
def test_bad_values_name_their_option(values: dict[str, str], message: str) -> None:
    with pytest.raises(OptionError) as error:
        from_strings(values)
    assert str(error.value).startswith(message)
