"""The ``ground`` section, its backends by name, what a consumer requires of a grounding
cache and how it names a grounded box."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mner.core.cache import expectation, recorded_part
from mner.core.config import ConfigError, Count, Device, NonNegative, Registry, Share
from mner.settings.images import ImagesConfig, image_settings

GROUNDERS = Registry("grounder", dict.fromkeys(("grounding-dino", "owlv2", "owlvit"), "mner.features.ground"))
SELECTIONS = ("best", "threshold")


@dataclass(frozen=True)
class GroundConfig:
    backend: str = "grounding-dino"  # grounding-dino | owlv2 | owlvit
    model: str = "IDEA-Research/grounding-dino-tiny"  # hub id or local directory
    revision: str = "main"
    # A box must score above this for the query. null: the backend's default, 0.35 for
    # grounding-dino (its authors' demo setting), 0.1 for owlv2 and owlvit (transformers').
    box_threshold: Share | None = None
    # grounding-dino only: a query's best token must score above this (its authors' 0.25).
    text_threshold: Share = 0.25
    top_k: Count = 1  # boxes kept per query, best first
    select: str = "best"  # best: top_k boxes for every query | threshold: only boxes above the thresholds
    general_words: tuple[str, ...] = ("person", "location", "organization", "miscellaneous")
    max_phrases: NonNegative = (
        16  # phrase queries per tweet, the first ones (parse already caps at its max_per_sentence)
    )
    batch_size: Count = 8  # tweets (images) per forward pass
    num_workers: NonNegative = 4  # image decoding in DataLoader workers
    device: Device = "auto"  # auto (cuda when present), cpu, cuda, cuda:1, ...
    amp: bool = True  # float16 autocast on cuda

    def __post_init__(self) -> None:
        GROUNDERS.check(self.backend, "ground.backend")
        if self.select not in SELECTIONS:
            raise ConfigError(f"ground.select must be one of {', '.join(SELECTIONS)}, got {self.select!r}")


def expected_provenance(config: GroundConfig, images: ImagesConfig, phrases: Mapping[str, Any]) -> dict:
    """What a consumer configured with ``config`` requires of a grounding cache: the
    settings that change the boxes (not batch size, workers, device or amp), made from a
    phrases cache that meets ``phrases`` (its expectation)."""
    keys = ("backend", "model", "revision", "select", "box_threshold", "text_threshold", "top_k")
    return expectation(
        "ground",
        config,
        (*keys, "general_words", "max_phrases"),
        images=image_settings(images),
        phrases=recorded_part(phrases),
    )


def query_texts(
    words: Sequence[str],
    query: np.ndarray,
    n_phrases: int,
    positions: np.ndarray,
    general_words: Sequence[str],
) -> list[str]:
    """The query that each grounded box answers, from its query index ``[g]`` (phrases
    first, then the general words), the tweet's number of phrases and the box's head and
    tail word ``[g, 2]``: the phrase's words, or the general word (whose positions span
    the whole tweet)."""
    return [
        general_words[q - n_phrases] if q >= n_phrases else " ".join(words[head : tail + 1])
        for q, (head, tail) in zip(np.asarray(query).tolist(), np.asarray(positions).reshape(-1, 2).tolist())
    ]
