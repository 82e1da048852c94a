"""`sumpipe-runner` accepts exactly `start|run <job_id>`; anything else is refused before it runs
anything (it is the SSH forced command: whatever the client asks arrives in SSH_ORIGINAL_COMMAND)."""

import pytest

from summarizer import schema
from sumpipe.instance import runner


@pytest.mark.parametrize(
    "command",
    [
        "",
        "start",
        "start j-0123456789abcdef0123; touch /tmp/pwned",
        "start j-0123456789abcdef0123 extra",
        "start $(touch /tmp/pwned)",
        "bash -c id",
        "run ../../etc/passwd",
        "stop j-0123456789abcdef0123",
    ],
)
def test_anything_but_a_verb_and_a_job_id_is_refused(command, monkeypatch, capsys):
    monkeypatch.setenv("SSH_ORIGINAL_COMMAND", command)
    # Stand-ins that record a call: a real start would spawn a job (that is the e2e tests' part).
    started = []
    monkeypatch.setattr(runner, "start", started.append)
    monkeypatch.setattr(runner, "run", started.append)

    assert runner.main([]) == schema.EXIT_USAGE
    assert started == []
    assert "usage" in capsys.readouterr().err


def test_the_forced_command_form_and_the_argv_form_reach_the_same_verb(monkeypatch):
    calls = []
    monkeypatch.setattr(runner, "start", lambda job_id: calls.append(("start", job_id)) or 0)
    monkeypatch.setattr(runner, "run", lambda job_id: calls.append(("run", job_id)) or 0)
    monkeypatch.setenv("SSH_ORIGINAL_COMMAND", "start j-0123456789abcdef0123")
    assert runner.main([]) == 0
    # The detached child gets its verb on argv; an inherited SSH_ORIGINAL_COMMAND must not win.
    assert runner.main(["run", "j-0123456789abcdef0123"]) == 0
    assert calls == [("start", "j-0123456789abcdef0123"), ("run", "j-0123456789abcdef0123")]
