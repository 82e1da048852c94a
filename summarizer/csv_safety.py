"""CSV cells a spreadsheet opens without running anything: the one rule for the `summarize` CLI's
CSV output (summarizer.io) and the review page's feedback export (sumpipe.feedback.export).

A spreadsheet runs a cell starting with = + - or @ as a formula (OWASP "CSV injection"):
`=HYPERLINK(...)` sends what is clicked elsewhere, `=cmd|' /C calc'!A0` asks DDE to start a
program. Spreadsheets drop leading whitespace first (tab, CR, spaces), so "\\t=1+1" is a formula
too. A leading ' makes the cell text, shown without the quote.

Free text (summaries, themes, texts, reasons, corrections) is neutralized whenever it starts that
way. Identifiers are not: an id or a group key must join back to its input exactly, and about one
Yelp business id in eight starts with "-". An identifier is neutralized only when it could run
something: a formula start together with a function call or DDE / external reference syntax.
Plain numbers (-5, +3.2, -1e5) are numbers to a spreadsheet, never formulas: left alone everywhere.
"""

from __future__ import annotations

import re

FORMULA_TRIGGERS = ("=", "+", "-", "@")
# What turns a formula start into something that runs: a call `f(`, DDE `app|topic!item`, or a
# reference into another sheet or workbook `'[book]sheet'!A1`.
_EXECUTABLE = re.compile(r"[(|!]")
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def neutralize_formula(value: str, *, identifier: bool) -> str:
    """`value` as a CSV cell: prefixed with ' when a spreadsheet would run it, else unchanged.

    `identifier`: an id or key column, which keeps its exact value unless it could execute."""
    if not value or (not value.startswith(FORMULA_TRIGGERS) and not value[0].isspace()):
        return value  # the common case, decided without copying the text
    start = value.lstrip()
    if not start.startswith(FORMULA_TRIGGERS) or _PLAIN_NUMBER.fullmatch(start.rstrip()):
        return value
    if identifier and not _EXECUTABLE.search(value):
        return value
    return "'" + value
