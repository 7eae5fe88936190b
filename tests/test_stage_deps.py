"""dvc.yaml's dependencies are exact: every stage lists the `mner` modules its script
imports (transitively) and no others (a directory only where it imports all of it), runs
its script as a module of the workspace, and every training run tracks the params entry its
model is built from, so DVC reruns exactly what a change touches."""

import ast
import functools
import shutil
import subprocess
from pathlib import Path

import pytest
from dvc.dependency.param import ParamsDependency
from dvc.repo import Repo
from dvc.utils.serialize import modify_yaml

from mner.config import load_params
from mner.models import resolve_run
from mner.offline import copy_pipeline
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


def modules_in(dep: Path) -> set[Path]:
    """The mner source files a dependency stands for: itself, or those under a directory."""
    path = REPO / dep
    files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return {file.relative_to(REPO) for file in files}


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
        assert len(scripts) == 1 and f" -m stages.{scripts[0].stem} " in f"{stage.cmd} ", name
        closure = import_closure(REPO / scripts[0])
        missing = sorted(str(m) for m in closure if not covered(m, deps))
        if missing:
            problems.append(f"{name} misses {', '.join(missing)}")
        for dep in (d for d in deps if d.parts[0] == "mner"):
            unused = sorted(str(m) for m in modules_in(dep) - closure)
            if unused:
                problems.append(f"{name} lists {dep}, but never imports {', '.join(unused)}")
    assert not problems, "dvc.yaml deps out of date:\n" + "\n".join(sorted(set(problems)))


def run_of(stage) -> str | None:
    """The run a training stage trains (its ``--run``), None for other stages."""
    words = stage.cmd.split()
    return words[words.index("--run") + 1] if "-m stages.train " in stage.cmd else None


@pytest.mark.parametrize("params_file", ["params.yaml", "configs/offline.yaml"])
def test_a_base_entry_change_reruns_exactly_the_runs_built_on_it(params_file, tmp_path):
    """Changing ``models.gei`` as ``dvc exp run -S`` does changes the params that DVC tracks
    for the training stages of GEI's runs (its ablations merge its entry) and no others."""
    training = [s for s in stages(params_file, tmp_path) if run_of(s)]
    params = load_params(tmp_path / "params.yaml")
    for stage in training:  # its own entry and the train section (the caches are file deps)
        assert tracked_params(stage) == {f"models.{run_of(stage)}", "train"}

    def tracked_values() -> dict[str, dict]:
        return {
            s.addressing: {**d.read_params()}
            for s in training
            for d in s.deps
            if isinstance(d, ParamsDependency)
        }

    before = tracked_values()
    with modify_yaml(tmp_path / "params.yaml") as changed:
        changed["models"]["gei"]["layers"] = 1
    after = tracked_values()
    rerun = {name for name in before if before[name] != after[name]}
    built_on_gei = {s.addressing for s in training if resolve_run(params["models"], run_of(s)).model == "gei"}
    assert rerun == built_on_gei and len({run_of(s) for s in training if s.addressing in rerun}) > 1


def test_a_workspace_runs_the_mner_it_tracks(tmp_path):
    """The stage commands import the workspace's own mner, not the installed one, so an edit
    there reruns its stages with the edited code."""
    copy_pipeline(tmp_path / "ws", REPO, "configs/offline.yaml")
    (tmp_path / "ws/mner/__init__.py").write_text("raise SystemExit('the workspace mner')\n")
    stage = next(s for s in stages("configs/offline.yaml", tmp_path) if s.name == "prepare@twitter2017")
    result = subprocess.run(stage.cmd, shell=True, cwd=tmp_path / "ws", capture_output=True, text=True)
    assert "the workspace mner" in result.stderr
