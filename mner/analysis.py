"""The ``analyze`` stage: what the report shows of a trained multimodal run that takes running
its model, measured once per run and written as small JSON files beside its ``eval/``
(``runs/<dataset>/<run>/seed<k>/analysis/``), so the report only reads files:

- ``speed.json``: the interaction phase's parameters and the seconds it takes over the test
  set's batches (FMIT Table 3), with the number of batches and tweets timed;
- ``attention.json``: what the model's attention figure shows and its example
  (:func:`attention_example`: a test tweet, its entities' weights over the visual cells,
  each cell's box and name);
- ``visual_use.json``: the :class:`mner.visual_use.VisualUse` record of the run.

The report reads the first seed only: the speed of every visual run on the first dataset,
and the attention and visual use of each model's main run (the run named after its model,
:func:`mner.runs.is_main_run`) on every dataset; a part the report does not read of a
run is written as ``null`` (:func:`report_reads`). Each run is timed in its own process (its
own analyze stage), on the same test batches as the others; the report computes the speed
relative to the slowest from these files.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch.utils.data import DataLoader

from mner.cached.dataset import collate
from mner.core.cache import CacheReader, rerun_hint
from mner.core.config import section
from mner.core.workspace import Workspace, run_workspace
from mner.data.labels import entities
from mner.data.prepared import read_prepared
from mner.evaluation import checkpoint_caches
from mner.features.visual import describe_cells, grid_boxes
from mner.models import MODELS, interaction_parameters, load_checkpoint, resolve_run
from mner.runs import Pipeline, is_main_run
from mner.settings.detect import object_label
from mner.settings.ground import query_texts

ANALYSIS_FILES = ("speed", "attention", "visual_use")  # analysis/<name>.json of a run


def analysis_dir(run: Path) -> Path:
    """Where the analyze stage writes a run directory's files."""
    return Path(run) / "analysis"


class Reads(NamedTuple):
    """Which parts of a run's analysis the report reads."""

    speed: bool
    attention: bool
    visual_use: bool


def report_reads(
    pipeline: Pipeline, models: Mapping[str, Any], dataset: str, run: str, visual_use: bool = True
) -> Reads:
    """What the report reads of ``run`` on ``dataset`` (first seed): its speed on the first
    dataset; the attention and visual use of a main run (:func:`mner.runs.is_main_run`: it
    reads the run's own ``models`` entry only), the visual use only with the report's
    ``visual_use`` on."""
    main = is_main_run(run, resolve_run(models, run).model)
    return Reads(dataset == pipeline.datasets[0], main, main and visual_use)


def time_interaction(model: torch.nn.Module, inputs: Sequence[tuple]) -> float:
    """Seconds to run ``model.interact`` over prepared ``inputs`` (one warm-up call first)."""
    with torch.inference_mode():
        model.interact(*inputs[0])
        start = time.perf_counter()
        for arguments in inputs:
            model.interact(*arguments)
        return time.perf_counter() - start


def _test_set(workspace: Workspace, model, record: dict):
    """The test sentences of ``workspace`` and the test set as ``model`` reads it."""
    sentences = read_prepared(workspace.prepared / "test.jsonl")
    caches = checkpoint_caches(record, f"{workspace.dataset} checkpoint", workspace)
    return sentences, caches.dataset(model, "test", sentences, record["labels"])


def speed(run: Path, batch_size: int, speed_batches: int = 0) -> dict:
    """FMIT Table 3 for one run: the interaction phase's parameters and its time over the
    first ``speed_batches`` (0: all) test batches of ``batch_size``."""
    model, record = load_checkpoint(Path(run) / "checkpoint")
    _, data = _test_set(run_workspace(run), model, record)
    batches = list(DataLoader(data, batch_size=batch_size, collate_fn=collate))
    batches = batches[: speed_batches or None]
    with torch.inference_mode():
        inputs = [model.interaction_inputs(b) for b in batches]
    return {
        "run": Path(run).parent.name,
        "parameters": interaction_parameters(model),
        "seconds": time_interaction(model, inputs),
        "batches": len(batches),
        "tweets": len(data),
    }


def attention_figure(model: str) -> str:
    """What the attention figure of a registered model shows (its ``attention_figure``)."""
    default = f"{model}'s attention over the visual cells, drawn over a test tweet's image"
    return getattr(MODELS[model][1], "attention_figure", default)


def attention(run: Path) -> dict:
    """The run's attention figure: what it shows (``figure``) and its ``example``
    (:func:`attention_example`, None when the model has no attention to draw)."""
    model, record = load_checkpoint(Path(run) / "checkpoint")
    return {"figure": attention_figure(record["model"]), "example": attention_example(run, model, record)}


def attention_example(run: Path, model, record: dict) -> dict | None:
    """The attention of the run's ``model`` on the test tweet with the most visual cells
    among the first 200 with a predicted entity (with a gold one, marked, when the model
    predicts none there): per entity its weights over the visual cells, with each cell's
    box (normalised xyxy) and name. GEI: the last layer's entity -> object attention;
    FMIT: the word -> visual attention averaged over the entity's words."""
    workspace = run_workspace(run)
    sentences, data = _test_set(workspace, model, record)
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
    boxes, names = _visual_cells(workspace, model, record, i, sentence, data[i])
    return {
        "run": Path(run).parent.name,
        "dataset": workspace.dataset,
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


def _visual_cells(workspace: Workspace, model, record, index, sentence, item) -> tuple[list, list]:
    """Box and name of each visual cell of a test tweet (:func:`describe_cells`): the whole
    image, then the cells of the model's visual kind, read from its upstream cache: the
    detected objects (their class), grounded objects (their phrase), or grid cells (from the
    visual cache); the caches read are checked against those the checkpoint (``record``)
    was trained on."""
    from mner.tagger import visual_kind

    kind = visual_kind(model)

    def open_cache(name: str, stage: str) -> CacheReader:
        path = workspace.cache(name)
        return CacheReader(path, record["caches"][name], rerun=rerun_hint(stage, workspace.dataset))

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


def analyze_run(run: Path, params: Mapping[str, Any]) -> dict[str, dict | None]:
    """The analysis files of a run directory ``runs/<dataset>/<run>/seed<k>`` by name
    (:data:`ANALYSIS_FILES`) under ``params`` (its ``report`` and ``evaluate`` sections, and
    the ``pipeline`` and ``models`` to know what the report reads, :func:`report_reads`):
    each part the report reads, None for the others. The visual use runs on the CPU, as the
    report's own numbers always did."""
    from mner.evaluation import EvaluateConfig
    from mner.report_config import ReportConfig
    from mner.visual_use import visual_use

    run = Path(run)
    config = section(params, "report", ReportConfig)
    scheme = section(params, "evaluate", EvaluateConfig).scheme
    pipeline = Pipeline.from_params(params)
    dataset, models = run_workspace(run).dataset, params.get("models") or {}
    reads = report_reads(pipeline, models, dataset, run.parent.name, config.visual_use)
    used = visual_use(run, "cpu", scheme, config.batch_size) if reads.visual_use else None
    return {
        "speed": speed(run, config.batch_size, config.speed_batches) if reads.speed else None,
        "attention": attention(run) if reads.attention else None,
        "visual_use": used.to_dict() if used else None,
    }


def write_analysis(run: Path, analysis: Mapping[str, dict | None]) -> list[Path]:
    """Write each of ``analysis`` as ``analysis/<name>.json`` of the run directory."""
    out = analysis_dir(run)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in ANALYSIS_FILES:
        written.append(out / f"{name}.json")
        written[-1].write_text(json.dumps(analysis[name], indent=2) + "\n")
    return written
