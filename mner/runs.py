"""The runs of a workspace: the per-dataset summary that DVC tracks as the pipeline's
metrics (the ``summarize`` stage, one small file per dataset instead of one metrics file
per run), and the listing and side-by-side comparison of ``mner runs``.

A run is a directory ``runs/<dataset>/<model>/seed<k>/`` (see :mod:`mner.core.workspace`) holding
``checkpoint/checkpoint.json`` (the model, its config and the train settings),
``train.json`` (best dev F1 and epoch), ``eval/metrics.json`` (test P/R/F1 and F1 per type)
and, for cross-domain runs, ``cross/<test dataset>/metrics.json``.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

from mner import InputError
from mner.core.config import PLAIN_CHARACTERS, PLAIN_NAME, ConfigError, Range, Seed, section, to_dict
from mner.core.workspace import Workspace, clue_run, evaluation_dir, run_dir
from mner.metrics import format_table
from mner.models import MODELS, REMEDY, CheckpointError, read_record

DATASET_RULE = (
    f"a plain name, as data/<dataset> and runs/<dataset> need {PLAIN_CHARACTERS}; rename the dataset"
)
RUN_RULE = (
    f"a plain name, as runs/<dataset>/<run> and the train stages need {PLAIN_CHARACTERS}; rename the run"
)
SUMMARY_KEYS = ("f1", "precision", "recall")
TRAIN_KEYS = ("lr", "batch_size")  # the train settings a run's config shows


@dataclass(frozen=True)
class RunLists:
    """The entries of ``models`` that the pipeline trains, by the caches they read."""

    text: tuple[str, ...] = ()
    visual: tuple[str, ...] = ()  # read the image stages' caches too


@dataclass(frozen=True)
class CrossDomainPair:
    train: str
    test: str


@dataclass(frozen=True)
class Pipeline:
    """Which datasets, runs and seeds the pipeline makes (the ``pipeline`` params section,
    whose lists also drive dvc.yaml's matrices): the one list of runs that the summary,
    the report and the benchmarks read. dvc.yaml reads every key of it, so a params file
    states them all (no defaults here). ``root``: the workspace its outputs are under."""

    datasets: Annotated[tuple[str, ...], Range(1, length=True)]
    runs: RunLists
    seeds: Annotated[tuple[Seed, ...], Range(1, length=True)]
    cross_domain: tuple[CrossDomainPair, ...]
    cross_domain_runs: tuple[str, ...]  # runs of runs.visual scored on the other dataset
    train_launcher: str
    extract_launcher: str
    clues: tuple[str, ...] = ()  # clue sets (params clues) with a text cache per dataset
    # runs trained on each clue set's text cache: runs of runs.text, or runs whose model reads the
    # clue cells in place of an image's (clue_cells: true), trained over clue sets only
    clue_runs: tuple[str, ...] = ()
    describe: tuple[str, ...] = ()  # datasets whose images the describe stage captions (a clue file)
    root: Path = Path(".")

    def __post_init__(self) -> None:
        where = "params.yaml:pipeline"
        named = {
            "datasets": (self.datasets, DATASET_RULE),
            "runs.text": (self.runs.text, RUN_RULE),
            "runs.visual": (self.runs.visual, RUN_RULE),
            "clue_runs": (self.clue_runs, RUN_RULE),
        }
        for key, (names, rule) in named.items():
            for i, name in enumerate(names):
                if not PLAIN_NAME.fullmatch(name):
                    raise ConfigError(f"{where}.{key}[{i}]: {name!r:.80} is not {rule}")
        for key, names in (("datasets", self.datasets), ("runs", self.run_names), ("seeds", self.seeds)):
            repeated = sorted({str(n) for n in names if names.count(n) > 1})
            if repeated:
                raise ConfigError(f"{where}.{key}: listed more than once: {', '.join(repeated)}")
        for pair in self.cross_domain:
            unknown = [d for d in (pair.train, pair.test) if d not in self.datasets]
            if unknown:
                raise ConfigError(f"{where}.cross_domain: {unknown[0]} is not one of pipeline.datasets")
        stray = [run for run in self.cross_domain_runs if run not in self.runs.visual]
        if stray:
            raise ConfigError(f"{where}.cross_domain_runs: {stray[0]} is not one of pipeline.runs.visual")
        stray = [dataset for dataset in self.describe if dataset not in self.datasets]
        if stray:
            raise ConfigError(f"{where}.describe: {stray[0]} is not one of pipeline.datasets")
        stray = [run for run in self.clue_runs if run in self.runs.visual]
        if stray:
            raise ConfigError(
                f"{where}.clue_runs: {stray[0]} is one of pipeline.runs.visual (it reads images); a "
                "multimodal model reads a clue set as a run of its own with clue_cells: true"
            )

    @classmethod
    def from_params(cls, params: Mapping[str, Any], root: Path | str = ".") -> Pipeline:
        return replace(section(params, "pipeline", cls), root=Path(root))

    @property
    def run_names(self) -> list[str]:
        """Every run (an entry of ``models``), the text-only ones first."""
        return [*self.runs.text, *self.runs.visual]

    @property
    def trained_runs(self) -> list[str]:
        """Every entry of ``models`` that a train stage trains: :attr:`run_names`, then the runs
        trained over clue sets only."""
        return [*self.run_names, *(run for run in self.clue_runs if run not in self.run_names)]

    @property
    def clued_runs(self) -> list[str]:
        """Every run read with a clue set, ``<run>+<clue set>`` (its directory under runs/)."""
        return [clue_run(run, clues) for run in self.clue_runs for clues in self.clues]

    def path(self, path: Path) -> Path:
        return self.root / path

    def workspace(self, dataset: str) -> Workspace:
        """Where ``dataset``'s prepared splits and caches are in this pipeline's directory."""
        return Workspace(dataset, self.root)


def is_main_run(run: str, model: str) -> bool:
    """Whether ``run`` (an entry of ``models`` building ``model``) is the model's main run, whose
    attention, visual use and case study the report shows: the run named after its model, so
    that a run's own entry says it (the others of the model are its ablations)."""
    return run == model


def summarize(pipeline: Pipeline, dataset: str) -> dict[str, dict]:
    """The test scores of every run trained on ``dataset``, means over the seeds rounded to
    4 decimals: ``{dataset: {run: {f1, precision, recall[, seed<k>: f1 of each seed when
    there are several]}}}``, then one ``<dataset>-on-<test>`` entry per cross-domain pair
    trained on ``dataset``."""
    root, seeds = pipeline.root, pipeline.seeds
    runs = [*pipeline.run_names, *pipeline.clued_runs]
    summary = {dataset: {run: summarize_run(root, dataset, run, seeds) for run in runs}}
    for pair in pipeline.cross_domain:
        if pair.train == dataset:
            summary[f"{dataset}-on-{pair.test}"] = {
                run: summarize_run(root, dataset, run, seeds, pair.test) for run in pipeline.cross_domain_runs
            }
    return summary


def summarize_run(
    root: Path, dataset: str, run: str, seeds: Sequence[int], test: str | None = None
) -> dict[str, float]:
    """Mean P/R/F1 of ``run`` over ``seeds`` (on ``test``'s test set) and each seed's F1."""
    metrics = []
    for seed in seeds:
        path = root / evaluation_dir(dataset, run, seed, test) / "metrics.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; run the evaluate stages first (dvc repro)")
        metrics.append(read_numbers(path))
        missing = [key for key in SUMMARY_KEYS if key not in metrics[-1]]
        if missing:
            raise ValueError(f"{path}: no {', '.join(missing)}; run its evaluate stage again (dvc repro)")
    summary = {key: round(statistics.mean(m[key] for m in metrics), 4) for key in SUMMARY_KEYS}
    if len(seeds) > 1:
        summary |= {f"seed{seed}": round(m["f1"], 4) for seed, m in zip(seeds, metrics)}
    return summary


