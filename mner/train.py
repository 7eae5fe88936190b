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
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from mner.config import ConfigError, from_dict, resolve_device, section, to_dict
from mner.data.conll import LABELS
from mner.data.dataset import FeatureCaches, collate
from mner.data.labels import Scheme
from mner.data.prepared import prepared_sentences
from mner.features.text import TextFeaturesConfig, expected_provenance
from mner.features.visual import expected_caches
from mner.inference import move, predict_labels, progress
from mner.metrics import score
from mner.models import InputDims, Run, build_model, resolve_run, save_checkpoint
from mner.tagger import ScheduledTagger

log = logging.getLogger(__name__)


class TrainingError(ValueError):
    """Training that cannot go on (a non-finite loss); ``str()`` says where and what to try."""


@dataclass(frozen=True)
class TrainConfig:
    lr: float = 1e-3
    epochs: int = 30
    batch_size: int = 32
    eval_batch_size: int = 128
    warmup: float = 0.1  # share of the optimizer steps spent warming up
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    patience: int = 5  # epochs without a better dev F1 before stopping; 0 never stops early
    num_workers: int = 0  # DataLoader workers (each opens the HDF5 caches itself)
    device: str = "auto"
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


def init_distributed() -> tuple[int, int]:
    """``(world size, rank)``; under ``torchrun`` (``WORLD_SIZE`` > 1) joins the process
    group first (NCCL with GPUs, gloo otherwise) and pins this process's GPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
    if dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class LossOf(nn.Module):
    """A model's ``loss`` as ``forward``, so that DDP synchronises its gradients."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        return self.model.loss(batch)


