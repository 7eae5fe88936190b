import json
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mner.cached import inference
from mner.cached.dataset import CachedTextDataset, FeatureCaches, collate
from mner.cached.inference import progress
from mner.core.cache import CacheError, CacheReader, file_sha256
from mner.core.config import ConfigError, to_dict
from mner.core.workspace import Workspace
from mner.data.conll import SPLITS
from mner.data.labels import TWITTER_LABELS
from mner.data.prepared import read_labels, read_prepared
from mner.evaluation import evaluate_checkpoint
from mner.models import InputDims, build_model, load_checkpoint
from mner.settings.text import expected_text
from mner.train import (
    EarlyStopping,
    TrainConfig,
    TrainingData,
    TrainingError,
    check_listed,
    epoch_line,
    format_losses,
    linear_warmup_decay,
    optimizer_and_schedule,
    run_training,
    set_seed,
    train,
    training_job,
)
from tests.synthetic import TEXT_CONFIG, image_side, write_synthetic

FAST = TrainConfig(lr=0.01, epochs=4, batch_size=8, patience=0, device="cpu")


def params(**train):
    return {
        "text_features": to_dict(TEXT_CONFIG),
        "train": {**to_dict(FAST), **train},
        "models": {"transformer-crf": {"hidden": 16, "layers": 1, "heads": 2, "ff": 32}},
    }


@pytest.fixture
def synthetic(tmp_path):
    return write_synthetic(tmp_path)


def fit(synthetic, name="linear-crf", config=FAST, seed=1, on_epoch=None):
    prepared, cache_path = synthetic
    cache = CacheReader(cache_path)
    train_s, dev_s = read_prepared(prepared / "train.jsonl"), read_prepared(prepared / "valid.jsonl")
    set_seed(seed)
    model = build_model(name, {}, InputDims(2, 16), len(TWITTER_LABELS))
    data = TrainingData(
        CachedTextDataset(cache, "train", train_s, TWITTER_LABELS),
        CachedTextDataset(cache, "valid", dev_s, TWITTER_LABELS),
        [s.labels for s in dev_s],
        TWITTER_LABELS,
    )
    result = train(model, data, config, seed, on_epoch)
    return model, result


def test_stored_value_loss_after_fixed_steps(synthetic):
    """Regression guard: fixed seed, tiny model, the training loss of each epoch."""
    _, result = fit(synthetic, config=TrainConfig(lr=0.01, epochs=3, batch_size=8, patience=0, device="cpu"))
    losses = [round(h["train_loss"], 4) for h in result.history]
    assert losses == pytest.approx(STORED_LOSSES, abs=2e-3)


STORED_LOSSES = [9.9426, 7.7240, 6.8519]  # since the sampler of the DDP-ready trainer


def test_same_seed_same_f1_other_seed_other_run(synthetic):
    a = fit(synthetic, "transformer-crf", seed=3)[1]
    b = fit(synthetic, "transformer-crf", seed=3)[1]
    c = fit(synthetic, "transformer-crf", seed=4)[1]
    assert [h["dev_f1"] for h in a.history] == [h["dev_f1"] for h in b.history]
    assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]
    assert [h["train_loss"] for h in a.history] != [h["train_loss"] for h in c.history]


def test_learns_and_keeps_the_best_epoch(synthetic):
    model, result = fit(
        synthetic, config=TrainConfig(lr=0.02, epochs=8, batch_size=8, patience=0, device="cpu")
    )
    assert result.best_dev_f1 > 0.9
    assert result.best_dev_f1 == max(h["dev_f1"] for h in result.history)
    assert len(result.history) == 8


def test_early_stopping(synthetic, monkeypatch, caplog):
    """And what each epoch reports: the callback gets its metrics, the log the reason to
    stop, the result the mean seconds per epoch (a clock that ticks once per reading)."""
    from mner import train as trainer

    clock = iter(range(100))
    monkeypatch.setattr(trainer, "time", SimpleNamespace(perf_counter=lambda: float(next(clock)) ** 2))
    config = TrainConfig(lr=0.0, epochs=10, batch_size=8, patience=2, device="cpu")  # lr 0: never improves
    seen = []
    with caplog.at_level(logging.INFO, logger="mner.train"):
        _, result = fit(synthetic, config=config, on_epoch=seen.append)
    assert result.best_epoch == 1 and len(result.history) == 3
    assert seen == result.history and [m["epoch"] for m in seen] == [1, 2, 3]
    assert result.seconds_per_epoch == ((1 - 0) + (9 - 4) + (25 - 16)) / 3  # readings 0-1, 2-3, 4-5
    assert "early stop: no better dev F1 for 2 epochs" in caplog.messages


def test_dev_f1_is_scored_with_the_configured_scheme(synthetic, monkeypatch):
    from mner import train as trainer

    schemes = []

    def recording_score(gold, predicted, scheme="conlleval"):
        schemes.append(scheme)
        return trainer_score(gold, predicted, scheme)

    trainer_score = trainer.score
    monkeypatch.setattr(trainer, "score", recording_score)
    fit(synthetic, config=TrainConfig(epochs=1, batch_size=8, device="cpu", scheme="strict"))
    assert schemes == ["strict"]


