"""The offline configuration end to end: `dvc repro` in a fresh copy of the pipeline, once
per session (tests/conftest.py's ``offline_pipeline``: every stage kind on both datasets, with
a smaller matrix of runs than the configuration's). The tests that change the workspace
restore it afterwards; which stages a change makes stale is checked with ``dvc status``, and
only a few stages are rerun for real."""

import json
import re
import subprocess

import h5py
import pytest
import yaml
from dvc.repo import Repo
from dvc.utils.serialize import modify_yaml

from mner.core.cache import CacheReader, check_locked
from tests.conftest import CLUE_STAGES, OFFLINE_CROSS_DOMAIN, OFFLINE_RUNS, dvc

pytestmark = pytest.mark.pipeline

DATASETS = ["twitter2015", "twitter2017"]
TEXT_ONLY = OFFLINE_RUNS["text"]
MULTIMODAL_IN_PIPELINE_ORDER = OFFLINE_RUNS["visual"]
GEI_RUNS = ["gei", "gei-image-region"]  # GEI and its grid-reading ablation
CROSS_DOMAIN = ["gei", "fmit", "umt"]  # the configuration's cross_domain_runs
MULTIMODAL = sorted(MULTIMODAL_IN_PIPELINE_ORDER)


def multimodal_stages(stages, datasets, runs=MULTIMODAL):
    """The stage names of every multimodal run of ``runs`` for each of ``stages``."""
    return [f"{stage}_visual@{d}-{m}-1" for stage in stages for d in datasets for m in runs]


def ran(output):
    return sorted(re.findall(r"Running stage '([^']+)'", output))


def set_param(workspace, keys, value):
    """Set one value as ``dvc exp run -S`` does (the file's YAML anchors and merges kept)."""
    with modify_yaml(workspace / "params.yaml") as params:
        node = params
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value


def stale(workspace):
    """The stages ``dvc status`` reports changed."""
    return sorted(json.loads(dvc(workspace, "status", "--json")))


def stage_names(workspace):
    with Repo(str(workspace)) as repo:
        return sorted(stage.name for stage in repo.index.stages)


def git(cwd, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True)


@pytest.fixture
def workspace(offline_pipeline):
    """The session's reproduced workspace, read only."""
    return offline_pipeline[0]


@pytest.fixture
def restored(offline_pipeline):
    """The session's reproduced workspace, for a test that changes it: afterwards its commit,
    params, lock file and outputs are the reproduced ones again, and nothing is stale."""
    workspace = offline_pipeline[0]
    base = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=workspace, check=True, capture_output=True, text=True
    ).stdout.strip()
    yield workspace
    git(workspace, "reset", "-q", "--hard", base)
    git(workspace, "clean", "-fdq")
    dvc(workspace, "checkout", "--force")
    assert stale(workspace) == []


def test_offline_pipeline_runs_every_stage_once_then_is_up_to_date(offline_pipeline):
    workspace, first = offline_pipeline
    stages = stage_names(workspace)
    assert ran(first) == stages
    kinds = set(yaml.safe_load((workspace / "dvc.yaml").read_text())["stages"])
    # every other kind ran for real; describe captions no dataset in the offline configuration
    assert {stage.split("@")[0] for stage in stages} == kinds - CLUE_STAGES - {"describe"}
    cross = [f"evaluate_cross@pair{p}-{m}-1" for p in range(len(OFFLINE_CROSS_DOMAIN)) for m in CROSS_DOMAIN]
    assert set(cross + multimodal_stages(("train", "evaluate"), DATASETS)) <= set(stages)
    assert "Data and pipelines are up to date." in dvc(workspace, "repro")

    metrics = json.loads(dvc(workspace, "metrics", "show", "--json"))
    files = next(iter(metrics.values()))["data"]
    assert sorted(files) == [f"metrics/{d}.json" for d in DATASETS]  # one per dataset
    summary = files["metrics/twitter2017.json"]["data"]
    assert list(summary) == ["twitter2017", "twitter2017-on-twitter2015"]
    assert list(summary["twitter2017"]) == [*TEXT_ONLY, *MULTIMODAL_IN_PIPELINE_ORDER]
    assert list(summary["twitter2017-on-twitter2015"]) == CROSS_DOMAIN
    run = workspace / "runs/twitter2017/transformer-crf/seed1"
    evaluated = json.loads((run / "eval/metrics.json").read_text())
    assert summary["twitter2017"]["transformer-crf"] == {
        k: round(evaluated[k], 4) for k in ("f1", "precision", "recall")
    }
    assert (run / "live/plots/metrics/dev_f1.tsv").read_text().count("\n") == 3  # header + 2 epochs
    assert (run / "eval/predictions.txt").read_text().startswith("IMGID:")
    stats = json.loads((workspace / "prepared/twitter2017/stats.json").read_text())
    assert stats["splits"]["test"]["tweets"] == 40
    blank = json.loads((workspace / "features/visual/twitter2017.images.json").read_text())
    assert blank["counts"]["test"] == {
        "images": 40,
        "missing": 1,
        "empty": 0,
        "truncated": 0,
        "undecodable": 1,
        "too_large": 0,
    }
    visual = CacheReader(workspace / "features/visual/twitter2017.h5")
    objects = CacheReader(workspace / "features/objects/twitter2017.h5")
    assert visual.ids == objects.ids
    assert len(visual.get("train", "objects", 0)) == len(objects.get("train", "boxes", 0))


