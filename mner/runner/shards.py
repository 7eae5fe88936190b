"""Sharded feature extraction: n GPUs or n machines each run a feature stage on shard i
of n, and the shard caches are merged into the one cache file the trainer reads.

A tweet belongs to shard ``sha256(tweet id) mod n`` (stable across machines and Python
runs, unlike ``hash``). A shard job reads the full caches of the stages before it and
writes ``<cache stem>.shard<i>-of-<n>.h5`` beside the full cache path, with the same
provenance as an unsharded run, so the merged file is what one job would have written.
Two ways to launch:

- ``torchrun --nproc_per_node N -m stages.<stage> --dataset D``: rank i runs shard i of N
  (pinned to its own GPU), then rank 0 merges once every rank is done;
- ``python -m stages.<stage> --dataset D --shard i/N`` as N independent jobs (on a shared
  file system), then ``mner merge-shards <cache> --shards N``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import numpy as np

from mner.core.cache import CacheError, CacheReader, CacheWriter
from mner.core.workspace import image_report
from mner.data.conll import SPLITS
from mner.data.prepared import read_prepared
from mner.runner.distributed import join_processes, launched

Item = TypeVar("Item")
Report = TypeVar("Report")


def shard_of(item_id: str, count: int) -> int:
    """The shard (of ``count``) that the tweet ``item_id`` belongs to."""
    return int.from_bytes(hashlib.sha256(item_id.encode()).digest()[:8], "big") % count


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index}/{self.count}: need 0 <= i < n (shards are numbered from 0)")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"i/n"`` as given to ``--shard``."""
        try:
            index, count = (int(part) for part in text.split("/"))
        except ValueError:
            raise ValueError(f"--shard {text!r}: expected i/n, e.g. 0/4 (shard 0 of 4)") from None
        return cls(index, count)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def select(self, items: Sequence[Item], key: Callable[[Item], str] = lambda s: s.id) -> list[Item]:
        """The items of this shard, in their order."""
        return [item for item in items if shard_of(key(item), self.count) == self.index]

    def path(self, out: Path | str) -> Path:
        """Where this shard's part of the cache ``out`` is written."""
        out = Path(out)
        return out.with_name(f"{out.stem}.shard{self.index}-of-{self.count}{out.suffix}")


def select(items: Sequence[Item], shard: Shard | None) -> list[Item]:
    """The tweets a job works on: all of them, or those of its shard."""
    return list(items) if shard is None else shard.select(items)


def extraction_arguments(description: str, *extra: tuple[str, str]) -> argparse.Namespace:
    """The command line of a feature stage (``--dataset``, ``--shard`` and the ``extra``
    ``(option, help)`` of its own), logging set up."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=description)
    for option, text in extra:
        parser.add_argument(option, help=text)
    parser.add_argument("--dataset", required=True)
    parser.add_argument(
        "--shard",
        metavar="I/N",
        help="process shard I of N only (N independent jobs; then `mner merge-shards`). "
        "Under torchrun the rank picks the shard and rank 0 merges.",
    )
    return parser.parse_args()


def run_sharded(
    extract: Callable[[Shard | None, Path], Report], out: Path, prepared_dir: Path, shard: str | None
) -> Report:
    """Run ``extract(shard, path)`` as the launch asks: the whole dataset into ``out``; shard
    ``I/N`` (``--shard``) into its shard file; or, under torchrun with more than one
    process, this rank's shard, merged into ``out`` by rank 0 once every rank is done."""
    if shard is not None:
        part = Shard.parse(shard)
        return extract(part, part.path(out))
    if launched() == 1:
        return extract(None, out)
    import torch.distributed as dist

    # gloo only synchronises here; a shard may take hours, hence the long timeout
    processes = join_processes("gloo", timeout=timedelta(days=7))
    part = Shard(processes.rank, processes.world)
    report = extract(part, part.path(out))
    dist.barrier()
    if part.index == 0:
        merge_shards(out, processes.world, prepared_dir)
    dist.barrier()
    dist.destroy_process_group()
    return report


