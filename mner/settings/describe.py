"""The ``describe`` section: the image-to-text model that writes a caption of every image of
a dataset into its clue directory, and what a reader of those captions can require of them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mner.core.cache import expectation
from mner.core.config import Count, Device, NonNegative
from mner.settings.clues import TRACKED
from mner.settings.images import ImagesConfig, image_settings

CAPTIONS = TRACKED + "described-captions.txt"  # what the stage writes ({dataset}: the dataset's name)


@dataclass(frozen=True)
class DescribeConfig:
    # hub id or local directory of an image-to-text model (BLIP; BLIP-2, GIT and other models
    # transformers' AutoModelForImageTextToText loads work too)
    model: str = "Salesforce/blip-image-captioning-base"
    revision: str = "main"  # hub revision (a branch, tag or commit)
    prompt: str = ""  # text the caption continues and begins with (BLIP's conditional captioning); "": none
    max_new_tokens: Count = 30  # caption length cap, in tokens
    num_beams: Count = 3  # beam search width (BLIP's captioning setting); 1: greedy
    batch_size: Count = 16  # images per generate call
    num_workers: NonNegative = 2  # image decoding in DataLoader workers
    device: Device = "auto"
    amp: bool = True  # float16 autocast on cuda


def expected_provenance(config: DescribeConfig, images: ImagesConfig) -> dict:
    """What a reader configured with ``config`` requires of a captions file's record (the
    settings that change the captions, not batch size, workers, device or amp)."""
    keys = ("model", "revision", "prompt", "max_new_tokens", "num_beams")
    return expectation("describe", config, keys, images=image_settings(images))


def captions_file(dataset: str, root: Path | str = ".") -> Path:
    """Where the describe stage writes the captions of ``dataset`` (a clue file in the
    ``captions`` format, under the clue directory DVC tracks)."""
    return Path(root) / CAPTIONS.replace("{dataset}", dataset)