def test_training_again_with_the_same_seed_gives_the_same_checkpoint_bytes(restored):
    """At the default thread count (FMIT's backward differed on every run before the trainer
    asked for deterministic kernels)."""
    workspace = restored
    runs = ["twitter2017/fmit", "twitter2017/gei"]
    weights = [workspace / f"runs/{run}/seed1/checkpoint/model.safetensors" for run in runs]
    first = [path.read_bytes() for path in weights]
    stages = ["train_visual@twitter2017-fmit-1", "train_visual@twitter2017-gei-1"]
    assert ran(dvc(workspace, "repro", "--force", "--single-item", *stages)) == sorted(stages)
    assert [path.read_bytes() for path in weights] == first
    # what reads the training times (train.json) is stale; no training nor evaluation
    assert "summarize@twitter2017" in stale(workspace)
    assert not [s for s in stale(workspace) if s.startswith(("train", "evaluate"))]


def test_a_teammate_pulls_the_caches_and_reruns_nothing(restored, tmp_path):
    workspace = restored
    dvc(workspace, "remote", "add", "-d", "team", str(tmp_path / "remote"))
    git(workspace, "commit", "-qam", "the team's remote")
    dvc(workspace, "push")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(workspace), str(clone))
    dvc(clone, "pull")
    assert "Data and pipelines are up to date." in dvc(clone, "repro")
    caches = sorted(p.relative_to(workspace) for p in (workspace / "features").rglob("*.h5"))
    assert len(caches) == 5 * len(DATASETS)  # text, objects, phrases, grounding, visual per dataset
    for path in caches:
        assert (clone / path).read_bytes() == (workspace / path).read_bytes(), path


def test_a_model_param_reruns_only_that_models_training_and_evaluation(restored):
    """Which stages go stale with ``dvc status`` (both datasets); Twitter-2017's rerun for real."""
    workspace = restored
    set_param(workspace, ["models", "linear-softmax", "dropout"], 0.2)
    trains = [f"train@{d}-linear-softmax-1" for d in DATASETS]
    assert stale(workspace) == sorted(["check_params", "model_code", *trains])
    runs = [f"{s}@twitter2017-linear-softmax-1" for s in ("train", "evaluate")]
    assert ran(dvc(workspace, "repro", runs[1])) == sorted(["check_params", "model_code", *runs])
    assert ran(dvc(workspace, "repro", "--single-item", "summarize@twitter2017")) == ["summarize@twitter2017"]
    compared = json.loads(dvc(workspace, "metrics", "diff", "--all", "--json"))  # with the commit above
    diffs = {key: diff for per_file in compared.values() for key, diff in per_file.items()}
    assert {key.split(".")[1] for key in diffs} == {*TEXT_ONLY, *MULTIMODAL}  # every model, old and new
    changed = [key for key, diff in diffs.items() if diff["old"] != diff["new"]]
    assert changed and {key.split(".")[1] for key in changed} == {"linear-softmax"}, changed


def test_a_train_param_touches_only_training(restored):
    workspace = restored
    set_param(workspace, ["train", "lr"], 0.003)
    status = set(json.loads(dvc(workspace, "status", "--json"))) - {"check_params"}  # any params change
    assert status and all(name.startswith(("train@", "train_visual@")) for name in status)
    assert len(status) == (len(TEXT_ONLY) + len(MULTIMODAL)) * len(DATASETS)


def test_a_base_model_param_reruns_its_ablations_and_nothing_else(restored):
    workspace = restored
    set_param(workspace, ["models", "gei", "d_m"], 8)
    analyses = [f"analyze@{d}-{run}-1" for d in DATASETS for run in GEI_RUNS]  # they track their run's entry
    expected = ["check_params", "model_code", *multimodal_stages(("train",), DATASETS, GEI_RUNS), *analyses]
    assert stale(workspace) == sorted(expected)


def test_a_bad_value_stops_dvc_repro_in_the_pre_flight(restored):
    """A value that only UMT's training reads stops ``dvc repro`` at its first stage, in one
    line naming it; nothing else runs, and with the value back nothing is stale."""
    workspace = restored
    with modify_yaml(workspace / "params.yaml") as params:
        params["models"]["umt"]["train"] = {"lr": -1}
    result = subprocess.run(["dvc", "repro"], cwd=workspace, capture_output=True, text=True)
    assert result.returncode != 0
    assert ran(result.stdout) == ["check_params"]
    assert "error: params.yaml:models.umt.train.lr: -1.0 is out of range; allowed: above 0" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    with modify_yaml(workspace / "params.yaml") as params:
        del params["models"]["umt"]["train"]
    assert stale(workspace) == []


