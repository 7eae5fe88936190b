"""Where the pipeline keeps each output (the same paths as in dvc.yaml), and the command line
that names a run in dvc.yaml's train and evaluate stages."""

import argparse
from pathlib import Path


def params_check() -> Path:
    """The pre-flight's mark that params.yaml passed (stages/check_params.py)."""
    return Path("checks") / "params.txt"


def prepared_dir(dataset: str) -> Path:
    return Path("prepared") / dataset


def text_cache(dataset: str) -> Path:
    return Path("features") / "text" / f"{dataset}.h5"


def run_dir(dataset: str, model: str, seed: int) -> Path:
    return Path("runs") / dataset / model / f"seed{seed}"


def run_layout(run: Path | str) -> tuple[Path, str]:
    """The workspace root and the dataset of a run directory ``runs/<dataset>/<model>/seed<k>``."""
    path = Path(run).resolve()
    if len(path.parts) < 5 or path.parents[2].name != "runs" or not path.name.startswith("seed"):
        raise ValueError(f"{run}: not a run directory runs/<dataset>/<model>/seed<k>")
    return path.parents[3], path.parents[1].name


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


def run_arguments(description: str) -> argparse.ArgumentParser:
    """The arguments dvc.yaml gives a run's train and evaluate stages: ``--dataset``,
    ``--run``, ``--seed`` (its :func:`run_dir`) and ``--visual``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--run", required=True, help="its entry under models in params.yaml")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument(
        "--visual", action="store_true", help="a run under pipeline.runs.visual: read the image caches"
    )
    return parser
