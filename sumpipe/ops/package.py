"""Build the Lambda deployment artifacts and check them against Lambda's size limits.

- One zip per pipeline function: its handler (`lambdas/<name>/`) plus the folders of `sumpipe` it runs.
  The zips are byte-for-byte reproducible (fixed timestamps, sorted entries), so their content hash
  names the S3 key and an unchanged function is not redeployed.
- One layer with the pipeline functions' third-party dependencies, installed by pip for the Lambda
  platform (manylinux x86_64, CPython 3.12) at the versions uv.lock pins for it (sumpipe/ops/lock.py).
  boto3 is left out: the Lambda runtime provides it.
- The project wheel, which the worker instances install at boot, and the wheelhouse their image is
  baked from: every wheel of the project's dependencies for the workers' Python and platform, at
  uv.lock's versions, with a requirements.txt pinning them (so an instance installs with no package index).
- For the realtime API (optional): its zip (handler, `sumpipe`, `summarizer`, `glove`), a layer with what
  the API imports (numpy, FastAPI, pydantic, Mangum; no scikit-learn, scipy, pandas or pyarrow: scipy
  alone would not fit beside the vectors in 250 MB, and without it the summarizer sums word vectors
  with numpy, to the same result), and a layer holding the GloVe vectors as a ready cache directory
  (/opt/glove, memory-mapped at cold start, no conversion). tests/functional/test_lambda_layers.py runs
  each handler with nothing but its zip and layers.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name
from packaging.version import Version

from sumpipe.ops import lock

REPO_ROOT = Path(__file__).resolve().parents[2]
PIPELINE_FUNCTIONS = ("trigger", "worker", "stop_ec2")
LAMBDA_PYTHON_VERSION = "3.12"
# Lambda's Python 3.12 runtime and the workers both run Amazon Linux 2023: glibc 2.34 on x86_64. pip
# takes a wheel for any of these tags (it expands none itself), so a release that ships only newer
# manylinux wheels (numpy 2.4: manylinux_2_28) is found as well as one built for manylinux2014.
AL2023_PLATFORMS = (
    *(f"manylinux_2_{minor}_x86_64" for minor in range(34, 16, -1)),
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
)
LAMBDA_PLATFORMS = AL2023_PLATFORMS
# The project's packages (pyproject.toml's [tool.setuptools.packages.find] include).
WHEEL_PACKAGES = ("glove", "summarizer", "sumpipe", "lambdas")
# The worker instances (t3: x86_64, Amazon Linux 2023).
WORKER_PLATFORMS = AL2023_PLATFORMS
PIPELINE_LAYER_REQUIREMENTS = (
    "pydantic>=2.6",
    "pydantic-settings>=2.2",
    "paramiko>=3.4",
    "aws-lambda-powertools>=3.0",
)
API_FUNCTION = "api"
# What `python -X importtime -c 'import lambdas.api.handler'` shows the API path importing.
API_LAYER_REQUIREMENTS = (
    "numpy>=1.26",
    "fastapi>=0.110",
    "pydantic>=2.6",
    "pydantic-settings>=2.2",
    "mangum>=0.17",
)
# What every function's zip takes of `sumpipe`: its settings, logging, AWS clients and S3 key contract.
SHARED_MODULES = ("__init__.py", "settings.py", "logs.py", "aws.py", "keys.py", "options.py", "py.typed")
# The folders each function's zip takes besides those (sumpipe/ is split by where code runs: the
# instance's runner, the operator's tooling and the local stack never go into a function).
PIPELINE_FOLDERS = ("sumpipe/ledger", "sumpipe/flow")
# The API's job routes read the ledger and the chain's failure lines (sumpipe.flow.chain).
FUNCTION_FOLDERS = {
    API_FUNCTION: ("sumpipe/api", "sumpipe/feedback", *PIPELINE_FOLDERS, "summarizer", "glove"),
}
# Where the GloVe layer's cache directory lands in the function (layers unpack into /opt).
GLOVE_LAYER_DIR = "glove"

MB = 1024 * 1024
# https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html
DIRECT_UPLOAD_ZIPPED_LIMIT = 50 * MB
UNZIPPED_LIMIT = 250 * MB
MAX_LAYERS = 5

_FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


class PackageError(Exception):
    """An artifact can't be built or doesn't fit Lambda's limits."""


