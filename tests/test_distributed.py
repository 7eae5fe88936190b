"""The trainer under DDP: two CPU processes (gloo) against one process."""

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mner.cached.dataset import CachedTextDataset, collate
from mner.core.cache import CacheReader
from mner.core.config import to_dict
from mner.core.workspace import Workspace
from mner.data.labels import TWITTER_LABELS
from mner.data.prepared import read_prepared
from mner.models import load_checkpoint
from mner.runner.distributed import Processes, current_processes
from mner.train import TrainConfig, run_training, training_job
from tests.synthetic import TEXT_CONFIG, write_synthetic

PARAMS = {
    "text_features": to_dict(TEXT_CONFIG),
    "train": to_dict(TrainConfig(lr=5e-3, epochs=3, batch_size=8, warmup=0.0, patience=0, device="cpu")),
    "models": {"transformer-crf": {"hidden": 16, "layers": 1, "heads": 2, "ff": 32, "dropout": 0.0}},
}


def train_in_process(rank: int, world: int, root: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{root}/rendezvous", rank=rank, world_size=world)
    try:
        prepared, cache = Path(root) / "prepared", Path(root) / "text.h5"
        result = run_training(
            training_job(PARAMS, "transformer-crf"), Workspace.of("d", prepared, text=cache), 1, Path(out)
        )
        Path(f"{out}-rank{rank}.json").write_text(json.dumps(result.history))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("world", [2])
def test_two_processes_train_as_one(tmp_path, world):
    prepared, cache = write_synthetic(tmp_path)  # 48 training tweets: 6 global batches of 8
    single = run_training(
        training_job(PARAMS, "transformer-crf"),
        Workspace.of("d", prepared, text=cache),
        1,
        tmp_path / "single",
    )
    mp.spawn(train_in_process, args=(world, str(tmp_path), str(tmp_path / "ddp")), nprocs=world, join=True)

    histories = [json.loads((tmp_path / f"ddp-rank{r}.json").read_text()) for r in range(world)]
    assert histories[0] == histories[1]  # both processes saw the same losses and dev F1
    for one, many in zip(single.history, histories[0]):
        assert many["train_loss"] == pytest.approx(one["train_loss"], rel=1e-4)
        assert many["dev_f1"] == pytest.approx(one["dev_f1"], abs=1e-9)
    # the outputs, not the weights: the attention's key bias gets no gradient but float
    # noise, which Adam turns into updates of either sign
    batch = collate(
        [
            CachedTextDataset(
                CacheReader(cache), "valid", read_prepared(prepared / "valid.jsonl"), TWITTER_LABELS
            )[i]
            for i in range(16)
        ]
    )
    a, b = (load_checkpoint(tmp_path / name)[0] for name in ("single", "ddp"))
    torch.testing.assert_close(a.emissions(batch), b.emissions(batch), atol=1e-4, rtol=1e-4)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("ddp")) == [
        "ddp",
        "ddp-rank0.json",
        "ddp-rank1.json",
    ]  # one checkpoint directory, written by rank 0


def test_batch_size_must_split_over_the_processes(tmp_path):
    prepared, cache = write_synthetic(tmp_path)
    mp.spawn(odd_batch, args=(str(tmp_path),), nprocs=2, join=True)
    assert all((tmp_path / f"refused{r}").read_text().startswith("train.batch_size (9)") for r in range(2))


def odd_batch(rank: int, root: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{root}/rendezvous", rank=rank, world_size=2)
    try:
        params = {**PARAMS, "train": {**PARAMS["train"], "batch_size": 9}}
        run_training(
            training_job(params, "transformer-crf"),
            Workspace.of("d", Path(root) / "prepared", text=Path(root) / "text.h5"),
            1,
            Path(root) / "x",
        )
    except ValueError as error:
        Path(f"{root}/refused{rank}").write_text(str(error))
    finally:
        dist.destroy_process_group()


def test_a_torchrun_launch_whose_group_was_not_joined_is_refused(monkeypatch):
    """Each process would otherwise train on the whole data as if alone."""
    assert current_processes() == Processes(world=1, rank=0)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="torchrun started 2 processes but this one has not joined"):
        current_processes()
