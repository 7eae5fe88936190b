"""The runs of a workspace: the summarize stage's metrics (seed means, cross-domain entries)
and `mner runs` (listing, --compare, --json, errors), on a small fake workspace whose files
are written as the train and evaluate stages write them."""

import json
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from mner.cli import main
from mner.core.config import to_dict
from mner.core.workspace import evaluation_dir, run_dir, summary_file
from mner.data.labels import TWITTER_LABELS
from mner.metrics import score
from mner.models import InputDims, build_model, model_config, save_checkpoint
from mner.runs import Pipeline, find_run, list_runs, summarize
from mner.train import TrainConfig
from tests.test_stage_deps import stages

PIPELINE = {
    "datasets": ["twitter2015", "twitter2017"],
    "runs": {"text": ["linear-crf"], "visual": ["fmit", "fmit-no-obj"]},
    "seeds": [1],
    "cross_domain": [{"train": "twitter2017", "test": "twitter2015"}],
    "cross_domain_runs": ["fmit"],
    "train_launcher": "python",
    "extract_launcher": "python",
}


def pipeline(root: Path, **changes) -> Pipeline:
    """:data:`PIPELINE` with ``changes``, its outputs under ``root``."""
    return Pipeline.from_params({"pipeline": {**PIPELINE, **changes}}, root)


RUNS = {  # run name: (registered model, config values)
    "linear-crf": ("linear-crf", {}),
    "fmit": ("fmit", {"d": 16}),
    "fmit-no-obj": ("fmit", {"d": 16, "objects": False}),
    "linear-crf+captions": ("linear-crf", {}),  # linear-crf read with clue set captions
}


def scores(f1: float) -> dict:
    """A metrics.json as stages/evaluate.py writes it (Scores.summary()), with F1 ``f1``."""
    keys = score([["B-PER", "B-LOC", "B-ORG", "B-MISC"]], [["B-PER", "O", "O", "O"]]).summary()
    values = {"precision": f1 + 0.1, "recall": f1 - 0.1, "f1": f1}
    return {key: values.get(key, f1 / 2) for key in keys}


def write_run(root: Path, dataset: str, run: str, seed: int, f1: float | None, lr: float = 0.005) -> Path:
    """A run directory as the train stage (checkpoint/, train.json) and, unless ``f1`` is
    None, the evaluate stage (eval/metrics.json) write it."""
    model, values = RUNS[run]
    inputs = InputDims(2, 8, visual_dim=4 if model == "fmit" else 0)
    directory = root / run_dir(dataset, run, seed)
    network = build_model(model, model_config(model, values), inputs, len(TWITTER_LABELS))
    train = to_dict(TrainConfig(lr=lr, epochs=2, batch_size=8))
    save_checkpoint(
        directory / "checkpoint",
        model,
        network,
        inputs,
        TWITTER_LABELS,
        run=run,
        dataset=dataset,
        seed=seed,
        train=train,
        text_features={"clues": {"name": run.partition("+")[2]}} if "+" in run else None,
    )
    summary = {"best_epoch": 2, "best_dev_f1": 0.25 + seed / 100, "seconds_per_epoch": 0.5, "processes": 1}
    (directory / "train.json").write_text(json.dumps(summary, indent=2) + "\n")
    if f1 is not None:
        write_metrics(root / evaluation_dir(dataset, run, seed), f1)
    return directory