def test_the_best_state_is_a_copy_that_later_steps_leave_alone():
    model = torch.nn.Linear(2, 2)
    stopping = EarlyStopping(patience=0)
    stopping.update(1, 0.5, model)
    kept = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    assert torch.equal(stopping.best_state["weight"], kept)


def test_a_scheduled_model_is_told_each_epoch_before_it_trains_numbered_from_1(synthetic, monkeypatch):
    """The epoch numbers GEI's scheduled sampling counts from (sampling_start 2 is the
    second epoch), each given before that epoch's first training batch."""
    from mner.models.baselines import LinearCRF

    events = []
    original_loss = LinearCRF.loss
    monkeypatch.setattr(
        LinearCRF, "set_epoch", lambda self, epoch: events.append(("epoch", epoch)), raising=False
    )
    monkeypatch.setattr(
        LinearCRF, "loss", lambda self, batch: events.append("batch") or original_loss(self, batch)
    )
    config = TrainConfig(lr=0.0, epochs=10, batch_size=8, patience=2, device="cpu")  # stops after epoch 3
    _, result = fit(synthetic, config=config)
    epochs = [event[1] for event in events if event != "batch"]
    assert epochs == [1, 2, 3] == [row["epoch"] for row in result.history]
    starts = [i for i, event in enumerate(events) if event != "batch"]
    assert all(events[i + 1] == "batch" for i in starts) and starts[0] == 0


def test_progress_bars_show_the_running_loss_and_each_epoch_logs_its_dev_f1(
    synthetic, capsys, caplog, monkeypatch
):
    monkeypatch.setitem(
        inference.REFRESH_SECONDS, "log", 0.0
    )  # pytest's stderr is no terminal: redraw always
    with caplog.at_level(logging.INFO, logger="mner.train"):
        _, result = fit(
            synthetic, config=TrainConfig(lr=0.01, epochs=2, batch_size=8, patience=0, device="cpu")
        )
    bars = capsys.readouterr().err
    for epoch in result.history:
        # the last redraw of an epoch's bar: the running mean over all its batches
        assert f"epoch {epoch['epoch']} train" in bars and f"loss {epoch['train_loss']:.4f}" in bars
        assert f"epoch {epoch['epoch']} dev" in bars
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert len(lines) == 2 and lines[1].startswith(
        f"epoch 2/2: train loss {result.history[1]['train_loss']:.4f}"
    )
    assert f"dev P/R/F1 {100 * result.history[1]['dev_precision']:.2f}/" in lines[1]
    assert lines[1].endswith(f"best dev F1 {100 * result.best_dev_f1:.2f} (epoch {result.best_epoch})")


def test_progress_bars_are_drawn_by_rank_0_only(monkeypatch):
    assert not progress([1, 2], "x").disable
    monkeypatch.setattr(inference.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(inference.dist, "get_rank", lambda: 1)
    assert progress([1, 2], "x").disable


def test_the_epoch_line_and_the_loss_postfix():
    assert format_losses({"train_sd": 0.5, "train_loss": 1.23456}) == "loss 1.2346, sd 0.5000"
    assert (
        format_losses({"train_ebd": 0.5, "train_loss": 1.0}) == "loss 1.0000, ebd 0.5000"
    )  # not sorted by name
    metrics = {"epoch": 3, "train_loss": 1.23456, "dev_precision": 0.5, "dev_recall": 0.25, "dev_f1": 1 / 3}
    line = epoch_line({**metrics, "lr": 1e-3}, 30, best_epoch=2, best_f1=0.4)
    expected = "epoch 3/30: train loss 1.2346; dev P/R/F1 50.00/25.00/33.33; lr 1.00e-03; best dev F1 40.00"
    assert line == f"{expected} (epoch 2)"


def test_warmup_then_linear_decay():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = linear_warmup_decay(optimizer, warmup_steps=2, total_steps=6)
    rates = []
    for _ in range(6):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([0.5, 1.0, 1.0, 0.75, 0.5, 0.25])
    scheduler = linear_warmup_decay(optimizer, warmup_steps=3, total_steps=4)  # one step of decay
    assert [scheduler.lr_lambdas[0](step) for step in range(5)] == pytest.approx(
        [1 / 3, 2 / 3, 1.0, 1.0, 0.0]
    )


def test_weight_decay_reaches_the_matrices_and_not_the_biases():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.LayerNorm(2))
    optimizer, _ = optimizer_and_schedule(model, TrainConfig(weight_decay=0.3, lr=0.5), total_steps=10)
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.3 and [p.shape for p in decay["params"]] == [(2, 3)]
    assert no_decay["weight_decay"] == 0.0 and len(no_decay["params"]) == 3
    assert decay["lr"] == no_decay["lr"] == 0.5  # one step of warm-up: the full rate from the first step


