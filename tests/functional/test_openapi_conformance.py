"""`sumpipe serve` against its own OpenAPI document: schemathesis generates requests from the
document (valid ones, and invalid ones for each constraint), sends them to the real server on
loopback and runs every check it has (`--checks all`): each status returned is documented, each
body matches its schema, schema-valid requests are accepted and schema-invalid ones refused, no
5xx. The run is bounded (--max-examples) and deterministic (--generation-deterministic: the same
requests every time), a minute or so on 2 cores.

The server has no stack, so the batch-job routes answer their documented 503; schemathesis.toml
beside this file allows that one 5xx and no other."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from api_server import serve

CONFIG = Path(__file__).with_name("schemathesis") / "schemathesis.toml"
MAX_EXAMPLES = 100


def test_the_server_behaves_as_its_openapi_document_says(tmp_path: Path) -> None:
    with serve() as (url, _):
        run = subprocess.run(
            [
                str(Path(sys.executable).with_name("st")),
                "--config-file", str(CONFIG),
                "run", f"{url}/openapi.json",
                "--checks", "all",
                "--max-examples", str(MAX_EXAMPLES),
                "--generation-deterministic",
                "--workers", "1",
                "--request-timeout", "30",
                "--max-failures", "20",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )  # fmt: skip
    assert run.returncode == 0, run.stdout[-20_000:] + run.stderr[-5_000:]
    selected = re.search(r"Selected: (\d+)/(\d+)", run.stdout)
    tested = re.search(r"Tested: (\d+)", run.stdout)
    assert selected and tested and selected[1] == selected[2] == tested[1], run.stdout[-5_000:]
