"""The names the summarizer's outputs are known by, and its exit statuses: one place for what the
`summarize` CLI writes (summarizer.cli, summarizer.batch) and what reads it (the instance's job
runner, sumpipe.instance.runner, which runs the CLI and reads its report and exit status).

Names only, no imports: the runner's `start` must answer fast and imports nothing heavy.
"""

# ---- output columns ----------------------------------------------------------------------------

ID = "id"
SUMMARY = "summary"
N_SENTENCES_IN = "n_sentences_in"
N_SENTENCES_OUT = "n_sentences_out"
STATUS = "status"
# Every output row ends with these, whether per input row or per group.
SUMMARY_COLUMNS = (SUMMARY, N_SENTENCES_IN, N_SENTENCES_OUT, STATUS)

# With --group-by: the group key (named as in the input), then its rows...
N_ROWS = "n_rows"
# ...then one row per group with its themes and their sizes,
THEMES = "themes"
# or (--themes) one row per theme: its words, its rows and their share of the group's,
THEME = "theme"
THEME_ROWS = "theme_rows"
SHARE = "share"
# and, given star ratings, the mean rating and the split of the rows by rating.
STARS = "stars"
STAR_RATINGS = (1, 2, 3, 4, 5)
STAR_COLUMNS = tuple(f"stars_{star}" for star in STAR_RATINGS)

# ---- row statuses ------------------------------------------------------------------------------

OK = "ok"  # summarized
PASSTHROUGH = "passthrough"  # no longer than its budget: kept whole
EMPTY = "empty"  # no text, or no sentence in it
ERROR = "error"  # written "error: <reason>"
# In the order the CLI's closing line and the job's manifest list them.
STATUSES = (OK, PASSTHROUGH, EMPTY, ERROR)


def error_status(reason: str) -> str:
    """The status of a row that could not be summarized, saying why."""
    return f"{ERROR}: {reason}"


# ---- exit statuses of the `summarize` CLI (and of the job runner's own command line) ------------

EXIT_OK = 0
EXIT_FAILURE = 1  # an unexpected failure
EXIT_USAGE = 2  # bad usage or input that cannot be read: the caller's to fix (argparse's status too)
