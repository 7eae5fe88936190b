"""A dataset of one's own runs through the whole offline pipeline: a directory
``data/<name>/`` in the CoNLL layout with entity types of its own (here person, place and
group, no MISC) and text clues of its images in the plain image-text format, named in
``pipeline.datasets``, through every stage (the clue stages among them), the report and
``mner predict``."""

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from dvc.repo import Repo

from mner.clues import write_image_text
from mner.data.conll import SPLITS, Sentence, read_conll, write_conll
from mner.offline import PIPELINE_FILES, VOCABULARY, make_offline_workspace
from tests.conftest import CLUE_STAGES, REPO

pytestmark = pytest.mark.pipeline

NAME = "shops"
TYPES = {"PER": "person", "LOC": "place", "ORG": "group"}  # MISC becomes O
RUNS = {"text": ["linear-crf"], "visual": ["fmit"]}


def retyped(labels: tuple[str, ...]) -> list[str]:
    return [f"{label[:2]}{TYPES[label[2:]]}" if label[2:] in TYPES else "O" for label in labels]


def own_repository(root):
    """A checkout whose data/ holds ``data/shops/`` (Twitter-2017's first 40 tweets of each
    split, retyped) and whose params file runs the offline configuration on it alone."""
    for name in [*PIPELINE_FILES, VOCABULARY]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).symlink_to(REPO / name)
    clues = {}
    for split in SPLITS:
        sentences = read_conll(REPO / f"data/twitter2017/{split}.txt")[:40]
        own = [Sentence(s.id, s.image_id, s.tokens, tuple(retyped(s.labels))) for s in sentences]
        (root / "data" / NAME).mkdir(parents=True, exist_ok=True)
        write_conll(root / "data" / NAME / f"{split}.txt", own)
        clues.update({s.image_id: f"a shop window, {s.tokens[0]}" for s in sentences[::2]})  # half
    (root / "data" / NAME / "clues").mkdir()
    write_image_text(root / "data" / NAME / "clues" / "own.tsv", clues)
    params = yaml.safe_load((REPO / "configs/offline.yaml").read_text())
    params["pipeline"] |= {"datasets": [NAME], "runs": RUNS, "cross_domain": [], "cross_domain_runs": []}
    params["pipeline"] |= {"clues": ["own"], "clue_runs": ["linear-crf", "fmit-clue-cells"]}
    params["clues"] = {
        "own": {"format": "image-text", "path": "data/{dataset}/clues/own.tsv", "missing": "empty"}
    }
    params["report"]["baseline"] = "linear-crf"
    (root / "own.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def run(workspace, *command):
    result = subprocess.run(command, cwd=workspace, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    repository = own_repository(tmp_path_factory.mktemp("repository"))
    return make_offline_workspace(tmp_path_factory.mktemp("own") / "ws", repository, "own.yaml")


def test_an_own_dataset_runs_through_every_stage_the_report_and_predict(workspace):
    stages = sorted(re.findall(r"Running stage '([^']+)'", run(workspace, "dvc", "repro")))
    with Repo(str(workspace)) as repo:
        assert stages == sorted(stage.name for stage in repo.index.stages)  # each once
    runs = [f"{stage}@{NAME}-linear-crf-1" for stage in ("train", "evaluate")]
    runs += [f"{stage}_visual@{NAME}-fmit-1" for stage in ("train", "evaluate")]
    assert {*runs, f"prepare@{NAME}", f"visual_features@{NAME}", f"summarize@{NAME}"} <= set(stages)
    assert not [stage for stage in stages if "twitter" in stage or "cross" in stage]
    assert {stage.split("@")[0] for stage in stages} >= CLUE_STAGES  # read with its own clues too
    for clued in ("linear-crf+own", "fmit-clue-cells+own"):  # the context route, then the cells
        assert json.loads((workspace / f"runs/{NAME}/{clued}/seed1/eval/metrics.json").read_text())["f1"] >= 0
    cells = json.loads(
        (workspace / f"runs/{NAME}/fmit-clue-cells+own/seed1/checkpoint/checkpoint.json").read_text()
    )
    assert set(cells["caches"]) == {"text", "cells"} and cells["config"]["clue_cells"]
    summary = json.loads((workspace / f"metrics/{NAME}.json").read_text())[NAME]
    assert list(summary) == ["linear-crf", "fmit", "linear-crf+own", "fmit-clue-cells+own"]

    labels = json.loads((workspace / f"prepared/{NAME}/labels.json").read_text())
    assert labels["types"] == ["group", "person", "place"]
    record = json.loads((workspace / f"runs/{NAME}/fmit/seed1/checkpoint/checkpoint.json").read_text())
    assert record["labels"] == labels["labels"] == ["O", *(f"{p}-{t}" for t in labels["types"] for p in "BI")]

    markdown = (workspace / "reports/results.md").read_text()
    assert f"## Main results: {NAME}\n" in markdown and "### Ablations" not in markdown  # fmit alone
    assert "| model | group | person | place | P | R | F1 | n | setup |" in markdown
    assert "(published" not in markdown  # no paper reports this dataset
    cells = json.loads((workspace / "reports/results.json").read_text())["results"][NAME]["fmit"]
    assert list(cells) == ["group", "person", "place", "P", "R", "F1"]

    posts = run(
        workspace, "mner", "predict", "--checkpoint", f"runs/{NAME}/fmit/seed1", "--text", "Anna in Rome"
    )
    predicted = json.loads(posts)
    assert len(predicted["labels"]) == 3 and set(predicted["labels"]) <= set(labels["labels"])
    # from another directory: the checkpoint's relative model paths (models/tiny-bert, ...)
    # resolve in the workspace that recorded them, not in the current directory
    record = json.loads((workspace / f"runs/{NAME}/fmit/seed1/checkpoint/checkpoint.json").read_text())
    assert not Path(record["text_features"]["params"]["model"]).is_absolute()
    elsewhere = workspace.parent / "elsewhere"
    elsewhere.mkdir()
    checkpoint = str(workspace / f"runs/{NAME}/fmit/seed1")
    again = run(elsewhere, "mner", "predict", "--checkpoint", checkpoint, "--text", "Anna in Rome")
    assert json.loads(again) == predicted