def test_the_report_holds_the_evaluated_numbers_and_its_figures(workspace):
    record = json.loads((workspace / "reports/results.json").read_text())
    for dataset in ("twitter2015", "twitter2017"):
        for run in ("transformer-crf", "gei", "gei-image-region"):
            metrics = json.loads((workspace / f"runs/{dataset}/{run}/seed1/eval/metrics.json").read_text())
            cells = record["results"][dataset][run]
            assert cells["F1"] == pytest.approx([100 * metrics["f1"], 0.0])
            assert cells["PER"][0] == pytest.approx(100 * metrics["f1_PER"])
    cross = json.loads((workspace / "runs/twitter2017/gei/seed1/cross/twitter2015/metrics.json").read_text())
    assert record["cross_domain"]["twitter2015"]["gei"]["P"][0] == pytest.approx(100 * cross["precision"])
    assert {row["run"] for row in record["efficiency"]} == set(MULTIMODAL)
    assert all(row["parameters"] > 0 and row["seconds"] > 0 for row in record["efficiency"])
    assert record["blank_images"]["twitter2017"]["missing"] == 3  # one per split
    markdown = (workspace / "reports/results.md").read_text()
    assert "FMIT (l=3) (published, FMIT T2) | 86.77 | 83.93" in markdown
    assert "**gei** (ours, cf. GEI)" in markdown and "**umt** (ours, cf. UMT)" in markdown
    assert "## Cross-domain: trained on Twitter-2017" in markdown
    for run in ("gei", "fmit", "umt"):  # the visual-use diagnostic: with their own features, as evaluated
        metrics = json.loads((workspace / f"runs/twitter2017/{run}/seed1/eval/metrics.json").read_text())
        conditions = record["visual_use"]["twitter2017"][run]["conditions"]
        assert list(conditions) == ["own", "blank", "deranged"]
        assert conditions["own"]["f1"] == pytest.approx(metrics["f1"])
        assert conditions["own"]["changed_tweets"] == 0.0
    assert "## Visual use: Twitter-2017 (`mner visual-use`)" in markdown
    assert "| fmit | deranged |" in markdown
    figures = sorted(p.name for p in (workspace / "reports/figures").glob("*.png"))
    assert {f"curves-{d}.png" for d in ("twitter2015", "twitter2017")} <= set(figures)
    assert {f"type-f1-{d}.png" for d in ("twitter2015", "twitter2017")} <= set(figures)
    for name in figures:
        assert name in markdown
        assert (workspace / "reports/figures" / name).read_bytes().startswith(b"\x89PNG")


def test_a_cache_edited_outside_dvc_is_refused_by_the_stages_that_read_it(restored):
    """The MD5 of each cache agrees with the one DVC wrote to dvc.lock; one value changed in
    place (same shape, same provenance) stops the evaluation that reads it in one line, and
    ``dvc checkout`` brings the recorded cache back."""
    workspace = restored
    for path in (workspace / "features").rglob("*.h5"):
        check_locked(path)
    visual = workspace / "features/visual/twitter2017.h5"
    with h5py.File(visual, "r+") as f:
        f["test/image/data"][0, 0] += 1
    stage = "evaluate_visual@twitter2017-fmit-1"  # its command, as `dvc repro` runs it
    command = yaml.safe_load((workspace / "dvc.lock").read_text())["stages"][stage]["cmd"]
    result = subprocess.run(command, shell=True, cwd=workspace, capture_output=True, text=True)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {visual} is not the output of visual_features@twitter2017 that ")
    dvc(workspace, "checkout", "--force", "features/visual/twitter2017.h5")
    check_locked(visual)
    assert stale(workspace) == []


def test_swapping_the_detector_reruns_detection_and_what_depends_on_it(restored):
    """Stage by stage with ``dvc status``, Twitter-2017's image stages only (the runs they
    make stale are not retrained here)."""
    workspace = restored
    set_param(workspace, ["detect", "backend"], "torchvision")
    set_param(workspace, ["detect", "model"], "fasterrcnn_mobilenet_v3_large_320_fpn")
    set_param(workspace, ["detect", "weights"], "")
    assert stale(workspace) == ["check_params", "detect@twitter2015", "detect@twitter2017"]
    assert ran(dvc(workspace, "repro", "--single-item", "check_params", "detect@twitter2017")) == [
        "check_params",
        "detect@twitter2017",
    ]
    assert CacheReader(workspace / "features/objects/twitter2017.h5").provenance["backend"] == "torchvision"
    analyzed = [s for s in stage_names(workspace) if s.startswith("analyze@twitter2017-")]  # read objects
    assert stale(workspace) == sorted(
        [*analyzed, "detect@twitter2015", "report", "visual_features@twitter2017"]
    )
    visual = "visual_features@twitter2017"
    assert ran(dvc(workspace, "repro", "--single-item", visual)) == [visual]
    multimodal = multimodal_stages(("train", "evaluate"), ["twitter2017"])
    multimodal += analyzed
    # not the text-only runs, nor anything of Twitter-2015 but its detection (the cross-domain
    # pair tests on Twitter-2015)
    assert stale(workspace) == sorted(["detect@twitter2015", *multimodal, "report"])