def read_json(path: Path) -> dict:
    """The JSON object in ``path`` (anything else is refused, naming the file)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


WHOLE_NUMBERS = ("best_epoch", "processes")  # the train.json values that count something


def read_numbers(path: Path) -> dict[str, float | int]:
    """The JSON object of numbers in ``path``, a run's ``train.json`` or ``metrics.json``
    (anything else is refused, naming the file and the key: a string would print as text, a
    score as a string repeated 100 times)."""
    values = read_json(path)
    for key, value in values.items():
        whole = key in WHOLE_NUMBERS
        number = isinstance(value, int) or (not whole and isinstance(value, float) and math.isfinite(value))
        if not number or isinstance(value, bool):
            raise InputError(
                f"{path}: {key} is {json.dumps(value)[:80]}, not a {'whole' if whole else 'finite'} "
                "number; run its stage again (dvc repro)"
            )
    return values


def read_optional(path: Path) -> dict | None:
    """The numbers in ``path`` (:func:`read_numbers`); None when there is no such file (yet)."""
    return read_numbers(path) if path.is_file() else None


@dataclass(frozen=True)
class RunInfo:
    """What a run directory holds; None (or empty) for what is not written yet."""

    dataset: str
    model: str  # the run name, as under models: in params.yaml
    seed: int
    record: dict | None  # checkpoint.json
    train: dict | None  # train.json
    test: dict | None  # eval/metrics.json
    cross: dict[str, dict] = field(default_factory=dict)  # cross/<test>/metrics.json by test dataset

    @property
    def name(self) -> str:
        return run_dir(self.dataset, self.model, self.seed).relative_to("runs").as_posix()

    @property
    def stage_name(self) -> str:
        """The name in the DVC stages' matrix, as in ``train@<this>`` (``train_clues@<this>`` for
        a run read with a clue set)."""
        run, _, clues = self.model.partition("+")
        return "-".join([self.dataset, run, *([clues] if clues else []), str(self.seed)])

    @property
    def clues(self) -> str | None:
        """The clue set its text features read (None: the tweets alone)."""
        recorded = ((self.record or {}).get("text_features") or {}).get("clues")
        return recorded.get("name") if isinstance(recorded, dict) else self.model.partition("+")[2] or None

    @property
    def config(self) -> dict[str, Any]:
        """The train lr and batch size, then the model config keys that differ from the
        registered model's defaults."""
        if self.record is None:
            return {}
        model = self.record["model"]
        defaults = to_dict(MODELS[model][0]()) if isinstance(model, str) and model in MODELS else {}
        train = self.record.get("train") or {}
        changed = {k: v for k, v in self.record["config"].items() if k not in defaults or defaults[k] != v}
        return {**{k: train[k] for k in TRAIN_KEYS if k in train}, **changed}

    def setting(self, key: str) -> Any:
        """The value of a train or model config key (None when the run has none)."""
        if self.record is None:
            return None
        if key == "model":
            return self.record["model"]
        if key in TRAIN_KEYS:
            return (self.record.get("train") or {}).get(key)
        return self.record["config"].get(key)

    @property
    def metrics(self) -> dict[str, float | int]:
        """Test scores, the training summary and the cross-domain F1, flat."""
        found: dict[str, float | int] = {f"test {k}": v for k, v in (self.test or {}).items()}
        for name, key in (("dev f1", "best_dev_f1"), ("best epoch", "best_epoch")):
            if key in (self.train or {}):
                found[name] = self.train[key]
        for test, metrics in self.cross.items():
            found |= {f"on {test} {k}": v for k, v in metrics.items()}
        return found

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": self.name,
            "dataset": self.dataset,
            "model": self.model,
            "seed": self.seed,
            "clues": self.clues,
            "config": self.config,
            "train": self.train,
            "test": self.test,
            "cross": self.cross,
        }


