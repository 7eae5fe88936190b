"""The ``parse`` section, its backends by name and what a consumer requires of a phrases
cache."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mner.core.cache import expectation
from mner.core.config import Count, Device, Registry

Keep = Literal["base", "all"]

PARSERS = Registry("parser", dict.fromkeys(("stanza", "spacy"), "mner.features.phrases"))


@dataclass(frozen=True)
class ParseConfig:
    backend: str = "stanza"  # stanza (constituency NPs) | spacy (noun chunks)
    model_dir: str = "models/stanza"  # stanza resources dir (never downloaded into by the stage)
    package: str = "default"  # stanza package; for spacy an installed pipeline name or directory
    keep: Keep = "all"  # all: every NP node (FMIT: all noun phrases) | base: NPs containing no other NP
    max_per_sentence: Count = 16  # at most this many phrases per tweet, the first ones left to right
    batch_size: Count = 64  # tweets per parser call
    device: Device = "auto"  # auto (cuda when present), cpu, cuda, ...; stanza only (spacy runs on cpu)

    def __post_init__(self) -> None:
        PARSERS.check(self.backend, "parse.backend")


def expected_provenance(config: ParseConfig) -> dict:
    """What a consumer configured with ``config`` requires of a phrases cache."""
    keys = ("backend", "package", "keep", "max_per_sentence")
    return expectation("parse", config, keys)
