"""The offline configuration: a copy of the pipeline that runs without any download, on
a slice of the real data with a tiny random BERT."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from mner.data.conll import read_conll
from mner.tiny import build_tiny_bert

REPO = Path(__file__).resolve().parents[1]
PIPELINE_FILES = ["dvc.yaml", "stages", "mner", "data/README.md", "data/twitter2015", "data/twitter2017"]
TINY_BERT = "models/tiny-bert"


def make_offline_workspace(dest: Path | str, repo: Path = REPO, params: str = "configs/offline.yaml") -> Path:
    """Copy the pipeline into ``dest`` (a new git + DVC repository) with ``params`` as its
    params.yaml and a tiny random BERT at ``models/tiny-bert``; ``dvc repro`` there runs
    the whole pipeline offline."""
    dest = Path(dest)
    if not (repo / "dvc.yaml").is_file():
        raise FileNotFoundError(f"{repo}: no dvc.yaml; run from a source checkout of mner (pip install -e .)")
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} exists and is not empty")
    dest.mkdir(parents=True, exist_ok=True)
    for name in PIPELINE_FILES:
        source, target = repo / name, dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target)
    shutil.copy2(repo / params, dest / "params.yaml")
    words = [w for s in read_conll(dest / "data/twitter2017/train.txt") for w in s.tokens]
    build_tiny_bert(dest / TINY_BERT, words)
    (dest / ".gitignore").write_text("__pycache__/\n")
    for command in (
        ["git", "init", "-q"],
        ["dvc", "init", "-q"],
        ["git", "add", "-A"],
        [
            "git",
            "-c",
            "user.name=mner",
            "-c",
            "user.email=mner@localhost",
            "commit",
            "-qm",
            "offline workspace",
        ],
    ):
        subprocess.run(command, cwd=dest, check=True)
    return dest
