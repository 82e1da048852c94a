"""The S3 key layout and job id contract (docs/architecture.md)."""

import hashlib

import pytest

from sumpipe import keys


def test_job_id_is_the_documented_hash_of_bucket_key_and_version():
    expected = "j-" + hashlib.sha256(b"in\0data/a b.csv\0v1").hexdigest()[:20]
    assert keys.job_id("in", "data/a b.csv", "v1") == expected
    assert keys.is_job_id(expected)


def test_a_new_version_of_the_same_key_is_a_new_job():
    assert keys.job_id("in", "a.csv", "v1") != keys.job_id("in", "a.csv", "v2")


def test_event_keys_are_url_decoded():
    assert keys.decode_event_key("reviews+2024%2B%C3%A9.csv") == "reviews 2024+é.csv"


@pytest.mark.parametrize(
    ("key", "parsed"),
    [
        ("jobs/j-0123456789abcdef0123/summary.csv", keys.OutputFile("j-0123456789abcdef0123", "summary.csv")),
        ("jobs/j-0123456789abcdef0123/error.json", keys.OutputFile("j-0123456789abcdef0123", "error.json")),
        ("jobs/not-a-job/summary.csv", None),
        ("other/j-0123456789abcdef0123/summary.csv", None),
        ("jobs/j-0123456789abcdef0123/nested/summary.csv", None),
    ],
)
def test_output_keys_parse_only_job_files(key, parsed):
    assert keys.parse_output_key(key) == parsed


@pytest.mark.parametrize(
    "bad",
    [
        "", "j-123", "j-0123456789ABCDEF0123", "j-0123456789abcdef0123; rm -rf /", "../x",
        "j-0123456789abcdef0123\n",  # `$` would let a trailing newline through
        "\nj-0123456789abcdef0123",
    ],
)  # fmt: skip
def test_anything_but_a_job_id_is_refused_in_output_keys(bad):
    with pytest.raises(ValueError):
        keys.output_key(bad, keys.SUMMARY)


def test_a_feedback_export_has_its_own_key_outside_the_jobs():
    key = keys.feedback_export_key(1_796_000_000.5, "00ff00ff00ff00ff")
    assert key == "exports/feedback-20261130T005320Z-00ff00ff00ff00ff.csv"
    assert keys.parse_output_key(key) is None  # never a job's file
    with pytest.raises(ValueError):
        keys.feedback_export_key(0, "../../jobs/x")