def test_run_training_then_evaluate(tmp_path):
    prepared, cache_path = write_synthetic(tmp_path)
    seen = []
    result = run_training(
        training_job(params(), "transformer-crf"),
        Workspace.of("synthetic", prepared, text=cache_path),
        1,
        tmp_path / "ckpt",
        seen.append,
    )
    assert seen == result.history and len(seen) == FAST.epochs
    record = json.loads((tmp_path / "ckpt" / "checkpoint.json").read_text())
    assert record["model"] == "transformer-crf" and record["seed"] == 1
    assert record["text_features"]["params"]["model"] == "synthetic"
    assert record["best_dev_f1"] == result.best_dev_f1 and record["best_epoch"] == result.best_epoch
    assert record["dataset"] == "synthetic" and record["visual_features"] is None
    assert record["sigils"] == "joined"  # how mner predict splits a post: as the training data did
    assert record["inputs"]["visual_dim"] == 0
    scores, predicted = evaluate_checkpoint(
        tmp_path / "ckpt", Workspace.of("d", prepared, text=cache_path), "test"
    )
    assert len(predicted) == 16 and scores.overall.gold == sum(
        1 for s in read_prepared(prepared / "test.jsonl") for label in s.labels if label.startswith("B-")
    )
    model, _ = load_checkpoint(tmp_path / "ckpt")
    assert model.config.hidden == 16


def test_run_training_learns_the_labels_of_a_dataset_of_other_types(tmp_path):
    types = {"PER": "person", "ORG": "corporation", "MISC": "PRODUCT"}
    prepared, cache_path = write_synthetic(tmp_path, noise=0.3, types=types)
    labels = ["O", *(f"{p}-{t}" for t in ("LOC", "PRODUCT", "corporation", "person") for p in "BI")]
    assert list(read_labels(prepared)) == labels
    out = tmp_path / "ckpt"
    run_training(
        training_job(params(lr=0.05), "linear-crf"), Workspace.of("own", prepared, text=cache_path), 1, out
    )
    assert json.loads((out / "checkpoint.json").read_text())["labels"] == labels
    model, _ = load_checkpoint(out)
    assert model.out.out_features == model.crf.crf.num_tags == len(labels)
    scores, predicted = evaluate_checkpoint(out, Workspace.of("d", prepared, text=cache_path), "test")
    assert list(scores.per_type) == ["LOC", "PRODUCT", "corporation", "person"]
    assert scores.overall.f1 > 0.9, scores.overall
    assert {label for sentence in predicted for label in sentence.labels} <= set(labels)


def test_run_training_refuses_a_dataset_prepared_without_its_labels(tmp_path):
    prepared, cache_path = write_synthetic(tmp_path)
    (prepared / "labels.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"labels\.json is missing .*: rerun dvc repro prepare@"):
        run_training(
            training_job(params(), "linear-crf"),
            Workspace.of("d", prepared, text=cache_path),
            1,
            tmp_path / "ckpt",
        )
    assert not (tmp_path / "ckpt").exists()


def test_run_training_refuses_a_cache_built_otherwise(tmp_path):
    prepared, cache_path = write_synthetic(tmp_path)
    other = params()
    other["text_features"]["model"] = "bert-base-cased"
    with pytest.raises(
        CacheError, match=r"params\.model is 'synthetic', expected 'bert-base-cased'.*text_features@d"
    ):
        run_training(
            training_job(other, "linear-crf"),
            Workspace.of("d", prepared, text=cache_path),
            1,
            tmp_path / "ckpt",
        )


def test_the_train_stage_writes_the_checkpoint_its_summary_and_a_plot_per_metric(tmp_path, monkeypatch):
    """And nothing else: no dvc.yaml of DVCLive's (the pipeline's own declares the plots). A
    training refused by a check leaves the last run's plots: DVCLive, which clears live/ when it
    starts, starts at the first epoch."""
    from mner.train import train_stage

    monkeypatch.chdir(tmp_path)
    prepared, cache_path = write_synthetic(tmp_path / "data")
    workspace, out = Workspace.of("d", prepared, text=cache_path), tmp_path / "run"
    summary = train_stage(training_job(params(epochs=2), "linear-crf"), workspace, 1, out)
    assert set(summary) == {"best_epoch", "best_dev_f1", "seconds_per_epoch", "processes"}
    assert summary["best_epoch"] in (1, 2) and summary["processes"] == 1
    assert json.loads((out / "train.json").read_text()) == summary
    assert json.loads((out / "checkpoint/checkpoint.json").read_text())["best_epoch"] == summary["best_epoch"]
    with open(out / "live/plots/metrics/dev_f1.tsv") as f:
        assert [row.split("\t")[0] for row in f.read().splitlines()] == ["step", "1", "2"]
    assert not (out / "live/plots/metrics/epoch.tsv").exists()  # the step is the epoch
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "run"]
    assert not list(out.rglob("dvc.yaml"))
    plots = {p: p.read_bytes() for p in (out / "live").rglob("*") if p.is_file()}
    other = params()
    other["text_features"]["model"] = "bert-base-cased"
    with pytest.raises(CacheError, match="expected 'bert-base-cased'"):
        train_stage(training_job(other, "linear-crf"), workspace, 1, out)
    assert {p: p.read_bytes() for p in (out / "live").rglob("*") if p.is_file()} == plots


def test_dataset_refuses_a_cache_of_other_sentences(tmp_path):
    prepared, cache_path = write_synthetic(tmp_path)
    sentences = read_prepared(prepared / "train.jsonl")[:-1]
    with pytest.raises(CacheError, match="does not match the prepared sentences"):
        CachedTextDataset(CacheReader(cache_path), "train", sentences, TWITTER_LABELS)


