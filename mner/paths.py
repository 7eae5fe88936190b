"""Where the pipeline keeps each output (the same paths as in dvc.yaml)."""

from pathlib import Path


def prepared_dir(dataset: str) -> Path:
    return Path("prepared") / dataset


def text_cache(dataset: str) -> Path:
    return Path("features") / "text" / f"{dataset}.h5"


def run_dir(dataset: str, model: str, seed: int) -> Path:
    return Path("runs") / dataset / model / f"seed{seed}"


def evaluation_dir(dataset: str, model: str, seed: int, test: str | None = None) -> Path:
    """Where a run's test-set evaluation goes: ``eval/`` on its own dataset, ``cross/<test>/``
    on another one's."""
    run = run_dir(dataset, model, seed)
    return run / "eval" if test in (None, dataset) else run / "cross" / test


def summary_file(dataset: str) -> Path:
    """The per-dataset summary of every run that DVC tracks as metrics."""
    return Path("metrics") / f"{dataset}.json"


def objects_cache(dataset: str) -> Path:
    return Path("features") / "objects" / f"{dataset}.h5"


def phrases_cache(dataset: str) -> Path:
    return Path("features") / "phrases" / f"{dataset}.h5"


def grounding_cache(dataset: str) -> Path:
    return Path("features") / "grounding" / f"{dataset}.h5"


def visual_cache(dataset: str) -> Path:
    return Path("features") / "visual" / f"{dataset}.h5"


def image_report(cache: Path) -> Path:
    """The list of blank-image tweets written beside an image stage's cache."""
    return cache.with_suffix(".images.json")
