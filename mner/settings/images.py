"""The ``images`` section: where the images are and how every image stage decodes them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mner.core.config import Count


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