@dataclass(frozen=True)
class Artifact:
    name: str
    path: Path
    zipped_bytes: int
    unzipped_bytes: int
    sha256: str


def _python_files(root: Path, package: str) -> list[tuple[Path, str]]:
    """A package's modules, its py.typed and its `static` files (the review page)."""
    base = root / package
    return [
        (path, path.relative_to(root).as_posix())
        for path in sorted(base.rglob("*"))
        if path.is_file()
        and "__pycache__" not in path.parts
        and (path.suffix == ".py" or path.name == "py.typed" or "static" in path.relative_to(base).parts)
    ]


def _write_zip(target: Path, entries: Iterable[tuple[Path, str]]) -> None:
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for source, arcname in sorted(entries, key=lambda entry: entry[1]):
            info = zipfile.ZipInfo(arcname, date_time=_FIXED_ZIP_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, source.read_bytes())


def describe_zip(name: str, path: Path) -> Artifact:
    with zipfile.ZipFile(path) as archive:
        unzipped = sum(info.file_size for info in archive.infolist())
    return Artifact(
        name=name,
        path=path,
        zipped_bytes=path.stat().st_size,
        unzipped_bytes=unzipped,
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
    )


def build_function_zip(function: str, out_dir: Path, root: Path = REPO_ROOT) -> Artifact:
    """The handler of `lambdas/<function>/` plus the project packages it imports, nothing else."""
    handler = root / "lambdas" / function / "handler.py"
    if not handler.is_file():
        raise PackageError(f"{function}: no handler at {handler}")
    entries = [(root / "lambdas" / "__init__.py", "lambdas/__init__.py")]
    entries += _python_files(root, f"lambdas/{function}")
    entries += [(root / "sumpipe" / name, f"sumpipe/{name}") for name in SHARED_MODULES]
    for folder in FUNCTION_FOLDERS.get(function, PIPELINE_FOLDERS):
        entries += _python_files(root, folder)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{function}.zip"
    _write_zip(target, entries)
    return describe_zip(function, target)