def test_gei_and_an_ablation_run_over_visual_caches(tmp_path):
    from tests.synthetic import write_synthetic_visual

    prepared, cache_path = write_synthetic(tmp_path)
    visual, grounding = write_synthetic_visual(tmp_path, prepared)
    tiny = {"model": "gei", "text_hidden": 16, "d_m": 16, "layers": 1, "heads": 2}
    settings = params(epochs=2)
    settings["models"] = {
        "gei": {k: v for k, v in tiny.items() if k != "model"},
        "gei-span-detection": {**tiny, "span_detection": False, "entity_level_interaction": False},
    }
    for run in ("gei", "gei-span-detection"):
        out = tmp_path / run
        run_training(
            training_job(settings, run, image_side(settings)),
            Workspace.of("d", prepared, text=cache_path, visual=visual, grounding=grounding),
            1,
            out,
        )
        record = json.loads((out / "checkpoint.json").read_text())
        assert record["model"] == "gei" and record["run"] == run and record["inputs"]["visual_dim"] == 8
        assert record["visual_features"] == CacheReader(visual).provenance and record["dataset"] == "d"
        scores, predicted = evaluate_checkpoint(
            out, Workspace.of("d", prepared, text=cache_path, visual=visual, grounding=grounding), "test"
        )
        assert len(predicted) == 16
    with pytest.raises(ConfigError, match="gei reads visual features"):
        run_training(
            training_job(settings, "gei"), Workspace.of("d", prepared, text=cache_path), 1, tmp_path / "x"
        )


def test_a_run_listed_with_the_wrong_caches_is_refused_before_training(tmp_path):
    """A text-only model under pipeline.runs.visual (and a visual one under runs.text)."""
    from tests.synthetic import write_synthetic_visual

    prepared, cache_path = write_synthetic(tmp_path)
    visual, grounding = write_synthetic_visual(tmp_path, prepared)
    job = training_job(params(), "linear-crf", image_side(params()))
    with pytest.raises(ConfigError) as refused:
        run_training(
            job,
            Workspace.of("d", prepared, text=cache_path, visual=visual, grounding=grounding),
            1,
            tmp_path / "x",
        )
    assert str(refused.value) == (
        "params.yaml:pipeline.runs.visual: linear-crf reads no image features (model linear-crf); "
        "list it under pipeline.runs.text"
    )
    gei = build_model("gei", {"text_hidden": 16, "d_m": 8, "layers": 1, "heads": 2}, InputDims(2, 8, 8), 9)
    with pytest.raises(ConfigError) as refused:  # a visual model needs visual caches to be built at all
        check_listed(training_job(params(), "gei"), gei)
    assert str(refused.value) == (
        "params.yaml:pipeline.runs.text: gei reads image features (model gei); "
        "list it under pipeline.runs.visual"
    )
    assert not (tmp_path / "x").exists()


CLUE_CELL_RUNS = {
    "gei": {"text_hidden": 16, "d_m": 16, "layers": 1, "heads": 2},
    "fmit": {"d": 16, "layers": 1, "heads": 2, "ff": 16},
    "umt": {"d": 16, "heads": 2},
}


@pytest.mark.parametrize("model", CLUE_CELL_RUNS)
def test_each_multimodal_model_reads_a_clue_sets_cells_as_its_visual_cells(tmp_path, model):
    """``clue_cells: true``: the clue kind's vectors come from the clue set's text cache (the
    clue's mean first, then its words) and no image cache is read; the checkpoint records the
    cells cache it was trained on and is scored from it."""
    prepared, cache_path = write_synthetic(tmp_path, clue_cells=True)
    settings = params(epochs=1)
    settings["models"] = {model: {**CLUE_CELL_RUNS[model], "clue_cells": True}}
    expect = expected_text(settings)
    workspace = Workspace.of("d", prepared, text=cache_path, cells=cache_path)
    out = tmp_path / "run"
    run_training(training_job(settings, model, {"text": expect, "cells": expect}), workspace, 1, out)
    record = json.loads((out / "checkpoint.json").read_text())
    assert record["inputs"]["visual_dim"] == 16 and set(record["caches"]) == {"text", "cells"}
    loaded, _ = load_checkpoint(out)
    assert loaded.visual_kind == "clue"
    caches = FeatureCaches.open(workspace, record["caches"])
    item = caches.dataset(loaded, "test", read_prepared(prepared / "test.jsonl"), TWITTER_LABELS)[4]
    cells = CacheReader(cache_path).get("test", "clue_words", 4)
    assert item["visual"].shape == (2, 16) and np.array_equal(item["visual"][1].numpy(), cells[0])
    _, predicted = evaluate_checkpoint(out, workspace, "test")
    assert len(predicted) == 16
    with pytest.raises(
        CacheError, match="^this model reads clue cells: give it a clue set's text cache .--clues.$"
    ):
        FeatureCaches(CacheReader(cache_path)).dataset(loaded, "test", [], TWITTER_LABELS)
    with pytest.raises(ConfigError) as refused:  # listed where its caches are not given
        check_listed(training_job(settings, model), loaded)
    assert str(refused.value) == (
        f"params.yaml:pipeline.runs.text: {model} reads clue cells (model {model}); "
        "list it under pipeline.clue_runs"
    )


