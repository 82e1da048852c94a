"""What the operator commands print can't drive the terminal: user text is shown, not obeyed."""

from __future__ import annotations

from sumpipe.ops.commands.jobs import LogLine, format_line, shown


def test_escape_sequences_and_controls_are_printed_as_text() -> None:
    key = "reviews\x1b[2J\x1b]0;owned\x07\r\nfake line\u202etxt.csv\x9b"
    printed = shown(key)
    assert printed == "reviews\\x1b[2J\\x1b]0;owned\\x07\\x0d\\x0afake line\\u202etxt.csv\\x9b"
    assert all(ch.isprintable() for ch in printed)


def test_ordinary_text_is_unchanged() -> None:
    text = "Ünïcödé reviews – 2024/Q1 (final).csv"
    assert shown(text) == text


def test_a_log_line_with_user_text_prints_on_one_line() -> None:
    line = LogLine(0.0, "trigger", {"level": "INFO", "message": "job recorded", "input_key": "a\nb\x1b[31m"})
    formatted = format_line(line)
    assert "\n" not in formatted and "\x1b" not in formatted
    assert "input_key=a\\x0ab\\x1b[31m" in formatted
