"""What a DVC user compares experiments with: the dev F1 curves that dvc.yaml's top-level plots
overlay (DVCLive's step is the epoch, from 1) and the `dvc exp show` command line that
docs/pipeline.md gives (the changed params and the metrics, no dependency hashes)."""

import csv
import re

from dvc.dependency.param import ParamsDependency
from dvc.repo import Repo
from dvclive import Live

from mner.core.config import load_params
from mner.runs import Pipeline
from tests.conftest import REPO
from tests.test_stage_deps import stages

LIVE_FILE = re.compile(
    r"runs/(?P<dataset>[^/]+)/(?P<run>[^/]+)/seed(?P<seed>\d+)/live/plots/metrics/dev_f1\.tsv"
)


def test_dvclive_logs_each_epoch_at_its_number(tmp_path):
    from mner.train import log_epoch

    with Live(str(tmp_path / "live"), dvcyaml=None, save_dvc_exp=False) as live:
        for epoch, f1 in ((1, 0.25), (2, 0.5)):
            log_epoch(live, {"epoch": epoch, "train_loss": 1.0 / epoch, "dev_f1": f1})
    with open(tmp_path / "live/plots/metrics/dev_f1.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert [(row["step"], row["dev_f1"]) for row in rows] == [("1", "0.25"), ("2", "0.5")]
    assert not (tmp_path / "live/plots/metrics/epoch.tsv").exists()  # the step is the epoch


def test_the_report_curves_read_the_dvclive_steps_as_epochs(tmp_path):
    """The report's training curves (mner/figures.py) start at epoch 1 too."""
    from mner.figures import read_curve
    from mner.train import log_epoch

    with Live(str(tmp_path / "live"), dvcyaml=None, save_dvc_exp=False) as live:
        for epoch in (1, 2):
            log_epoch(live, {"epoch": epoch, "dev_f1": 0.5})
    assert read_curve(tmp_path / "live/plots/metrics/dev_f1.tsv") == ([1, 2], [0.5, 0.5])


def test_the_top_level_plots_overlay_the_dev_f1_of_every_run_of_params_yaml(tmp_path):
    stages("params.yaml", tmp_path)  # dvc.yaml and params.yaml in a DVC repository
    (plots,) = Repo(str(tmp_path)).index._plots.values()
    pipeline = Pipeline.from_params(load_params(REPO / "params.yaml"))
    shown = set()
    for entry in plots:
        ((name, plot),) = entry.items()
        assert name.startswith("dev-f1-")  # `dvc plots show dev-f1` draws them all
        assert plot["x"] == "step" and plot["x_label"] == "epoch"
        assert len(plot["y"]) <= 7  # DVC tells the files of a plot apart by 7 dash patterns
        for path, field in plot["y"].items():
            found = LIVE_FILE.fullmatch(path)
            assert found and field == "dev_f1", path
            assert found["dataset"] in name and int(found["seed"]) == pipeline.seeds[0]
            shown.add((found["dataset"], found["run"]))
    assert shown == {(dataset, run) for dataset in pipeline.datasets for run in pipeline.run_names}
    assert "dvc_plots/" in (REPO / ".gitignore").read_text().splitlines()


def exp_show_drops() -> list[re.Pattern]:
    """The --drop expressions of the `dvc exp show` lines of docs/pipeline.md."""
    text = (REPO / "docs/pipeline.md").read_text()
    return [re.compile(m) for m in re.findall(r"^dvc exp show --only-changed --drop '([^']+)'", text, re.M)]


def test_the_documented_exp_show_drops_every_dependency_and_keeps_params_and_metrics(tmp_path):
    """dvc exp show matches each --drop expression at the start of a column name: a
    dependency's path, a param's or a metric's dotted key."""
    drops = exp_show_drops()
    assert len(drops) >= 2
    deps = {
        str(dep.def_path)
        for stage in stages("params.yaml", tmp_path)
        for dep in stage.deps
        if not isinstance(dep, ParamsDependency)
    }
    params = load_params(REPO / "params.yaml")
    keys = {f"{section}.{key}" for section, values in params.items() for key in values}
    metrics = {
        f"{d}.{run}.{k}"
        for d in ("twitter2017", "twitter2017-on-twitter2015")
        for run in ("fmit", "umt")
        for k in ("f1", "precision", "recall", "seed1")
    }
    for drop in drops:
        assert drop.match("Created") and all(drop.match(dep) for dep in deps | {"runs", "runs/twitter2017"})
        assert not any(drop.match(key) for key in keys)
        assert not any(drop.match(metric) for metric in metrics if metric.endswith(".f1"))
    f1_only = drops[1]
    assert {metric for metric in metrics if not f1_only.match(metric)} == {
        m for m in metrics if m.endswith(".f1")
    }
