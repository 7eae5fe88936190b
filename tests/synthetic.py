"""Synthetic cached features whose labels can be learned: each word vector is a noisy
code of its label, so a model that trains at all gets the F1 up quickly."""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mner.core.cache import CacheWriter, provenance
from mner.core.config import to_dict
from mner.core.workspace import CLUE_MEAN, CLUE_WORDS
from mner.data.conll import SPLITS, Sentence
from mner.data.labels import label_vocabulary
from mner.data.prepared import write_labels, write_prepared
from mner.settings.text import TextFeaturesConfig, expected_text
from mner.settings.visual import expected_caches

TEXT_CONFIG = TextFeaturesConfig(model="synthetic", layers=(-1, -2))
DIM = 16

PATTERNS = [
    ("B-PER", "I-PER", "O", "O", "B-LOC"),
    ("O", "B-ORG", "O", "B-MISC", "I-MISC", "O"),
    ("B-PER", "O", "O"),
    ("O", "O", "B-LOC", "I-LOC", "O", "B-ORG", "I-ORG"),
]


def renamed(pattern: tuple[str, ...], types: Mapping[str, str]) -> tuple[str, ...]:
    """``pattern`` with each entity type renamed by ``types`` (a type it lacks kept)."""
    return tuple(label if label == "O" else label[:2] + types.get(label[2:], label[2:]) for label in pattern)


def sentences(split: str, n: int, types: Mapping[str, str] | None = None) -> list[Sentence]:
    patterns = [renamed(p, types or {}) for p in PATTERNS]
    return [
        Sentence(f"{split}-{i}", str(i), tuple(f"w{j}" for j in range(len(p))), p)
        for i, p in enumerate(patterns[i % len(patterns)] for i in range(n))
    ]


def write_synthetic(
    root: Path,
    sizes=(48, 16, 16),
    noise: float = 1.0,
    seed: int = 0,
    types: Mapping[str, str] | None = None,
    clue_cells: bool = False,
) -> tuple[Path, Path]:
    """Prepared files (with their labels.json) and a text cache under ``root``; returns
    (prepared dir, cache path). ``types`` renames Twitter's entity types (a dataset of
    other types); ``clue_cells``: the cache also holds clue cells (as a clue set's does), the
    i-th tweet of a split ``i % 3`` clue words and their mean."""
    rng = np.random.default_rng(seed)
    labels = label_vocabulary(renamed(p, types or {}) for p in PATTERNS)
    codes = rng.standard_normal((len(labels), 2, DIM))
    prepared, cache_path = root / "prepared", root / "text.h5"
    prepared.mkdir(parents=True, exist_ok=True)
    write_labels(prepared, labels)
    clues = {"clues": {"name": "synthetic"}} if clue_cells else {}
    record = provenance("text_features", to_dict(TEXT_CONFIG), hidden_size=DIM, **clues)
    with CacheWriter(cache_path, record) as cache:
        for split, n in zip(SPLITS, sizes):
            items = sentences(split, n, types)
            write_prepared(prepared / f"{split}.jsonl", items)
            cache.write_ids(split, [s.id for s in items])
            vectors = [
                np.stack([codes[labels.index(label)] for label in s.labels])
                + noise * rng.standard_normal((len(s.labels), 2, DIM))
                for s in items
            ]
            cache.write_field(split, "words", [v.astype(np.float16) for v in vectors])
            if clue_cells:
                cells = [rng.standard_normal((i % 3, DIM)).astype(np.float16) for i in range(n)]
                means = [c.mean(axis=0, keepdims=True) if len(c) else np.zeros((1, DIM)) for c in cells]
                cache.write_field(split, CLUE_WORDS, cells)
                cache.write_field(split, CLUE_MEAN, [m.astype(np.float16) for m in means])
    return prepared, cache_path


def default_provenance() -> tuple[dict, dict]:
    """The provenance of a visual and a grounding cache made with every image-side
    section at its defaults, as training with those params expects."""
    from mner.settings.detect import DetectConfig
    from mner.settings.ground import GroundConfig
    from mner.settings.images import ImagesConfig
    from mner.settings.parse import ParseConfig
    from mner.settings.visual import VisualConfig

    images, grounding, phrases = to_dict(ImagesConfig()), to_dict(GroundConfig()), to_dict(ParseConfig())
    visual = {
        "stage": "visual_features",
        "params": to_dict(VisualConfig()),
        "images": images,
        "objects": to_dict(DetectConfig()),
        "grounding": grounding,
        "phrases": phrases,
    }
    return visual, {"stage": "ground", "params": grounding, "images": images, "phrases": phrases}


DEFAULT_VISUAL_PROVENANCE, DEFAULT_GROUNDING_PROVENANCE = default_provenance()


def write_synthetic_visual(root: Path, prepared: Path, dim: int = 8, seed: int = 0) -> tuple[Path, Path]:
    """A visual cache (image, objects, grounded, 4-cell grid) and a grounding cache (one
    grounded object per phrase-like pair of words) for the prepared splits under ``root``;
    returns (visual cache, grounding cache)."""
    from mner.data.prepared import read_prepared

    rng = np.random.default_rng(seed)
    visual_path, grounding_path = root / "visual.h5", root / "grounding.h5"
    with (
        CacheWriter(visual_path, {**DEFAULT_VISUAL_PROVENANCE, "feature_dim": dim}) as visual,
        CacheWriter(grounding_path, DEFAULT_GROUNDING_PROVENANCE) as grounding,
    ):
        for split in SPLITS:
            items = read_prepared(prepared / f"{split}.jsonl")
            ids = [s.id for s in items]
            visual.write_ids(split, ids)
            grounding.write_ids(split, ids)
            n_objects = [i % 3 for i in range(len(items))]
            n_grounded = [min(2, len(s.tokens) - 1) for s in items]
            features = {
                "image": [1] * len(items),
                "objects": n_objects,
                "grounded": n_grounded,
                "grid": [4] * len(items),
            }
            for field, counts in features.items():
                visual.write_field(
                    split, field, [rng.standard_normal((n, dim)).astype(np.float16) for n in counts]
                )
            grounding.write_field(
                split,
                "positions",
                [np.array([[j, j + 1] for j in range(n)], dtype=np.int32).reshape(-1, 2) for n in n_grounded],
            )
            grounding.write_field(
                split, "boxes", [np.tile([0, 0, 1, 1], (n, 1)) for n in n_grounded], np.float32
            )
            grounding.write_field(split, "scores", [np.ones(n) for n in n_grounded], np.float32)
            grounding.write_field(split, "query", [np.arange(n) for n in n_grounded], np.int32)
            grounding.write_field(split, "n_phrases", [np.array([n]) for n in n_grounded], np.int32)
    return visual_path, grounding_path


class StandInModel:
    """A stand-in for a registered model: a Tagger, and a VisualTagger when it has a kind
    (the dataset only asks which visual cells it reads and how many)."""

    def __init__(self, kind=None, **config):
        if kind is not None:
            self.visual_kind = kind
            self.interaction_phase = self.attention = self.not_called
        self.config = type("Config", (), config)()

    def not_called(self, *args):
        raise AssertionError("the dataset runs no model")

    loss = emissions = decode = not_called


def image_side(params: Mapping[str, Any]) -> dict[str, dict]:
    """What a multimodal run of ``params`` expects of every cache it reads (a text-only run: the
    text cache's only, :func:`mner.train.training_job`'s default)."""
    return {"text": expected_text(params)} | expected_caches(params)
