"""dvc.yaml's dependencies are complete: every stage lists the `mner` modules its script
imports (transitively), and every training run tracks the params entries its model is
built from, so DVC reruns exactly what a change touches."""

import ast
import functools
import shutil
from pathlib import Path

import pytest
from dvc.dependency.param import ParamsDependency
from dvc.repo import Repo

from mner.config import load_params
from mner.models import resolve_run
from tests.conftest import REPO


def imported_modules(path: Path) -> set[str]:
    """The ``mner`` modules (and names imported from them) that ``path`` imports anywhere,
    function bodies included."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import (this check reads absolute ones)"
            names |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return {name for name in names if name == "mner" or name.startswith("mner.")}


def module_file(name: str) -> Path | None:
    """The source file of module ``name`` (None for a name that is not a module)."""
    base = REPO.joinpath(*name.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


@functools.cache  # the same few scripts for hundreds of stages
def import_closure(script: Path) -> frozenset[Path]:
    """Every ``mner`` source file that running ``script`` imports, its packages'
    ``__init__.py`` included, relative to the repository."""
    found: set[Path] = set()
    todo = [script]
    while todo:
        for name in imported_modules(todo.pop()):
            parts = name.split(".")
            for end in range(1, len(parts) + 1):  # importing mner.a.b runs mner and mner.a too
                path = module_file(".".join(parts[:end]))
                if path and path not in found:
                    found.add(path)
                    todo.append(path)
    return frozenset(path.relative_to(REPO) for path in found)


def stages(params_file: str, tmp_path: Path) -> list:
    """The stages of dvc.yaml resolved with ``params_file`` as params.yaml."""
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    shutil.copy(REPO / params_file, tmp_path / "params.yaml")
    Repo.init(str(tmp_path), no_scm=True)
    return list(Repo(str(tmp_path)).index.stages)


def file_deps(stage) -> list[Path]:
    return [Path(str(d.def_path)) for d in stage.deps if not isinstance(d, ParamsDependency)]


def tracked_params(stage) -> set[str]:
    return {key for d in stage.deps if isinstance(d, ParamsDependency) for key in d.params}


def covered(module: Path, deps: list[Path]) -> bool:
    return any(module == dep or dep in module.parents for dep in deps)


def test_the_closure_follows_imports_into_packages_and_function_bodies():
    closure = import_closure(REPO / "stages/train.py")
    assert {Path("mner/__init__.py"), Path("mner/train.py"), Path("mner/models/__init__.py")} <= closure
    assert Path("mner/models/gei.py") in closure  # imported inside mner.models._register_builtin
    assert Path("mner/report.py") not in closure


@pytest.mark.parametrize("params_file", ["params.yaml", "configs/offline.yaml", "configs/quickstart.yaml"])
def test_every_stage_lists_the_mner_modules_it_imports_and_no_others(params_file, tmp_path):
    problems = []
    for stage in stages(params_file, tmp_path):
        name, deps = stage.addressing.split(":")[-1], file_deps(stage)
        scripts = [d for d in deps if d.parent == Path("stages")]
        assert len(scripts) == 1 and str(scripts[0]) in stage.cmd, name
        closure = import_closure(REPO / scripts[0])
        missing = sorted(str(m) for m in closure if not covered(m, deps))
        if missing:
            problems.append(f"{name} misses {', '.join(missing)}")
        extra = [d for d in deps if d.parts[0] == "mner" and not any(covered(m, [d]) for m in closure)]
        if extra:
            problems.append(f"{name} lists {', '.join(map(str, extra))}, which it never imports")
    assert not problems, "dvc.yaml deps out of date:\n" + "\n".join(sorted(set(problems)))


def run_of(stage) -> str | None:
    """The run a training stage trains (its ``--model``), None for other stages."""
    words = stage.cmd.split()
    return words[words.index("--model") + 1] if "stages/train.py" in stage.cmd else None


@pytest.mark.parametrize("params_file", ["params.yaml", "configs/offline.yaml"])
def test_a_models_entry_reruns_exactly_the_runs_built_on_it(params_file, tmp_path):
    """Each ``models.<entry>`` is tracked by the training stages of exactly the runs whose
    model is built from it (the run's own entry and its bases), so a change to
    ``models.gei`` reruns every GEI ablation and no FMIT run."""
    models = load_params(REPO / params_file)["models"]
    training = [s for s in stages(params_file, tmp_path) if run_of(s)]
    assert training
    for entry in models:
        tracking = {s.addressing for s in training if f"models.{entry}" in tracked_params(s)}
        built_on = {s.addressing for s in training if entry in resolve_run(models, run_of(s)).entries}
        assert tracking == built_on, entry
    families = load_params(REPO / params_file)["pipeline"]["multimodal_models"]
    gei_runs = {s.addressing for s in training if f"models.{families['gei'][0]}" in tracked_params(s)}
    assert {run_of(s) for s in training if s.addressing in gei_runs} == set(families["gei"])
