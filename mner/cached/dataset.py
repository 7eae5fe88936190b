"""Torch datasets over the caches, and the collate function that pads a batch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from mner import InputError
from mner.core.cache import CacheError, CacheReader, check_locked, file_sha256, rerun_hint
from mner.core.workspace import CLUE_MEAN, Workspace
from mner.data.conll import SPLITS, Sentence
from mner.data.labels import entity_tags, word_shape
from mner.tagger import VISUAL_KINDS, visual_kind


class CachedTextDataset(Dataset):
    """Items of one split: the cached word features of each tweet and its label ids.
    The cache is read lazily in each DataLoader worker."""

    def __init__(self, cache: CacheReader, split: str, sentences: Sequence[Sentence], labels: Sequence[str]):
        ids = cache.ids.get(split)
        if ids != [s.id for s in sentences]:
            found = "no such split" if ids is None else f"{len(ids)} ids"
            raise CacheError(
                f"{cache.path}: split {split!r} does not match the prepared sentences ({found} vs "
                f"{len(sentences)} sentences, or other ids); rerun {cache.rerun}"
            )
        lengths = torch.as_tensor(cache.offsets[split, "words"]).diff()
        bad = [i for i, (n, s) in enumerate(zip(lengths.tolist(), sentences)) if n != len(s.tokens)]
        if bad:
            raise CacheError(
                f"{cache.path}: {split} item {sentences[bad[0]].id} has {lengths[bad[0]]} word vectors "
                f"for {len(sentences[bad[0]].tokens)} words; rerun {cache.rerun}"
            )
        self.cache, self.split, self.sentences = cache, split, sentences
        self.label_ids = {label: i for i, label in enumerate(labels)}
        check_labels(sentences, self.label_ids, split)

    def __len__(self) -> int:
        return len(self.sentences)

    def __getitem__(self, index: int) -> dict:
        sentence = self.sentences[index]
        features = self.cache.get(self.split, "words", index)  # [T, L, D] float16
        return text_item(index, sentence.tokens, features, sentence.labels, self.label_ids)


def check_labels(sentences: Sequence[Sentence], label_ids: Mapping[str, int], split: str) -> None:
    """Refuse gold labels outside the model's (a model scores only the entity types it was
    trained on: a cross-domain pair's datasets must share their types)."""
    for sentence in sentences:
        unknown = [label for label in sentence.labels if label not in label_ids]
        if unknown:
            raise InputError(
                f"{split} tweet {sentence.id}: label {unknown[0]!r} is not one of the model's labels "
                f"({', '.join(label_ids)}); a model scores only the entity types it was trained on"
            )


def text_item(
    index: int,
    tokens: Sequence[str],
    features: np.ndarray,
    labels: Sequence[str] | None = None,
    label_ids: Mapping[str, int] | None = None,
) -> dict:
    """A tweet's item: its word vectors ``[T, L, D]``, word shapes, and the ids of its
    labels with its span and boundary tags (zeros for a tweet without labels)."""
    if labels is None:
        label_tensor = torch.zeros(len(tokens), dtype=torch.long)
        span_tags, boundary_tags = label_tensor, label_tensor
    else:
        label_tensor = torch.tensor([label_ids[label] for label in labels])
        span_tags, boundary_tags = entity_tags(labels)
    return {
        "index": index,
        "features": torch.from_numpy(features),  # [T, L, D] float16
        "labels": label_tensor,
        "shapes": torch.tensor([word_shape(token) for token in tokens]),
        "span_tags": span_tags,
        "boundary_tags": boundary_tags,
    }


def visual_limit(model: Any) -> int | None:
    """How many of its visual kind's rows ``model`` reads after the whole image: the first
    ``max_visual - 1`` when its kind is capped (detected or grounded objects), else all
    (None: every grid cell)."""
    return model.config.max_visual - 1 if visual_kind(model).capped else None


