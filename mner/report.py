"""The ``report`` stage: the papers' tables filled from the pipeline's evaluation outputs
(mean ± std over seeds, the published numbers beside them; each of our rows with the number
of seeds and what it was trained with), the efficiency table measured on the trained
checkpoints, and the figures (PNG files, readable offline). It reads files only: each run's
evaluation, checkpoint record, training curves and the ``analyze`` stage's files
(:mod:`mner.analysis`: speed, attention example and visual use, measured by running the
model), and the images it draws; it runs no model.

Tables: main results (FMIT Table 2 / GEI Table 1), the ablations of both papers (GEI
Table 1, FMIT Table 5), cross-domain results (FMIT Table 4) and the interaction phase's
parameters and relative speed (FMIT Table 3), and the visual-use diagnostic of the main
multimodal runs (:mod:`mner.visual_use`: test F1 with the tweets' own visual features, the
blank image's and another tweet's). Figures: training curves, per-type F1 bars,
GEI's entity -> object and FMIT's word -> visual attention drawn over the image, and the
case study (tweets where the multimodal models disagree with the text-only baseline).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

from mner import published
from mner.core.config import from_dict
from mner.core.workspace import clue_run, evaluation_dir, image_report, run_dir
from mner.data.conll import Sentence, read_conll
from mner.data.labels import entities
from mner.data.prepared import read_prepared
from mner.models import read_record
from mner.report_config import ReportConfig
from mner.runs import Pipeline, is_main_run

OVERALL_KEYS = {"P": "precision", "R": "recall", "F1": "f1"}  # the columns after the per-type F1s
MODEL_WIDTHS = ("text_hidden", "hidden", "d_m", "d", "ff", "layers", "heads")  # named in a run's setup
MIN_SPEED_BATCHES = 10  # fewer timed batches and the efficiency table warns
FIGURE_CONTENTS = {
    "curves": "dev F1 and training loss per epoch, one column per model family",
    "type-f1": "test F1 per entity type of every run",
}


def read_metrics(pipeline: Pipeline, dataset: str, run: str, test: str | None = None) -> list[dict]:
    """The metrics.json of every seed of a run (its cross-domain ones with ``test``)."""
    found = []
    for seed in pipeline.seeds:
        path = pipeline.path(evaluation_dir(dataset, run, seed, test)) / "metrics.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; run the evaluate stages first (dvc repro)")
        found.append(json.loads(path.read_text()))
    return found


def aggregate(metrics: Sequence[dict]) -> dict[str, list[float]]:
    """Per column, [mean, std] in percent over the seeds (std 0 for one seed): the F1 of
    each entity type the metrics hold (``f1_<type>``, in their order), then P, R and F1."""
    types = dict.fromkeys(key for m in metrics for key in m if key.startswith("f1_"))
    out = {}
    for column, key in {**{key[3:]: key for key in types}, **OVERALL_KEYS}.items():
        values = [100 * m[key] for m in metrics if key in m]
        if values:
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            out[column] = [statistics.mean(values), std]
    return out


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in rows)])


def columns(ours: Mapping[str, Mapping[str, list[float]]]) -> list[str]:
    """The table's columns: the entity types of the dataset as its scores give them (F1 per
    type), then P, R and F1."""
    types = dict.fromkeys(c for cells in ours.values() for c in cells if c not in OVERALL_KEYS)
    return [*types, *OVERALL_KEYS]


def _ours(cells: dict[str, list[float]], seeds: int, columns: Sequence[str]) -> list[str]:
    """Our cells: the mean, with ± the std when there are several seeds."""
    if seeds == 1:
        return [f"{cells[c][0]:.2f}" if c in cells else "-" for c in columns]
    return [f"{cells[c][0]:.2f} ± {cells[c][1]:.2f}" if c in cells else "-" for c in columns]


def _published(row: dict[str, float | None], columns: Sequence[str]) -> list[str]:
    return [f"{row[c]:.2f}" if row.get(c) is not None else "-" for c in columns]


def published_rows(dataset: str, tables: Sequence[published.Table]) -> list[tuple[str, str, dict]]:
    """The rows of the published ``tables`` with a number for ``dataset`` (a row that is all
    ``-`` there is left out): each row's name, its table's source and its cells."""
    return [
        (name, table.source, row[dataset])
        for table in tables
        for name, row in table.rows.items()
        if any(value is not None for value in row.get(dataset, {}).values())
    ]


def results_table(
    dataset: str,
    ours: dict[str, dict],
    tables: Sequence[published.Table],
    seeds: int = 1,
    setups: Mapping[str, str] | None = None,
    counterparts: Mapping[str, str | None] | None = None,
) -> str:
    """One dataset's table: the rows of each published table (marked with its source) that
    have numbers for ``dataset``, then our runs, each with its number of seeds ``n`` and its
    setup (:func:`describe_run`), and ``cf.`` its counterpart (:func:`run_counterparts`)
    when that row is in the table; a column per entity type of the dataset."""
    shown = columns(ours)
    header = ["model", *shown, "n", "setup"]
    found = published_rows(dataset, tables)
    rows = [
        [f"{name} (published, {source})", *_published(row, shown), "-", "-"] for name, source, row in found
    ]
    for run, cells in ours.items():
        counterpart = (counterparts or {}).get(run)
        compared = f", cf. {counterpart}" if counterpart in {name for name, _, _ in found} else ""
        label = f"**{run}** (ours{compared})"
        rows.append([label, *_ours(cells, seeds, shown), str(seeds), (setups or {}).get(run, "-")])
    return markdown_table(header, rows)


def model_name(model: str, root: Path = Path(".")) -> str:
    """A model as the report names it: a local directory by its own name, a hub id as is."""
    local = Path(model).is_absolute() or model.startswith((".", "~")) or (root / model).is_dir()
    return Path(model).name if local else model


def describe_run(record: dict, root: Path = Path(".")) -> str:
    """What a run was trained with, from its checkpoint record: the frozen text encoder
    (its layers, pooling and width), the visual backbone of a multimodal run, then the
    model's widths, e.g. ``bert-base-cased, layers -1 -2 -3 -4, first pooling, 768-d;
    resnet152; d_m 512, layers 6, heads 8``."""
    text = record.get("text_features") or {}
    params = text.get("params") or {}
    layers = " ".join(str(k) for k in params.get("layers", []))
    width = text.get("hidden_size") or record.get("inputs", {}).get("text_dim")
    parts = [
        f"{model_name(str(text.get('model') or params.get('model', '?')), root)}, layers {layers}, "
        f"{params.get('pooling', '?')} pooling, {width}-d"
    ]
    visual = record.get("visual_features") or {}
    if visual.get("stage") == "visual_features" and (visual.get("params") or {}).get("model"):
        parts.append(model_name(str(visual["params"]["model"]), root))
    clues = text.get("clues") or {}
    if clues.get("name"):
        cells = (record.get("config") or {}).get("clue_cells")
        parts.append(f"clue set {clues['name']} ({'context and cells' if cells else 'context'})")
    config = record.get("config") or {}
    widths = ", ".join(f"{key} {config[key]}" for key in MODEL_WIDTHS if key in config)
    return "; ".join([*parts, *([widths] if widths else [])])


def run_records(pipeline: Pipeline, dataset: str, runs: Sequence[str]) -> dict[str, dict]:
    """Per run, the checkpoint record of its first seed on ``dataset``."""
    seed = pipeline.seeds[0]
    return {
        run: read_record(pipeline.path(run_dir(dataset, run, seed)) / "checkpoint" / "checkpoint.json")
        for run in runs
    }


def run_setups(pipeline: Pipeline, dataset: str, runs: Sequence[str]) -> dict[str, str]:
    """Per run, :func:`describe_run` of its first seed's checkpoint on ``dataset``."""
    return {
        run: describe_run(record, pipeline.root)
        for run, record in run_records(pipeline, dataset, runs).items()
    }