def test_a_missing_clue_set_cache_names_the_stage_that_makes_it(tmp_path):
    prepared, cache_path = write_synthetic(tmp_path)
    expect = expected_text(params())
    with pytest.raises(CacheError) as refused:
        FeatureCaches.open(Workspace("d", tmp_path, clues="captions"), {"text": expect})
    assert str(refused.value) == (
        f"{tmp_path}/features/text/d.captions.h5: cache not found; "
        "run dvc repro text_features_clues@d-captions"
    )
    workspace = Workspace.of("d", prepared, text=cache_path, cells=tmp_path / "cells.h5")
    with pytest.raises(CacheError) as refused:
        FeatureCaches.open(workspace, {"text": expect, "cells": expect})
    assert str(refused.value) == (
        f"{tmp_path}/cells.h5: cache not found; run dvc repro text_features_clues@d-<clues>"
    )


def test_fmit_and_w_o_obj_run_over_grounded_and_grid_caches(tmp_path):
    from tests.synthetic import write_synthetic_visual

    prepared, cache_path = write_synthetic(tmp_path)
    visual, grounding = write_synthetic_visual(tmp_path, prepared)
    tiny = {"d": 16, "layers": 1, "heads": 2, "ff": 16, "train": {"lr": 0.002}}
    settings = params(epochs=2)
    settings["models"] = {"fmit": tiny, "fmit-no-obj": {**tiny, "model": "fmit", "objects": False}}
    for run, kind in (("fmit", "grounded"), ("fmit-no-obj", "grid")):
        out = tmp_path / run
        job = training_job(settings, run, image_side(settings))
        run_training(
            job, Workspace.of("d", prepared, text=cache_path, visual=visual, grounding=grounding), 1, out
        )
        record = json.loads((out / "checkpoint.json").read_text())
        assert record["model"] == "fmit" and record["train"]["lr"] == 0.002
        model, _ = load_checkpoint(out)
        assert model.visual_kind == kind
        _, predicted = evaluate_checkpoint(
            out, Workspace.of("d", prepared, text=cache_path, visual=visual, grounding=grounding), "test"
        )
        assert len(predicted) == 16
    # it reads the caches it was trained on, the grounding cache among them
    with pytest.raises(
        CacheError, match=r"^features/grounding/d\.h5: cache not found; run dvc repro ground@d$"
    ):
        evaluate_checkpoint(
            tmp_path / "fmit", Workspace.of("d", prepared, text=cache_path, visual=visual), "test"
        )


def with_provenance(path, out, **changes):
    """A copy of the cache at ``path`` whose provenance differs by ``changes`` (dotted keys)."""
    import shutil

    import h5py

    shutil.copy(path, out)
    with h5py.File(out, "r+") as f:
        record = json.loads(f.attrs["provenance"])
        for key, value in changes.items():
            *parents, last = key.split(".")
            node = record
            for part in parents:
                node = node[part]
            node[last] = value
        f.attrs["provenance"] = json.dumps(record)
    return out


def test_every_cache_a_checkpoint_reads_is_checked_against_what_it_was_trained_on(tmp_path):
    from tests.synthetic import write_synthetic_visual

    prepared, cache_path = write_synthetic(tmp_path)
    visual, grounding = write_synthetic_visual(tmp_path, prepared)
    settings = params(epochs=1)
    settings["models"] = {"fmit": {"d": 16, "layers": 1, "heads": 2, "ff": 16}}
    out = tmp_path / "fmit"
    run_training(
        training_job(settings, "fmit", image_side(settings)),
        Workspace.of("d", prepared, text=cache_path, visual=visual, grounding=grounding),
        1,
        out,
    )
    record = json.loads((out / "checkpoint.json").read_text())
    assert set(record["caches"]) == {"text", "objects", "phrases", "grounding", "visual"}
    other_weights = with_provenance(visual, tmp_path / "v2.h5", **{"params.weights": "IMAGENET1K_V1"})
    with pytest.raises(
        CacheError,
        match=r"v2.h5 was built with other settings: params.weights is 'IMAGENET1K_V1', expected "
        r"'IMAGENET1K_V2'. Rerun dvc repro visual_features@d",
    ):
        evaluate_checkpoint(
            out,
            Workspace.of("d", prepared, text=cache_path, visual=other_weights, grounding=grounding),
            "test",
            "conlleval",
            64,
        )
    other_grounding = with_provenance(grounding, tmp_path / "g2.h5", **{"phrases.keep": "base"})
    with pytest.raises(CacheError, match=r"g2.h5 was built with other settings: phrases.keep is 'base'"):
        evaluate_checkpoint(
            out,
            Workspace.of("d", prepared, text=cache_path, visual=visual, grounding=other_grounding),
            "test",
            "conlleval",
            64,
        )
    settings["visual_features"] = {"model": "resnet50"}  # training refuses caches made otherwise
    with pytest.raises(CacheError, match=r"params.model is 'resnet152', expected 'resnet50'"):
        job = training_job(settings, "fmit", image_side(settings))
        run_training(
            job,
            Workspace.of("d", prepared, text=cache_path, visual=visual, grounding=grounding),
            1,
            tmp_path / "x",
        )
    del record["caches"]  # a checkpoint that records nothing to check against is refused
    (out / "checkpoint.json").write_text(json.dumps(record))
    with pytest.raises(CacheError, match="records no provenance of the caches it was trained on"):
        evaluate_checkpoint(
            out,
            Workspace.of("d", prepared, text=cache_path, visual=visual, grounding=grounding),
            "test",
            "conlleval",
            64,
        )


def with_nan_features(data):
    """The items of ``data`` with NaN word features."""
    return [
        {**data[i], "features": torch.full_like(data[i]["features"], float("nan"))} for i in range(len(data))
    ]