def list_runs(workspace: Path | str) -> list[RunInfo]:
    """Every run under ``workspace/runs``, by dataset, run name and seed."""
    root = Path(workspace) / "runs"
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not found; run the pipeline there first (dvc repro)")
    runs = []
    for directory in root.glob("*/*/seed*"):
        seed = directory.name.removeprefix("seed")
        if not directory.is_dir() or not seed.isdigit():
            continue
        checkpoint = directory / "checkpoint" / "checkpoint.json"
        crossed = sorted(directory.glob("cross/*/metrics.json"))
        cross = {path.parent.name: read_numbers(path) for path in crossed}
        runs.append(
            RunInfo(
                dataset=directory.parent.parent.name,
                model=directory.parent.name,
                seed=int(seed),
                record=read_checkpoint_record(checkpoint) if checkpoint.exists() else None,
                train=read_optional(directory / "train.json"),
                test=read_optional(directory / "eval" / "metrics.json"),
                cross=cross,
            )
        )
    return sorted(runs, key=lambda run: (run.dataset, run.model, run.seed))


def read_checkpoint_record(path: Path) -> dict:
    """``checkpoint.json`` as :func:`mner.models.read_record` checks it, its config and
    train settings objects."""
    record = read_record(path)
    for key in ("config", "train"):
        if not isinstance(record.get(key, {}), dict):
            raise CheckpointError(f"{path}: {key} is not a JSON object; {REMEDY}")
    return record


def find_run(runs: Sequence[RunInfo], name: str, workspace: Path | str) -> RunInfo:
    """The run named ``name``: ``<dataset>/<model>/seed<k>`` (``runs/`` in front allowed)
    or a DVC stage name such as ``train@<dataset>-<model>-<k>`` or ``<dataset>-<model>-<k>``."""
    wanted = name.split("@")[-1].strip("/").removeprefix("runs/")
    for run in runs:
        if wanted in (run.name, run.stage_name):
            return run
    known = ", ".join(run.name for run in runs[:6]) + (", ..." if len(runs) > 6 else "")
    raise ValueError(f"{Path(workspace) / 'runs'}: no run {name!r}; runs there: {known or 'none'}")


def locate_run(spec: str, workspace: Path | str) -> tuple[RunInfo, str]:
    """The run that ``spec`` names and its label: ``RUN``, a run of ``workspace`` as
    :func:`find_run` takes it; ``WHERE:RUN``, that run in the workspace directory ``WHERE`` or,
    when no such directory exists, in the git revision ``WHERE`` of ``workspace`` (a commit,
    branch, tag or DVC experiment name: :func:`list_runs_at`). The label is its run name, with
    ``WHERE:`` in front for a run from elsewhere."""
    where, _, name = spec.rpartition(":")
    if not where:
        run = find_run(list_runs(workspace), name, workspace)
        return run, run.name
    if Path(where).is_dir():
        run = find_run(list_runs(where), name, where)
    else:
        run = find_run(list_runs_at(workspace, where), name, f"{workspace} at {where}")
    return run, f"{where}:{run.name}"


