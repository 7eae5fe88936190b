"""Where the pipeline keeps each output (the same paths as in dvc.yaml)."""

from pathlib import Path


def prepared_dir(dataset: str) -> Path:
    return Path("prepared") / dataset


def text_cache(dataset: str) -> Path:
    return Path("features") / "text" / f"{dataset}.h5"


def run_dir(dataset: str, model: str, seed: int) -> Path:
    return Path("runs") / dataset / model / f"seed{seed}"