def test_a_non_finite_loss_stops_training_before_the_weights_change(synthetic):
    prepared, cache_path = synthetic
    cache = CacheReader(cache_path)
    train_s = read_prepared(prepared / "train.jsonl")
    data = with_nan_features(CachedTextDataset(cache, "train", train_s, TWITTER_LABELS))
    model = build_model("linear-crf", {}, InputDims(2, 16), len(TWITTER_LABELS))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(
        TrainingError, match=r"^train loss is nan at epoch 1, batch 1: check the caches for non-fin"
    ):
        train(model, TrainingData(data, data, [s.labels for s in train_s], TWITTER_LABELS), FAST, 1)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_run_training_saves_nothing_when_the_loss_is_not_finite(tmp_path, monkeypatch):
    from mner.cached.dataset import FeatureCaches

    prepared, cache_path = write_synthetic(tmp_path)
    dataset = FeatureCaches.dataset

    def nan_train_split(self, model, split, sentences, labels):
        data = dataset(self, model, split, sentences, labels)
        return with_nan_features(data) if split == "train" else data

    monkeypatch.setattr(FeatureCaches, "dataset", nan_train_split)
    with pytest.raises(TrainingError, match="train loss is nan at epoch 1"):
        run_training(
            training_job(params(), "linear-crf"),
            Workspace.of("d", prepared, text=cache_path),
            1,
            tmp_path / "ckpt",
        )
    assert not (tmp_path / "ckpt").exists()


@pytest.mark.parametrize("split", ["train", "valid"])
def test_run_training_refuses_an_empty_split(tmp_path, split):
    prepared, cache_path = write_synthetic(tmp_path, sizes=(0, 16, 16) if split == "train" else (48, 0, 16))
    with pytest.raises(ValueError, match=f"^{prepared / split}.jsonl has no sentences: "):
        run_training(
            training_job(params(), "linear-crf"),
            Workspace.of("d", prepared, text=cache_path),
            1,
            tmp_path / "ckpt",
        )
    assert not (tmp_path / "ckpt").exists()


def test_evaluation_refuses_an_empty_split_and_caches_other_than_its_own(tmp_path, monkeypatch):
    import tests.synthetic

    prepared, cache_path = write_synthetic(tmp_path)
    run_training(
        training_job(params(epochs=1), "linear-crf"),
        Workspace.of("d", prepared, text=cache_path),
        1,
        tmp_path / "ckpt",
    )
    monkeypatch.setattr(tests.synthetic, "DIM", 8)  # the same provenance, vectors of another size
    other_prepared, other_cache = write_synthetic(tmp_path / "other")
    with pytest.raises(
        CacheError,
        match=rf"^{other_cache}: word vectors of shape \[2, 8\] \(layers, size\), but {tmp_path}/ckpt/"
        r"checkpoint.json was trained on \[2, 16\]",
    ):
        evaluate_checkpoint(tmp_path / "ckpt", Workspace.of("d", other_prepared, text=other_cache), "test")
    absent = tmp_path / "absent.h5"  # a text-only checkpoint reads its text cache only
    evaluate_checkpoint(
        tmp_path / "ckpt", Workspace.of("d", prepared, text=cache_path, visual=absent), "test"
    )
    (prepared / "test.jsonl").write_text("")
    with pytest.raises(ValueError, match=f"^{prepared}/test.jsonl has no sentences"):
        evaluate_checkpoint(tmp_path / "ckpt", Workspace.of("d", prepared, text=cache_path), "test")


def test_evaluation_refuses_a_visual_cache_of_other_sizes(tmp_path):
    from tests.synthetic import write_synthetic_visual

    prepared, cache_path = write_synthetic(tmp_path)
    visual, grounding = write_synthetic_visual(tmp_path, prepared)
    settings = params(epochs=1)
    settings["models"] = {"gei": {"text_hidden": 16, "d_m": 16, "layers": 1, "heads": 2}}
    out = tmp_path / "gei"
    job = training_job(settings, "gei", image_side(settings))
    run_training(
        job, Workspace.of("d", prepared, text=cache_path, visual=visual, grounding=grounding), 1, out
    )
    other, _ = write_synthetic_visual(tmp_path / "other", prepared, dim=4)
    with pytest.raises(
        CacheError, match=rf"^{other}: visual vectors of size 4, but {out}/checkpoint.json was"
    ):
        evaluate_checkpoint(
            out, Workspace.of("d", prepared, text=cache_path, visual=other, grounding=grounding), "test"
        )


def test_a_checkpoint_directory_that_cannot_be_written_is_refused_before_any_epoch(tmp_path, monkeypatch):
    """It was found only after every epoch had run."""
    from mner import InputError
    from mner import train as trainer

    prepared, cache_path = write_synthetic(tmp_path)
    (tmp_path / "a-file").write_text("not a directory")
    out = tmp_path / "a-file" / "ckpt"
    monkeypatch.setattr(trainer, "train", lambda *args: pytest.fail("training started"))
    with pytest.raises(InputError, match=rf"^{out}: cannot write the checkpoint there \(Not a directory\)$"):
        run_training(
            training_job(params(), "linear-crf"), Workspace.of("d", prepared, text=cache_path), 1, out
        )


