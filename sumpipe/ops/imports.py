"""The project modules a Lambda handler can run, found by reading import statements (nothing is imported).

Each function's zip is built from this graph (sumpipe/ops/package.py), so a module a handler comes to
import can't be left out of it by a hand-kept list. Every import statement counts, wherever it is:
the handlers and the API defer imports into functions, and a package that imports its names lazily
(summarizer/__init__.py's `__getattr__`) names them in an `if TYPE_CHECKING:` block. Missing a module
breaks a route in the cloud; carrying one too many costs a few kilobytes.

The imports of other distributions are collected too, for the check that a function's layers provide
them. Those under `if TYPE_CHECKING:` never run, and those in a `try` that catches ImportError are
optional by construction, so neither is asked of a layer.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

# Exceptions whose handler makes the imports in its `try` optional.
_IMPORT_ERRORS = {"ImportError", "ModuleNotFoundError"}


class ImportGraphError(Exception):
    """A project module is imported but has no source to package."""


@dataclass(frozen=True)
class ImportGraph:
    # Dotted name -> source file of every project module reached, with the packages holding them.
    modules: dict[str, Path]
    # Top-level name of another distribution's module -> the project modules that import it.
    third_party: dict[str, set[str]]


@dataclass(frozen=True)
class _Import:
    modules: tuple[str, ...]  # `import a.b` and the `a` of `from a import b`
    maybe_modules: tuple[str, ...]  # the a.b of `from a import b`: a module, or a name a defines
    type_only: bool
    optional: bool


def module_graph(entry: str, root: Path, packages: Collection[str]) -> ImportGraph:
    """Every module of `packages` (top-level package names under `root`) reachable from `entry`."""
    modules: dict[str, Path] = {}
    third_party: dict[str, set[str]] = {}
    pending = [entry]
    while pending:
        name = pending.pop()
        if name in modules:
            continue
        source = source_of(name, root)
        if source is None:
            raise ImportGraphError(f"no module {name} under {root}")
        modules[name] = source
        pending += _parents(name)
        package = name if source.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(source.read_bytes(), filename=str(source))
        for statement in _visit(tree.body, package, type_only=False, optional=False):
            for imported in (*statement.modules, *statement.maybe_modules):
                top = imported.partition(".")[0]
                if top in packages:
                    if source_of(imported, root) is not None:
                        pending.append(imported)
                    elif not (statement.optional or imported in statement.maybe_modules):
                        raise ImportGraphError(f"{name} imports {imported}, which has no source under {root}")
                elif top not in sys.stdlib_module_names and not (statement.type_only or statement.optional):
                    third_party.setdefault(top, set()).add(name)
    return ImportGraph(modules=dict(sorted(modules.items())), third_party=third_party)


def source_of(name: str, root: Path) -> Path | None:
    """The file `import name` runs: name.py, or name/__init__.py for a package."""
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_name(base.name + ".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _parents(name: str) -> list[str]:
    # Importing a.b.c runs a/__init__.py and a/b/__init__.py first.
    parts = name.split(".")
    return [".".join(parts[:depth]) for depth in range(1, len(parts))]


def _visit(body: list[ast.stmt], package: str, *, type_only: bool, optional: bool) -> Iterator[_Import]:
    """The import statements in `body` and every block nested in it (functions, classes, ifs, ...)."""
    for node in body:
        if isinstance(node, ast.Import):
            yield _Import(tuple(alias.name for alias in node.names), (), type_only, optional)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, package)
            submodules = tuple(f"{base}.{alias.name}" for alias in node.names)
            yield _Import((base,), submodules, type_only, optional)
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _visit(node.body, package, type_only=True, optional=optional)
            yield from _visit(node.orelse, package, type_only=type_only, optional=optional)
        elif isinstance(node, ast.Try | ast.TryStar) and _catches_import_error(node):
            yield from _visit(node.body, package, type_only=type_only, optional=True)
            for block in (*(handler.body for handler in node.handlers), node.orelse, node.finalbody):
                yield from _visit(block, package, type_only=type_only, optional=optional)
        else:
            for block in _blocks(node):
                yield from _visit(block, package, type_only=type_only, optional=optional)


def _blocks(node: ast.stmt) -> Iterator[list[ast.stmt]]:
    """The statement lists nested in `node`: a def's or a with's body, an if's branches, a try's
    handlers, a match's cases."""
    for field in ("body", "orelse", "finalbody"):
        block = getattr(node, field, None)
        if isinstance(block, list):
            yield block
    for nested in (*getattr(node, "handlers", ()), *getattr(node, "cases", ())):
        yield nested.body


def _absolute(node: ast.ImportFrom, package: str) -> str:
    if not node.level:
        return node.module or ""
    # `from .x import y` in package a.b is a.b.x; each further dot goes up one package.
    parts = package.split(".")
    base = ".".join(parts[: len(parts) - node.level + 1])
    return f"{base}.{node.module}" if node.module else base


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _catches_import_error(node: ast.Try | ast.TryStar) -> bool:
    caught: list[ast.expr] = []
    for handler in node.handlers:
        kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        caught += [kind for kind in kinds if kind is not None]
    return any(isinstance(kind, ast.Name) and kind.id in _IMPORT_ERRORS for kind in caught)
