"""The ``clues`` section: the clue sets a text cache can read beside each tweet, each one
source or several (their formats and alignment: :mod:`mner.clues`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mner.core.config import PLAIN_CHARACTERS, PLAIN_NAME, ConfigError, from_dict, to_dict

ClueFormat = Literal["captions", "pgim", "image-text", "tweet-text"]


@dataclass(frozen=True)
class ClueSource:
    """One clue set of a dataset: ``clues.<name>`` in params.yaml."""

    format: ClueFormat  # captions | pgim | image-text | tweet-text (the module docstring)
    path: str  # the clue file; {dataset} becomes the dataset's name
    missing: Literal["empty", "fail"] = "fail"  # a tweet without a clue: "" and counted, or stop

    def file(self, dataset: str, root: Path | str = ".") -> Path:
        """The clue file of ``dataset`` (``root`` / the path with ``{dataset}`` replaced)."""
        return Path(root) / self.path.replace("{dataset}", dataset)


ClueSet = tuple[ClueSource, ...]  # the sources of a clue set, their texts read one after the other


def clue_sets(params: Mapping[str, Any], where: str = "params.yaml") -> dict[str, ClueSet]:
    """The ``clues`` section of ``params``: ``{name: its sources}`` (none when it is absent).
    An entry is one source (``{format, path, missing}``) or a list of them (``both: [*captions,
    *knowledge]``), whose texts a tweet reads in that order."""
    section = params.get("clues") or {}
    if not isinstance(section, Mapping):
        raise ConfigError(f"{where}:clues: expected a mapping of clue sets, got {type(section).__name__}")
    sets = {}
    for name, entry in section.items():
        if not isinstance(name, str) or not PLAIN_NAME.fullmatch(name):
            raise ConfigError(f"{where}:clues: {name!r:.80} is not a clue set name {PLAIN_CHARACTERS}")
        entries = entry if isinstance(entry, list) else [entry]
        if not entries:
            raise ConfigError(f"{where}:clues.{name}: a clue set needs at least one source")
        sets[name] = tuple(
            from_dict(ClueSource, source, f"{where}:clues.{name}" + (f"[{i}]" if len(entries) > 1 else ""))
            for i, source in enumerate(entries)
        )
    return sets


def clue_set(params: Mapping[str, Any], name: str, where: str = "params.yaml") -> ClueSet:
    """The sources of clue set ``name``; an unknown name fails with the valid ones."""
    sets = clue_sets(params, where)
    if name not in sets:
        raise ConfigError(
            f"{where}:clues: no clue set {name!r:.80}; valid: {', '.join(sorted(sets)) or 'none'}"
        )
    return sets[name]


def clue_settings(name: str, sources: ClueSet) -> dict[str, Any]:
    """What a text cache read with clue set ``name`` records of it, and a consumer expects."""
    return {"name": name, "sources": [to_dict(source) for source in sources]}


TRACKED = "data/{dataset}/clues/"  # where the pipeline's clue files are: the directory dvc.yaml tracks


def check_tracked(name: str, sources: ClueSet) -> None:
    """Refuse a clue set of the pipeline whose files are not under :data:`TRACKED`, where DVC
    sees them change."""
    for source in sources:
        if not source.path.startswith(TRACKED):
            raise ConfigError(
                f"params.yaml:clues.{name}.path: {source.path!r} is not under {TRACKED}, the directory "
                "DVC tracks for a dataset's clues: put the file there"
            )
