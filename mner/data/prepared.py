"""The ``prepare`` stage: datasets to prepared sentences (JSON lines) and their stats."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mner.data.conll import SPLITS, BioPolicy, Sentence, read_conll, read_conll_skipping
from mner.data.stats import dataset_stats

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrepareConfig:
    data_dir: str = "data"
    bio: BioPolicy = "keep"
    limit: int | None = None  # keep the first N tweets of each split (small offline runs)
    skip_bad: bool = False  # skip malformed tweets (each one reported) instead of failing


def prepare(config: PrepareConfig, dataset: str, out_dir: Path | str) -> dict:
    """Read ``<data_dir>/<dataset>/<split>.txt``, write ``<out_dir>/<split>.jsonl`` and
    ``<out_dir>/stats.json``; returns the stats (with the skipped tweets)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    splits, skipped = {}, []
    for split in SPLITS:
        path = Path(config.data_dir) / dataset / f"{split}.txt"
        if config.skip_bad:
            sentences, bad = read_conll_skipping(path, bio=config.bio)
            for error in bad:
                log.warning("skipped tweet: %s", error)
            skipped += [str(error) for error in bad]
        else:
            sentences = read_conll(path, bio=config.bio)
        splits[split] = sentences[: config.limit] if config.limit is not None else sentences
        write_prepared(out_dir / f"{split}.jsonl", splits[split])
    stats = {"dataset": dataset, "bio": config.bio, "splits": dataset_stats(splits), "skipped": skipped}
    (out_dir / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    return stats


def write_prepared(path: Path | str, sentences: Sequence[Sentence]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for s in sentences:
            record = {"id": s.id, "image_id": s.image_id, "tokens": s.tokens, "labels": s.labels}
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


def read_prepared(path: Path | str) -> list[Sentence]:
    """Sentences of one prepared split file."""
    sentences = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            try:
                r = json.loads(line)
                sentences.append(Sentence(r["id"], r["image_id"], tuple(r["tokens"]), tuple(r["labels"])))
            except (ValueError, KeyError, TypeError) as error:
                raise ValueError(
                    f"{path}:{number}: not a prepared sentence ({error}); rerun prepare"
                ) from error
    return sentences


def prepared_sentences(path: Path | str) -> list[Sentence]:
    """The sentences of a prepared split file, refused when it has none: training or
    scoring over no sentences would give a checkpoint or scores that mean nothing."""
    sentences = read_prepared(path)
    if not sentences:
        raise ValueError(
            f"{path} has no sentences: check the dataset split and prepare.limit, then rerun prepare"
        )
    return sentences