def write_metrics(directory: Path, f1: float) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "metrics.json").write_text(json.dumps(scores(f1), indent=2) + "\n")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Every run of PIPELINE trained and evaluated, plus the cross-domain evaluation."""
    root = tmp_path_factory.mktemp("workspace")
    for dataset, base in (("twitter2017", 0.5), ("twitter2015", 0.4)):
        for offset, run in enumerate(RUNS):
            if "+" not in run:
                write_run(root, dataset, run, 1, base + offset / 100)
    write_metrics(root / evaluation_dir("twitter2017", "fmit", 1, "twitter2015"), 0.3)
    return root


def test_summarize_gives_the_seed_means_in_pipeline_order_and_the_cross_domain_runs(workspace):
    summary = summarize(pipeline(workspace), "twitter2017")
    assert summary == {
        "twitter2017": {
            "linear-crf": {"f1": 0.5, "precision": 0.6, "recall": 0.4},
            "fmit": {"f1": 0.51, "precision": 0.61, "recall": 0.41},
            "fmit-no-obj": {"f1": 0.52, "precision": 0.62, "recall": 0.42},
        },
        "twitter2017-on-twitter2015": {"fmit": {"f1": 0.3, "precision": 0.4, "recall": 0.2}},
    }
    assert list(summary["twitter2017"]) == ["linear-crf", "fmit", "fmit-no-obj"]
    assert list(summarize(pipeline(workspace), "twitter2015")) == ["twitter2015"]  # no pair trained on it


def test_summarize_with_several_seeds_gives_each_seeds_f1_rounded(tmp_path):
    for seed, f1 in ((1, 0.123456), (2, 0.2), (3, 0.3)):
        write_run(tmp_path, "twitter2017", "linear-crf", seed, f1)
    text_only = pipeline(tmp_path, runs={"text": ["linear-crf"]}, cross_domain=[], cross_domain_runs=[])
    summary = summarize(replace(text_only, seeds=(1, 2, 3)), "twitter2017")
    assert summary == {
        "twitter2017": {
            "linear-crf": {
                "f1": 0.2078,
                "precision": 0.3078,
                "recall": 0.1078,
                "seed1": 0.1235,
                "seed2": 0.2,
                "seed3": 0.3,
            }
        }
    }


def test_summarize_names_a_missing_metrics_file(workspace, tmp_path):
    write_run(tmp_path, "twitter2017", "linear-crf", 1, 0.5)
    missing = tmp_path / "runs/twitter2017/linear-crf/seed2/eval/metrics.json"
    with pytest.raises(FileNotFoundError, match=f"{missing}: missing; run the evaluate stages first"):
        summarize(
            pipeline(tmp_path, runs={"text": ["linear-crf"]}, cross_domain_runs=[], seeds=[1, 2]),
            "twitter2017",
        )
    (workspace / "runs/twitter2017/fmit/seed1/cross/twitter2015/metrics.json").rename(tmp_path / "kept")
    try:
        with pytest.raises(FileNotFoundError, match="seed1/cross/twitter2015/metrics.json: missing"):
            summarize(pipeline(workspace), "twitter2017")
    finally:
        (tmp_path / "kept").rename(workspace / "runs/twitter2017/fmit/seed1/cross/twitter2015/metrics.json")


def test_the_summaries_are_the_pipelines_only_metrics(tmp_path):
    """dvc.yaml: every summarize stage writes metrics/<dataset>.json, the only metrics
    files; the runs' own metrics files are plain outputs kept out of the cache."""
    found = {stage.addressing.split(":")[-1]: stage for stage in stages("params.yaml", tmp_path)}
    metrics = {str(out.def_path) for stage in found.values() for out in stage.outs if out.metric}
    assert metrics == {str(summary_file(d)) for d in ("twitter2015", "twitter2017")}
    summarize_stage = found["summarize@twitter2017"]
    assert "runs/twitter2017" in {str(dep.def_path) for dep in summarize_stage.deps}
    run_files = {
        str(out.def_path): out.use_cache
        for stage in found.values()
        for out in stage.outs
        if str(out.def_path).endswith(("train.json", "metrics.json")) and "runs/" in str(out.def_path)
    }
    runs = 3 + 9 + 2 * 3  # text, visual, transformer-crf and fmit-clue-cells with each of 3 clue sets
    assert len(run_files) == 2 * runs * 3 * 2 + 2 * 3 * 3  # train.json and eval, then cross
    assert not any(run_files.values())


