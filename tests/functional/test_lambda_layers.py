"""Each Lambda runs with only what its deployment carries: its zip, its layers and the runtime.

The real layers are built for Lambda's platform (manylinux, CPython 3.12), which this machine's
interpreter can't import. So the same requirement lists are installed from the package registry for
this interpreter, and each handler runs in an isolated interpreter (`-I -S`: no site-packages) that
sees its unpacked zip, those layers and nothing else. A module the code needs but the layer lacks
fails here, not in the cloud."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from cli_run import run_script

from sumpipe.ops import package

pytestmark = pytest.mark.slow
DATA = Path(__file__).resolve().parents[1] / "data"
# boto3 stands in for the Lambda Python runtime, which provides it.
RUNTIME_PROVIDED = ("boto3",)


def _install(requirements: tuple[str, ...], target: Path) -> Path:
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
               "--no-compile", "--target", str(target), *requirements]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return target


def _unpack(artifact: package.Artifact, target: Path) -> Path:
    with zipfile.ZipFile(artifact.path) as archive:
        archive.extractall(target)
    return target


def _isolated(paths: list[Path], script: str, env: dict[str, str] | None = None) -> str:
    """Runs `script` in an interpreter that imports from `paths` and the standard library only."""
    prelude = f"import sys; sys.path[:0] = {[str(p) for p in paths]!r}\n"
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", prelude + script],
        capture_output=True, text=True, check=False, env=env, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lambda")
    for function in (*package.PIPELINE_FUNCTIONS, package.API_FUNCTION):
        _unpack(package.build_function_zip(function, root / "zips"), root / "code" / function)
    _install(package.PIPELINE_LAYER_REQUIREMENTS + RUNTIME_PROVIDED, root / "pipeline-deps")
    # The API imports boto3 only for the page's decisions (when in DynamoDB) and batch jobs.
    _install(package.API_LAYER_REQUIREMENTS + RUNTIME_PROVIDED, root / "api-deps")
    _unpack(package.build_glove_layer(root / "zips"), root / "opt")
    return root


@pytest.mark.parametrize("function", package.PIPELINE_FUNCTIONS)
def test_a_pipeline_function_imports_from_its_zip_and_layer_alone(built: Path, function: str) -> None:
    out = _isolated(
        [built / "code" / function, built / "pipeline-deps"],
        f"import lambdas.{function}.handler as h, sumpipe.flow.remote, importlib.util\n"
        "print(callable(h.lambda_handler), importlib.util.find_spec('numpy') is None)",
    )
    assert out.split() == ["True", "True"]  # and numpy really is out of reach


def test_the_api_function_answers_from_its_zip_and_layers_alone_as_the_cli_does(
    built: Path, tmp_path: Path
) -> None:
    text = max(_reviews(), key=len)
    event = json.loads((DATA / "api_gateway_v2_event.json").read_text())
    event["body"] = json.dumps({"text": text})
    event["headers"]["content-length"] = str(len(event["body"].encode()))
    script = (
        "import json, importlib.util\n"
        "from lambdas.api.handler import lambda_handler\n"
        f"reply = lambda_handler(json.loads({json.dumps(event)!r}), None)\n"
        "print(json.dumps({'reply': reply, 'scipy': importlib.util.find_spec('scipy') is not None}))"
    )
    env = {"SUMPIPE_GLOVE": str(built / "opt" / package.GLOVE_LAYER_DIR), "PATH": "/usr/bin:/bin"}
    result = json.loads(_isolated([built / "code" / "api", built / "api-deps"], script, env).splitlines()[-1])

    assert result["scipy"] is False  # the API layer leaves scipy out (it would not fit in 250 MB)
    assert result["reply"]["statusCode"] == 200, result["reply"]
    answer = json.loads(result["reply"]["body"])
    assert answer["status"] == "ok" and answer["n_sentences_out"] < answer["n_sentences_in"]
    source = tmp_path / "one.csv"
    with source.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["Id", "Text"], [1, text]])
    cli = run_script(source)
    assert cli.returncode == 0, cli.stderr
    [row] = list(csv.DictReader(io.StringIO(cli.stdout.decode())))
    assert answer["summary"] == row["summary"]


def test_the_api_function_serves_the_review_page_from_its_zip_and_layers_alone(
    built: Path, tmp_path: Path
) -> None:
    """The page's files are in the zip (not only *.py), and a decision is recorded and exported."""
    template = json.loads((DATA / "api_gateway_v2_event.json").read_text())

    def event(method: str, path: str, body: dict | None = None) -> dict:
        copy = json.loads(json.dumps(template))
        copy["rawPath"] = copy["requestContext"]["http"]["path"] = path
        copy["requestContext"]["http"]["method"] = method
        copy["body"] = json.dumps(body) if body is not None else ""
        copy["headers"]["content-length"] = str(len(copy["body"].encode()))
        return copy

    decision = {
        "text": "A text. It is short.",
        "method": "default",
        "summary_shown": "A text.",
        "decision": "approve",
    }
    events = [event("GET", "/"), event("GET", "/static/page.js"), event("POST", "/feedback", decision)]
    events.append(event("GET", "/feedback.csv"))
    script = (
        "import json\n"
        "from lambdas.api.handler import lambda_handler\n"
        f"for e in json.loads({json.dumps(events)!r}):\n"
        "    r = lambda_handler(e, None)\n"
        "    print(json.dumps([r['statusCode'], r['body']]))"
    )
    env = {
        "SUMPIPE_GLOVE": str(built / "opt" / package.GLOVE_LAYER_DIR),
        "SUMPIPE_FEEDBACK_DB": str(tmp_path / "feedback.sqlite3"),
        "PATH": "/usr/bin:/bin",
    }
    out = _isolated([built / "code" / "api", built / "api-deps"], script, env).splitlines()[-4:]
    (page, page_status), (js, js_status), (recorded, _), (export, export_status) = [
        (body, status) for status, body in map(json.loads, out)
    ]
    assert (page_status, js_status, export_status) == (200, 200, 200)
    assert "textarea" in page and "data-testid" in page and "fetch(" in js
    assert json.loads(recorded)["recorded"] is True
    [row] = list(csv.DictReader(io.StringIO(export)))
    assert (row["text"], row["decision"], row["summary_shown"]) == (
        "A text. It is short.",
        "approve",
        "A text.",
    )


def _reviews() -> list[str]:
    with (DATA / "cli_reviews.csv").open(newline="", encoding="utf-8") as f:
        return [row["Text"] for row in csv.DictReader(f)]
