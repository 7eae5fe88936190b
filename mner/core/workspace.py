"""Where the pipeline keeps each output (the same paths as in dvc.yaml): a dataset's prepared
splits and caches (:class:`Workspace`), each run's directory, and the command line that names
a run in dvc.yaml's train and evaluate stages."""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

# each feature cache by the name that expectations, checkpoints and provenance give it, which is
# also its directory under features/ (but "cells": a clue set's text cache holds its clue cells)
CACHE_KINDS = ("text", "objects", "phrases", "grounding", "visual", "cells")
MODEL_INPUTS = ("text", "visual", "grounding", "cells")  # the caches a model reads (the others feed them)
# the fields of a clue set's text cache that hold its clue cells: per tweet the mean of its clue's
# word vectors (one row), then those word vectors (mner.features.text.WordEncoder.clue_cells)
CLUE_MEAN, CLUE_WORDS = "clue", "clue_words"


@dataclass(frozen=True)
class Workspace:
    """Where one dataset's prepared splits and feature caches are: the pipeline's layout under
    ``root`` (``prepared/<dataset>/``, ``features/<kind>/<dataset>.h5``), or, for caches kept
    elsewhere (the benchmarks', a test's), the paths given in ``paths`` by kind."""

    dataset: str
    root: Path = Path(".")
    paths: Mapping[str, Path] = field(default_factory=dict)  # "prepared" or a cache kind -> its path
    clues: str | None = None  # the clue set its text cache was read with (None: the tweets alone)

    @classmethod
    def of(cls, dataset: str, prepared: Path | None = None, **caches: Path | None) -> Workspace:
        """The workspace of files kept outside the pipeline's layout: ``prepared`` and each
        cache by kind (``text=...``; None: not there)."""
        paths = {kind: Path(path) for kind, path in {"prepared": prepared, **caches}.items() if path}
        return cls(dataset, paths=paths)

    @property
    def prepared(self) -> Path:
        return Path(self.paths.get("prepared") or Path(self.root) / "prepared" / self.dataset)

    def cache(self, kind: str) -> Path:
        """The cache of ``kind`` (a key of :data:`CACHE_KINDS`); the text cache of a clue set is
        ``features/text/<dataset>.<clue set>.h5``, which also holds the set's clue ``cells``."""
        if kind not in CACHE_KINDS:
            raise KeyError(f"unknown cache {kind!r}; valid: {', '.join(CACHE_KINDS)}")
        if kind == "cells" and not (self.clues or kind in self.paths):
            raise ValueError("clue cells come from a clue set's text cache: name the clue set (--clues)")
        folder = "text" if kind == "cells" else kind
        name = f"{self.dataset}.{self.clues}" if folder == "text" and self.clues else self.dataset
        default = Path(self.root) / "features" / folder / f"{name}.h5"
        return Path(self.paths.get(kind) or default)

    def model_inputs(self, kinds: Iterable[str]) -> dict[str, Path]:
        """The caches among ``kinds`` (a run's expectations) that a model reads, by kind."""
        return {kind: self.cache(kind) for kind in MODEL_INPUTS if kind in kinds}


def params_check() -> Path:
    """The pre-flight's mark that params.yaml passed (stages/check_params.py)."""
    return Path("checks") / "params.txt"


def model_code_file() -> Path:
    """The SHA-256 of each run's model sources (stages/model_code.py), by run name."""
    return Path("checks") / "model_code.yaml"


def clue_files_record(dataset: str, clues: str) -> Path:
    """The SHA-256 of the files of clue set ``clues`` of ``dataset`` (stages/clue_files.py)."""
    return Path("checks") / "clues" / f"{dataset}.{clues}.sha256"


def run_dir(dataset: str, model: str, seed: int, clues: str | None = None) -> Path:
    """A run's directory; a run read with a clue set is ``<run>+<clue set>``."""
    return Path("runs") / dataset / clue_run(model, clues) / f"seed{seed}"


def clue_run(run: str, clues: str | None) -> str:
    """The name of run ``run`` read with clue set ``clues`` (the run itself without one)."""
    return f"{run}+{clues}" if clues else run


def run_workspace(run: Path | str) -> Workspace:
    """The workspace of a run directory ``runs/<dataset>/<model>/seed<k>``: its root, dataset
    and clue set (a run ``<run>+<clues>``)."""
    path = Path(run).resolve()
    if len(path.parts) < 5 or path.parents[2].name != "runs" or not path.name.startswith("seed"):
        raise ValueError(f"{run}: not a run directory runs/<dataset>/<model>/seed<k>")
    clues = path.parent.name.partition("+")[2]
    return Workspace(path.parents[1].name, path.parents[3], clues=clues or None)


def evaluation_dir(dataset: str, model: str, seed: int, test: str | None = None) -> Path:
    """Where a run's test-set evaluation goes: ``eval/`` on its own dataset, ``cross/<test>/``
    on another one's."""
    run = run_dir(dataset, model, seed)
    return run / "eval" if test in (None, dataset) else run / "cross" / test


def summary_file(dataset: str) -> Path:
    """The per-dataset summary of every run that DVC tracks as metrics."""
    return Path("metrics") / f"{dataset}.json"


def image_report(cache: Path) -> Path:
    """The list of blank-image tweets written beside an image stage's cache."""
    return cache.with_suffix(".images.json")


def run_arguments(description: str) -> argparse.ArgumentParser:
    """The arguments dvc.yaml gives a run's train and evaluate stages: ``--dataset``,
    ``--run`` and ``--seed`` (its :func:`run_dir`)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--run", required=True, help="its entry under models in params.yaml")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--clues", help="the clue set its text cache is read with (a run <run>+<clues>)")
    return parser