def build_layer(
    name: str,
    requirements: Sequence[str],
    out_dir: Path,
    python_version: str = LAMBDA_PYTHON_VERSION,
    root: Path = REPO_ROOT,
) -> Artifact:
    """Install `requirements`, at the versions uv.lock pins for Lambda's Python, for the Lambda
    platform into python/ and zip it as a layer."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"sumpipe-layer-{name}-") as tmp:
        site = Path(tmp) / "python"
        pins = lock.locked_versions(root, python_version)
        constraints = _write_constraints(pins, Path(tmp) / "constraints.txt")
        command = [
            sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
            "--no-compile", *_platform_flags(LAMBDA_PLATFORMS), "--implementation", "cp",
            "--python-version", python_version, "--only-binary=:all:", "--target", str(site),
            "--constraint", str(constraints), *requirements,
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise PackageError(f"layer {name}: pip install failed:\n{result.stderr.strip()}")
        # An installed distribution's folder is <name>-<version>.dist-info.
        installed = [d.name.removesuffix(".dist-info").split("-") for d in site.glob("*.dist-info")]
        _check_locked(f"layer {name}", [(project, version) for project, version in installed], pins)
        entries = [
            (path, path.relative_to(tmp).as_posix())
            for path in site.rglob("*")
            if path.is_file() and "__pycache__" not in path.parts
        ]
        target = out_dir / f"{name}.zip"
        _write_zip(target, entries)
    return describe_zip(name, target)


def check_lambda_sizes(function: Artifact, layers: Sequence[Artifact] = (), *, via_s3: bool = True) -> None:
    """Raise PackageError naming the artifact and the numbers when Lambda would reject it."""
    if len(layers) > MAX_LAYERS:
        raise PackageError(f"{function.name}: {len(layers)} layers, Lambda allows {MAX_LAYERS}")
    if not via_s3:
        for artifact in (function, *layers):
            if artifact.zipped_bytes > DIRECT_UPLOAD_ZIPPED_LIMIT:
                raise PackageError(
                    f"{artifact.name}: {artifact.zipped_bytes / MB:.1f} MB zipped exceeds the "
                    f"{DIRECT_UPLOAD_ZIPPED_LIMIT / MB:.0f} MB direct-upload limit; upload it through S3"
                )
    unzipped = function.unzipped_bytes + sum(layer.unzipped_bytes for layer in layers)
    if unzipped > UNZIPPED_LIMIT:
        parts = ", ".join(f"{a.name} {a.unzipped_bytes / MB:.1f} MB" for a in (function, *layers))
        raise PackageError(
            f"{function.name}: {unzipped / MB:.1f} MB unzipped ({parts}) exceeds Lambda's "
            f"{UNZIPPED_LIMIT / MB:.0f} MB limit for a function and its layers; use a container image"
        )


@dataclass(frozen=True)
class PipelineArtifacts:
    functions: dict[str, Artifact]
    layer: Artifact


def build_pipeline_artifacts(out_dir: Path, root: Path = REPO_ROOT) -> PipelineArtifacts:
    """Every zip `sumpipe deploy` uploads, size-checked."""
    functions = {name: build_function_zip(name, out_dir, root) for name in PIPELINE_FUNCTIONS}
    layer = build_layer("pipeline-deps", PIPELINE_LAYER_REQUIREMENTS, out_dir)
    for artifact in functions.values():
        check_lambda_sizes(artifact, [layer])
    return PipelineArtifacts(functions=functions, layer=layer)


_NOT_IN_WHEEL = shutil.ignore_patterns("__pycache__", "*.so", "*.c")


def build_wheel(out_dir: Path, root: Path = REPO_ROOT) -> Path:
    """The project wheel the worker instances install at boot. Built from a copy of the sources, so a
    stale (or someone else's, unwritable) build/ directory in the checkout never leaks into it. A pure
    wheel, whatever the instance's Python: without setup.py and the native splitter (its source and
    any built copy), the instances run the splitter's Python reference, with the same output."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sumpipe-wheel-src-") as source:
        for name in ("pyproject.toml", "README.md", "LICENSE"):
            if (root / name).is_file():
                shutil.copy2(root / name, Path(source) / name)
        for name in WHEEL_PACKAGES:
            shutil.copytree(root / name, Path(source) / name, ignore=_NOT_IN_WHEEL)
        command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
                   "--no-deps", "--no-build-isolation", "--wheel-dir", str(out_dir), source]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise PackageError(f"wheel: pip wheel failed:\n{result.stderr.strip()}")
    wheels = sorted(out_dir.glob("sumpipe-*.whl"))
    if not wheels:
        raise PackageError(f"wheel: pip wheel produced nothing in {out_dir}")
    return wheels[-1]


def _platform_flags(platforms: Sequence[str]) -> list[str]:
    return [flag for platform in platforms for flag in ("--platform", platform)]


def _write_constraints(pins: dict[str, str], target: Path) -> Path:
    target.write_text("".join(f"{name}=={version}\n" for name, version in sorted(pins.items())))
    return target


def _check_locked(what: str, installed: Iterable[tuple[str, str]], pins: dict[str, str]) -> None:
    """Every distribution `what` took is the version uv.lock pins (a constraint can't stop pip from
    adding a package the lock doesn't know)."""
    strays = sorted(
        f"{name} {version}"
        for name, version in installed
        if pins.get(canonicalize_name(name)) != str(Version(version))
    )
    if strays:
        raise PackageError(f"{what}: not the versions uv.lock pins: {', '.join(strays)}")


def project_requirements(root: Path = REPO_ROOT) -> list[str]:
    """The project's runtime dependencies, as pyproject.toml declares them."""
    pyproject = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    return list(pyproject["project"]["dependencies"])


