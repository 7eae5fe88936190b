"""Running a model over a dataset: batches moved to the device, progress bars, and the
decoded label sequences of every item (evaluation, the visual-use diagnostic and training's
dev scores read them here)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from mner.cached.dataset import collate


def move(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


REFRESH_SECONDS = {"terminal": 1.0, "log": 30.0}  # how often a progress bar redraws


def progress(iterable, desc: str) -> tqdm:
    """A progress bar over ``iterable`` on stderr, cleared when done; shown by rank 0
    only (the other processes would draw the same bar)."""
    rank = dist.get_rank() if dist.is_initialized() else 0
    refresh = REFRESH_SECONDS["terminal" if sys.stderr.isatty() else "log"]
    options = {"disable": True} if rank else {}  # else TQDM_DISABLE decides
    return tqdm(iterable, desc=desc, unit="batch", leave=False, mininterval=refresh, **options)


@torch.no_grad()
def predict_labels(
    model: nn.Module,
    data: Dataset,
    labels: Sequence[str],
    batch_size: int = 128,
    device: str = "cpu",
    desc: str = "predict",
) -> list[list[str]]:
    """Decoded label sequences of every item, in dataset order (a progress bar named
    ``desc`` while it runs)."""
    model.eval()
    out: list[list[str]] = [[] for _ in range(len(data))]
    for batch in progress(DataLoader(data, batch_size=batch_size, collate_fn=collate), desc):
        batch = move(batch, torch.device(device))
        for index, ids in zip(batch["index"].tolist(), model.decode(batch)):
            out[index] = [labels[i] for i in ids]
    return out
