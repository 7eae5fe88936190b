"""The ``visual_features`` section, and what a consumer requires of a visual features cache
and of the image side's caches it is made from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from mner.core.cache import expectation, recorded_part
from mner.core.config import Count, Device, NonNegative, Range, section
from mner.settings import detect, ground, parse
from mner.settings.images import ImagesConfig, image_settings


@dataclass(frozen=True)
class VisualConfig:
    model: str = "resnet152"  # a torchvision ResNet builder name
    weights: str = "IMAGENET1K_V2"  # torchvision weights name, a local state-dict file, or "" (random)
    crop: Literal["resize", "roi_align"] = "resize"
    image_size: Annotated[int, Range(32)] = 224
    grid: bool = False  # also keep the 7x7 grid of the whole image
    batch_size: Count = 64  # crops per forward pass
    num_workers: NonNegative = 2  # image decoding and cropping in DataLoader workers
    device: Device = "auto"
    amp: bool = True  # float16 autocast on cuda


def expected_provenance(
    config: VisualConfig, images: ImagesConfig, objects: Mapping[str, Any], grounding: Mapping[str, Any]
) -> dict:
    """What a consumer configured with ``config`` requires of a visual features cache, made
    from an objects and a grounding cache that meet ``objects`` and ``grounding`` (their
    expectations)."""
    keys = ("model", "weights", "crop", "image_size", "grid")
    return expectation(
        "visual_features",
        config,
        keys,
        images=image_settings(images),
        objects=recorded_part(objects),
        grounding=recorded_part(grounding),
        phrases=recorded_part(grounding, "phrases"),
    )


def expected_caches(params: Mapping[str, Any]) -> dict[str, dict]:
    """The expectations (:func:`mner.core.cache.expectation`) that ``params`` sets for the image
    side's caches: ``objects``, ``phrases``, ``grounding`` and ``visual``."""
    images = section(params, "images", ImagesConfig)
    objects = detect.expected_provenance(section(params, "detect", detect.DetectConfig), images)
    parsed = parse.expected_provenance(section(params, "parse", parse.ParseConfig))
    grounding = ground.expected_provenance(section(params, "ground", ground.GroundConfig), images, parsed)
    visual = section(params, "visual_features", VisualConfig)
    return {
        "objects": objects,
        "phrases": parsed,
        "grounding": grounding,
        "visual": expected_provenance(visual, images, objects, grounding),
    }