class CachedMultimodalDataset(CachedTextDataset):
    """Text items plus the visual vectors of each tweet (from ``visual``, the cache of its
    kind): the whole image first, then its detected objects, grounded objects, 7x7 grid or
    clue words (the :class:`~mner.tagger.VisualKind` named ``kind``; for clue words, the
    clue's mean first), the first ``limit`` of them (None: all), each with the head and tail
    word positions of its lattice cell (a grounded phrase's first and last word; the first
    and last word of the tweet otherwise). Only the rows kept are read from the cache."""

    def __init__(
        self,
        text: CacheReader,
        visual: CacheReader,
        grounding: CacheReader | None,
        split: str,
        sentences: Sequence[Sentence],
        labels: Sequence[str],
        kind: str = "objects",
        limit: int | None = None,
    ) -> None:
        super().__init__(text, split, sentences, labels)
        self.kind = VISUAL_KINDS[kind]
        readers = [visual] + ([grounding] if self.kind.positions else [])
        for reader in readers:
            if reader.ids.get(split) != [s.id for s in sentences]:
                raise CacheError(
                    f"{reader.path}: split {split!r} does not match the prepared sentences; "
                    f"rerun {reader.rerun}"
                )
        field = self.kind.field
        if field not in visual.fields(split):
            raise CacheError(
                f"{visual.path} has no {field!r} features; rerun {visual.rerun} (grid: true for grid)"
            )
        if self.kind.positions and not np.array_equal(
            np.diff(visual.offsets[split, field]), np.diff(grounding.offsets[split, "positions"])
        ):
            raise CacheError(f"{visual.path} and {grounding.path} disagree on the {kind} objects; rerun both")
        if self.kind.positions:
            words = np.array([len(s.tokens) for s in sentences])

            def in_tweet(rows: np.ndarray, items: np.ndarray) -> np.ndarray:
                return (rows[:, 0] >= 0) & (rows[:, 0] <= rows[:, 1]) & (rows[:, 1] < words[items])

            rule = "a head and a tail word of its tweet (0 <= head <= tail < its words)"
            grounding.check_rows(split, "positions", in_tweet, rule)
        self.visual, self.grounding, self.limit = visual, grounding, limit

    def __getitem__(self, index: int) -> dict:
        item = super().__getitem__(index)
        image = self.visual.get(self.split, self.kind.whole, index)  # [1, C]
        extra = self.visual.get(self.split, self.kind.field, index, self.limit)  # [k, C]
        positions = (
            self.grounding.get(self.split, "positions", index, self.limit) if self.kind.positions else None
        )
        return add_visual(item, image, extra, positions)


def add_visual(
    item: dict, image: np.ndarray, extra: np.ndarray, positions: np.ndarray | None, limit: int | None = None
) -> dict:
    """``item`` with its visual vectors ``[V, C]``: the whole image ``[1, C]`` then the
    first ``limit`` rows of ``extra`` (None: all), and the head and tail word positions
    ``[V, 2]`` of their lattice cells (``positions`` of the extra rows when grounded; the
    first and last word of the tweet otherwise)."""
    extra = extra[:limit]
    at = np.zeros((1 + len(extra), 2), dtype=np.int64)
    at[:, 1] = len(item["labels"]) - 1
    if positions is not None:
        at[1:] = positions[: len(extra)]
    item["visual"] = torch.from_numpy(np.concatenate([image, extra]).astype(np.float16))  # [V, C]
    item["visual_positions"] = torch.from_numpy(at)  # [V, 2]
    return item


