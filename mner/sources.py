"""The ``mner`` source files that a script or module imports, read from the code (imports in
function bodies included): what a stage's dependencies in dvc.yaml must list
(tests/test_stage_deps.py), and what a run's model is made of (the ``model_code`` stage)."""

from __future__ import annotations

import ast
import functools
import hashlib
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the directory that holds the mner package


def imported_modules(path: Path) -> set[str]:
    """The ``mner`` modules (and names imported from them) that ``path`` imports anywhere."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise ValueError(f"{path}:{node.lineno}: relative import (only absolute ones are read)")
            names |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return {name for name in names if name == "mner" or name.startswith("mner.")}


def module_file(name: str, root: Path = ROOT) -> Path | None:
    """The source file of module ``name`` under ``root`` (None for a name that is not a module)."""
    base = root.joinpath(*name.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


@functools.cache
def import_closure(script: Path, root: Path = ROOT) -> frozenset[Path]:
    """Every ``mner`` source file that running ``script`` imports, its packages'
    ``__init__.py`` included, relative to ``root``."""
    found: set[Path] = set()
    todo = [script]
    while todo:
        for name in imported_modules(todo.pop()):
            parts = name.split(".")
            for end in range(1, len(parts) + 1):  # importing mner.a.b runs mner and mner.a too
                path = module_file(".".join(parts[:end]), root)
                if path and path not in found:
                    found.add(path)
                    todo.append(path)
    return frozenset(path.relative_to(root) for path in found)


def module_closure(module: str, root: Path = ROOT) -> list[Path]:
    """Module ``module`` and every ``mner`` source file it imports, sorted, relative to ``root``."""
    path = module_file(module, root)
    if path is None:
        raise ValueError(f"{module}: no such module under {root}")
    return sorted({path.relative_to(root), *import_closure(path, root)})


def sources_digest(paths: Iterable[Path], root: Path = ROOT) -> str:
    """The SHA-256 of the files ``paths`` (relative to ``root``), their names included."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(f"{path}\0".encode())
        digest.update((root / path).read_bytes())
    return digest.hexdigest()
