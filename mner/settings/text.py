"""The ``text_features`` section and what a consumer requires of a text features cache."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from mner.core.cache import directory_sha256, expectation, file_sha256
from mner.core.config import Count, Device, Distinct, NonNegative, Range, section
from mner.settings.clues import clue_set, clue_settings


@dataclass(frozen=True)
class TextFeaturesConfig:
    model: str = "bert-base-cased"  # hub id or local directory
    revision: str = "main"
    layers: Annotated[tuple[int, ...], Range(1, length=True), Distinct()] = (
        -1,
        -2,
        -3,
        -4,
    )  # hidden_states indices kept (0 = embeddings)
    pooling: Literal["first", "mean"] = "first"  # subword vectors to one word vector
    window: Annotated[int, Range(8)] = 512  # subwords per forward pass, special tokens included
    stride: NonNegative = 128  # subwords shared by consecutive windows of a long tweet
    batch_size: Count = 32  # tweets per batch
    device: Device = "auto"  # auto (cuda when present), cpu, cuda, cuda:1, ...
    amp: bool = True  # float16 autocast on cuda


def model_files(model: str) -> dict:
    """For a local encoder directory, the SHA-256 of its files (a cache records it, so that
    an encoder rebuilt under the same path is told apart); nothing for a hub id, whose
    revision is recorded instead."""
    return {"model_sha256": directory_sha256(model)} if Path(model).is_dir() else {}


def expected_provenance(config: TextFeaturesConfig, clues: Mapping[str, Any] | None = None) -> dict:
    """What a consumer configured with ``config`` requires of a text features cache; one read
    with a clue set, of its clues too (:func:`mner.settings.clues.clue_settings`)."""
    keys = ("model", "revision", "layers", "pooling")
    recorded = {"clues": clues} if clues else {}
    return expectation("text_features", config, keys, **recorded) | model_files(config.model)


def expected_text(
    params: Mapping[str, Any], clues: str | None = None, dataset: str = "", root: Path | str = "."
) -> dict:
    """The expectation that ``params`` (its ``text_features`` section) sets for the text cache,
    or for ``dataset``'s one read with clue set ``clues``: its ``clues`` entry and the SHA-256
    of each of its files as they are now (under ``root``), so that a cache read from an
    edited clue file is refused."""
    config = section(params, "text_features", TextFeaturesConfig)
    return expected_provenance(config, expected_clues(params, clues, dataset, root) if clues else None)


def expected_clues(params: Mapping[str, Any], clues: str, dataset: str, root: Path | str = ".") -> dict:
    """What a text cache of ``dataset`` read with clue set ``clues`` must record of it: its
    ``clues`` entry and the SHA-256 of each of its files as they are now (under ``root``)."""
    sources = clue_set(params, clues)
    hashes = [file_sha256(source.file(dataset, root)) for source in sources]
    return clue_settings(clues, sources) | {"sha256": hashes}
