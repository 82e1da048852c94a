"""The `summarize` CLI as a new user meets it: --version, the default number of workers, file
modes, delimiters and encodings, output names it can't honour, one-line errors, --quiet, a
progress bar counted in rows, and the closing line. All through the installed console scripts."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import stat
import struct
import subprocess
import sys
import termios
import threading
import zipfile
from importlib import metadata
from pathlib import Path

import pandas as pd
import pytest
from cli_run import REVIEWS, SUMMARIZE, read_csv, run_script

from summarizer.batch import usable_cores

BIN = Path(sys.executable).parent
# Closing line of a run: "50 rows: 40 ok, 10 passthrough in 0.8 s (2 workers)"
CLOSING = re.compile(
    r"(?P<rows>[\d,]+) rows?: (?P<counts>.+) in (?P<seconds>\d+\.\d) s \((?P<workers>\d+) workers?\)"
)


@pytest.fixture(scope="module")
def reviews() -> pd.DataFrame:
    """The bundled reviews with non-ASCII text in some of them, to show transcoding is exact."""
    frame = pd.read_csv(REVIEWS, dtype=str, keep_default_na=False)
    for row in range(0, len(frame), 7):
        frame.loc[row, "Text"] += " Le café était très bon, à 5 € “worth it”. Naïve? Non."
    return frame


@pytest.fixture(scope="module")
def expected(reviews: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The output for `reviews` as a plain UTF-8, comma-separated file."""
    folder = tmp_path_factory.mktemp("expected")
    reviews.to_csv(folder / "in.csv", index=False)
    result = run_script(folder / "in.csv", "-o", folder / "out.csv")
    assert result.returncode == 0, result.stderr
    return (folder / "out.csv").read_bytes()


def _stderr_lines(result: subprocess.CompletedProcess[bytes]) -> list[str]:
    return result.stderr.decode().splitlines()


def _one_line_error(result: subprocess.CompletedProcess[bytes]) -> str:
    """The run failed with exit status 2 and exactly one line on stderr: that line."""
    assert result.returncode == 2, result.stderr
    [line] = _stderr_lines(result)
    assert line.startswith("summarize: error: ")
    return line


# ---- --version ---------------------------------------------------------------------------------


