"""The ``detect`` section, its backends by name, what a consumer requires of an objects
cache and how it names a cached object."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mner.core.cache import expectation
from mner.core.config import Count, Device, NonNegative, Registry, Share
from mner.settings.images import ImagesConfig, image_settings

DETECTORS = Registry("detector", dict.fromkeys(("hf", "torchvision"), "mner.features.detect"))


@dataclass(frozen=True)
class DetectConfig:
    backend: str = "hf"  # hf | torchvision
    model: str = "facebook/detr-resnet-50"  # hf: hub id or local dir; torchvision: builder name
    revision: str = "no_timm"  # hf only
    weights: str = "DEFAULT"  # torchvision only: weights name, a local state-dict file, or "" (random)
    threshold: Share = 0.5
    max_objects: NonNegative = 10
    batch_size: Count = 8
    num_workers: NonNegative = 2  # image decoding in DataLoader workers
    device: Device = "auto"
    amp: bool = True  # float16 autocast on cuda

    def __post_init__(self) -> None:
        DETECTORS.check(self.backend, "detect.backend")


def expected_provenance(config: DetectConfig, images: ImagesConfig) -> dict:
    """What a consumer configured with ``config`` requires of an objects cache (the settings
    that change the objects, not batch size, workers, device or amp)."""
    keys = ("backend", "model", "revision", "weights", "threshold", "max_objects")
    return expectation("detect", config, keys, images=image_settings(images))


def object_label(classes: Sequence[str], k: int) -> str:
    """The name of detector class ``k`` (its number when the table has no such class)."""
    return classes[k] if 0 <= k < len(classes) else str(k)
