"""The offline configuration: a copy of the pipeline that runs without any download, on
a slice of the real data with a tiny random BERT."""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

from PIL import Image, ImageDraw

from mner.config import load_params
from mner.data.conll import SPLITS, read_conll
from mner.tiny import build_tiny_bert, build_tiny_detr, build_tiny_grounding_dino

REPO = Path(__file__).resolve().parents[1]
DATASETS = ("twitter2015", "twitter2017")
PIPELINE_FILES = ["dvc.yaml", "stages", "mner", "data/README.md", *(f"data/{d}" for d in DATASETS)]
TINY_BERT = "models/tiny-bert"
TINY_DETR = "models/tiny-detr"
TINY_GROUNDING_DINO = "models/tiny-grounding-dino"


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
    params.yaml and a tiny random BERT at ``models/tiny-bert``; ``dvc repro`` there runs
    the whole pipeline offline."""
    dest = Path(dest)
    if not (repo / "dvc.yaml").is_file():
        raise FileNotFoundError(f"{repo}: no dvc.yaml; run from a source checkout of mner (pip install -e .)")
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} exists and is not empty")
    dest.mkdir(parents=True, exist_ok=True)
    for name in PIPELINE_FILES:
        source, target = repo / name, dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target)
    shutil.copy2(repo / params, dest / "params.yaml")
    words = [w for s in read_conll(dest / "data/twitter2017/train.txt") for w in s.tokens]
    build_tiny_bert(dest / TINY_BERT, words)
    build_tiny_detr(dest / TINY_DETR)
    build_tiny_grounding_dino(dest / TINY_GROUNDING_DINO)
    for dataset in DATASETS:
        write_sample_images(
            dest / "data", dataset, per_split=load_params(dest / "params.yaml")["prepare"]["limit"]
        )
    (dest / ".gitignore").write_text("__pycache__/\n")
    for command in (
        ["git", "init", "-q"],
        ["dvc", "init", "-q"],
        ["git", "add", "-A"],
        [
            "git",
            "-c",
            "user.name=mner",
            "-c",
            "user.email=mner@localhost",
            "commit",
            "-qm",
            "offline workspace",
        ],
    ):
        subprocess.run(command, cwd=dest, check=True)
    return dest