def record_inputs(cache_path, prepared):
    """Record the SHA-256 of the prepared splits in a synthetic cache's provenance, as the
    feature stages record the files they read."""
    import h5py

    from mner.core.cache import file_sha256

    with h5py.File(cache_path, "a") as f:
        record = json.loads(f.attrs["provenance"])
        record["inputs"] = {
            str(prepared / f"{s}.jsonl"): file_sha256(prepared / f"{s}.jsonl") for s in SPLITS
        }
        f.attrs["provenance"] = json.dumps(record, sort_keys=True)


def refused_by_evaluation_and_training(message, checkpoint, prepared, cache_path, out):
    """Both read the caches: evaluating ``checkpoint`` and training a new run into ``out``
    each raise a CacheError matching ``message``."""
    with pytest.raises(CacheError, match=message):
        evaluate_checkpoint(checkpoint, Workspace.of("d", prepared, text=cache_path), "test")
    with pytest.raises(CacheError, match=message):
        run_training(
            training_job(params(), "linear-crf"), Workspace.of("d", prepared, text=cache_path), 1, out
        )


def test_caches_of_other_prepared_splits_are_refused(tmp_path):
    """A same-size edit of a prepared split after its caches were built (one gold label
    changed, as a swap in a shared remote leaves it): the ids still match, so only the
    SHA-256 the cache records shows it; training and evaluation refuse, naming both files."""
    prepared, cache_path = write_synthetic(tmp_path)
    record_inputs(cache_path, prepared)
    out = tmp_path / "ckpt"
    run_training(
        training_job(params(epochs=1), "linear-crf"), Workspace.of("d", prepared, text=cache_path), 1, out
    )
    evaluate_checkpoint(out, Workspace.of("d", prepared, text=cache_path), "test")
    for split in ("test", "train"):
        path = prepared / f"{split}.jsonl"
        text = path.read_text()
        recorded = file_sha256(path)[:12]
        path.write_text(text.replace('"B-PER"', '"B-LOC"', 1))
        assert len(path.read_text()) == len(text)
        wrong = (
            rf"^{cache_path} was built from another {split}.jsonl than {path} \(SHA-256 {recorded}\.\.\. "
            rf"recorded, {file_sha256(path)[:12]}\.\.\. found\): rerun "
        )
        refused_by_evaluation_and_training(wrong, out, prepared, cache_path, tmp_path / "c2")
        path.write_text(text)


def test_inputs_a_cache_records_besides_the_prepared_splits_are_not_compared(tmp_path):
    """A cache may record other inputs (a file of its stage's, a split file of another
    directory); only the prepared splits it names are compared, whatever the order."""
    import h5py

    prepared, cache_path = write_synthetic(tmp_path)
    record_inputs(cache_path, prepared)
    (prepared / "labels.json").write_text((prepared / "labels.json").read_text() + " ")
    with h5py.File(cache_path, "a") as f:
        record = json.loads(f.attrs["provenance"])
        record["inputs"][str(prepared / "labels.json")] = "0" * 64  # sorts before the splits
        record["inputs"][str(tmp_path / "elsewhere" / "zzz.jsonl")] = "0" * 64
        f.attrs["provenance"] = json.dumps(record, sort_keys=True)
    out = tmp_path / "ckpt"
    run_training(
        training_job(params(epochs=1), "linear-crf"), Workspace.of("d", prepared, text=cache_path), 1, out
    )
    (prepared / "valid.jsonl").write_text(
        (prepared / "valid.jsonl").read_text().replace('"B-PER"', '"B-LOC"', 1)
    )
    with pytest.raises(CacheError, match=r"was built from another valid\.jsonl"):
        evaluate_checkpoint(out, Workspace.of("d", prepared, text=cache_path), "test")


def write_lock(root, path, stage="text_features@d"):
    """A dvc.lock in ``root`` recording ``path`` as ``stage``'s output, as DVC writes it."""
    import hashlib

    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    out = {"path": path.relative_to(root).as_posix(), "hash": "md5", "md5": md5, "size": path.stat().st_size}
    lock = {"schema": "2.0", "stages": {stage: {"cmd": "python -m stages.text_features", "outs": [out]}}}
    (root / "dvc.lock").write_text(json.dumps(lock))  # JSON is YAML