def build_wheelhouse(
    out_dir: Path, python_version: str, platforms: Sequence[str] = WORKER_PLATFORMS, root: Path = REPO_ROOT
) -> Path:
    """wheelhouse-py<X.Y>.tar: the wheels of the project's dependencies for CPython `python_version` on
    `platforms` (none: this machine's), and requirements.txt pinning each one. Reproducible (sorted,
    fixed times and owners), so an unchanged wheelhouse keeps its content-addressed S3 key."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sumpipe-wheelhouse-") as tmp, \
            tempfile.TemporaryDirectory(prefix="sumpipe-wheelhouse-lock-") as lock_dir:  # fmt: skip
        locked = lock.locked_versions(root, python_version)
        constraints = _write_constraints(locked, Path(lock_dir) / "constraints.txt")
        command = [
            sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
            "--only-binary=:all:", "--implementation", "cp", "--python-version", python_version,
            *_platform_flags(platforms), "--dest", tmp,
            "--constraint", str(constraints), *project_requirements(root),
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise PackageError(f"wheelhouse: pip download failed:\n{result.stderr.strip()}")
        wheels = sorted(Path(tmp).glob("*.whl"))
        # A wheel's file name is <name>-<version>-...: pinning each keeps the bake from resolving again.
        named = [(name, version) for name, version, *_ in (w.name.split("-") for w in wheels)]
        _check_locked("wheelhouse", named, locked)
        pins = [f"{name}=={version}" for name, version in named]
        (Path(tmp) / "requirements.txt").write_text("\n".join(pins) + "\n")
        target = out_dir / f"wheelhouse-py{python_version}.tar"

        def fixed(info: tarfile.TarInfo) -> tarfile.TarInfo:
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            return info

        with tarfile.open(target, "w", format=tarfile.PAX_FORMAT) as archive:
            for path in [Path(tmp) / "requirements.txt", *wheels]:
                archive.add(path, arcname=path.name, filter=fixed)
    return target


# ------------------------------------------------------------------------------------------ realtime API
@dataclass(frozen=True)
class ApiArtifacts:
    function: Artifact
    layer: Artifact
    glove: Artifact


def build_glove_layer(out_dir: Path) -> Artifact:
    """The default vectors as a `glove` cache directory (see glove/cache.py) in a layer: Lambda unpacks it
    to /opt/glove, and SUMPIPE_GLOVE=/opt/glove memory-maps it with no conversion at cold start."""
    import numpy as np

    import glove
    from glove.cache import VECTORS, write_meta, write_vocabulary

    vectors = glove.load()
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sumpipe-glove-layer-") as tmp:
        cache = Path(tmp) / GLOVE_LAYER_DIR
        cache.mkdir()
        np.save(cache / VECTORS, np.ascontiguousarray(vectors.vectors, dtype=np.float32))
        write_vocabulary(cache, list(vectors.words))
        n_words, dim = vectors.vectors.shape
        write_meta(cache, source=vectors.source, vectors=VECTORS, n_words=n_words, dim=dim)
        target = out_dir / "glove-layer.zip"
        _write_zip(target, [(path, path.relative_to(tmp).as_posix()) for path in sorted(cache.iterdir())])
    return describe_zip("glove-layer", target)


def build_api_artifacts(out_dir: Path, root: Path = REPO_ROOT) -> ApiArtifacts:
    """The API function's zip, its dependency layer and the GloVe layer, size-checked together."""
    artifacts = ApiArtifacts(
        function=build_function_zip(API_FUNCTION, out_dir, root),
        layer=build_layer("api-deps", API_LAYER_REQUIREMENTS, out_dir),
        glove=build_glove_layer(out_dir),
    )
    check_lambda_sizes(artifacts.function, [artifacts.layer, artifacts.glove])
    return artifacts


_COLD_START_PROBE = """
import json, sys, time
t0 = time.perf_counter()
import glove
t1 = time.perf_counter()
wv = glove.load(sys.argv[1])
t2 = time.perf_counter()
rows = wv.lookup(["the", "summary", "of", "reviews"])
t3 = time.perf_counter()
total = float(wv.vectors.sum(dtype="float64"))
t4 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "first_lookup_s": t3 - t2,
                  "touch_all_vectors_s": t4 - t3, "words": len(wv.vectors), "dim": wv.dim}))
"""


def measure_glove_cold_start(glove_layer: Artifact) -> dict[str, float]:
    """Load the vectors from the layer's layout in a fresh process, with the files evicted from the
    page cache first (a new Lambda execution environment reads them from disk): the seconds each step
    takes. The process runs this interpreter, so it measures the loading code, not Lambda's CPU."""
    with tempfile.TemporaryDirectory(prefix="sumpipe-opt-") as opt:
        with zipfile.ZipFile(glove_layer.path) as archive:
            archive.extractall(opt)  # noqa: S202 - the layer zip we just built
        cache = Path(opt) / GLOVE_LAYER_DIR
        for path in cache.iterdir():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-c", _COLD_START_PROBE, str(cache)],
            capture_output=True, text=True, check=False, cwd=REPO_ROOT,
        )
        elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise PackageError(f"glove layer: loading it failed:\n{result.stderr.strip()}")
    return {**json.loads(result.stdout), "process_s": elapsed}