RUN_FILES = ("train.json", "eval/metrics.json", "cross/*/metrics.json", "checkpoint/checkpoint.json")


def list_runs_at(workspace: Path | str, rev: str) -> list[RunInfo]:
    """:func:`list_runs` of the git revision ``rev`` of the DVC repository ``workspace``:
    the run files that git holds (``train.json``, the metrics) and the checkpoint records
    that the DVC cache holds (a run whose checkpoint is not in the cache shows no config)."""
    import tempfile

    from dvc.api import DVCFileSystem
    from dvc.exceptions import DvcException

    try:
        fs = DVCFileSystem(str(workspace), rev=rev)
        paths = [path for pattern in RUN_FILES for path in fs.glob(f"runs/*/*/seed*/{pattern}")]
    except DvcException as error:  # not a git repository, no such revision
        raise ValueError(f"{rev}: neither a directory nor a git revision of {workspace} ({error})") from None
    with tempfile.TemporaryDirectory() as copy:
        for path in paths:
            try:
                text = fs.read_text(path, encoding="utf-8")
            except (OSError, DvcException):  # a checkpoint outside the local DVC cache
                continue
            (Path(copy) / path).parent.mkdir(parents=True, exist_ok=True)
            (Path(copy) / path).write_text(text, encoding="utf-8")
        if not paths:
            raise FileNotFoundError(f"{workspace} at {rev}: no runs there")
        try:
            return list_runs(copy)
        except ValueError as error:  # name the file as it is in the revision, not in the copy
            raise ValueError(str(error).replace(f"{copy}/", f"{rev}:")) from None


def runs_table(runs: Sequence[RunInfo]) -> str:
    """One line per run: test P/R/F1 and best dev F1 in percent, the best epoch, the clue set
    its text features read and, last, the config; "-" for what is not written yet (or none)."""
    table = {}
    for run in runs:
        test, train = run.test or {}, run.train or {}
        table[run.name] = {
            "P": percent(test.get("precision")),
            "R": percent(test.get("recall")),
            "F1": percent(test.get("f1")),
            "dev F1": percent(train.get("best_dev_f1")),
            "best epoch": train.get("best_epoch", "-"),
            "clues": run.clues or "-",
        }
    lines = format_table(table, ("P", "R", "F1", "dev F1", "best epoch", "clues")).splitlines()
    configs = ["config", *(" ".join(f"{k}={text(v)}" for k, v in run.config.items()) or "-" for run in runs)]
    return "\n".join(f"{line}  {config}" for line, config in zip(lines, configs))


def comparison(a: RunInfo, b: RunInfo) -> dict[str, dict[str, list]]:
    """Side by side, ``[value of a, value of b]`` (None where a run has none): the config
    (the model, train lr and batch size, every model key either run changes from its
    defaults) and every metric of either run."""
    keys = dict.fromkeys(["model", *TRAIN_KEYS, *a.config, *b.config])
    metrics = dict.fromkeys([*a.metrics, *b.metrics])
    return {
        "config": {key: [a.setting(key), b.setting(key)] for key in keys},
        "metrics": {key: [a.metrics.get(key), b.metrics.get(key)] for key in metrics},
    }


def compare_table(a: RunInfo, b: RunInfo, labels: tuple[str, str] | None = None) -> str:
    """The :func:`comparison` as a table, scores in percent, with a column of the
    differences (``b - a`` for metrics, ``differs`` for config values); the columns are
    headed by ``labels`` (default: the run names)."""
    both = comparison(a, b)
    name_a, name_b = labels or (a.name, b.name)
    table = {}
    for key, (x, y) in both["config"].items():
        table[key] = {name_a: text(x), name_b: text(y), "difference": "differs" if x != y else ""}
    for key, (x, y) in both["metrics"].items():
        epochs = key == "best epoch"
        cells = ["-" if v is None else v if epochs else 100 * v for v in (x, y)]
        change = (
            "" if x is None or y is None or x == y else f"{y - x:+d}" if epochs else f"{100 * (y - x):+.2f}"
        )
        table[key] = {name_a: cells[0], name_b: cells[1], "difference": change}
    return format_table(table, (name_a, name_b, "difference"))


def percent(value: float | None) -> float | str:
    return "-" if value is None else 100 * value


def text(value: Any) -> str:
    """A config value as in params.yaml (JSON spelling; "-" for none)."""
    if value is None:
        return "-"
    return value if isinstance(value, str) else json.dumps(value)