def test_a_cache_replaced_by_hand_with_one_of_the_same_provenance_is_refused(tmp_path):
    """Only dvc.lock tells another cache of the same settings and sentences (other vectors)
    from the one its stage wrote; training and evaluation compare the two, naming the
    stage and how to restore it, and a file dvc.lock does not record passes."""
    prepared, cache_path = write_synthetic(tmp_path / "ws", seed=0)
    _, other = write_synthetic(tmp_path / "other", seed=1)
    assert CacheReader(other).provenance == CacheReader(cache_path).provenance
    write_lock(tmp_path / "ws", cache_path)
    out = tmp_path / "ckpt"
    run_training(
        training_job(params(epochs=1), "linear-crf"), Workspace.of("d", prepared, text=cache_path), 1, out
    )
    evaluate_checkpoint(out, Workspace.of("d", prepared, text=cache_path), "test")

    cache_path.write_bytes(other.read_bytes())
    assert cache_path.stat().st_size == other.stat().st_size
    lock = tmp_path / "ws" / "dvc.lock"
    wrong = (
        rf"^{cache_path} is not the output of text_features@d that {lock} records \(MD5 [0-9a-f]{{12}}\.\.\. "
        r"recorded, [0-9a-f]{12}\.\.\. found\): it was changed outside `dvc repro`. "
        r"`dvc checkout --force text.h5`"
    )
    refused_by_evaluation_and_training(wrong, out, prepared, cache_path, tmp_path / "c2")

    (prepared / "extra.txt").write_text("x")
    write_lock(tmp_path / "ws", prepared / "extra.txt")  # records other files only
    evaluate_checkpoint(out, Workspace.of("d", prepared, text=cache_path), "test")
    write_lock(tmp_path / "ws", cache_path)
    cache_path.write_bytes(cache_path.read_bytes() + b"\0")
    with pytest.raises(CacheError, match=r" \(\d+ bytes recorded, \d+ found\)"):
        evaluate_checkpoint(out, Workspace.of("d", prepared, text=cache_path), "test")
    lock.write_text("stages: [unclosed")
    with pytest.raises(CacheError, match=rf"^{lock}: not a dvc.lock DVC wrote"):
        evaluate_checkpoint(out, Workspace.of("d", prepared, text=cache_path), "test")


def test_the_directory_check_tries_a_write_where_the_checkpoint_goes(tmp_path):
    """Not in the temporary directory: /proc takes no new file, even from root."""
    from mner import InputError
    from mner.train import check_writable

    check_writable(tmp_path / "new" / "ckpt")  # creates nothing
    assert not (tmp_path / "new").exists()
    with pytest.raises(InputError, match=r"^/proc/mner-ckpt: cannot write the checkpoint there \("):
        check_writable(Path("/proc/mner-ckpt"))


def test_the_seed_fixes_python_numpy_and_torch_draws():
    """A model file may draw from any of the three (e.g. a sampling schedule in NumPy)."""
    import random

    import numpy as np

    def draws():
        return random.random(), float(np.random.rand()), float(torch.rand(()))

    set_seed(7)
    first = draws()
    set_seed(7)
    assert draws() == first
    set_seed(8)
    assert all(a != b for a, b in zip(draws(), first))


def test_under_ddp_a_gpu_process_trains_on_its_own_gpu(monkeypatch):
    """``train.device: cuda`` under torchrun: the GPU that join_processes pinned
    (``cuda:<current>``), not the first one; a CPU run or a single process is left as asked."""
    from mner import train as trainer
    from mner.runner.distributed import Processes

    monkeypatch.setattr(trainer, "resolve_device", torch.device)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    cuda, cpu = TrainConfig(device="cuda"), TrainConfig(device="cpu")
    assert trainer.training_device(cuda, Processes(world=2, rank=1)) == torch.device("cuda", 3)
    assert trainer.training_device(cuda, Processes()) == torch.device("cuda")
    assert trainer.training_device(cpu, Processes(world=2, rank=1)) == torch.device("cpu")


def train_split(synthetic):
    prepared, cache_path = synthetic
    return CachedTextDataset(
        CacheReader(cache_path), "train", read_prepared(prepared / "train.jsonl"), TWITTER_LABELS
    )


def test_each_process_loads_its_share_with_the_configured_workers(synthetic):
    from mner.runner.distributed import Processes
    from mner.train import training_batches

    data = train_split(synthetic)
    config = TrainConfig(batch_size=8, num_workers=2)
    sampler, loader = training_batches(data, config, Processes(world=2, rank=1), seed=5)
    assert (loader.batch_size, loader.num_workers) == (4, 2)
    assert (sampler.num_replicas, sampler.rank, sampler.seed, sampler.shuffle) == (2, 1, 5, True)
    with pytest.raises(ValueError, match=r"^train.batch_size \(8\) must be a multiple of the 3 processes$"):
        training_batches(data, config, Processes(world=3), seed=5)


def test_the_epoch_losses_are_averaged_over_the_processes(synthetic, monkeypatch):
    """Under DDP each process sends its mean losses, in float64, to one all-reduce (a sum)
    and divides by the world size (here a second process with known means stands in)."""
    from mner import train as trainer
    from mner.train import LossOf, _train_epoch

    data = train_split(synthetic)
    loader = torch.utils.data.DataLoader(data, batch_size=8, collate_fn=collate)
    other = {"train_loss": 0.1, "train_half": 0.7}
    sent = []

    def all_reduce(values):
        sent.append(values.clone())
        values += torch.tensor(list(other.values()), dtype=values.dtype)

    two = SimpleNamespace(is_initialized=lambda: True, all_reduce=all_reduce, get_world_size=lambda: 2)
    monkeypatch.setattr(trainer, "dist", two)
    model = build_model("linear-crf", {}, InputDims(2, 16), len(TWITTER_LABELS))
    crf_loss = model.loss

    def two_losses(batch):
        loss = crf_loss(batch)["loss"]
        return {"loss": loss, "half": loss / 2}

    model.loss = two_losses
    optimizer, scheduler = optimizer_and_schedule(model, FAST, len(loader))
    means = _train_epoch(LossOf(model), loader, optimizer, scheduler, 1.0, torch.device("cpu"), 1)
    (mine,) = sent
    assert mine.dtype == torch.float64 and list(means) == ["train_loss", "train_half"]
    assert means == {name: (own + other[name]) / 2 for name, own in zip(means, mine.tolist())}