def merge_shards(out: Path | str, count: int, prepared_dir: Path | str, keep: bool = False) -> None:
    """Merge the ``count`` shard files of the cache ``out`` into ``out``, in the prepared
    order, with the image reports beside them. Refuses (naming the file and the tweet)
    shards that are missing, built with other settings, or whose tweets are missing,
    duplicated or in the wrong shard. The shard files are removed after a successful
    merge unless ``keep``."""
    out, prepared_dir = Path(out), Path(prepared_dir)
    paths = [Shard(i, count).path(out) for i in range(count)]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise CacheError(f"cannot merge {out}: shard files not found: {', '.join(missing)}")
    readers = [CacheReader(p) for p in paths]
    for reader in readers[1:]:
        if reader.provenance != readers[0].provenance:
            keys = sorted(
                k
                for k in {*reader.provenance, *readers[0].provenance}
                if reader.provenance.get(k) != readers[0].provenance.get(k)
            )
            raise CacheError(
                f"cannot merge {out}: {reader.path} was built with other settings than {readers[0].path} "
                f"(provenance differs in: {', '.join(keys)}); rerun that shard"
            )
    with CacheWriter(out, readers[0].provenance) as cache:
        for split in SPLITS:
            ids = [s.id for s in read_prepared(prepared_dir / f"{split}.jsonl")]
            _merge_split(cache, split, ids, readers)
    for reader in readers:
        reader.close()
    reports = [image_report(p) for p in paths]
    if any(r.is_file() for r in reports):
        _merge_image_reports(reports, image_report(out))
    if not keep:
        for path in [*paths, *reports]:
            path.unlink(missing_ok=True)


def _merge_split(cache: CacheWriter, split: str, ids: list[str], readers: list[CacheReader]) -> None:
    where: dict[str, tuple[int, int]] = {}  # tweet id -> (shard, row in that shard)
    for shard, reader in enumerate(readers):
        for row, item_id in enumerate(reader.ids.get(split, [])):
            if shard_of(item_id, len(readers)) != shard:
                raise CacheError(
                    f"{reader.path}: split {split} tweet {item_id} belongs to shard "
                    f"{shard_of(item_id, len(readers))}, not {shard}; was it written with another --shard?"
                )
            if item_id in where:
                raise CacheError(f"{reader.path}: split {split} tweet {item_id} appears twice")
            where[item_id] = (shard, row)
    missing = [i for i in ids if i not in where]
    if missing:
        raise CacheError(
            f"cannot merge {cache.path} split {split}: {len(missing)} prepared tweets are in no shard "
            f"(first: {', '.join(missing[:5])}); were the shards run on another prepared dataset?"
        )
    extra = sorted(set(where) - set(ids))
    if extra:
        raise CacheError(
            f"cannot merge {cache.path} split {split}: {len(extra)} tweets in the shards are not in "
            f"the prepared split (first: {', '.join(extra[:5])})"
        )
    cache.write_ids(split, ids)
    rows = [where[i] for i in ids]  # (shard, row) of each tweet, in the prepared order
    first = readers[rows[0][0]] if rows else readers[0]
    for field in first.fields(split):
        lengths = [int(np.diff(readers[s].offsets[split, field][r : r + 2])[0]) for s, r in rows]
        writer = cache.create_field(
            split, field, lengths, first.row_shape(split, field), first.dtype(split, field)
        )
        for index, (shard, row) in enumerate(rows):
            writer[index] = readers[shard].get(split, field, row)


def _merge_image_reports(paths: list[Path], out: Path) -> None:
    records = [json.loads(p.read_text()) for p in paths if p.is_file()]
    counts: dict[str, dict[str, int]] = {}
    for record in records:
        for split, split_counts in record["counts"].items():
            totals = counts.setdefault(split, {})
            for name, n in split_counts.items():
                totals[name] = totals.get(name, 0) + n
    merged = {
        "no_directory": any(r["no_directory"] for r in records),
        "counts": counts,
        "blank_images": [item for r in records for item in r["blank_images"]],
    }
    out.write_text(json.dumps(merged, indent=2) + "\n")
