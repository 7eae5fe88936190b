"""The trainer: AdamW with warm-up and linear decay, gradient clipping, early stopping on
dev micro-F1, the best state kept; seeded so the same seed gives the same F1 on the same
machine.

It runs unchanged in one process or in many (``torchrun --nproc_per_node N``, DDP over
gloo on CPU or NCCL on GPUs): each process takes ``batch_size / N`` tweets of every
global batch, drawn from one seeded permutation per epoch whatever N is, so the global
batches (and, without dropout, the updates) are those of one process up to the padding
of the last batch; every process scores the whole dev set, so they agree on early
stopping; only rank 0 logs, shows progress, reports epochs and saves the checkpoint. A
non-finite training loss stops training with :class:`TrainingError` before the step that
would spread it: each process checks its own batches, and when one fails torchrun stops
the others.

Progress: a bar per epoch over the training batches (the running mean of each loss beside
it) and one over the dev batches, on stderr, each cleared when done; then one log line per
epoch with the loss and the dev scores. On a terminal the bars redraw every second; in a
log file (stderr not a terminal) every 30 s, so a log holds a few lines per epoch.
``TQDM_DISABLE=1`` hides them."""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from dvclive import Live
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from mner import InputError
from mner.cached.dataset import FeatureCaches, collate
from mner.cached.inference import move, predict_labels, progress
from mner.core.config import (
    ConfigError,
    Count,
    Device,
    NonNegative,
    Positive,
    Share,
    Weight,
    from_dict,
    resolve_device,
    section,
    to_dict,
)
from mner.core.workspace import Workspace
from mner.data.conll import sigil_convention
from mner.data.labels import Scheme
from mner.data.prepared import prepared_sentences, read_labels
from mner.metrics import score
from mner.models import InputDims, Run, build_model, resolve_run, save_checkpoint
from mner.runner.distributed import Processes, current_processes, join_processes
from mner.settings.text import expected_text
from mner.tagger import ScheduledTagger, visual_kind

log = logging.getLogger(__name__)


class TrainingError(InputError):
    """Training that cannot go on (a non-finite loss); ``str()`` says where and what to try."""


@dataclass(frozen=True)
class TrainConfig:
    lr: Positive = 1e-3
    epochs: Count = 30
    batch_size: Count = 32
    eval_batch_size: Count = 128
    warmup: Share = 0.1  # share of the optimizer steps spent warming up
    weight_decay: Weight = 0.01
    max_grad_norm: Positive = 1.0
    patience: NonNegative = 5  # epochs without a better dev F1 before stopping; 0 never stops early
    num_workers: NonNegative = 0  # DataLoader workers (each opens the HDF5 caches itself)
    device: Device = "auto"
    scheme: Scheme = "conlleval"  # chunking used for the dev F1


@dataclass
class TrainResult:
    best_epoch: int
    best_dev_f1: float
    history: list[dict] = field(default_factory=list)  # one dict of metrics per epoch
    seconds_per_epoch: float = 0.0


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextmanager
def deterministic_algorithms() -> Iterator[None]:
    """Deterministic kernels inside the block (restored after): without them some CPU
    kernels (FMIT's backward at the default thread count) and cuBLAS give other bits on
    every run. An op with no deterministic kernel warns instead of failing."""
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # what deterministic cuBLAS needs
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


def linear_warmup_decay(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int):
    """Learning rate rising linearly to its value over ``warmup_steps``, then falling
    linearly to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def format_losses(means: dict[str, float]) -> str:
    """Named losses (``train_`` dropped, the total first) as the training bar and the epoch
    line show them."""
    names = sorted(means, key=lambda name: name.removeprefix("train_") != "loss")
    return ", ".join(f"{name.removeprefix('train_')} {means[name]:.4f}" for name in names)


def epoch_line(metrics: dict, epochs: int, best_epoch: int, best_f1: float) -> str:
    """One epoch as the log shows it: losses, dev scores (in percent), learning rate and
    the best dev F1 so far."""
    losses = format_losses({k: v for k, v in metrics.items() if k.startswith("train_")})
    dev = "/".join(f"{100 * metrics[f'dev_{k}']:.2f}" for k in ("precision", "recall", "f1"))
    return (
        f"epoch {metrics['epoch']}/{epochs}: train {losses}; dev P/R/F1 {dev}; lr {metrics['lr']:.2e}; "
        f"best dev F1 {100 * best_f1:.2f} (epoch {best_epoch})"
    )


class LossOf(nn.Module):
    """A model's ``loss`` as ``forward``, so that DDP synchronises its gradients."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        return self.model.loss(batch)


