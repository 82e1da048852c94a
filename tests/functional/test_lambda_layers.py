"""Each Lambda runs with only what its deployment carries: its zip, its layers and the runtime.

The real layers are built for Lambda's platform (manylinux, CPython 3.12), which this machine's
interpreter can't import. So the same requirement lists are installed from the package registry for
this interpreter, and each handler runs in an isolated interpreter (`-I -S`: no site-packages) that
sees its unpacked zip, those layers and nothing else. A module the code needs but the layer lacks
fails here, not in the cloud: every module of every zip is imported, and every route of the API
is called, the job routes against the stack's resources in a moto server."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from cli_run import run_script
from moto.server import ThreadedMotoServer

from sumpipe import keys
from sumpipe.api.app import app
from sumpipe.ledger import SUCCEEDED, DynamoLedger, Job
from sumpipe.local.resources import deploy_local_stack
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


def _layers(built: Path, function: str) -> Path:
    return built / ("api-deps" if function == package.API_FUNCTION else "pipeline-deps")


@pytest.mark.parametrize("function", (*package.PIPELINE_FUNCTIONS, package.API_FUNCTION))
def test_the_layers_provide_every_module_a_function_zip_imports(built: Path, function: str) -> None:
    provided = package.importable_names(os.listdir(_layers(built, function)))
    assert package.missing_imports(function, provided) == {}


@pytest.mark.parametrize("function", (*package.PIPELINE_FUNCTIONS, package.API_FUNCTION))
def test_every_module_in_a_function_zip_imports_from_its_zip_and_layers_alone(
    built: Path, function: str
) -> None:
    """Only what the function's layer leaves out on purpose (package.LEFT_OUT_OF_LAYERS: modules of
    paths the function never takes) may be missing, and nothing else may fail."""
    code = built / "code" / function
    modules = sorted(
        ".".join(path.relative_to(code).with_suffix("").parts).removesuffix(".__init__")
        for path in code.rglob("*.py")
    )
    script = (
        "import importlib, json\n"
        "missing = {}\n"
        f"for name in {modules!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ModuleNotFoundError as error:\n"
        "        missing[name] = error.name\n"
        "print(json.dumps(missing))"
    )
    env = {"SUMPIPE_GLOVE": str(built / "opt" / package.GLOVE_LAYER_DIR), "PATH": "/usr/bin:/bin"}
    missing = json.loads(_isolated([code, _layers(built, function)], script, env).splitlines()[-1])
    left_out = package.LEFT_OUT_OF_LAYERS.get(function, frozenset())
    assert {module: name for module, name in missing.items() if name.split(".")[0] not in left_out} == {}
    assert len(modules) > len(missing)


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


REGION = "us-east-1"


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """The pipeline's template deployed into a moto server (buckets, job table): the outputs and the
    server's endpoint."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    aws = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",  # pragma: allowlist secret
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
    }
    for name, value in aws.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    try:
        # No worker image is baked from it here: the wheelhouse download is skipped.
        outputs = deploy_local_stack(
            boto3.session.Session(region_name=REGION), "sumpipe", overrides={"WheelhouseKey": "unused"}
        )
        yield {**outputs, **aws}
    finally:
        # moto's backends are per process, not per server: reset them so tests don't share state.
        urllib.request.urlopen(
            urllib.request.Request(f"http://{host}:{port}/moto-api/reset", method="POST"), timeout=10
        ).close()
        server.stop()


def _succeeded_job(stack: dict[str, str], text: str) -> str:
    """A job the ledger records as succeeded, with its review sample and summary in the output bucket."""
    session = boto3.session.Session(region_name=REGION)
    input_key = "uploads/reviews.csv"
    job_id = keys.job_id(stack["InputBucketName"], input_key, "v1")
    now = time.time()
    job = Job(job_id, stack["InputBucketName"], input_key, "v1", state=SUCCEEDED, created_at=now,
              finished_at=now, rows=1)  # fmt: skip
    assert DynamoLedger(session.client("dynamodb"), stack["JobTableName"]).create_job(job)
    s3 = session.client("s3")
    sample = {"id": "1", "text": text, "summary": text.split(". ")[0] + ".", "status": "ok"}
    s3.put_object(Bucket=stack["OutputBucketName"], Key=keys.output_key(job_id, keys.SAMPLE),
                  Body=json.dumps(sample).encode() + b"\n")  # fmt: skip
    s3.put_object(Bucket=stack["OutputBucketName"], Key=keys.output_key(job_id, keys.SUMMARY), Body=b"id\n")
    return job_id


