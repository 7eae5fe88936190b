"""Torch datasets over the caches, and the collate function that pads a batch."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from mner.cache import CacheError, CacheReader
from mner.data.conll import Sentence

WORD_SHAPES = (
    "pad",
    "lower",
    "title",
    "upper",
    "mixed",
    "digits",
    "punct",
    "mention",
    "hashtag",
    "url",
    "other",
)


def word_shape(token: str) -> int:
    """Index in :data:`WORD_SHAPES` of the token's surface form: the casing and Twitter
    markers that an uncased encoder cannot see."""
    if token.startswith(("http://", "https://", "www.")):
        return WORD_SHAPES.index("url")
    if len(token) > 1 and token[0] in "@#":
        return WORD_SHAPES.index("mention" if token[0] == "@" else "hashtag")
    letters = [c for c in token if c.isalpha()]
    if not letters:
        return WORD_SHAPES.index("digits" if any(c.isdigit() for c in token) else "punct")
    if all(c.islower() for c in letters):
        return WORD_SHAPES.index("lower")
    if all(c.isupper() for c in letters):
        return WORD_SHAPES.index("upper")
    if letters[0].isupper() and all(c.islower() for c in letters[1:]):
        return WORD_SHAPES.index("title")
    return WORD_SHAPES.index("mixed") if any(c.isupper() for c in letters) else WORD_SHAPES.index("other")


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

    def __len__(self) -> int:
        return len(self.sentences)

    def __getitem__(self, index: int) -> dict:
        features = torch.from_numpy(self.cache.get(self.split, "words", index))  # [T, L, D] float16
        sentence = self.sentences[index]
        labels = torch.tensor([self.label_ids[label] for label in sentence.labels])
        shapes = torch.tensor([word_shape(token) for token in sentence.tokens])
        return {"index": index, "features": features, "labels": labels, "shapes": shapes}


def collate(items: Sequence[dict]) -> dict:
    """Pad to the longest tweet: ``features`` ``[B, T, L, D]`` float32, ``labels`` and
    ``shapes`` ``[B, T]``, ``mask`` ``[B, T]`` bool with the padding on the right,
    ``index`` ``[B]``."""
    lengths = [len(item["labels"]) for item in items]
    longest = max(lengths)
    first = items[0]["features"]
    features = torch.zeros(len(items), longest, *first.shape[1:])
    labels = torch.zeros(len(items), longest, dtype=torch.long)
    shapes = torch.zeros(len(items), longest, dtype=torch.long)
    for b, item in enumerate(items):
        features[b, : lengths[b]] = item["features"].float()
        labels[b, : lengths[b]] = item["labels"]
        shapes[b, : lengths[b]] = item["shapes"]
    mask = torch.arange(longest)[None, :] < torch.tensor(lengths)[:, None]
    return {
        "index": torch.tensor([item["index"] for item in items]),
        "features": features,
        "labels": labels,
        "shapes": shapes,
        "mask": mask,
    }
