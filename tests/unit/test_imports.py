"""The import graph a function's zip is built from: every import statement counts, wherever it is,
and only imports that run are asked of the layers."""

from __future__ import annotations

from pathlib import Path

import pytest

from sumpipe.ops.imports import ImportGraphError, module_graph

HANDLER = """
from typing import TYPE_CHECKING

import numpy
from app import routes

if TYPE_CHECKING:
    import pandas
    from app import typed

try:
    from app import _native
    import fastjson
except ImportError:
    _native = None


def handle():
    from app.jobs import ledger  # deferred, as handlers and routes defer imports
    import os
"""


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_the_graph_follows_every_import_and_asks_the_layers_only_for_those_that_run(tmp_path: Path) -> None:
    root = _write(
        tmp_path,
        {
            "app/__init__.py": "",
            "app/handler.py": HANDLER,
            "app/routes.py": "import json\nfrom . import util\n",
            "app/util.py": "",
            "app/typed.py": "",
            "app/jobs/__init__.py": "",
            "app/jobs/ledger.py": "import boto3\n",
            "app/unused.py": "import requests\n",
        },
    )
    graph = module_graph("app.handler", root, ["app"])
    assert list(graph.modules) == [
        "app", "app.handler", "app.jobs", "app.jobs.ledger", "app.routes", "app.typed", "app.util",
    ]  # fmt: skip
    assert graph.modules["app.jobs"] == root / "app" / "jobs" / "__init__.py"
    # pandas is for the type checker, fastjson optional; os and json are the standard library's.
    assert graph.third_party == {"numpy": {"app.handler"}, "boto3": {"app.jobs.ledger"}}


def test_an_imported_project_module_without_source_is_an_error(tmp_path: Path) -> None:
    root = _write(tmp_path, {"app/__init__.py": "", "app/handler.py": "import app.gone\n"})
    with pytest.raises(ImportGraphError, match=r"app\.handler imports app\.gone, which has no source"):
        module_graph("app.handler", root, ["app"])