@dataclass
class FeatureCaches:
    """The caches a model reads: the text features and, for the multimodal models, the
    visual features and the groundings, or a clue set's cells."""

    text: CacheReader
    visual: CacheReader | None = None
    grounding: CacheReader | None = None
    cells: CacheReader | None = None  # a clue set's text cache, read for its clue cells

    @classmethod
    def open(cls, workspace: Workspace, expect: Mapping[str, Mapping[str, Any]]) -> FeatureCaches:
        """Open the caches of ``workspace`` that ``expect`` names among those a model reads
        (text; visual and grounding for a multimodal run), each checked against its
        expectation there (:func:`mner.core.cache.expectation`); an error names the stage
        to rerun for the workspace's dataset."""
        stages = {"text": "text_features", "visual": "visual_features", "grounding": "ground"}
        hints = {kind: rerun_hint(stage, workspace.dataset) for kind, stage in stages.items()}
        clued = rerun_hint("text_features_clues", f"{workspace.dataset}-{workspace.clues or '<clues>'}")
        hints |= {"cells": clued} | ({"text": clued} if workspace.clues else {})
        readers = {
            kind: CacheReader(path, expect[kind], rerun=hints[kind])
            for kind, path in workspace.model_inputs(expect).items()
        }
        return cls(**readers)

    def check_inputs(self, prepared: Path) -> None:
        """Refuse caches built from other prepared splits than those in ``prepared``, and
        caches that differ from the outputs dvc.lock records (:func:`check_locked`). Each
        cache records the SHA-256 of the split files it was built from (its provenance's
        ``inputs``), compared here by file name (the workspace may have moved). Ids alone
        do not show an edited split: its labels are read from the file, not the cache."""
        found: dict[str, str] = {}
        for reader in [r for r in (self.text, self.visual, self.grounding, self.cells) if r is not None]:
            check_locked(reader.path)
            for recorded, digest in (reader.provenance.get("inputs") or {}).items():
                path = Path(prepared) / Path(recorded).name
                if path.name not in PREPARED_SPLITS or not path.is_file():
                    continue
                found.setdefault(path.name, file_sha256(path))
                if found[path.name] != digest:
                    raise CacheError(
                        f"{reader.path} was built from another {path.name} than {path} (SHA-256 "
                        f"{str(digest)[:12]}... recorded, {found[path.name][:12]}... found): rerun "
                        f"{reader.rerun}, or pull the prepared splits and the caches of one commit together"
                    )

    def dataset(
        self, model: Any, split: str, sentences: Sequence[Sentence], labels: Sequence[str]
    ) -> Dataset:
        """The dataset ``model`` reads: text only, or with the visual kind it asks for
        (its ``visual_kind``) and as many of its rows as it reads (:func:`visual_limit`)."""
        kind = visual_kind(model)
        if kind is None:
            return CachedTextDataset(self.text, split, sentences, labels)
        source = getattr(self, kind.cache)  # the cache of its kind's vectors
        if source is None and kind.cache == "cells":
            raise CacheError("this model reads clue cells: give it a clue set's text cache (--clues)")
        if source is None or (kind.positions and self.grounding is None):
            raise CacheError(
                "this model reads visual features: give it the visual_features and ground caches"
            )
        return CachedMultimodalDataset(
            self.text, source, self.grounding, split, sentences, labels, kind.name, visual_limit(model)
        )

    @property
    def visual_source(self) -> CacheReader | None:
        """The cache of a multimodal model's visual vectors: the visual features, or else a
        clue set's cells (None: a text-only model's caches)."""
        return self.visual or self.cells

    def visual_dim(self, split: str) -> int:
        """The size of the vectors of :attr:`visual_source` (0: none)."""
        source = self.visual_source
        whole = "image" if source is self.visual else CLUE_MEAN
        return source.row_shape(split, whole)[0] if source else 0


PREPARED_SPLITS = {f"{split}.jsonl" for split in SPLITS}  # the files prepare writes per split
TAG_FIELDS = ("labels", "shapes", "span_tags", "boundary_tags")  # per-word integer fields


def collate(items: Sequence[dict]) -> dict:
    """Pad to the longest tweet: ``features`` ``[B, T, L, D]`` float32, the
    :data:`TAG_FIELDS` ``[B, T]``, ``mask`` ``[B, T]`` bool with the padding on the right,
    ``index`` ``[B]``; and the visual inputs when the items have them."""
    lengths = [len(item["labels"]) for item in items]
    longest = max(lengths)
    first = items[0]["features"]
    features = torch.zeros(len(items), longest, *first.shape[1:])
    tags = {name: torch.zeros(len(items), longest, dtype=torch.long) for name in TAG_FIELDS}
    for b, item in enumerate(items):
        features[b, : lengths[b]] = item["features"].float()
        for name, padded in tags.items():
            padded[b, : lengths[b]] = item[name]
    mask = torch.arange(longest)[None, :] < torch.tensor(lengths)[:, None]
    batch = {
        "index": torch.tensor([item["index"] for item in items]),
        "features": features,
        **tags,
        "mask": mask,
    }
    if "visual" in items[0]:
        batch.update(_collate_visual(items))
    return batch


def _collate_visual(items: Sequence[dict]) -> dict:
    """``visual`` ``[B, V, C]`` float32, ``visual_mask`` ``[B, V]`` and
    ``visual_positions`` ``[B, V, 2]``, padded on the right."""
    counts = [len(item["visual"]) for item in items]
    most = max(counts)
    visual = torch.zeros(len(items), most, items[0]["visual"].shape[1])
    positions = torch.zeros(len(items), most, 2, dtype=torch.long)
    for b, item in enumerate(items):
        visual[b, : counts[b]] = item["visual"].float()
        positions[b, : counts[b]] = item["visual_positions"]
    mask = torch.arange(most)[None, :] < torch.tensor(counts)[:, None]
    return {"visual": visual, "visual_mask": mask, "visual_positions": positions}
