"""The processes of a ``torchrun`` launch: joined once, by the stage script that runs
under it (training, or a feature stage run as shards), and read everywhere else."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Processes:
    world: int = 1  # processes in the launch
    rank: int = 0  # this one's number; rank 0 logs and writes the outputs


def launched() -> int:
    """The number of processes ``torchrun`` started (``WORLD_SIZE``; 1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def join_processes(backend: str | None = None, timeout: timedelta | None = None) -> Processes:
    """Under ``torchrun`` with more than one process, join the process group (NCCL with
    GPUs, gloo otherwise, unless ``backend`` says) with this process pinned to its own GPU;
    this process's :class:`Processes` in any case."""
    if launched() > 1 and not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        dist.init_process_group(backend, **({"timeout": timeout} if timeout else {}))
    return current_processes()


def current_processes() -> Processes:
    """The process group this process has joined (one process when none); refuses a
    ``torchrun`` launch whose group was not joined, where every process would otherwise
    work as if it were alone."""
    if dist.is_initialized():
        return Processes(dist.get_world_size(), dist.get_rank())
    if launched() > 1:
        raise RuntimeError(
            f"torchrun started {launched()} processes but this one has not joined their group: "
            "call mner.runner.distributed.join_processes() first"
        )
    return Processes()
