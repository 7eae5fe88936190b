"""The ``prepare`` stage: datasets to prepared sentences (JSON lines), their label
vocabulary (``labels.json``) and their stats."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mner import InputError
from mner.core.cache import rerun_hint
from mner.core.config import Count
from mner.data.conll import SPLITS, BioPolicy, Sentence, read_conll, read_conll_skipping
from mner.data.labels import BIO_LABEL, bio_labels, label_types, label_vocabulary, ordered_types
from mner.data.stats import dataset_stats

log = logging.getLogger(__name__)

LABELS_FILE = "labels.json"


@dataclass(frozen=True)
class PrepareConfig:
    data_dir: str = "data"
    bio: BioPolicy = "keep"
    limit: Count | None = None  # keep the first N tweets of each split (small offline runs)
    skip_bad: bool = False  # skip malformed tweets (each one reported) instead of failing


def prepare(config: PrepareConfig, dataset: str, out_dir: Path | str) -> dict:
    """Read ``<data_dir>/<dataset>/<split>.txt``, write ``<out_dir>/<split>.jsonl``,
    ``<out_dir>/labels.json`` and ``<out_dir>/stats.json``; returns the stats (with the
    skipped tweets). The labels are those of every tweet read, before ``limit`` cuts the
    splits, so a small run has the output layer of the whole dataset."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    splits, skipped, label_sequences = {}, [], []
    for split in SPLITS:
        sentences, bad = _read_split(Path(config.data_dir) / dataset / f"{split}.txt", config)
        skipped += bad
        label_sequences += [s.labels for s in sentences]
        splits[split] = sentences[: config.limit] if config.limit is not None else sentences
        write_prepared(out_dir / f"{split}.jsonl", splits[split])
    labels = label_vocabulary(label_sequences)
    types = write_labels(out_dir, labels)
    splits_stats = dataset_stats(splits, types=types)
    stats = {"dataset": dataset, "bio": config.bio, "splits": splits_stats, "skipped": skipped}
    (out_dir / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    return stats


def _read_split(path: Path, config: PrepareConfig) -> tuple[list[Sentence], list[str]]:
    """The sentences of one split file under ``config``'s BIO policy, and the skipped
    tweets' errors (each logged) when it skips malformed tweets."""
    if not config.skip_bad:
        sentences, bad = read_conll(path, bio=config.bio), []
    else:
        sentences, bad = read_conll_skipping(path, bio=config.bio)
    for error in bad:
        log.warning("skipped tweet: %s", error)
    if not sentences:
        raise InputError(f"{path}: no tweets{' left' if bad else ''}; a split needs at least one")
    return sentences, [str(error) for error in bad]


def write_labels(prepared_dir: Path | str, labels: Sequence[str]) -> tuple[str, ...]:
    """Write the label vocabulary ``labels`` (as :func:`label_vocabulary` gives it) and its
    types to ``<prepared_dir>/labels.json``; returns the types."""
    types = label_types([labels])
    if tuple(labels) != bio_labels(types):
        raise ValueError(f"{labels!r:.200} is not a label vocabulary: expected {bio_labels(types)!r:.200}")
    record = {"types": list(types), "labels": list(labels)}
    (Path(prepared_dir) / LABELS_FILE).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    return types


def read_labels(prepared_dir: Path | str) -> tuple[str, ...]:
    """The label vocabulary of a prepared dataset (its ``labels.json``), refused with the
    stage to rerun when the file is missing or is not a vocabulary of its types."""
    path = Path(prepared_dir) / LABELS_FILE
    rerun = f"rerun {rerun_hint('prepare', Path(prepared_dir).name)}"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is missing (the label vocabulary of the dataset): {rerun}") from None
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: not JSON ({error}): {rerun}") from error
    problem = _labels_problem(record)
    if problem:
        raise ValueError(f"{path}: {problem}: {rerun}")
    return tuple(record["labels"])


def _labels_problem(record: object) -> str | None:
    """What makes ``record`` other than what :func:`write_labels` writes, or None."""
    if not isinstance(record, dict) or not isinstance(types := record.get("types"), list):
        return "expected an object with a list of 'types' and a list of 'labels'"
    bad = [t for t in types if not isinstance(t, str) or not BIO_LABEL.fullmatch(f"B-{t}")]
    if bad:
        return f"malformed type {bad[0]!r:.80}"
    expected = {"types": list(ordered_types(types)), "labels": list(bio_labels(types))}
    if record != expected:
        return (
            "expected each type once, PER, LOC, ORG, MISC first and the others by name, and the "
            f"labels O, then B- and I- of each type: {json.dumps(expected, ensure_ascii=False):.200}"
        )
    return None


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
