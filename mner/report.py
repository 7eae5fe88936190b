"""The ``report`` stage: the papers' tables filled from the pipeline's evaluation outputs
(mean ± std over seeds, the published numbers beside them; each of our rows with the number
of seeds and what it was trained with), the efficiency table measured on the trained
checkpoints, and the figures (PNG files, readable offline).

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
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from mner import published
from mner.cached.dataset import collate
from mner.core.cache import CacheReader, rerun_hint
from mner.core.config import Count, NonNegative, from_dict
from mner.core.workspace import (
    evaluation_dir,
    image_report,
    run_dir,
)
from mner.data.conll import Sentence, read_conll
from mner.data.labels import entities
from mner.data.prepared import read_prepared
from mner.evaluation import checkpoint_caches
from mner.features.detect import object_label
from mner.features.ground import query_texts
from mner.features.visual import describe_cells, grid_boxes
from mner.models import MODELS, interaction_parameters, load_checkpoint, read_record
from mner.runs import Pipeline

OVERALL_KEYS = {"P": "precision", "R": "recall", "F1": "f1"}  # the columns after the per-type F1s
MODEL_WIDTHS = ("text_hidden", "hidden", "d_m", "d", "ff", "layers", "heads")  # named in a run's setup
MIN_SPEED_BATCHES = 10  # fewer timed batches and the efficiency table warns
FIGURE_CONTENTS = {
    "curves": "dev F1 and training loss per epoch, one column per model family",
    "type-f1": "test F1 per entity type of every run",
}


@dataclass(frozen=True)
class ReportConfig:
    baseline: str = "transformer-crf"  # the text-only run the case study compares with
    case_studies: NonNegative = 8  # tweets in the case-study table
    speed_batches: NonNegative = 0  # test batches timed for the efficiency table (0: all)
    batch_size: Count = 32
    visual_use: bool = True  # the visual-use section (mner visual-use of each model's main run, first seed)


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


def published_rows(dataset: str, tables: Sequence[published.Table]) -> list[tuple[str, dict]]:
    """The rows of the published ``tables`` that have numbers for ``dataset``, each named
    with its source."""
    return [
        (f"{name} (published, {table.source})", row[dataset])
        for table in tables
        for name, row in table.rows.items()
        if dataset in row
    ]


def results_table(
    dataset: str,
    ours: dict[str, dict],
    tables: Sequence[published.Table],
    seeds: int = 1,
    setups: Mapping[str, str] | None = None,
) -> str:
    """One dataset's table: the rows of each published table (marked with its source) that
    have numbers for ``dataset``, then our runs, each with its number of seeds ``n`` and its
    setup (:func:`describe_run`); a column per entity type of the dataset."""
    shown = columns(ours)
    header = ["model", *shown, "n", "setup"]
    rows = [[name, *_published(row, shown), "-", "-"] for name, row in published_rows(dataset, tables)]
    for run, cells in ours.items():
        counterpart = published.COUNTERPARTS.get(run)
        label = f"**{run}** (ours{', cf. ' + counterpart if counterpart else ''})"
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
    visual = (record.get("visual_features") or {}).get("params") or {}
    if visual.get("model"):
        parts.append(model_name(str(visual["model"]), root))
    config = record.get("config") or {}
    widths = ", ".join(f"{key} {config[key]}" for key in MODEL_WIDTHS if key in config)
    return "; ".join([*parts, *([widths] if widths else [])])


def run_setups(pipeline: Pipeline, dataset: str, runs: Sequence[str]) -> dict[str, str]:
    """Per run, :func:`describe_run` of its first seed's checkpoint on ``dataset``."""
    seed = pipeline.seeds[0]
    return {
        run: describe_run(
            read_record(pipeline.path(run_dir(dataset, run, seed)) / "checkpoint" / "checkpoint.json"),
            pipeline.root,
        )
        for run in runs
    }


