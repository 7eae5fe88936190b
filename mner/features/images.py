"""Robust loading of the tweets' images.

Images live at ``<images.dir>/<dataset>/<image id>.jpg``. Every image comes back as an RGB
PIL image: EXIF rotation applied, alpha composited on white, palette, grayscale, 16-bit
and CMYK converted, multi-frame files (GIF, APNG, TIFF) by their first frame, large
images downscaled so that their longer side is at most ``max_side``. A missing, empty,
truncated or undecodable file, and one that would decode to more than ``max_pixels``
pixels (checked from its header, before decoding), becomes the blank placeholder image
(a white square, as published systems substitute for tweets without a usable image) and
is counted per split with its problem.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

from mner.data.conll import is_plain_file_name
from mner.settings.images import ImagesConfig, dataset_image_dir

PROBLEMS = ("missing", "empty", "truncated", "undecodable", "too_large")
# longest side over shortest: a thinner strip is padded to it, since the extractors' resizing
# (to a longest side) would leave it no pixel high; photos stay well below (a panorama is 4:1)
MAX_ASPECT = 20


@dataclass
class LoadedImage:
    image: Image.Image
    problem: str | None = None  # one of PROBLEMS, or None for a good image
    detail: str = ""


def blank_image(size: int = 224) -> Image.Image:
    return Image.new("RGB", (size, size), (255, 255, 255))


def load_image(
    path: Path | str, max_side: int = 1333, blank_size: int = 224, max_pixels: int = 40_000_000
) -> LoadedImage:
    """The image at ``path`` as RGB, or the blank image with the reason it is blank."""
    path = Path(path)

    def blank(problem: str, detail: str = "") -> LoadedImage:
        return LoadedImage(blank_image(blank_size), problem, detail)

    try:
        size = path.stat().st_size if path.is_file() else None
    except OSError as error:  # e.g. a name longer than the file system allows
        return blank("missing", str(error))
    if size is None:
        return blank("missing")
    if size == 0:
        return blank("empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL warns about odd EXIF, palette transparency, large images
            with Image.open(path) as image:
                stored = image.size
                image.draft("RGB", (max_side, max_side))  # JPEG: decode at a reduced scale when large
                if image.width * image.height > max_pixels:  # checked before decoding a pixel
                    return blank("too_large", over_limit(image, stored, max_pixels))
                image.load()  # the first frame only
                ImageOps.exif_transpose(image, in_place=True)  # in place: no copy of an upright image
                image = to_rgb(image)
    except UnidentifiedImageError as error:
        return blank("undecodable", str(error))
    except Image.DecompressionBombError as error:  # over PIL's own limit, 2 * Image.MAX_IMAGE_PIXELS
        return blank("too_large", str(error))
    except (OSError, SyntaxError, ValueError) as error:
        return blank("truncated" if "truncated" in str(error) else "undecodable", str(error))
    if max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    short = -(-max(image.size) // MAX_ASPECT)  # ceil
    if min(image.size) < short:  # a strip (20000x10 is 320x1 here): centred on black
        canvas = Image.new("RGB", (max(image.width, short), max(image.height, short)))
        canvas.paste(image, ((canvas.width - image.width) // 2, (canvas.height - image.height) // 2))
        image = canvas
    return LoadedImage(image)


def over_limit(image: Image.Image, stored: tuple[int, int], max_pixels: int) -> str:
    """Why ``image`` (``stored`` pixels in its file) is too large to decode."""
    decoded = f"{image.width}x{image.height} pixels"
    if image.size != stored:
        decoded += f" at the reduced JPEG scale ({stored[0]}x{stored[1]} in the file)"
    return f"{decoded}, over images.max_pixels ({max_pixels})"


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode as RGB; transparency is composited on white.

    Grey levels deeper than 8 bits are mapped by a fixed rule, the same for every image
    (no per-image stretch, so a constant image keeps its level): integer modes (16-bit
    ``I;16*``, and ``I``, as older Pillow opens 16-bit PNGs) are clipped to 0..65535 and
    keep their high byte (``v >> 8``, as Pillow reduces 16-bit RGB PNGs); float ``F``
    values are read as 0..1 when none exceeds 1, else as 0..255, and clipped (NaN as 0)."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        image = Image.fromarray(eight_bit(np.asarray(image), image.mode), "L")
    if image.mode == "P" or image.mode in ("LA", "PA", "RGBA") or "transparency" in image.info:
        image = image if image.mode == "RGBA" else image.convert("RGBA")  # no copy of an RGBA image
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    return image.convert("RGB")


def eight_bit(values: np.ndarray, mode: str) -> np.ndarray:
    """The grey levels ``values`` of a PIL ``mode`` image as uint8 (see :func:`to_rgb`)."""
    if mode == "F":
        values = np.nan_to_num(values.astype(np.float32), nan=0.0)
        top = 1.0 if values.max(initial=0.0) <= 1 else 255.0
        return np.round(np.clip(values, 0, top) * (255 / top)).astype(np.uint8)
    return (np.clip(values, 0, 65535) >> 8).astype(np.uint8)


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
        """The image ``<dir>/<dataset>/<image_id>.jpg``; an id that is not a plain file name
        (one that could name a file elsewhere) is refused with a ValueError."""
        if not is_plain_file_name(image_id):
            raise ValueError(f"image id {image_id!r} is not a plain file name")
        config = self.config
        if self.directory is None:
            return LoadedImage(blank_image(config.blank_size), "missing", "no image directory")
        return load_image(
            self.directory / f"{image_id}.jpg", config.max_side, config.blank_size, config.max_pixels
        )


class TweetImages(Dataset):
    """Item ``i``: ``prepare(i, image of image_ids[i])``, run where the item is loaded (a
    DataLoader worker), or the pair ``(i, loaded image)``."""

    def __init__(
        self, source: ImageSource, image_ids: Sequence[str], prepare: Callable[[int, LoadedImage], Any] | None
    ) -> None:
        self.source, self.image_ids, self.prepare = source, list(image_ids), prepare

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> Any:
        loaded = self.source.load(self.image_ids[index])
        return (index, loaded) if self.prepare is None else self.prepare(index, loaded)


def image_batches(
    source: ImageSource,
    image_ids: Sequence[str],
    batch_size: int,
    num_workers: int,
    order: Sequence[int] | None = None,
    prepare: Callable[[int, LoadedImage], Any] | None = None,
) -> DataLoader:
    """The one way the image stages read images: batches (lists) of ``(index, loaded
    image)`` pairs, or of ``prepare(index, loaded image)``, taken in ``order`` (indices into
    ``image_ids``; default: their own order). The images are decoded, and prepared, in
    ``num_workers`` DataLoader worker processes (0: in this one), a few batches ahead."""
    return DataLoader(
        TweetImages(source, image_ids, prepare),
        batch_size=batch_size,
        sampler=order,
        num_workers=num_workers,
        collate_fn=list,
    )