def test_every_api_route_answers_from_the_zip_and_layers_alone_on_a_stack(
    built: Path, stack: dict[str, str], tmp_path: Path
) -> None:
    """Every route the app has is called through an API Gateway v2 event, as the deployed function is,
    and answers its expected status (the job routes import the ledger: an API zip without it
    answered them 500, ModuleNotFoundError)."""
    template = json.loads((DATA / "api_gateway_v2_event.json").read_text())
    text = "The chips were crisp. The bag was half empty. I would buy them again."
    job_id = _succeeded_job(stack, text)
    decision = {
        "text": text,
        "method": "default",
        "summary_shown": "The chips were crisp.",
        "decision": "approve",
    }
    status_query = urllib.parse.urlencode({"key": "uploads/reviews.csv", "since": time.time() - 60})
    # (method, the route's path, the path called, query, body, expected status)
    calls: list[tuple[str, str, str, str, Any, int]] = [
        ("GET", "/health", "/health", "", None, 200),
        ("POST", "/summarize", "/summarize", "", {"text": text, "sentences": 1}, 200),
        ("GET", "/", "/", "", None, 200),
        ("GET", "/static", "/static/page.js", "", None, 200),
        ("POST", "/feedback", "/feedback", "", decision, 201),
        # Behind API Gateway, with the stack's output bucket: a presigned GET of the export (as JSON,
        # which the recorded event's `accept: application/json` asks for; the 303 for other clients).
        ("GET", "/feedback.csv", "/feedback.csv", "", None, 200),
        ("GET", "/openapi.json", "/openapi.json", "", None, 200),
        # Off in the function (SUMPIPE_API_DOCS=false, as the template sets): its layer lacks the files.
        ("GET", "/docs", "/docs", "", None, 404),
        ("GET", "/docs/{asset}", "/docs/swagger-ui.css", "", None, 404),
        ("GET", "/batch", "/batch", "", None, 200),
        ("POST", "/uploads", "/uploads", "", {"filename": "reviews.csv"}, 200),
        ("GET", "/uploads/status", "/uploads/status", status_query, None, 200),
        ("GET", "/jobs", "/jobs", "", None, 200),
        ("GET", "/jobs/{job_id}/rows", f"/jobs/{job_id}/rows", "", None, 200),
        ("GET", "/jobs/{job_id}/summary", f"/jobs/{job_id}/summary", "", None, 200),
    ]

    def event(method: str, path: str, query: str, body: Any) -> dict[str, Any]:
        copy = json.loads(json.dumps(template))
        copy["rawPath"] = copy["requestContext"]["http"]["path"] = path
        copy["rawQueryString"] = query
        copy["requestContext"]["http"]["method"] = method
        copy["body"] = json.dumps(body) if body is not None else ""
        copy["headers"]["content-length"] = str(len(copy["body"].encode()))
        return copy

    events = [event(method, path, query, body) for method, _, path, query, body, _ in calls]
    script = (
        "import json\n"
        "from lambdas.api.handler import lambda_handler\n"
        f"for e in json.loads({json.dumps(events)!r}):\n"
        "    r = lambda_handler(e, None)\n"
        "    print(json.dumps([r['statusCode'], r['body'][:300]]))"
    )
    # The function's environment as the template sets it, against the moto server.
    env = {
        "PATH": "/usr/bin:/bin",
        "SUMPIPE_GLOVE": str(built / "opt" / package.GLOVE_LAYER_DIR),
        "SUMPIPE_STACK_NAME": "sumpipe",
        "SUMPIPE_INPUT_BUCKET": stack["InputBucketName"],
        "SUMPIPE_OUTPUT_BUCKET": stack["OutputBucketName"],
        "SUMPIPE_JOB_TABLE": stack["JobTableName"],
        "SUMPIPE_PUBLIC_URL": f"https://{template['headers']['host']}/",
        "SUMPIPE_API_DOCS": "false",
        "SUMPIPE_FEEDBACK_DB": str(tmp_path / "feedback.sqlite3"),
        **{name: stack[name] for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")},
        "AWS_DEFAULT_REGION": REGION,
    }
    lines = _isolated([built / "code" / "api", built / "api-deps"], script, env).splitlines()
    answers = [json.loads(line) for line in lines[-len(calls) :]]

    assert {route for _, route, *_ in calls} == set(_route_paths(app.routes))  # a new route needs a call
    got = {path: (status, body) for (_, _, path, *_), (status, body) in zip(calls, answers, strict=True)}
    assert {path: status for path, (status, _) in got.items()} == {
        path: want for _, _, path, *_, want in calls
    }
    assert job_id in got["/jobs"][1] and "crisp" in got[f"/jobs/{job_id}/rows"][1]


def _route_paths(routes: list[Any], prefix: str = "") -> Iterator[str]:
    for route in routes:
        if hasattr(route, "path"):
            yield prefix + route.path
        else:  # FastAPI 0.16x keeps an included router as one entry, its routes inside
            yield from _route_paths(route.original_router.routes, prefix + route.include_context.prefix)


def _reviews() -> list[str]:
    with (DATA / "cli_reviews.csv").open(newline="", encoding="utf-8") as f:
        return [row["Text"] for row in csv.DictReader(f)]
