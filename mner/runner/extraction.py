"""The skeleton of the five feature stages: the prepared splits (every tweet, or those of
a shard), one cache written split by split under its provenance, the time it took and,
for the image stages, the report of the tweets that got the blank image, written beside
the cache. A feature module supplies its provenance and a per-split encoder that writes
the split's fields (its ids are already written)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from mner.core.cache import CacheWriter
from mner.core.workspace import image_report
from mner.data.conll import SPLITS, Sentence
from mner.data.prepared import read_prepared
from mner.runner.shards import Shard, select


class ImagesReport(Protocol):
    """What an image stage reports of its images (:class:`mner.features.images.ImageReport`,
    not imported here: the text stages do not depend on the image code)."""

    def write(self, path: Path | str) -> None: ...


@dataclass
class ExtractionReport:
    tweets: int = 0
    seconds: float = 0.0
    images: ImagesReport | None = None  # an image stage's: the tweets that got the blank image


Report = TypeVar("Report", bound=ExtractionReport)
SplitEncoder = Callable[[CacheWriter, str, Sequence[Sentence]], None]  # (cache, split, its tweets)


def prepared_splits(prepared_dir: Path | str, shard: Shard | None) -> tuple[list[Path], dict[str, list]]:
    """The prepared files of a dataset (the stage's inputs, for its provenance) and the
    tweets of each split that a job works on: all of them, or those of ``shard``."""
    inputs = [Path(prepared_dir) / f"{split}.jsonl" for split in SPLITS]
    return inputs, {split: select(read_prepared(path), shard) for split, path in zip(SPLITS, inputs)}


def write_cache(
    out_path: Path | str,
    record: Mapping[str, Any],
    splits: Mapping[str, Sequence[Sentence]],
    encode_split: SplitEncoder,
    report: Report,
) -> Report:
    """Write one cache with provenance ``record``: per split its tweet ids, then what
    ``encode_split`` writes; ``report`` gets the tweets and seconds, and its image report
    goes beside the cache."""
    start = time.perf_counter()
    with CacheWriter(out_path, record) as cache:
        for split, sentences in splits.items():
            cache.write_ids(split, [s.id for s in sentences])
            encode_split(cache, split, sentences)
            report.tweets += len(sentences)
    report.seconds = time.perf_counter() - start
    if report.images is not None:
        report.images.write(image_report(Path(out_path)))
    return report
