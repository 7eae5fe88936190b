"""The ``images`` section: where the images are and how every image stage decodes them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mner.core.config import Count
from mner.runner.preflight import PreflightError

GET_IMAGES = (
    "The images are not in the repository: get the archive linked from the README of the "
    "UMT repository (jefferyYu/UMT on GitHub) and unpack it so that each image is "
    "{dir}/<dataset>/<image id>.jpg (see data/README.md). To run without images, every "
    "tweet with the blank image, set images.missing: blank in params.yaml."
)


class ImagesMissingError(PreflightError):
    pass


@dataclass(frozen=True)
class ImagesConfig:
    dir: str = "data/images"
    max_side: Count = 1333  # longer side after downscaling (DETR's default input size)
    blank_size: Count = 224  # side of the blank placeholder image
    missing: Literal["fail", "blank"] = "fail"  # when a dataset's whole image directory is absent
    max_pixels: Count = 40_000_000  # width * height as decoded; larger images become the blank image


def image_settings(config: ImagesConfig) -> dict:
    """The image settings that change what an image stage computes (not where the images are)."""
    return {
        "max_side": config.max_side,
        "blank_size": config.blank_size,
        "missing": config.missing,
        "max_pixels": config.max_pixels,
    }


def dataset_image_dir(config: ImagesConfig, dataset: str) -> Path | None:
    """``<dir>/<dataset>``; None when it is absent or holds no image (the repository keeps
    an empty one with a ``.gitkeep``) and params allow blank images, else an error that
    says where to put the images and how to get them."""
    directory = Path(config.dir) / dataset
    if directory.is_dir() and any(not p.name.startswith(".") for p in directory.iterdir()):
        return directory
    if config.missing == "blank":
        return None
    raise ImagesMissingError(
        f"images.dir: no image directory {directory}. " + GET_IMAGES.format(dir=config.dir)
    )


def ensure_image_dir(config: ImagesConfig, dataset: str) -> Path | None:
    """The pre-flight of the image directory that a dataset's image stages depend on
    (dvc.yaml), when it is absent: the error of :func:`dataset_image_dir` when images are
    required; when they may be blank, the directory made with a ``.gitkeep`` (so that DVC
    finds the dependency, and not empty), returned. A directory that is there is left to
    the image stages."""
    directory = Path(config.dir) / dataset
    if directory.is_dir() or dataset_image_dir(config, dataset) is not None:
        return None
    directory.mkdir(parents=True)
    (directory / ".gitkeep").touch()
    return directory