def train(
    model: nn.Module,
    train_data: Dataset,
    dev_data: Dataset,
    dev_gold: Sequence[Sequence[str]],
    labels: Sequence[str],
    config: TrainConfig,
    seed: int,
    on_epoch: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place; at the end it holds the state of its best dev epoch. The
    same seed on the same machine gives the same weights, bit for bit."""
    with deterministic_algorithms():
        return _train(model, train_data, dev_data, dev_gold, labels, config, seed, on_epoch)


def _train(model, train_data, dev_data, dev_gold, labels, config, seed, on_epoch) -> TrainResult:
    set_seed(seed)
    world, rank = init_distributed()
    if config.batch_size % world:
        raise ValueError(
            f"train.batch_size ({config.batch_size}) must be a multiple of the {world} processes"
        )
    device = resolve_device(config.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", torch.cuda.current_device())
    model.to(device)
    sampler = DistributedSampler(train_data, num_replicas=world, rank=rank, shuffle=True, seed=seed)
    loader = DataLoader(
        train_data,
        batch_size=config.batch_size // world,
        sampler=sampler,
        collate_fn=collate,
        num_workers=config.num_workers,
    )
    step = LossOf(model)
    if world > 1:  # some parameters get no gradient in some batches (GEI without entities)
        step = DistributedDataParallel(step, find_unused_parameters=True)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
    )
    total = config.epochs * len(loader)
    scheduler = linear_warmup_decay(optimizer, int(config.warmup * total), total)
    result, best_state, seconds = TrainResult(best_epoch=0, best_dev_f1=-1.0), None, 0.0
    for epoch in range(1, config.epochs + 1):
        if isinstance(model, ScheduledTagger):  # a schedule of its own (GEI's scheduled sampling)
            model.set_epoch(epoch)
        sampler.set_epoch(epoch)
        start = time.perf_counter()
        losses = _train_epoch(step, loader, optimizer, scheduler, config.max_grad_norm, device, epoch)
        seconds += time.perf_counter() - start
        predicted = predict_labels(
            model, dev_data, labels, config.eval_batch_size, device, f"epoch {epoch} dev"
        )
        dev = score(dev_gold, predicted, config.scheme)
        metrics = {
            "epoch": epoch,
            **losses,
            "dev_precision": dev.overall.precision,
            "dev_recall": dev.overall.recall,
            "dev_f1": dev.overall.f1,
            "lr": scheduler.get_last_lr()[0],
        }
        result.history.append(metrics)
        better = dev.overall.f1 > result.best_dev_f1
        if better:
            result.best_epoch, result.best_dev_f1 = epoch, dev.overall.f1
            best_state = copy.deepcopy(model.state_dict())
        if rank == 0:
            log.info(epoch_line(metrics, config.epochs, result.best_epoch, result.best_dev_f1))
            if on_epoch:
                on_epoch(metrics)
        if not better and config.patience and epoch - result.best_epoch >= config.patience:
            log.info("early stop: no better dev F1 for %d epochs", config.patience)
            break
    model.load_state_dict(best_state)
    result.seconds_per_epoch = seconds / len(result.history)
    return result


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


def train_config(params: dict, run: Run) -> TrainConfig:
    """The ``train`` section with the run's own overrides (``models.<run name>.train``, over
    its base entry's), e.g. the learning rate a model is trained with."""
    values = {**to_dict(section(params, "train", TrainConfig)), **run.train}
    return from_dict(TrainConfig, values, f"params.yaml:models.{run.entries[0]}.train")


def run_training(
    params: dict,
    dataset: str,
    run_name: str,
    seed: int,
    prepared: Path,
    text_cache: Path,
    out_dir: Path,
    on_epoch: Callable[[dict], None] | None = None,
    visual_cache: Path | None = None,
    grounding_cache: Path | None = None,
    tracked: Sequence[str] | None = None,
) -> TrainResult:
    """Train the model of ``models.<run_name>`` with the ``train`` params over the cached
    features of ``dataset`` and save the best checkpoint to ``out_dir`` (rank 0 only when
    distributed). ``tracked``: the ``models`` entries the calling stage tracks as params;
    a run built on any other entry is refused, as DVC would not rerun it when that changes."""
    text_config = section(params, "text_features", TextFeaturesConfig)
    run = resolve_run(params.get("models") or {}, run_name)
    untracked = [entry for entry in run.entries if tracked is not None and entry not in tracked]
    if untracked:
        raise ConfigError(
            f"params.yaml:models.{run_name} builds on models.{untracked[0]}, which its train stage does "
            f"not track (it tracks models.{', models.'.join(tracked)}): list the run under "
            f"pipeline.multimodal_models.<its base>, or give it an entry of its own"
        )
    config = train_config(params, run)
    expect = {"text": expected_provenance(text_config)}
    if visual_cache:
        expect |= expected_caches(params)
    caches = FeatureCaches.open(text_cache, expect, visual_cache, grounding_cache, dataset)
    train_sentences = prepared_sentences(prepared / "train.jsonl")
    dev_sentences = prepared_sentences(prepared / "valid.jsonl")
    visual_dim = caches.visual.row_shape("train", "image")[0] if caches.visual else 0
    inputs = InputDims(*caches.text.row_shape("train", "words"), visual_dim=visual_dim)
    set_seed(seed)  # the initial weights depend on the seed too
    model = build_model(run.model, run.config, inputs, len(LABELS))
    result = train(
        model,
        caches.dataset(model, "train", train_sentences, LABELS),
        caches.dataset(model, "valid", dev_sentences, LABELS),
        [s.labels for s in dev_sentences],
        LABELS,
        config,
        seed,
        on_epoch,
    )
    if init_distributed()[1] != 0:
        return result  # rank 0 saves
    save_checkpoint(
        out_dir,
        run.model,
        model,
        inputs,
        LABELS,
        run=run_name,
        dataset=dataset,
        seed=seed,
        train=to_dict(config),
        text_features=caches.text.provenance,
        visual_features=caches.visual.provenance if caches.visual else None,
        caches=expect,
        best_epoch=result.best_epoch,
        best_dev_f1=result.best_dev_f1,
    )
    return result