@dataclass(frozen=True)
class TrainingData:
    """What a model trains on: the training items, and the dev items with their gold
    labels for early stopping (the items' label ids index ``labels``)."""

    train: Dataset
    dev: Dataset
    dev_gold: Sequence[Sequence[str]]
    labels: Sequence[str]


@dataclass
class EarlyStopping:
    """The best dev F1 so far, its epoch and the model's state then; stops after
    ``patience`` epochs without a better one (0: never)."""

    patience: int
    best_epoch: int = 0
    best_f1: float = -1.0
    best_state: dict | None = None

    def update(self, epoch: int, f1: float, model: nn.Module) -> None:
        """Record epoch ``epoch``'s dev F1, and the model's state when it is the best so far."""
        if f1 > self.best_f1:
            self.best_epoch, self.best_f1 = epoch, f1
            self.best_state = copy.deepcopy(model.state_dict())

    def should_stop(self, epoch: int) -> bool:
        """After epoch ``epoch`` (updated): no better dev F1 for ``patience`` epochs."""
        return bool(self.patience) and epoch != self.best_epoch and epoch - self.best_epoch >= self.patience


def train(
    model: nn.Module,
    data: TrainingData,
    config: TrainConfig,
    seed: int,
    on_epoch: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place; at the end it holds the state of its best dev epoch. The
    same seed on the same machine gives the same weights, bit for bit. Under ``torchrun``
    the processes' group must be joined first (:func:`mner.runner.distributed.join_processes`)."""
    with deterministic_algorithms():
        set_seed(seed)
        processes = current_processes()
        device = training_device(config, processes)
        model.to(device)
        sampler, loader = training_batches(data.train, config, processes, seed)
        step = LossOf(model)
        if processes.world > 1:  # some parameters get no gradient in some batches (GEI without entities)
            step = DistributedDataParallel(step, find_unused_parameters=True)
        optimizer, scheduler = optimizer_and_schedule(model, config, config.epochs * len(loader))
        stopping, history, seconds = EarlyStopping(config.patience), [], 0.0
        for epoch in range(1, config.epochs + 1):
            if isinstance(model, ScheduledTagger):  # a schedule of its own (GEI's scheduled sampling)
                model.set_epoch(epoch)
            sampler.set_epoch(epoch)
            start = time.perf_counter()
            losses = _train_epoch(step, loader, optimizer, scheduler, config.max_grad_norm, device, epoch)
            seconds += time.perf_counter() - start
            metrics = {"epoch": epoch, **losses, **dev_scores(model, data, config, device, epoch)}
            metrics["lr"] = scheduler.get_last_lr()[0]
            history.append(metrics)
            stopping.update(epoch, metrics["dev_f1"], model)
            if processes.rank == 0:
                log.info(epoch_line(metrics, config.epochs, stopping.best_epoch, stopping.best_f1))
                if on_epoch:
                    on_epoch(metrics)
            if stopping.should_stop(epoch):
                log.info("early stop: no better dev F1 for %d epochs", config.patience)
                break
        model.load_state_dict(stopping.best_state)
        return TrainResult(stopping.best_epoch, stopping.best_f1, history, seconds / len(history))


def training_device(config: TrainConfig, processes: Processes) -> torch.device:
    """``train.device``; with GPUs under DDP, this process's own GPU."""
    device = resolve_device(config.device)
    if device.type == "cuda" and processes.world > 1:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def training_batches(
    data: Dataset, config: TrainConfig, processes: Processes, seed: int
) -> tuple[DistributedSampler, DataLoader]:
    """This process's share (``batch_size / world`` tweets) of every global batch, drawn
    from one seeded permutation per epoch (the sampler's ``set_epoch``)."""
    if config.batch_size % processes.world:
        raise ValueError(
            f"train.batch_size ({config.batch_size}) must be a multiple of the {processes.world} processes"
        )
    sampler = DistributedSampler(
        data, num_replicas=processes.world, rank=processes.rank, shuffle=True, seed=seed
    )
    loader = DataLoader(
        data,
        batch_size=config.batch_size // processes.world,
        sampler=sampler,
        collate_fn=collate,
        num_workers=config.num_workers,
    )
    return sampler, loader


def optimizer_and_schedule(
    model: nn.Module, config: TrainConfig, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW (no weight decay on biases and norms) and its warm-up and linear decay over
    ``total_steps``."""
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
    )
    return optimizer, linear_warmup_decay(optimizer, int(config.warmup * total_steps), total_steps)


def dev_scores(
    model: nn.Module, data: TrainingData, config: TrainConfig, device: torch.device, epoch: int
) -> dict[str, float]:
    """Dev precision, recall and F1 of ``model`` (every process scores the whole dev set,
    so they agree on early stopping)."""
    predicted = predict_labels(
        model, data.dev, data.labels, config.eval_batch_size, device, f"epoch {epoch} dev"
    )
    dev = score(data.dev_gold, predicted, config.scheme).overall
    return {"dev_precision": dev.precision, "dev_recall": dev.recall, "dev_f1": dev.f1}


def _train_epoch(step, loader, optimizer, scheduler, max_grad_norm, device, epoch) -> dict[str, float]:
    """One pass over the training data; the mean of each named loss (over all processes).
    A non-finite loss raises :class:`TrainingError` before it reaches the weights."""
    step.train()
    sums: dict[str, float] = {}
    bar = progress(loader, f"epoch {epoch} train")
    for number, batch in enumerate(bar, start=1):
        losses = step(move(batch, device))
        loss = losses["loss"].item()
        if not math.isfinite(loss):
            raise TrainingError(
                f"train loss is {loss} at epoch {epoch}, batch {number}: check the caches for "
                "non-finite values or lower train.lr"
            )
        optimizer.zero_grad()
        losses["loss"].backward()
        nn.utils.clip_grad_norm_(step.parameters(), max_grad_norm)
        optimizer.step()
        scheduler.step()
        for name, value in losses.items():
            sums[f"train_{name}"] = sums.get(f"train_{name}", 0.0) + value.item()
        running = {name: total / number for name, total in sums.items()}
        bar.set_postfix_str(format_losses(running), refresh=False)  # drawn at the next redraw
    means = {name: total / len(loader) for name, total in sums.items()}
    if dist.is_initialized():
        values = torch.tensor(list(means.values()), dtype=torch.float64, device=device)
        dist.all_reduce(values)
        means = dict(zip(means, (values / dist.get_world_size()).tolist()))
    return means


def train_config(params: Mapping[str, Any], run: Run) -> TrainConfig:
    """The ``train`` section with the run's own overrides (``models.<run name>.train``), e.g.
    the learning rate a model is trained with."""
    values = {**to_dict(section(params, "train", TrainConfig)), **run.train}
    return from_dict(TrainConfig, values, f"params.yaml:models.{run.name}.train")


@dataclass(frozen=True)
class TrainingJob:
    """One training run as params.yaml defines it: its model (``models.<name>``), its
    ``train`` settings and what it expects of each cache it reads."""

    name: str  # the run's name, its entry under models
    run: Run
    config: TrainConfig
    caches: dict[str, dict]  # expected provenance: text, and for a multimodal run the visual caches'


def training_job(
    params: Mapping[str, Any], name: str, caches: Mapping[str, dict] | None = None
) -> TrainingJob:
    """The run ``name`` from ``params``, reading the caches ``caches`` expects (by default the
    text cache that ``params`` sets; a multimodal run adds the image side's,
    :func:`mner.settings.visual.expected_caches`)."""
    run = resolve_run(params.get("models") or {}, name)
    caches = dict(caches or {"text": expected_text(params)})
    return TrainingJob(name, run, train_config(params, run), caches)


def check_writable(out_dir: Path) -> None:
    """Refuse, before any epoch, a checkpoint directory that cannot be written (tried in
    its nearest existing directory, creating nothing)."""
    existing = next(p for p in (out_dir, *out_dir.parents) if p.exists())
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, "Not a directory")
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as error:
        raise InputError(f"{out_dir}: cannot write the checkpoint there ({error.strerror})") from None


def check_listed(job: TrainingJob, model: nn.Module) -> None:
    """Refuse a run listed with the wrong caches: under ``pipeline.runs.text`` a model that
    reads images, under ``pipeline.runs.visual`` one that does not or that reads clue cells,
    under ``pipeline.clue_runs`` one that reads images."""
    kind = visual_kind(model)
    reads = kind.cache if kind else None
    listed = "visual" if "visual" in job.caches else "cells" if "cells" in job.caches else None
    if reads == listed:
        return
    lists = {"visual": "pipeline.runs.visual", "cells": "pipeline.clue_runs", None: "pipeline.runs.text"}
    what = {"visual": "reads image features", "cells": "reads clue cells", None: "reads no image features"}
    raise ConfigError(
        f"params.yaml:{lists[listed]}: {job.name} {what[reads]} (model {job.run.model}); "
        f"list it under {lists[reads]}"
    )


def run_training(
    job: TrainingJob,
    workspace: Workspace,
    seed: int,
    out_dir: Path,
    on_epoch: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train ``job``'s model over the cached features of ``workspace`` (those its expectations
    name) and save the best checkpoint to ``out_dir`` (rank 0 only under DDP)."""
    if current_processes().rank == 0:
        check_writable(out_dir)
    caches = FeatureCaches.open(workspace, job.caches)
    prepared = workspace.prepared
    caches.check_inputs(prepared)
    train_sentences = prepared_sentences(prepared / "train.jsonl")
    dev_sentences = prepared_sentences(prepared / "valid.jsonl")
    inputs = InputDims(*caches.text.row_shape("train", "words"), visual_dim=caches.visual_dim("train"))
    labels = read_labels(prepared)
    set_seed(seed)  # the initial weights depend on the seed too
    model = build_model(job.run.model, job.run.config, inputs, len(labels))
    check_listed(job, model)
    data = TrainingData(
        caches.dataset(model, "train", train_sentences, labels),
        caches.dataset(model, "valid", dev_sentences, labels),
        [s.labels for s in dev_sentences],
        labels,
    )
    result = train(model, data, job.config, seed, on_epoch)
    if current_processes().rank == 0:
        save_checkpoint(
            out_dir,
            job.run.model,
            model,
            inputs,
            labels,
            run=job.name,
            dataset=workspace.dataset,
            sigils=sigil_convention(train_sentences),  # how mner predict splits a post's words
            seed=seed,
            train=to_dict(job.config),
            text_features=caches.text.provenance,
            visual_features=caches.visual_source.provenance if caches.visual_source else None,
            caches=job.caches,
            best_epoch=result.best_epoch,
            best_dev_f1=result.best_dev_f1,
        )
    return result


def log_epoch(live: Live, metrics: dict) -> None:
    """An epoch's ``metrics`` logged by DVCLive at step = the epoch (from 1), so that its
    plots (x: step) count epochs as the training log does."""
    live.step = metrics["epoch"]
    for name, value in metrics.items():
        if name != "epoch":
            live.log_metric(name, value)
    live.next_step()


def train_stage(job: TrainingJob, workspace: Workspace, seed: int, out: Path) -> dict:
    """A train stage of the pipeline: train ``job`` into ``out`` (``checkpoint/``), its epochs
    logged by DVCLive (``live/``) and its summary written to ``train.json`` (rank 0 only);
    the summary. DVCLive starts at the first epoch (it clears ``live/`` when it starts), so a
    training refused before it leaves the last run's plots."""
    processes = join_processes()  # several processes under torchrun; rank 0 writes the outputs
    live: Live | None = None

    def on_epoch(metrics: dict) -> None:  # called on rank 0
        nonlocal live
        if live is None:
            live = Live(str(out / "live"), dvcyaml=None, save_dvc_exp=False)
        log_epoch(live, metrics)

    try:
        result = run_training(job, workspace, seed, out / "checkpoint", on_epoch)
    finally:
        if live is not None:
            live.end()
    summary = {
        "best_epoch": result.best_epoch,
        "best_dev_f1": result.best_dev_f1,
        "seconds_per_epoch": result.seconds_per_epoch,
        "processes": processes.world,
    }
    if processes.rank == 0:
        (out / "train.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