@pytest.mark.parametrize("script", ["summarize", "sumpipe", "sumpipe-runner"])
def test_every_console_script_tells_its_version(script: str) -> None:
    result = subprocess.run([BIN / script, "--version"], capture_output=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().strip() == f"{script} {metadata.version('sumpipe')}"


# ---- workers -----------------------------------------------------------------------------------


def test_workers_default_to_the_cores_this_process_may_use(tmp_path: Path) -> None:
    """Three chunks, so a pool is worth starting: pinned to one core by its CPU affinity the run
    uses one worker; unpinned, every core it may use. The output is the same either way."""
    pinned = subprocess.run(
        ["taskset", "-c", "0", SUMMARIZE, REVIEWS, "--chunk-rows", "20", "-o", tmp_path / "pinned.csv"],
        capture_output=True,
        timeout=120,
        check=False,
    )
    free = run_script(REVIEWS, "--chunk-rows", "20", "-o", tmp_path / "free.csv")
    assert pinned.returncode == free.returncode == 0, free.stderr
    [pinned_line] = _stderr_lines(pinned)
    [free_line] = _stderr_lines(free)
    assert CLOSING.fullmatch(pinned_line)["workers"] == "1"  # type: ignore[index]
    cores = usable_cores()
    assert 1 <= cores <= len(os.sched_getaffinity(0))
    assert CLOSING.fullmatch(free_line)["workers"] == str(cores)  # type: ignore[index]
    assert (tmp_path / "pinned.csv").read_bytes() == (tmp_path / "free.csv").read_bytes()


def _fake_cgroups(root: Path, quota: int | None, period: int = 100_000) -> Path:
    """A cgroup tree under `root` at this process's own cgroup paths (as /proc/self/cgroup lists
    them), v1 and v2 files both, holding `quota` (None: no limit)."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        folder = root / controllers / path.lstrip("/") if controllers else root / path.lstrip("/")
        folder.mkdir(parents=True, exist_ok=True)
        if controllers == "":
            (folder / "cpu.max").write_text(f"{'max' if quota is None else quota} {period}\n")
        elif "cpu" in controllers.split(","):
            (folder / "cpu.cfs_quota_us").write_text(f"{-1 if quota is None else quota}\n")
            (folder / "cpu.cfs_period_us").write_text(f"{period}\n")
    return root


def test_a_cgroup_cpu_quota_caps_the_default_workers(tmp_path: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    assert usable_cores(str(_fake_cgroups(tmp_path / "none", None))) == affinity
    assert usable_cores(str(_fake_cgroups(tmp_path / "half", 50_000))) == 1
    assert usable_cores(str(_fake_cgroups(tmp_path / "one-and-half", 150_000))) == min(affinity, 2)
    assert usable_cores(str(_fake_cgroups(tmp_path / "many", 6_400_000))) == affinity


# ---- files -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_output_files_get_the_users_umask(umask: int, mode: int, tmp_path: Path) -> None:
    for name in ("out.csv", "out.parquet"):
        result = subprocess.run(
            [SUMMARIZE, REVIEWS, "-q", "-o", tmp_path / name],
            capture_output=True,
            timeout=120,
            umask=umask,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode


def _write(path: Path, reviews: pd.DataFrame, sep: str = ",", encoding: str = "utf-8") -> Path:
    """`reviews` as a CSV file delimited by `sep`, in `encoding` ("utf-16-be+bom": big-endian
    with its byte-order mark, which Python's utf-16 codec never writes on a little-endian host)."""
    text = reviews.to_csv(index=False, sep=sep)
    if encoding == "utf-16-be+bom":
        path.write_bytes(b"\xfe\xff" + text.encode("utf-16-be"))
    else:
        path.write_bytes(text.encode(encoding))
    return path


@pytest.mark.parametrize(
    ("name", "sep", "encoding"),
    [
        ("tabs.tsv", "\t", "utf-8"),
        ("semicolons.csv", ";", "utf-8"),
        ("pipes.txt", "|", "utf-8"),
        ("bom.csv", ",", "utf-8-sig"),
        ("utf16-bom.csv", ",", "utf-16"),
        ("utf16-be-bom.tsv", "\t", "utf-16-be+bom"),
        ("utf16-le-no-bom.csv", ",", "utf-16-le"),
        ("utf32.csv", ";", "utf-32"),
    ],
)
def test_delimiter_and_encoding_are_detected(
    name: str, sep: str, encoding: str, reviews: pd.DataFrame, expected: bytes, tmp_path: Path
) -> None:
    source = _write(tmp_path / name, reviews, sep, encoding)
    result = run_script(source, "-q", "-o", tmp_path / "out.csv")
    assert (result.returncode, result.stderr) == (0, b"")
    assert (tmp_path / "out.csv").read_bytes() == expected


def test_standard_input_in_utf16_with_semicolons(
    reviews: pd.DataFrame, expected: bytes, tmp_path: Path
) -> None:
    result = run_script("-", "-q", stdin=reviews.to_csv(index=False, sep=";").encode("utf-16"))
    assert (result.returncode, result.stderr) == (0, b"")
    assert result.stdout == expected


def test_named_encoding_and_delimiter(reviews: pd.DataFrame, expected: bytes, tmp_path: Path) -> None:
    """cp1252 can't be told from UTF-8 by its bytes, so it is named (read as UTF-8, its bytes
    would come out right only through the per-byte fallback); --sep takes `\\t` for a tab."""
    source = _write(tmp_path / "legacy.csv", reviews, ";", "cp1252")
    result = run_script(source, "--encoding", "cp1252", "--sep", ";", "-q", "-o", tmp_path / "out.csv")
    assert (result.returncode, result.stderr) == (0, b"")
    assert (tmp_path / "out.csv").read_bytes() == expected
    tabs = _write(tmp_path / "tabs.csv", reviews, "\t")
    result = run_script(tabs, "--sep", "\\t", "-q", "-o", tmp_path / "tabs-out.csv")
    assert (result.returncode, result.stderr) == (0, b"")
    assert (tmp_path / "tabs-out.csv").read_bytes() == expected


def test_a_wrong_delimiter_names_the_columns_it_found(reviews: pd.DataFrame, tmp_path: Path) -> None:
    source = _write(tmp_path / "semicolons.csv", reviews, ";")
    line = _one_line_error(run_script(source, "--sep", ",", "-o", tmp_path / "out.csv"))
    assert line.endswith(
        "text column 'Text' not found; available columns: Id;ProductId;UserId;ProfileName;"
        "HelpfulnessNumerator;HelpfulnessDenominator;Score;Time;Summary;Text; the header is one column "
        "holding ';': is that the delimiter? (--sep)"
    )
    assert not (tmp_path / "out.csv").exists()


def test_bytes_invalid_in_the_named_encoding_say_where(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_bytes(b"Id,Text\n1,Fine text here.\n2,Caf\xc3\xa9 is good.\n")
    line = _one_line_error(run_script(source, "--encoding", "ascii", "-o", tmp_path / "out.csv"))
    assert line.endswith(
        "in.csv is not valid ascii at byte 31 (ordinal not in range(128)); give its encoding with --encoding"
    )
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize("name", ["out.xlsx", "out.tsv", "out"])
def test_an_output_name_whose_format_is_unknown_is_refused(name: str, tmp_path: Path) -> None:
    line = _one_line_error(run_script(REVIEWS, "-o", tmp_path / name))
    assert f"cannot tell the output format from '{tmp_path / name}'" in line
    assert list(tmp_path.iterdir()) == []
    result = run_script(REVIEWS, "-q", "--output-format", "jsonl", "-o", tmp_path / name)
    assert result.returncode == 0, result.stderr
    assert len((tmp_path / name).read_text().splitlines()) == 50


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("zip", "is a zip archive (an Excel .xlsx workbook?); export the sheet as CSV"),
        ("gzip", "is gzip-compressed; decompress it first"),
    ],
)
def test_an_archive_given_as_input_is_named_as_such(content: str, says: str, tmp_path: Path) -> None:
    source = tmp_path / "reviews.xlsx"
    if content == "zip":
        with zipfile.ZipFile(source, "w") as archive:
            archive.write(REVIEWS, "reviews.csv")
    else:
        import gzip

        source.write_bytes(gzip.compress(REVIEWS.read_bytes()))
    assert says in _one_line_error(run_script(source, "-o", tmp_path / "out.csv"))


def test_missing_vectors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    result = run_script(REVIEWS, "--vectors", tmp_path / "nonexistent", "-o", tmp_path / "o.csv")
    line = _one_line_error(result)
    assert "nonexistent" in line
    assert not (tmp_path / "o.csv").exists()


# ---- what it says ------------------------------------------------------------------------------


def test_closing_line_accounts_for_every_row(tmp_path: Path) -> None:
    result = run_script(REVIEWS, "-o", tmp_path / "out.csv")
    assert result.returncode == 0
    [line] = _stderr_lines(result)
    closing = CLOSING.fullmatch(line)
    assert closing is not None, line
    statuses = read_csv(tmp_path / "out.csv")["status"].value_counts()
    assert closing["rows"] == "50"
    assert closing["counts"] == ", ".join(
        f"{statuses[status]} {status}" for status in ("ok", "passthrough", "empty") if status in statuses
    )


def test_closing_line_of_group_summaries(tmp_path: Path) -> None:
    result = run_script(REVIEWS, "--group-by", "ProductId", "-o", tmp_path / "out.csv")
    assert result.returncode == 0
    groups = read_csv(tmp_path / "out.csv")
    [line] = _stderr_lines(result)
    assert line.startswith(f"{len(groups)} groups of ProductId from 50 rows: ")


def test_quiet_says_nothing_but_errors(tmp_path: Path) -> None:
    result = run_script(REVIEWS, "--quiet", "-o", tmp_path / "out.csv")
    assert (result.returncode, result.stderr) == (0, b"")
    assert _one_line_error(run_script(REVIEWS, "-q", "--text-column", "Body")).endswith(
        "text column 'Body' not found; available columns: Id, ProductId, UserId, ProfileName, "
        "HelpfulnessNumerator, HelpfulnessDenominator, Score, Time, Summary, Text"
    )


def test_forced_progress_bar_counts_rows(tmp_path: Path) -> None:
    result = run_script(REVIEWS, "--progress", "--chunk-rows", "10", "-o", tmp_path / "out.csv")
    assert result.returncode == 0
    text = result.stderr.decode()
    assert "summarize: 100%" in text
    assert "50/50 [" in text
    assert " rows/s]" in text


def _on_a_terminal(*args: str | Path) -> tuple[int, str]:
    """Runs `summarize` with stderr on a 100-column pseudo-terminal: (exit status, what the
    terminal got). (A new pty is 0 columns wide; tqdm draws nothing in no room.)"""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    seen = bytearray()

    def drain() -> None:
        while True:
            try:
                data = os.read(leader, 65536)
            except OSError:  # EIO: the child side closed
                return
            if not data:
                return
            seen.extend(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        process = subprocess.run(
            [SUMMARIZE, *map(str, args)], stderr=follower, stdout=subprocess.DEVNULL, timeout=300, check=False
        )
    finally:
        os.close(follower)
    reader.join(timeout=10)
    os.close(leader)
    return process.returncode, seen.decode("utf-8", "replace")


@pytest.mark.slow
def test_a_long_run_on_a_terminal_shows_rows_as_they_are_done(tmp_path: Path) -> None:
    """72,000 rows on one worker take seconds: the bar appears after its one-second delay, with
    counts below the total on the way (the rows are done a chunk at a time), and ends at the total.
    (24,000 rows once took 1.0 s on a quiet machine: the bar was first drawn at the end.)"""
    reviews = pd.read_csv(REVIEWS, dtype=str, keep_default_na=False)
    big = pd.concat([reviews] * 1440, ignore_index=True)
    big.to_csv(tmp_path / "big.csv", index=False)
    code, screen = _on_a_terminal(tmp_path / "big.csv", "--workers", "1", "-o", tmp_path / "out.csv")
    assert code == 0, screen
    counts = [(int(done), int(total)) for done, total in re.findall(r"(\d+)/(\d+) \[", screen)]
    assert any(done < total for done, total in counts), screen
    assert counts[-1] == (72_000, 72_000)
    assert CLOSING.search(screen)["rows"] == "72,000"  # type: ignore[index]


def test_report_file_holds_the_closing_lines_counts(tmp_path: Path) -> None:
    result = run_script(REVIEWS, "-q", "--report", tmp_path / "report.json", "-o", tmp_path / "out.csv")
    assert (result.returncode, result.stderr) == (0, b"")
    report = json.loads((tmp_path / "report.json").read_text())
    out = read_csv(tmp_path / "out.csv")
    assert report["rows_in"] == report["rows_out"] == len(out) == 50
    assert report["statuses"] == out["status"].value_counts().to_dict()
    assert report["sentences_in"] == out["n_sentences_in"].astype(int).sum()
    assert report["sentences_out"] == out["n_sentences_out"].astype(int).sum()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sample_is_the_first_rows_with_their_texts_and_summaries(tmp_path: Path, workers: str) -> None:
    """`--sample` (what the runner gives the review page): the first rows that have a text, with
    the very summary and status written for them, across chunk boundaries, up to --sample-rows."""
    sample = tmp_path / "sample.jsonl"
    out = tmp_path / "out.csv"
    done = run_script(
        REVIEWS,
        "-o",
        out,
        "--sample",
        sample,
        "--sample-rows",
        "25",
        "--chunk-rows",
        "7",
        "--workers",
        workers,
    )
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in sample.read_text(encoding="utf-8").splitlines()]
    source = pd.read_csv(REVIEWS, dtype=str, keep_default_na=False)
    written = read_csv(out).set_index("id")
    with_text = source[source["Text"].str.strip() != ""].head(25)
    assert [r["id"] for r in rows] == list(with_text["Id"])
    assert [r["text"] for r in rows] == list(with_text["Text"])
    assert [r["summary"] for r in rows] == [written.loc[i, "summary"] for i in with_text["Id"]]
    assert [r["status"] for r in rows] == [written.loc[i, "status"] for i in with_text["Id"]]


def test_sample_refuses_group_by(tmp_path: Path) -> None:
    done = run_script(
        REVIEWS, "-o", tmp_path / "o.csv", "--group-by", "ProductId", "--sample", tmp_path / "s.jsonl"
    )
    assert done.returncode == 2 and b"--sample" in done.stderr