def test_runs_lists_every_run_with_its_scores_and_config(workspace, tmp_path, capsys):
    assert main(["runs", str(workspace)]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split() == ["P", "R", "F1", "dev", "F1", "best", "epoch", "clues", "config"]
    assert [row.split()[0] for row in rows] == [
        f"{d}/{run}/seed1"
        for d in ("twitter2015", "twitter2017")
        for run in ("fmit", "fmit-no-obj", "linear-crf")
    ]
    assert rows[4].split() == [
        "twitter2017/fmit-no-obj/seed1",
        *("62.00", "42.00", "52.00", "26.00", "2", "-"),
        *("lr=0.005", "batch_size=8", "d=16", "objects=false"),
    ]
    assert rows[5].split()[-2:] == ["lr=0.005", "batch_size=8"]  # linear-crf at its defaults
    config_column = header.index("config")
    assert {row[config_column:][:3] for row in rows} == {"lr="}  # the config column aligned left

    write_run(tmp_path, "twitter2017", "linear-crf", 1, None)  # trained, not yet evaluated
    (tmp_path / "runs/twitter2017/fmit/seed2").mkdir(parents=True)  # training has not ended
    write_run(tmp_path, "twitter2017", "linear-crf+captions", 1, 0.5)  # read with a clue set
    assert main(["runs", str(tmp_path)]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert rows[0].split() == ["twitter2017/fmit/seed2", *["-"] * 7]
    assert rows[1].split()[1:7] == ["-", "-", "-", "26.00", "2", "-"]
    assert rows[2].split()[:1] + rows[2].split()[6:7] == ["twitter2017/linear-crf+captions/seed1", "captions"]
    clued = find_run(list_runs(tmp_path), "train_clues@twitter2017-linear-crf-captions-1", tmp_path)
    assert clued.name == "twitter2017/linear-crf+captions/seed1" and clued.to_dict()["clues"] == "captions"


def test_runs_json_holds_every_file_of_each_run(workspace, capsys):
    assert main(["runs", str(workspace), "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert len(runs) == 6
    fmit = next(run for run in runs if run["run"] == "twitter2017/fmit/seed1")
    assert fmit["dataset"] == "twitter2017" and fmit["model"] == "fmit" and fmit["seed"] == 1
    assert fmit["config"] == {"lr": 0.005, "batch_size": 8, "d": 16}
    assert fmit["test"] == scores(0.51) and fmit["train"]["best_epoch"] == 2
    assert fmit["cross"] == {"twitter2015": scores(0.3)}
    assert [run.name for run in list_runs(workspace)] == [run["run"] for run in runs]


def test_runs_compare_puts_two_runs_side_by_side_with_the_differences(workspace, capsys):
    a, b = "twitter2017/fmit/seed1", "train_visual@twitter2017-fmit-no-obj-1"
    assert main(["runs", str(workspace), "--compare", a, b]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [a, "twitter2017/fmit-no-obj/seed1", "difference"]
    rows = {
        line.split()[0]: line.split()[1:] for line in lines[1:] if not line.startswith(("test", "on", "dev"))
    }
    assert rows["model"] == ["fmit", "fmit"] and rows["lr"] == ["0.005", "0.005"]
    assert rows["objects"] == ["true", "false", "differs"]
    assert rows["d"] == ["16", "16"]
    metrics = {
        line.rsplit(maxsplit=3)[0].strip(): line.split()[-3:] for line in lines if line.startswith("test")
    }
    assert metrics["test f1"] == ["51.00", "52.00", "+1.00"]
    assert metrics["test f1_PER"] == ["25.50", "26.00", "+0.50"]  # per type too
    assert any(line.split()[:4] == ["on", "twitter2015", "f1", "30.00"] for line in lines)  # cross: a only

    assert main(["runs", str(workspace), "--compare", "twitter2017-linear-crf-1", a, "--json"]) == 0
    both = json.loads(capsys.readouterr().out)
    assert both["runs"] == ["twitter2017/linear-crf/seed1", a]
    assert both["config"]["model"] == ["linear-crf", "fmit"]
    assert both["config"]["d"] == [None, 16]  # linear-crf has no d
    assert both["metrics"]["test f1"] == [0.5, 0.51]


def test_runs_errors_name_the_path_with_exit_2(workspace, tmp_path, capsys):
    assert main(["runs", str(tmp_path)]) == 2
    missing = f"{tmp_path / 'runs'}: not found; run the pipeline there first (dvc repro)"
    assert capsys.readouterr().err == f"mner runs: error: {missing}\n"
    assert (
        main(["runs", str(workspace), "--compare", "twitter2017/fmit/seed1", "twitter2017/fmit/seed9"]) == 2
    )
    err = capsys.readouterr().err
    assert err.startswith(
        f"mner runs: error: {workspace / 'runs'}: no run 'twitter2017/fmit/seed9'; runs there: "
    )
    (tmp_path / "runs/twitter2017/fmit/seed1/eval").mkdir(parents=True)
    (tmp_path / "runs/twitter2017/fmit/seed1/eval/metrics.json").write_text("{not json")
    assert main(["runs", str(tmp_path)]) == 2
    assert (
        f"{tmp_path / 'runs/twitter2017/fmit/seed1/eval/metrics.json'}: not valid JSON"
        in capsys.readouterr().err
    )


def test_quickstart_ends_with_the_runs_table(workspace, monkeypatch, capsys):
    import mner.offline
    from mner.runs import runs_table

    monkeypatch.setattr(mner.offline, "make_quickstart_workspace", lambda dest: workspace)
    monkeypatch.setattr(mner.offline, "repro_and_commit", lambda dest: None)
    assert main(["quickstart", "unused"]) == 0
    assert f"\n{runs_table(list_runs(workspace))}\n" in capsys.readouterr().out


@pytest.mark.parametrize(
    "file, text, problem",
    [
        ("train.json", "[1, 2]", "expected a JSON object, got list"),
        # a string score printed repeated 100 times in the table; a float epoch failed the comparison
        (
            "train.json",
            '{"best_dev_f1": "0.25", "best_epoch": 2}',
            'best_dev_f1 is "0.25", not a finite number',
        ),
        ("train.json", '{"best_dev_f1": 0.25, "best_epoch": 2.5}', "best_epoch is 2.5, not a whole number"),
        ("train.json", '{"best_dev_f1": NaN, "best_epoch": 2}', "best_dev_f1 is NaN, not a finite number"),
        ("eval/metrics.json", '{"f1": true, "precision": 0.5}', "f1 is true, not a finite number"),
        ("cross/twitter2015/metrics.json", '{"f1": null}', "f1 is null, not a finite number"),
        (
            "checkpoint/checkpoint.json",
            '{"model": "fmit", "config": [], "inputs": {}, "labels": []}',
            "config is",
        ),
    ],
)
def test_runs_refuses_a_damaged_file_naming_it(tmp_path, capsys, file, text, problem):
    directory = write_run(tmp_path, "twitter2017", "linear-crf", 1, 0.5)
    (directory / file).parent.mkdir(parents=True, exist_ok=True)
    (directory / file).write_text(text)
    assert main(["runs", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mner runs: error: {directory / file}: ") and problem in err
    assert len(err.splitlines()) == 1


def git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=root, check=True, capture_output=True
    )


@pytest.fixture
def experiment(workspace, tmp_path):
    """A git + DVC repository whose last commit holds :func:`workspace`'s runs (the
    checkpoints in the DVC cache, the other run files in git), and whose working tree then
    trained twitter2017/fmit/seed1 again with lr 0.002 (an experiment)."""
    from dvc.repo import Repo

    root = tmp_path / "ws"
    shutil.copytree(workspace, root)
    git(root, "init", "-q")
    repo = Repo.init(str(root))
    repo.add([str(path) for path in sorted(root.glob("runs/*/*/seed*/checkpoint"))])
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "baseline")
    write_run(root, "twitter2017", "fmit", 1, 0.55, lr=0.002)
    return root


def test_runs_compare_a_run_with_the_same_run_in_a_git_revision(experiment, capsys):
    run = "twitter2017/fmit/seed1"
    assert main(["runs", str(experiment), "--compare", f"HEAD:{run}", run]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [f"HEAD:{run}", run, "difference"]
    rows = {line.rsplit(maxsplit=3)[0].strip(): line.split()[-3:] for line in lines[1:]}
    assert rows["lr"] == ["0.005", "0.002", "differs"]  # the config, from the checkpoint in the DVC cache
    assert rows["test f1"] == ["51.00", "55.00", "+4.00"]
    assert rows["test f1_PER"] == ["25.50", "27.50", "+2.00"]  # per type

    assert main(["runs", str(experiment), "--compare", f"HEAD:{run}", run, "--json"]) == 0
    both = json.loads(capsys.readouterr().out)
    assert both["runs"] == [f"HEAD:{run}", run] and both["config"]["lr"] == [0.005, 0.002]

    assert main(["runs", str(experiment), "--compare", "nothere:x", run]) == 2
    assert capsys.readouterr().err.startswith(
        f"mner runs: error: nothere: neither a directory nor a git revision of {experiment} ("
    )

    shutil.rmtree(experiment / ".dvc/cache")  # the baseline's checkpoints not pulled: no config
    assert main(["runs", str(experiment), "--compare", f"HEAD:{run}", run, "--json"]) == 0
    both = json.loads(capsys.readouterr().out)
    assert both["config"]["lr"] == [None, 0.002] and both["metrics"]["test f1"] == [0.51, 0.55]


def test_runs_compare_a_run_with_the_same_run_in_another_workspace(workspace, tmp_path, capsys):
    write_run(tmp_path, "twitter2017", "fmit", 1, 0.55, lr=0.002)
    run = "twitter2017/fmit/seed1"
    assert (
        main(["runs", str(tmp_path), "--compare", f"{workspace}:{run}", "train_visual@twitter2017-fmit-1"])
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [f"{workspace}:{run}", run, "difference"]
    assert any(line.split() == ["test", "f1", "51.00", "55.00", "+4.00"] for line in lines)


def test_summarize_refuses_a_score_that_is_not_a_number_naming_the_file(tmp_path):
    """The summarize stage shows it as one line (an InputError), not a TypeError in the mean."""
    from mner import InputError

    directory = write_run(tmp_path, "twitter2017", "linear-crf", 1, 0.5)
    (directory / "eval/metrics.json").write_text('{"f1": "0.5", "precision": 0.6, "recall": 0.4}')
    text_only = pipeline(tmp_path, runs={"text": ["linear-crf"]}, cross_domain=[], cross_domain_runs=[])
    message = f'{directory / "eval/metrics.json"}: f1 is "0.5", not a finite number; run its stage again'
    with pytest.raises(InputError, match=f"^{re.escape(message)}"):
        summarize(text_only, "twitter2017")
