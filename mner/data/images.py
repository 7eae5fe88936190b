"""Robust loading of the tweets' images.

Images live at ``<images.dir>/<dataset>/<image id>.jpg``. Every image comes back as an RGB
PIL image: EXIF rotation applied, alpha composited on white, palette, grayscale, 16-bit
and CMYK converted, GIFs by their first frame, large images downscaled so that their
longer side is at most ``max_side``. A missing, empty, truncated or undecodable file
becomes the blank placeholder image (a white square, as published systems substitute
for tweets without a usable image) and is counted per split with its problem.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

PROBLEMS = ("missing", "empty", "truncated", "undecodable")
GET_IMAGES = (
    "The images are not in the repository: get the archive linked from the README of the "
    "UMT repository (jefferyYu/UMT on GitHub) and unpack it so that each image is "
    "{dir}/<dataset>/<image id>.jpg (see data/README.md). To run without images, every "
    "tweet with the blank image, set images.missing: blank in params.yaml."
)


@dataclass(frozen=True)
class ImagesConfig:
    dir: str = "data/images"
    max_side: int = 1333  # longer side after downscaling (DETR's default input size)
    blank_size: int = 224  # side of the blank placeholder image
    missing: Literal["fail", "blank"] = "fail"  # when a dataset's whole image directory is absent


def image_settings(config: ImagesConfig) -> dict:
    """The image settings that change what an image stage computes (not where the images are)."""
    return {"max_side": config.max_side, "blank_size": config.blank_size, "missing": config.missing}


class ImagesMissingError(FileNotFoundError):
    pass


@dataclass
class LoadedImage:
    image: Image.Image
    problem: str | None = None  # one of PROBLEMS, or None for a good image
    detail: str = ""


def blank_image(size: int = 224) -> Image.Image:
    return Image.new("RGB", (size, size), (255, 255, 255))


def load_image(path: Path | str, max_side: int = 1333, blank_size: int = 224) -> LoadedImage:
    """The image at ``path`` as RGB, or the blank image with the reason it is blank."""
    path = Path(path)
    if not path.is_file():
        return LoadedImage(blank_image(blank_size), "missing")
    if path.stat().st_size == 0:
        return LoadedImage(blank_image(blank_size), "empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL warns about odd EXIF and palette transparency
            with Image.open(path) as image:
                image.draft("RGB", (max_side, max_side))  # JPEG: decode at a reduced scale when large
                image.load()
                image = to_rgb(ImageOps.exif_transpose(image))
    except UnidentifiedImageError as error:
        return LoadedImage(blank_image(blank_size), "undecodable", str(error))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        problem = "truncated" if "truncated" in str(error) else "undecodable"
        return LoadedImage(blank_image(blank_size), problem, str(error))
    if max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    return LoadedImage(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode as RGB; transparency is composited on white."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        values = np.asarray(image, dtype=np.float64)
        span = values.max() - values.min()
        scaled = (values - values.min()) / span * 255 if span else np.zeros_like(values)
        image = Image.fromarray(scaled.astype(np.uint8), "L")
    if image.mode == "P" or image.mode in ("LA", "PA", "RGBA") or "transparency" in image.info:
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    return image.convert("RGB")


def dataset_image_dir(config: ImagesConfig, dataset: str) -> Path | None:
    """``<dir>/<dataset>``; None when it is absent or holds no image (the repository keeps
    an empty one with a ``.gitkeep``) and params allow blank images, else an error that
    says where to put the images and how to get them."""
    directory = Path(config.dir) / dataset
    if directory.is_dir() and any(not p.name.startswith(".") for p in directory.iterdir()):
        return directory
    if config.missing == "blank":
        return None
    raise ImagesMissingError(f"no image directory {directory}. " + GET_IMAGES.format(dir=config.dir))


@dataclass
class ImageReport:
    """Images that became the blank image, per split and problem."""

    counts: dict[str, Counter] = field(default_factory=dict)
    items: list[dict] = field(default_factory=list)
    no_directory: bool = False

    def add(self, split: str, tweet_id: str, image_id: str, loaded: LoadedImage) -> None:
        counts = self.counts.setdefault(split, Counter())
        counts["images"] += 1
        if loaded.problem:
            counts[loaded.problem] += 1
            self.items.append(
                {
                    "split": split,
                    "id": tweet_id,
                    "image_id": image_id,
                    "problem": loaded.problem,
                    "detail": loaded.detail,
                }
            )

    def blank(self, split: str) -> int:
        return sum(self.counts.get(split, Counter())[p] for p in PROBLEMS)

    def summary(self) -> str:
        parts = []
        for split, counts in self.counts.items():
            problems = ", ".join(f"{p} {counts[p]}" for p in PROBLEMS if counts[p])
            parts.append(f"{split}: {self.blank(split)} of {counts['images']} blank ({problems or 'none'})")
        return "; ".join(parts)

    def write(self, path: Path | str) -> None:
        record = {
            "no_directory": self.no_directory,
            "counts": {
                s: {"images": c["images"], **{p: c[p] for p in PROBLEMS}} for s, c in self.counts.items()
            },
            "blank_images": self.items,
        }
        Path(path).write_text(json.dumps(record, indent=2) + "\n")


class ImageSource:
    """The images of one dataset by image id (picklable: safe in DataLoader workers)."""

    def __init__(self, config: ImagesConfig, dataset: str) -> None:
        self.config = config
        self.directory = dataset_image_dir(config, dataset)

    def load(self, image_id: str) -> LoadedImage:
        if self.directory is None:
            return LoadedImage(blank_image(self.config.blank_size), "missing", "no image directory")
        return load_image(self.directory / f"{image_id}.jpg", self.config.max_side, self.config.blank_size)