def counterpart(record: dict) -> str | None:
    """The published row a run reproduces, from its checkpoint record: the row of its model
    and configuration (:func:`mner.published.counterpart`; FMIT with l layers: FMIT (l=<l>)),
    none for a run that read a clue set (the papers' rows read none)."""
    if ((record.get("text_features") or {}).get("clues") or {}).get("name"):
        return None
    return published.counterpart(record["model"], record.get("config") or {})


def run_counterparts(pipeline: Pipeline, dataset: str, runs: Sequence[str]) -> dict[str, str | None]:
    """Per run, :func:`counterpart` of its first seed's checkpoint on ``dataset``."""
    return {run: counterpart(record) for run, record in run_records(pipeline, dataset, runs).items()}


def parameter_count(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e5 else f"{n / 1e3:.1f}k"


def evaluated_scheme(pipeline: Pipeline) -> str:
    """The scoring scheme of the evaluations the report reads (every run's ``scores.json``
    on its own test set records it)."""
    found = {
        json.loads((pipeline.path(evaluation_dir(d, run, seed)) / "scores.json").read_text())["scheme"]
        for d in pipeline.datasets
        for run in pipeline.run_names
        for seed in pipeline.seeds
    }
    if len(found) != 1:
        schemes = ", ".join(sorted(found))
        raise ValueError(f"the runs were scored with different schemes ({schemes}): rerun evaluate")
    return found.pop()


def analysis_file(pipeline: Pipeline, dataset: str, run: str, name: str):
    """The ``analysis/<name>.json`` of ``run``'s first seed on ``dataset``, as the analyze
    stage wrote it (:mod:`mner.analysis`; null for a part the report does not read)."""
    path = pipeline.path(run_dir(dataset, run, pipeline.seeds[0])) / "analysis" / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; run the analyze stages first (dvc repro)")
    found = json.loads(path.read_text())
    if found is None:
        raise ValueError(f"{path}: holds no {name} (null); rerun its analyze stage (dvc repro)")
    return found


def efficiency(pipeline: Pipeline) -> list[dict]:
    """FMIT Table 3 measured here: per multimodal run (first seed, first dataset), the
    interaction phase's parameters and its test-set time (its ``analysis/speed.json``) and
    the speed relative to the slowest (None with fewer than two runs: nothing to compare
    with). All runs time the same test batches, each in its own analyze stage (a process of
    its own)."""
    dataset = pipeline.datasets[0]
    rows = [analysis_file(pipeline, dataset, run, "speed") for run in pipeline.runs.visual]
    slowest = max((r["seconds"] for r in rows), default=0.0)
    for row in rows:
        row["speedup"] = slowest / row["seconds"] if row["seconds"] and len(rows) > 1 else None
    return rows


def relative_speed_note(rows: list[dict]) -> str:
    """What the measured speed of the efficiency table is relative to: the slowest run here,
    or, with fewer than two runs, why there is none."""
    if len(rows) > 1:
        return "speed relative to the slowest run here"
    runs = f"{len(rows)} multimodal run{'' if len(rows) == 1 else 's'}"
    return f"no relative speed: {runs} here, none to compare with"


def speed_warning(rows: list[dict], config: ReportConfig) -> str | None:
    """A warning when the efficiency table timed fewer than :data:`MIN_SPEED_BATCHES`
    batches (too few for a stable time), naming why and what to change."""
    batches = min((row.get("batches", MIN_SPEED_BATCHES) for row in rows), default=MIN_SPEED_BATCHES)
    if batches >= MIN_SPEED_BATCHES:
        return None
    count = f"{batches} batch{'es' if batches != 1 else ''}"
    why = (
        f"`report.speed_batches` is {config.speed_batches}"
        if batches == config.speed_batches
        else f"the test set has only {count} of {config.batch_size}"
    )
    return (
        f"**Warning:** the speeds above timed only {count} of the test set "
        f"per run ({why}); under {MIN_SPEED_BATCHES} batches they are mostly noise: raise "
        "`report.speed_batches` (0: all) or time a larger test set."
    )


def efficiency_table(rows: list[dict], counterparts: Mapping[str, str | None] | None = None) -> str:
    """The efficiency rows (:func:`efficiency`), each beside the published speed and
    parameters of its counterpart (:func:`run_counterparts`) where FMIT Table 3 has them;
    the measured speed relative to the slowest run where there is one, its time always."""
    header = ["model", "parameters", "speed (measured)", "published speed", "published parameters"]
    lines = []
    for row in rows:
        counterpart = (counterparts or {}).get(row["run"]) or ""
        speed, parameters = published.FMIT_EFFICIENCY.get(counterpart, ("-", "-"))
        time = f"{1000 * row['seconds']:.1f} ms"
        measured = f"{row['speedup']:.2f}x ({time})" if row.get("speedup") is not None else time
        lines.append([row["run"], parameter_count(row["parameters"]), measured, speed, parameters])
    return markdown_table(header, lines)


def visual_use_of_runs(pipeline: Pipeline, config: ReportConfig, runs: Sequence[str]) -> dict:
    """Per dataset and run of ``runs``, the :class:`mner.visual_use.VisualUse` record of
    its first seed's checkpoint on the test set (its ``analysis/visual_use.json``; none
    with ``config.visual_use`` off)."""
    if not config.visual_use:
        return {}
    return {
        dataset: {run: analysis_file(pipeline, dataset, run, "visual_use") for run in runs}
        for dataset in pipeline.datasets
    }


def visual_use_table(runs: dict[str, dict]) -> str:
    header = ["run", "visual inputs", "P", "R", "F1", "ΔF1", "entities", "changed tweets", "changed words"]
    rows = [
        [run, condition, *(f"{100 * c[k]:.2f}" for k in ("precision", "recall", "f1"))]
        + [f"{round(100 * c['delta_f1'], 2) + 0.0:+.2f}", str(c["entities"])]
        + [f"{100 * c[k]:.1f}%" for k in ("changed_tweets", "changed_words")]
        for run, result in runs.items()
        for condition, c in result["conditions"].items()
    ]
    return markdown_table(header, rows)


def blank_tweets(counts: Mapping[str, int]) -> int:
    """The tweets of a dataset's :func:`image_counts` whose image was blank, all problems."""
    return sum(n for problem, n in counts.items() if problem != "images")


def all_blank(counts: Mapping[str, Mapping[str, int]]) -> list[str]:
    """The datasets of :func:`image_counts` every one of whose images was blank."""
    return [d for d, c in counts.items() if c.get("images", 0) and blank_tweets(c) == c["images"]]


def image_counts(pipeline: Pipeline) -> dict[str, dict[str, int]]:
    """Per dataset, the tweets whose image was blank, by problem (all splits)."""
    counts = {}
    for dataset in pipeline.datasets:
        path = image_report(pipeline.workspace(dataset).cache("visual"))
        if not path.is_file():
            continue
        totals: dict[str, int] = {}
        for split_counts in json.loads(path.read_text())["counts"].values():
            for problem, n in split_counts.items():
                totals[problem] = totals.get(problem, 0) + n
        counts[dataset] = totals
    return counts


def predicted_entities(path: Path) -> list[set[tuple[int, int, str]]]:
    """Per tweet of a predictions file, its (start, end, type) entities."""
    return [{(e.start, e.end, e.type) for e in entities(s.labels)} for s in read_conll(path)]


def case_study(pipeline: Pipeline, config: ReportConfig, dataset: str, runs: Sequence[str]) -> dict:
    """FMIT's Figure 3 and 4 as numbers: per run, the gold entities the baseline misses
    and the run finds (corrected) and the reverse (broken); and the tweets where the runs
    disagree with the baseline, those where a run is right and the baseline wrong first."""
    seed = pipeline.seeds[0]
    gold_sentences = read_prepared(pipeline.workspace(dataset).prepared / "test.jsonl")
    gold = [{(e.start, e.end, e.type) for e in entities(s.labels)} for s in gold_sentences]

    def predictions(run: str) -> list[set]:
        return predicted_entities(pipeline.path(run_dir(dataset, run, seed)) / "eval" / "predictions.txt")

    baseline = predictions(config.baseline)
    predicted = {run: predictions(run) for run in runs}
    counts = {
        run: {
            "corrected": sum(len((g & p) - b) for g, p, b in zip(gold, found, baseline)),
            "broken": sum(len((g & b) - p) for g, p, b in zip(gold, found, baseline)),
        }
        for run, found in predicted.items()
    }
    differing = [i for i in range(len(gold)) if any(predicted[r][i] != baseline[i] for r in runs)]
    differing.sort(key=lambda i: not any(predicted[r][i] == gold[i] != baseline[i] for r in runs))

    def spans(sentence: Sentence, found: set) -> str:
        return ", ".join(f"{' '.join(sentence.tokens[s:e])} ({t})" for s, e, t in sorted(found)) or "-"

    tweets = [
        {
            "id": gold_sentences[i].id,
            "text": " ".join(gold_sentences[i].tokens),
            "gold": spans(gold_sentences[i], gold[i]),
            config.baseline: spans(gold_sentences[i], baseline[i]),
            **{run: spans(gold_sentences[i], predicted[run][i]) for run in runs},
        }
        for i in differing[: config.case_studies]
    ]
    return {"dataset": dataset, "seed": seed, "counts": counts, "tweets": tweets}


def case_study_markdown(study: dict, baseline: str, runs: Sequence[str]) -> str:
    counts = markdown_table(
        ["run", f"corrected (missed by {baseline})", f"broken (found by {baseline})"],
        [[run, str(c["corrected"]), str(c["broken"])] for run, c in study["counts"].items()],
    )
    if not study["tweets"]:
        return f"{counts}\n\nNo test tweet where they disagree with {baseline}."
    tweets = markdown_table(
        ["tweet", "gold", baseline, *runs],
        [[t["text"], t["gold"], t[baseline], *(t[r] for r in runs)] for t in study["tweets"]],
    )
    return f"{counts}\n\n{tweets}"


def write_report(pipeline: Pipeline, config: ReportConfig, settings: dict, out_dir: Path) -> dict:
    """Write ``results.md``, ``results.json`` and ``figures/`` under ``out_dir``; returns
    the JSON record. ``settings``: the scoring scheme, BIO policy and images params."""
    from mner import figures

    out_dir.mkdir(parents=True, exist_ok=True)
    figure_dir = out_dir / "figures"
    ours = {
        d: {run: aggregate(read_metrics(pipeline, d, run)) for run in pipeline.run_names}
        for d in pipeline.datasets
    }
    clued = {d: {run: aggregate(read_metrics(pipeline, d, run)) for run in pipeline.clued_runs} for d in ours}
    cross = {
        pair.test: {
            run: aggregate(read_metrics(pipeline, pair.train, run, pair.test))
            for run in pipeline.cross_domain_runs
        }
        for pair in pipeline.cross_domain
    }
    speed = efficiency(pipeline)
    families = model_families(pipeline)
    main_runs = [run for model, runs in families.items() for run in runs if is_main_run(run, model)]
    studies = {d: case_study(pipeline, config, d, main_runs) for d in pipeline.datasets}
    trained_on = {*pipeline.datasets, *(pair.train for pair in pipeline.cross_domain)}
    record = {
        "settings": settings,
        "seeds": list(pipeline.seeds),
        "setup": {d: run_setups(pipeline, d, pipeline.run_names) for d in sorted(trained_on)},
        "counterparts": {d: run_counterparts(pipeline, d, pipeline.run_names) for d in sorted(trained_on)},
        "results": ours,
        "clue_setup": {d: run_setups(pipeline, d, pipeline.clued_runs) for d in pipeline.datasets},
        "clue_results": clued,
        "cross_domain": cross,
        "efficiency": speed,
        "blank_images": image_counts(pipeline),
        "case_study": studies,
        "visual_use": visual_use_of_runs(pipeline, config, main_runs),
    }
    blank = all_blank(record["blank_images"])
    written = _figures(pipeline, ours, families, settings, figure_dir, figures, blank)
    record["figures"] = [path.relative_to(out_dir).as_posix() for path in written]
    (out_dir / "results.json").write_text(json.dumps(record, indent=2) + "\n")
    attention = attention_figures(pipeline, families)
    (out_dir / "results.md").write_text(
        _markdown(pipeline, config, record, families, written, out_dir, attention)
    )
    return record


def attention_figures(pipeline: Pipeline, families: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """What the attention figure of each model's main run shows, by the start of the
    figure's name (``attention-<run>``), as its analysis on the first dataset says."""
    first = pipeline.datasets[0]
    return {
        f"attention-{runs[0]}": analysis_file(pipeline, first, runs[0], "attention")["figure"]
        for runs in families.values()
    }


def model_families(pipeline: Pipeline) -> dict[str, list[str]]:
    """The visual runs by the registered model they train (read from their first
    checkpoint), in the order of ``pipeline.runs.visual``: the run named after the model is
    its main run (:func:`mner.runs.is_main_run`), the others its ablations."""
    dataset, seed = pipeline.datasets[0], pipeline.seeds[0]
    families: dict[str, list[str]] = {}
    for run in pipeline.runs.visual:
        record = read_record(pipeline.path(run_dir(dataset, run, seed)) / "checkpoint" / "checkpoint.json")
        families.setdefault(record["model"], []).append(run)
    return families


def _figures(
    pipeline, ours, families, settings, figure_dir: Path, figures, blank: Sequence[str] = ()
) -> list[Path]:
    """Draw the figures, each dataset's curves, per-type bars and, unless every image of
    the dataset is blank (``blank``: :func:`all_blank`), its attention figures."""
    from mner.features.images import ImageSource
    from mner.settings.images import ImagesConfig

    written = []
    colours = figures.run_colours(pipeline.run_names)
    main_runs = [run for model, runs in families.items() for run in runs if is_main_run(run, model)]
    for dataset in pipeline.datasets:
        name = published.dataset_name(dataset)
        curves = {
            family: {
                run: [pipeline.path(run_dir(dataset, run, s)) / "live/plots/metrics" for s in pipeline.seeds]
                for run in runs
            }
            for family, runs in {"text": pipeline.runs.text, **families}.items()
            if runs
        }
        written.append(figure_dir / f"curves-{dataset}.png")
        figures.training_curves(curves, colours, written[-1], f"{name}: training curves")
        written.append(figure_dir / f"type-f1-{dataset}.png")
        seeds = len(pipeline.seeds)
        figures.type_f1_bars(
            ours[dataset], colours, written[-1], f"{name}: F1 per type (test, n = {seeds})", seeds
        )
        if dataset in blank:
            continue
        images = {**settings["images"], "missing": "blank"}
        images["dir"] = str(pipeline.path(Path(images["dir"])))
        source = ImageSource(from_dict(ImagesConfig, images, "params.yaml:images"), dataset)
        for run in main_runs:
            example = analysis_file(pipeline, dataset, run, "attention")["example"]
            if example and example["entities"]:
                written.append(figure_dir / f"attention-{run}-{dataset}.png")
                figures.attention_over_image(example, source.load(example["image_id"]).image, written[-1])
    return written


def titled(heading: str, dataset: str, tables: Sequence[published.Table]) -> str:
    """``heading`` with the published tables that have numbers for ``dataset``."""
    cited = [table.title for table in tables if published_rows(dataset, [table])]
    return f"{heading} ({', '.join(cited)})" if cited else heading


def results_sections(
    dataset: str,
    ours: Mapping[str, dict],
    families: Mapping[str, Sequence[str]],
    seeds: int,
    setups: dict,
    counterparts: Mapping[str, str | None] | None = None,
) -> list[str]:
    """The main table of ``dataset`` (every run) and one ablation table per registered model
    of the visual runs (its ``families``), each with the published tables it has; none for a
    model with neither ablation runs nor published ablations (UMT here)."""
    name = published.dataset_name(dataset)
    parts = [titled(f"## Main results: {name}", dataset, published.MAIN)]
    parts += [results_table(dataset, dict(ours), published.MAIN, seeds, setups, counterparts)]
    for model, runs in families.items():
        paper_name, table = published.ABLATIONS.get(model, (model, None))
        tables = [table] if table else []
        if len(runs) == 1 and not published_rows(dataset, tables):
            continue
        parts += [titled(f"### Ablations of {paper_name}: {name}", dataset, tables)]
        parts += [
            results_table(dataset, {run: ours[run] for run in runs}, tables, seeds, setups, counterparts)
        ]
    return parts


def _markdown(
    pipeline: Pipeline,
    config: ReportConfig,
    record: dict,
    families: Mapping[str, Sequence[str]],
    written: list[Path],
    out_dir: Path,
    attention: Mapping[str, str] | None = None,
) -> str:
    """results.md; ``attention``: what each attention figure shows, by the start of its
    name (:func:`attention_figures`)."""
    from mner.figures import image_links

    settings, ours, setup = record["settings"], record["results"], record["setup"]
    compared = record["counterparts"]  # per dataset trained on, each run's published row
    n = len(pipeline.seeds)
    parts = [
        "# Results",
        f"Test sets, entity-level micro P/R/F1 and per-type F1 in percent, scheme `{settings['scheme']}`, "
        f"BIO policy `{settings['bio']}`; ours: {_seeds(pipeline.seeds)}. Each of our rows gives its number "
        "of seeds (n) and its setup: the frozen text encoder (its layers, pooling and width), the visual "
        "backbone of a multimodal run and the model's widths. Published rows are the papers' numbers as "
        "printed (fine-tuned BERT-base and real images there).",
        "## Blank images",
        _blank_images(record["blank_images"]),
    ]
    for dataset in pipeline.datasets:
        parts += results_sections(dataset, ours[dataset], families, n, setup[dataset], compared[dataset])
        if record.get("clue_results", {}).get(dataset):
            parts += image_text_section(pipeline, record, dataset)
    for pair in pipeline.cross_domain:
        train, test = published.dataset_name(pair.train), published.dataset_name(pair.test)
        heading = f"## Cross-domain: trained on {train}, tested on {test}"
        parts += [titled(heading, pair.test, published.CROSS)]
        cells = record["cross_domain"][pair.test]
        parts += [
            results_table(pair.test, cells, published.CROSS, n, setup[pair.train], compared[pair.train])
        ]
    first = published.dataset_name(pipeline.datasets[0])
    timed = min((row.get("batches", 0) for row in record["efficiency"]), default=0)
    parts += [
        "## Efficiency of the interaction phase (FMIT Table 3)",
        f"Measured in one run on the {first} test set (seed {pipeline.seeds[0]} checkpoints, {timed} batches "
        f"of {config.batch_size} per run, this machine); {relative_speed_note(record['efficiency'])}; "
        "published speed relative to UMGF.",
        efficiency_table(record["efficiency"], compared[pipeline.datasets[0]]),
    ]
    warning = speed_warning(record["efficiency"], config)
    if warning:
        parts += [warning]
    for dataset, runs in record["visual_use"].items():
        parts += [f"## Visual use: {published.dataset_name(dataset)} (`mner visual-use`)"]
        parts += [
            f"Test set, seed {pipeline.seeds[0]} checkpoints, percent, with three visual inputs: each "
            "tweet's **own**; the **blank** image (no objects; a grid model its grid) for every tweet; "
            "and, **deranged**, another tweet's (a fixed derangement; a tweet keeps its grounded cells' "
            "positions). ΔF1 and the changed predictions are against own: a model that reads the image "
            "loses F1 without its own. Each condition in full is in results.json.",
            visual_use_table(runs),
        ]
    for dataset, study in record["case_study"].items():
        runs = list(study["counts"])
        parts += [f"## Case study: {published.dataset_name(dataset)} (FMIT Figures 3 and 4)"]
        parts += [case_study_markdown(study, config.baseline, runs)]
    parts += ["## Figures", figures_note(written, out_dir, attention or {}, n)]
    left_out = blank_attention_note(all_blank(record["blank_images"]) if families else [])
    parts += [left_out] if left_out else []
    parts += [image_links(written, out_dir)]
    return "\n\n".join(parts) + "\n"


def image_text_section(pipeline: Pipeline, record: dict, dataset: str) -> list[str]:
    """The runs read with clue sets on ``dataset``, each after its run read without one (when the
    pipeline trains it), beside the published systems that read images as text."""
    ours, setups = {}, {}
    compared = record["counterparts"][dataset]  # a clue run has none (:func:`counterpart`)
    for run in pipeline.clue_runs:
        if run in record["results"][dataset]:
            ours[run], setups[run] = record["results"][dataset][run], record["setup"][dataset][run]
        for clues in pipeline.clues:
            name = clue_run(run, clues)
            ours[name], setups[name] = (
                record["clue_results"][dataset][name],
                record["clue_setup"][dataset][name],
            )
    name = published.dataset_name(dataset)
    return [
        titled(f"### Images as text: {name}", dataset, published.IMAGE_TEXT),
        "Each run read with a clue set (`<run>+<clues>`: the clue's text after each tweet, and for a "
        "`clue_cells` model its words as visual cells) after the same run reading the tweet alone. "
        "`mner clue-use` scores a clue run with its own clue, none and another tweet's: a gain that "
        "stays with another tweet's clue is not image information.",
        results_table(dataset, ours, published.IMAGE_TEXT, len(pipeline.seeds), setups, compared),
    ]


def _seeds(seeds: Sequence[int]) -> str:
    if len(seeds) == 1:
        return f"one seed (n = 1, seed {seeds[0]}), so no std"
    return f"mean ± std over n = {len(seeds)} seeds ({', '.join(map(str, seeds))})"


def type_f1_caption(seeds: int) -> str:
    """What the per-type F1 bars show with ``seeds`` seeds: error bars only over several."""
    if seeds == 1:
        return f"{FIGURE_CONTENTS['type-f1']}, one seed (n = 1), so no error bars"
    return f"{FIGURE_CONTENTS['type-f1']}, the mean over n = {seeds} seeds with ± std error bars"


def blank_attention_note(blank: Sequence[str]) -> str | None:
    """Why the datasets ``blank`` (:func:`all_blank`) have no attention figure; None for none."""
    if not blank:
        return None
    names = ", ".join(published.dataset_name(d) for d in blank)
    return (
        f"No attention figure for {names}: every image there is blank (see Blank images), so the "
        "boxes would be drawn over an empty image."
    )


def figures_note(
    written: Sequence[Path], out_dir: Path, attention: Mapping[str, str] | None = None, seeds: int = 1
) -> str:
    """Where the PNG figures are and what each shows (``attention``: what each attention
    figure shows, by the start of its name; ``seeds``: the seeds the per-type bars
    average): they open offline, unlike the page of ``dvc plots show`` (its plotting
    library comes from a CDN)."""
    folder = (written[0].parent.relative_to(out_dir.parent) if written else out_dir / "figures").as_posix()
    lines = [
        f"The figures are PNG files in `{folder}/`, readable offline (the HTML page that "
        "`dvc plots show` writes loads its plotting library from a CDN and stays blank offline):",
        "",
    ]
    contents = {**FIGURE_CONTENTS, "type-f1": type_f1_caption(seeds), **(attention or {})}
    for path in written:
        kind = next((k for k in contents if path.stem.startswith(f"{k}-")), None)
        lines.append(f"- `{path.name}`: {contents.get(kind, path.stem)}")
    return "\n".join(lines)


def _blank_images(counts: dict[str, dict[str, int]]) -> str:
    if not counts:
        return "No image report found (the visual stages did not run)."
    rows = []
    for dataset, c in counts.items():
        blank = blank_tweets(c)
        problems = ", ".join(f"{k} {v}" for k, v in c.items() if k != "images" and v) or "none"
        rows.append([published.dataset_name(dataset), str(c.get("images", 0)), str(blank), problems])
    return markdown_table(["dataset", "tweets", "blank image", "why"], rows)
