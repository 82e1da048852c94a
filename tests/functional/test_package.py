"""`sumpipe package` artifacts: handler zips hold exactly what a function needs, are reproducible, and
the size check refuses what Lambda would reject, naming the artifact and the numbers."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from sumpipe.ops import cli, lock, package


@pytest.mark.parametrize("function", package.PIPELINE_FUNCTIONS)
def test_function_zip_holds_its_handler_and_the_shared_package(function: str, tmp_path: Path) -> None:
    artifact = package.build_function_zip(function, tmp_path)
    names = zipfile.ZipFile(artifact.path).namelist()
    assert f"lambdas/{function}/handler.py" in names
    assert "sumpipe/settings.py" in names and "sumpipe/flow/pipeline.py" in names
    others = set(package.PIPELINE_FUNCTIONS) - {function}
    assert not [n for n in names if any(n.startswith(f"lambdas/{o}/") for o in others)]
    assert "sumpipe/ledger/dynamodb.py" in names
    # Only the code that runs in a function: not the instance's runner, the operator's tools, the API
    # or the local stack.
    elsewhere = ("sumpipe/instance/", "sumpipe/ops/", "sumpipe/api/", "sumpipe/local/")
    assert not [n for n in names if n.startswith(elsewhere) or "__pycache__" in n]
    assert artifact.zipped_bytes < 1 * package.MB


def test_function_zip_is_reproducible(tmp_path: Path) -> None:
    first = package.build_function_zip("worker", tmp_path / "a")
    os.utime(package.REPO_ROOT / "sumpipe" / "settings.py")  # a touched file must not change the zip
    second = package.build_function_zip("worker", tmp_path / "b")
    assert first.sha256 == second.sha256


def _zip_of(path: Path, name: str, size: int) -> package.Artifact:
    # Incompressible content, so zipped and unzipped sizes are both about `size`.
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("blob.bin", os.urandom(size))
    return package.describe_zip(name, path)


def test_size_check_refuses_too_big_unzipped_with_a_clear_message(tmp_path: Path) -> None:
    function = _zip_of(tmp_path / "f.zip", "api", 1 * package.MB)
    layer = package.Artifact("deps", tmp_path / "deps.zip", 100 * package.MB, 260 * package.MB, "0" * 64)
    expected = r"api: 261\.0 MB unzipped \(api 1\.0 MB, deps 260\.0 MB\)"
    with pytest.raises(package.PackageError, match=expected):
        package.check_lambda_sizes(function, [layer])


def test_size_check_refuses_direct_upload_over_50_mb(tmp_path: Path) -> None:
    big = _zip_of(tmp_path / "big.zip", "worker", 51 * package.MB)
    expected = r"worker: 51\.0 MB zipped exceeds the 50 MB direct-upload"
    with pytest.raises(package.PackageError, match=expected):
        package.check_lambda_sizes(big, via_s3=False)
    package.check_lambda_sizes(big, via_s3=True)  # through S3 only the unzipped limit applies


@pytest.mark.slow
def test_package_command_builds_everything_within_limits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Full build: pip installs the Linux dependency layer from the package registry."""
    assert cli.main(["package", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "pipeline-deps.zip" in out and ".whl" in out
    layer = package.describe_zip("pipeline-deps", tmp_path / "pipeline-deps.zip")
    names = zipfile.ZipFile(layer.path).namelist()
    assert any(n.startswith("python/paramiko/") for n in names)
    assert not any(n.startswith("python/boto3/") for n in names)
    assert layer.unzipped_bytes < package.UNZIPPED_LIMIT
    # Every distribution in the layer is the version uv.lock pins for Lambda's Python.
    pinned = lock.locked_versions(package.REPO_ROOT, package.LAMBDA_PYTHON_VERSION)
    metadata = [n.split("/")[1] for n in names if n.endswith(".dist-info/METADATA")]
    shipped = {
        canonicalize_name(project): version
        for project, version in (d.removesuffix(".dist-info").split("-") for d in metadata)
    }
    assert {"paramiko", "pydantic", "aws-lambda-powertools"} <= set(shipped)
    assert {name: pinned.get(name) for name in shipped} == shipped


def test_api_zip_holds_the_packages_the_api_imports(tmp_path: Path) -> None:
    artifact = package.build_function_zip(package.API_FUNCTION, tmp_path)
    names = zipfile.ZipFile(artifact.path).namelist()
    assert "lambdas/api/handler.py" in names and "sumpipe/api/app.py" in names
    assert "summarizer/engine.py" in names and "glove/cache.py" in names
    # The review page and its feedback store are served by the same function.
    assert {
        "sumpipe/api/static/index.html",
        "sumpipe/api/static/page.js",
        "sumpipe/feedback/dynamodb.py",
    } <= set(names)
    assert not [n for n in names if n.startswith(("lambdas/worker/", "sumpipe/local/"))]


@pytest.mark.slow
def test_package_api_builds_layers_within_limits_and_measures_the_cold_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Full build with --api: pip installs the API's Linux layer from the package registry, the GloVe
    layer is a ready cache that loads the same vectors as the default, and the cold start is printed."""
    import numpy as np

    import glove

    assert cli.main(["package", "--api", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "GloVe layer cold start" in out and "api function + layers:" in out
    deps = zipfile.ZipFile(tmp_path / "api" / "api-deps.zip").namelist()
    for needed in ("numpy", "fastapi", "pydantic", "mangum"):
        assert any(n.startswith(f"python/{needed}/") for n in deps), needed
    for unwanted in ("sklearn", "scipy", "pyarrow", "pandas", "boto3"):
        assert not any(n.startswith(f"python/{unwanted}/") for n in deps), unwanted

    opt = tmp_path / "opt"
    with zipfile.ZipFile(tmp_path / "api" / "glove-layer.zip") as layer:
        layer.extractall(opt)
    from_layer, default = glove.load(opt / package.GLOVE_LAYER_DIR), glove.load()
    tokens = ["the", "review", "delicious", "zzzunknownzzz"]
    assert list(from_layer.lookup(tokens)) == list(default.lookup(tokens))
    np.testing.assert_array_equal(from_layer.vectors[:1000], default.vectors[:1000])
    assert not (opt / package.GLOVE_LAYER_DIR / "meta.json").read_text().count("/")  # no absolute path


def _project(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_a_handler_whose_imports_reach_operator_or_local_code_is_refused(tmp_path: Path) -> None:
    root = _project(
        tmp_path,
        {
            "lambdas/__init__.py": "",
            "lambdas/bad/__init__.py": "",
            # Deferred, as handlers defer imports: the walk finds it all the same.
            "lambdas/bad/handler.py": "def lambda_handler(event, context):\n"
            "    from sumpipe.local import stack\n",
            "sumpipe/__init__.py": "",
            "sumpipe/local/__init__.py": "",
            "sumpipe/local/stack.py": "",
        },
    )
    with pytest.raises(
        package.PackageError, match=r"bad: its handler's imports reach sumpipe\.local, sumpipe\.local\.stack"
    ):
        package.build_function_zip("bad", tmp_path / "out", root)


def test_the_build_refuses_layers_that_lack_a_module_the_zip_imports(tmp_path: Path) -> None:
    layer = tmp_path / "api-deps.zip"
    with zipfile.ZipFile(layer, "w") as archive:
        for name in ("numpy", "fastapi", "starlette", "pydantic", "pydantic_settings"):  # no mangum
            archive.writestr(f"python/{name}/__init__.py", "")
        archive.writestr("python/mangum-0.19.0.dist-info/METADATA", "")
    deps = package.describe_zip("api-deps", layer)
    expected = r"api: .* neither its layers \(api-deps\) .*: mangum \(imported by lambdas\.api\.handler\)"
    with pytest.raises(package.PackageError, match=expected):
        package.check_layers_provide(package.API_FUNCTION, [deps])
    with zipfile.ZipFile(layer, "a") as archive:
        archive.writestr("python/mangum/__init__.py", "")
    package.check_layers_provide(package.API_FUNCTION, [package.describe_zip("api-deps", layer)])