def parameter_count(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e5 else f"{n / 1e3:.1f}k"


def time_interaction(model: torch.nn.Module, inputs: Sequence[tuple]) -> float:
    """Seconds to run ``model.interact`` over prepared ``inputs`` (one warm-up call first)."""
    with torch.inference_mode():
        model.interact(*inputs[0])
        start = time.perf_counter()
        for arguments in inputs:
            model.interact(*arguments)
        return time.perf_counter() - start


def efficiency(pipeline: Pipeline, config: ReportConfig) -> list[dict]:
    """FMIT Table 3 measured here: per multimodal run (first seed, first dataset), the
    interaction phase's parameters and its test-set time, speed relative to the slowest,
    all on the same batches in one run."""
    dataset, seed = pipeline.datasets[0], pipeline.seeds[0]
    sentences = read_prepared(pipeline.workspace(dataset).prepared / "test.jsonl")
    rows = []
    for run in pipeline.runs.visual:
        model, record = load_checkpoint(pipeline.path(run_dir(dataset, run, seed)) / "checkpoint")
        data = _dataset(pipeline, dataset, model, record, sentences)
        batches = list(DataLoader(data, batch_size=config.batch_size, collate_fn=collate))
        batches = batches[: config.speed_batches or None]
        with torch.inference_mode():
            inputs = [model.interaction_inputs(b) for b in batches]
        parameters = interaction_parameters(model)
        seconds = time_interaction(model, inputs)
        rows.append(
            {
                "run": run,
                "parameters": parameters,
                "seconds": seconds,
                "batches": len(batches),
                "tweets": len(data),
            }
        )
    slowest = max((r["seconds"] for r in rows), default=0.0)
    for row in rows:
        row["speedup"] = slowest / row["seconds"] if row["seconds"] else None
    return rows


def _dataset(pipeline: Pipeline, dataset: str, model, record: dict, sentences: list[Sentence]):
    """The test set of ``dataset`` as ``model`` reads it."""
    caches = checkpoint_caches(record, f"{dataset} checkpoint", pipeline.workspace(dataset))
    return caches.dataset(model, "test", sentences, record["labels"])


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


def efficiency_table(rows: list[dict]) -> str:
    header = ["model", "parameters", "speed (measured)", "published speed", "published parameters"]
    lines = []
    for row in rows:
        counterpart = published.COUNTERPARTS.get(row["run"], "")
        speed, parameters = published.FMIT_EFFICIENCY.get(counterpart, ("-", "-"))
        measured = f"{row['speedup']:.2f}x ({1000 * row['seconds']:.1f} ms)"
        lines.append([row["run"], parameter_count(row["parameters"]), measured, speed, parameters])
    return markdown_table(header, lines)


def visual_use_of_runs(pipeline: Pipeline, config: ReportConfig, scheme: str, runs: Sequence[str]) -> dict:
    """Per dataset and run of ``runs``, the :class:`mner.visual_use.VisualUse` record of
    its first seed's checkpoint on the test set (none with ``config.visual_use`` off)."""
    from mner.visual_use import visual_use

    if not config.visual_use:
        return {}

    def of(dataset: str, run: str) -> dict:
        checkpoint_run = pipeline.path(run_dir(dataset, run, pipeline.seeds[0]))
        return visual_use(checkpoint_run, "cpu", scheme, config.batch_size).to_dict()

    return {dataset: {run: of(dataset, run) for run in runs} for dataset in pipeline.datasets}


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


def attention_example(pipeline: Pipeline, dataset: str, run: str) -> dict | None:
    """The attention of ``run`` (first seed) on the test tweet with the most visual cells
    among the first 200 with a predicted entity (with a gold one, marked, when the model
    predicts none there): per entity its weights over the visual cells, with each cell's
    box (normalised xyxy) and name. GEI: the last layer's entity -> object attention;
    FMIT: the word -> visual attention averaged over the entity's words."""
    model, record = load_checkpoint(pipeline.path(run_dir(dataset, run, pipeline.seeds[0])) / "checkpoint")
    sentences = read_prepared(pipeline.workspace(dataset).prepared / "test.jsonl")
    data = _dataset(pipeline, dataset, model, record, sentences)
    candidates = {"predicted": [], "gold": []}
    with torch.inference_mode():
        for i in range(min(200, len(data))):
            batch = collate([data[i]])
            predicted = entities([record["labels"][k] for k in model.decode(batch)[0]])
            for source, found in (("predicted", predicted), ("gold", entities(sentences[i].labels))):
                if found:
                    candidates[source].append((batch["visual"].shape[1], -i, found))
    source = "predicted" if candidates["predicted"] else "gold"
    if not candidates[source]:
        return None
    _, i, found = max(candidates[source])
    i, sentence, batch = -i, sentences[-i], collate([data[-i]])
    with torch.inference_mode():
        attention = model.attention(batch, batch["span_tags"] if source == "gold" else None)
    if attention is None:
        return None
    weights = {(e.start, e.end): attention.of_entity(0, e.start, e.end) for e in found}
    boxes, names = _visual_cells(pipeline, dataset, model, record, i, sentence, data[i])
    return {
        "run": run,
        "dataset": dataset,
        "id": sentence.id,
        "image_id": sentence.image_id,
        "text": " ".join(sentence.tokens),
        "entities_from": source,
        "boxes": boxes,
        "names": names,
        "entities": [
            {
                "text": " ".join(sentence.tokens[e.start : e.end]),
                "type": e.type,
                "weights": weights[e.start, e.end].tolist(),
            }
            for e in found
            if weights[e.start, e.end] is not None
        ],
    }


def _visual_cells(pipeline, dataset, model, record, index, sentence, item) -> tuple[list, list]:
    """Box and name of each visual cell of a test tweet (:func:`describe_cells`): the whole
    image, then the cells of the model's visual kind, read from its upstream cache: the
    detected objects (their class), grounded objects (their phrase), or grid cells (from the
    visual cache); the caches read are checked against those the checkpoint (``record``)
    was trained on."""
    from mner.tagger import visual_kind

    kind = visual_kind(model)

    def open_cache(name: str, stage: str) -> CacheReader:
        path = pipeline.workspace(dataset).cache(name)
        return CacheReader(path, record["caches"][name], rerun=rerun_hint(stage, dataset))

    if kind.source == "objects":
        cache = open_cache(kind.source, kind.stage)
        classes = cache.provenance.get("classes") or []
        boxes = cache.get("test", "boxes", index)
        labels = [object_label(classes, k) for k in cache.get("test", "classes", index).tolist()]
    elif kind.source == "grounding":
        cache = open_cache(kind.source, kind.stage)
        boxes = cache.get("test", "boxes", index)
        labels = query_texts(
            sentence.tokens,
            cache.get("test", "query", index),
            int(cache.get("test", "n_phrases", index)[0]),
            cache.get("test", "positions", index),
            cache.provenance["params"]["general_words"],
        )
    else:  # the whole image's grid, row by row
        offsets = open_cache("visual", "visual_features").offsets["test", kind.field]
        side = round(float(offsets[index + 1] - offsets[index]) ** 0.5)
        boxes, labels = grid_boxes(side), [f"grid {r},{c}" for r in range(side) for c in range(side)]
    cells = describe_cells(kind, boxes, labels, len(item["visual"]) - 1)
    return [c["box"] for c in cells], [c["label"] if c["kind"] != "image" else "whole image" for c in cells]


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
    cross = {
        pair.test: {
            run: aggregate(read_metrics(pipeline, pair.train, run, pair.test))
            for run in pipeline.cross_domain_runs
        }
        for pair in pipeline.cross_domain
    }
    speed = efficiency(pipeline, config)
    families = model_families(pipeline)
    main_runs = [runs[0] for runs in families.values()]
    studies = {d: case_study(pipeline, config, d, main_runs) for d in pipeline.datasets}
    trained_on = {*pipeline.datasets, *(pair.train for pair in pipeline.cross_domain)}
    record = {
        "settings": settings,
        "seeds": list(pipeline.seeds),
        "setup": {d: run_setups(pipeline, d, pipeline.run_names) for d in sorted(trained_on)},
        "results": ours,
        "cross_domain": cross,
        "efficiency": speed,
        "blank_images": image_counts(pipeline),
        "case_study": studies,
        "visual_use": visual_use_of_runs(pipeline, config, settings["scheme"], main_runs),
    }
    written = _figures(pipeline, ours, families, settings, figure_dir, figures)
    record["figures"] = [path.relative_to(out_dir).as_posix() for path in written]
    (out_dir / "results.json").write_text(json.dumps(record, indent=2) + "\n")
    (out_dir / "results.md").write_text(_markdown(pipeline, config, record, families, written, out_dir))
    return record


def model_families(pipeline: Pipeline) -> dict[str, list[str]]:
    """The visual runs by the registered model they train (read from their first
    checkpoint), in the order of ``pipeline.runs.visual``: a model's first run is its main
    run, the others its ablations."""
    dataset, seed = pipeline.datasets[0], pipeline.seeds[0]
    families: dict[str, list[str]] = {}
    for run in pipeline.runs.visual:
        record = read_record(pipeline.path(run_dir(dataset, run, seed)) / "checkpoint" / "checkpoint.json")
        families.setdefault(record["model"], []).append(run)
    return families


def _figures(pipeline, ours, families, settings, figure_dir: Path, figures) -> list[Path]:
    from mner.features.images import ImageSource
    from mner.settings.images import ImagesConfig

    written = []
    colours = figures.run_colours(pipeline.run_names)
    main_runs = [runs[0] for runs in families.values()]
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
        figures.type_f1_bars(ours[dataset], colours, written[-1], f"{name}: F1 per type (test)")
        images = {**settings["images"], "missing": "blank"}
        images["dir"] = str(pipeline.path(Path(images["dir"])))
        source = ImageSource(from_dict(ImagesConfig, images, "params.yaml:images"), dataset)
        for run in main_runs:
            example = attention_example(pipeline, dataset, run)
            if example and example["entities"]:
                written.append(figure_dir / f"attention-{run}-{dataset}.png")
                figures.attention_over_image(example, source.load(example["image_id"]).image, written[-1])
    return written


def titled(heading: str, dataset: str, tables: Sequence[published.Table]) -> str:
    """``heading`` with the published tables that have numbers for ``dataset``."""
    cited = [table.title for table in tables if published_rows(dataset, [table])]
    return f"{heading} ({', '.join(cited)})" if cited else heading


def results_sections(
    dataset: str, ours: Mapping[str, dict], families: Mapping[str, Sequence[str]], seeds: int, setups: dict
) -> list[str]:
    """The main table of ``dataset`` (every run) and one ablation table per registered model
    of the visual runs (its ``families``), each with the published tables it has; none for a
    model with neither ablation runs nor published ablations (UMT here)."""
    name = published.dataset_name(dataset)
    parts = [titled(f"## Main results: {name}", dataset, published.MAIN)]
    parts += [results_table(dataset, dict(ours), published.MAIN, seeds, setups)]
    for model, runs in families.items():
        paper_name, table = published.ABLATIONS.get(model, (model, None))
        tables = [table] if table else []
        if len(runs) == 1 and not published_rows(dataset, tables):
            continue
        parts += [titled(f"### Ablations of {paper_name}: {name}", dataset, tables)]
        parts += [results_table(dataset, {run: ours[run] for run in runs}, tables, seeds, setups)]
    return parts


def _markdown(
    pipeline: Pipeline,
    config: ReportConfig,
    record: dict,
    families: Mapping[str, Sequence[str]],
    written: list[Path],
    out_dir: Path,
) -> str:
    from mner.figures import image_links

    settings, ours, setup = record["settings"], record["results"], record["setup"]
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
        parts += results_sections(dataset, ours[dataset], families, n, setup[dataset])
    for pair in pipeline.cross_domain:
        train, test = published.dataset_name(pair.train), published.dataset_name(pair.test)
        heading = f"## Cross-domain: trained on {train}, tested on {test}"
        parts += [titled(heading, pair.test, published.CROSS)]
        cells = record["cross_domain"][pair.test]
        parts += [results_table(pair.test, cells, published.CROSS, n, setup[pair.train])]
    first = published.dataset_name(pipeline.datasets[0])
    timed = min((row.get("batches", 0) for row in record["efficiency"]), default=0)
    parts += [
        "## Efficiency of the interaction phase (FMIT Table 3)",
        f"Measured in one run on the {first} test set (seed {pipeline.seeds[0]} checkpoints, {timed} batches "
        f"of {config.batch_size} per run, this machine); speed relative to the slowest run here, published "
        "speed relative to UMGF.",
        efficiency_table(record["efficiency"]),
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
    attention = {f"attention-{runs[0]}": attention_figure(model) for model, runs in families.items()}
    parts += ["## Figures", figures_note(written, out_dir, attention), image_links(written, out_dir)]
    return "\n\n".join(parts) + "\n"


def _seeds(seeds: Sequence[int]) -> str:
    if len(seeds) == 1:
        return f"one seed (n = 1, seed {seeds[0]}), so no std"
    return f"mean ± std over n = {len(seeds)} seeds ({', '.join(map(str, seeds))})"


def attention_figure(model: str) -> str:
    """What the attention figure of a registered model shows (its ``attention_figure``)."""
    default = f"{model}'s attention over the visual cells, drawn over a test tweet's image"
    return getattr(MODELS[model][1], "attention_figure", default)


def figures_note(written: Sequence[Path], out_dir: Path, attention: Mapping[str, str] | None = None) -> str:
    """Where the PNG figures are and what each shows (``attention``: what each attention
    figure shows, by the start of its name): they open offline, unlike the page of ``dvc
    plots show`` (its plotting library comes from a CDN)."""
    folder = (written[0].parent.relative_to(out_dir.parent) if written else out_dir / "figures").as_posix()
    lines = [
        f"The figures are PNG files in `{folder}/`, readable offline (the HTML page that "
        "`dvc plots show` writes loads its plotting library from a CDN and stays blank offline):",
        "",
    ]
    contents = {**FIGURE_CONTENTS, **(attention or {})}
    for path in written:
        kind = next((k for k in contents if path.stem.startswith(f"{k}-")), None)
        lines.append(f"- `{path.name}`: {contents.get(kind, path.stem)}")
    return "\n".join(lines)


def _blank_images(counts: dict[str, dict[str, int]]) -> str:
    if not counts:
        return "No image report found (the visual stages did not run)."
    rows = []
    for dataset, c in counts.items():
        blank = sum(v for k, v in c.items() if k != "images")
        problems = ", ".join(f"{k} {v}" for k, v in c.items() if k != "images" and v) or "none"
        rows.append([published.dataset_name(dataset), str(c.get("images", 0)), str(blank), problems])
    return markdown_table(["dataset", "tweets", "blank image", "why"], rows)
