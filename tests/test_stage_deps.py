"""dvc.yaml's dependencies are exact: every stage lists the `mner` modules its script
imports (transitively) and no others (a directory only where it imports all of it), runs
its script as a module of the workspace, and every training run tracks the params entry its
model is built from, so DVC reruns exactly what a change touches."""

import shutil
import subprocess
from pathlib import Path

import pytest
from dvc.dependency.param import ParamsDependency
from dvc.repo import Repo
from dvc.utils.serialize import modify_yaml

from mner.core.config import load_params
from mner.models import MODELS, resolve_run
from mner.offline import copy_pipeline
from mner.sources import import_closure, module_closure
from stages.model_code import model_code
from tests.conftest import REPO


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
    closure = import_closure(REPO / "stages/train.py", REPO)
    assert {Path("mner/__init__.py"), Path("mner/train.py"), Path("mner/models/__init__.py")} <= closure
    assert Path("mner/models/gei.py") not in closure  # imported by name when a run builds it
    assert not {p for p in closure if p.parts[1] == "features"}  # nor the extractors
    assert Path("mner/settings/visual.py") in import_closure(REPO / "stages/train_visual.py", REPO)
    gei = module_closure("mner.models.gei", REPO)
    assert {Path("mner/models/gei.py"), Path("mner/models/layers.py"), Path("mner/models/crf.py")} <= set(gei)
    assert Path("mner/models/umt.py") not in gei


@pytest.mark.parametrize("params_file", ["params.yaml", "configs/offline.yaml", "configs/quickstart.yaml"])
def test_every_stage_lists_the_mner_modules_it_imports_and_no_others(params_file, tmp_path):
    problems = []
    for stage in stages(params_file, tmp_path):
        name, deps = stage.addressing.split(":")[-1], file_deps(stage)
        scripts = [d for d in deps if d.parent == Path("stages")]
        assert len(scripts) == 1 and f" -m stages.{scripts[0].stem} " in f"{stage.cmd} ", name
        closure = import_closure(REPO / scripts[0], REPO)
        missing = sorted(str(m) for m in closure if not covered(m, deps))
        if missing:
            problems.append(f"{name} misses {', '.join(missing)}")
        for dep in (d for d in deps if d.parts[0] == "mner" and d not in HASHED.get(name.split("@")[0], ())):
            unused = sorted(str(m) for m in modules_in(dep) - closure)
            if unused:
                problems.append(f"{name} lists {dep}, but never imports {', '.join(unused)}")
    assert not problems, "dvc.yaml deps out of date:\n" + "\n".join(sorted(set(problems)))


HASHED = {"model_code": [Path("mner/models")]}  # read as data (hashed), not imported


def test_the_model_code_stage_covers_the_sources_of_every_model(tmp_path):
    """Each run's key in checks/model_code.yaml is the hash of its model's module and what it
    imports; the stage that writes it depends on all of those files, and the train and evaluate
    stages of a run track its key."""
    every = stages("params.yaml", tmp_path)
    deps = file_deps(next(s for s in every if s.name == "model_code"))
    for name in MODELS:
        missing = [str(m) for m in module_closure(MODELS.module(name), REPO) if not covered(m, deps)]
        assert not missing, f"model_code misses {missing} of {name}"
    for stage in every:
        if stage.name.split("@")[0] in ("train", "train_visual", "evaluate", "evaluate_visual"):
            assert {"checks/model_code.yaml"} <= {str(d.def_path) for d in stage.deps}, stage.name


def test_a_model_file_is_no_dependency_of_any_run_stage(tmp_path):
    """Which model a run builds is resolved by name when it runs (mner.models.MODELS imports its
    module then), so no run stage imports a model's file: it reaches them through its key in
    checks/model_code.yaml."""
    model_files = {Path(f"mner/models/{m.rsplit('.', 1)[1]}.py") for m in MODELS.modules.values()}
    for stage in stages("params.yaml", tmp_path):
        if stage.name != "model_code":
            assert not (set(file_deps(stage)) & (model_files | {Path("mner/models")})), stage.name


def run_of(stage) -> str | None:
    """The run a training stage trains (its ``--run``), None for other stages."""
    words = stage.cmd.split()
    return words[words.index("--run") + 1] if stage.name.split("@")[0] in ("train", "train_visual") else None


@pytest.mark.parametrize("params_file", ["params.yaml", "configs/offline.yaml"])
def test_a_base_entry_change_reruns_exactly_the_runs_built_on_it(params_file, tmp_path):
    """Changing ``models.gei`` as ``dvc exp run -S`` does changes the params that DVC tracks
    for the training stages of GEI's runs (its ablations merge its entry) and no others."""
    training = [s for s in stages(params_file, tmp_path) if run_of(s)]
    params = load_params(tmp_path / "params.yaml")
    for stage in training:  # its own entry and the train section (the caches are file deps)
        assert tracked_params(stage) == {f"models.{run_of(stage)}", "train", run_of(stage)}

    def tracked_values() -> dict[str, dict]:
        return {
            s.addressing: {**d.read_params()}
            for s in training
            for d in s.deps
            if isinstance(d, ParamsDependency) and str(d.def_path) == "params.yaml"
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


def test_an_edit_to_one_model_file_changes_the_code_key_of_its_runs_only(tmp_path):
    """What the model_code stage writes in a workspace: an edit to umt.py changes the umt key
    only, one to gei.py GEI's runs', one to layers.py (every model imports it) every key."""
    shutil.copytree(REPO / "mner", tmp_path / "mner", ignore=shutil.ignore_patterns("__pycache__"))
    params = load_params(REPO / "configs/offline.yaml")

    def changed_by(path: str) -> set[str]:
        before = model_code(params, tmp_path)
        with open(tmp_path / path, "a") as source:
            source.write("# edited\n")
        after = model_code(params, tmp_path)
        return {run for run in before if before[run] != after[run]}

    runs = set(model_code(params, tmp_path))
    assert changed_by("mner/models/umt.py") == {"umt"}
    assert changed_by("mner/models/gei.py") == {r for r in runs if r.startswith("gei")} and len(runs) == 13
    assert changed_by("mner/models/layers.py") == runs
    assert changed_by("mner/train.py") == set()  # not model code


@pytest.mark.parametrize("params_file", ["params.yaml", "configs/offline.yaml"])
def test_every_output_dvc_caches_is_ignored_by_git_before_any_repro_ends(params_file, tmp_path):
    """DVC lists a cached output in a .gitignore of its own only when a repro ends, not after a
    failed one: the block of the repository's .gitignore that workspaces copy lists them all,
    or `git status` shows a failed run's caches and checkpoints as files to commit."""
    from mner.offline import output_ignores

    (tmp_path / "dvc").mkdir()
    cached = [
        Path(str(out.def_path))
        for stage in stages(params_file, tmp_path / "dvc")
        for out in stage.outs
        if out.use_cache
    ]
    work = tmp_path / "work"
    for path in cached:  # a file where the name has a suffix, else a directory with a file
        made = work / path if path.suffix else work / path / "file"
        made.parent.mkdir(parents=True, exist_ok=True)
        made.write_text("x")
    (work / ".gitignore").write_text(output_ignores(REPO))
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"], cwd=work, capture_output=True, text=True
    )
    assert status.stdout.splitlines() == ["?? .gitignore"]
