"""ResNet pooled features of each tweet's image and of its objects (the
``visual_features`` stage).

Per tweet the cache holds, float16:

- ``image`` ``[1, C]``: the whole image;
- ``objects`` ``[k, C]``: each detected object of the ``detect`` cache, in its order;
- ``grounded`` ``[g, C]``: each grounded object of the ``ground`` cache, in its order;
- ``grid`` ``[49, C]`` (when ``grid: true``): the 7x7 map of the last conv layer of the
  whole image, row by row (the "image region" ablations of both papers).

C is 2048 for ResNet-152. An object is encoded either from its crop resized to
``image_size`` (``crop: resize``) or by ``roi_align`` of its box on the feature map of the
whole image (``crop: roi_align``; one forward pass per image). Images are decoded and
cropped in DataLoader workers; the network runs batched, with float16 autocast on cuda.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from mner.core.cache import CacheReader, CacheWriter, provenance, rerun_hint
from mner.core.config import autocast, resolve_device, to_dict
from mner.core.workspace import Workspace
from mner.data.conll import Sentence
from mner.features.images import ImageReport, ImageSource, LoadedImage, image_batches
from mner.features.torchvision_models import load_torchvision_model
from mner.runner.extraction import ExtractionReport, prepared_splits, write_cache
from mner.runner.preflight import check_torchvision_weights
from mner.runner.shards import Shard
from mner.settings.images import ImagesConfig, dataset_image_dir
from mner.settings.visual import VisualConfig
from mner.tagger import VISUAL_KINDS, VisualKind

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TWEETS_PER_STEP = 8  # with crop: resize, tweets whose crops go through the network together


def check_ready(config: VisualConfig, images: ImagesConfig, dataset: str) -> None:
    """Fail with what to do when the images, then the ResNet weights, are neither on disk nor
    downloadable (loads nothing)."""
    dataset_image_dir(images, dataset)
    check_torchvision_weights("visual_features.weights", config.model, config.weights)


def load_resnet(config: VisualConfig) -> tuple[nn.Module, int]:
    """The ResNet trunk up to its last conv layer (``[B, 3, S, S] -> [B, C, S/32, S/32]``)
    and its number of channels C.
    Named weights come from TORCH_HOME (downloaded there when online); a path is a local
    state dict loaded without pickle execution. Random weights (``""``, for tests and
    benchmarks) start each residual branch at zero, so that 50 blocks keep the features
    in float16 range."""
    random = {"zero_init_residual": True} if not config.weights else {}
    model, _ = load_torchvision_model(config.model, config.weights, "visual_features.weights", **random)
    return nn.Sequential(*list(model.children())[:-2]), model.fc.in_features


def tweets_per_step(config: VisualConfig) -> int:
    """Tweets whose crops go through the network together (in chunks of ``batch_size``):
    with ``roi_align`` a tweet is one crop, so a full batch of tweets."""
    return config.batch_size if config.crop == "roi_align" else TWEETS_PER_STEP


def grid_boxes(side: int) -> np.ndarray:
    """The normalised xyxy boxes ``[side * side, 4]`` of the grid cells, row by row (the
    order of the ``grid`` field)."""
    r, c = np.divmod(np.arange(side * side), side)
    return np.stack([c, r, c + 1, r + 1], axis=1).astype(np.float32) / side


WHOLE_IMAGE = (0.0, 0.0, 1.0, 1.0)
# the visual kinds whose cells this stage writes, each to its field (after the whole image's)
OBJECTS, GROUNDED, GRID = (VISUAL_KINDS[name] for name in ("objects", "grounded", "grid"))


def describe_cells(
    kind: VisualKind, boxes: np.ndarray, labels: Sequence[str | None], limit: int | None = None
) -> list[dict]:
    """The visual cells a model of visual ``kind`` reads for one tweet, in its order, each
    as ``{"kind", "box", "label"}``: the whole image, then the first ``limit`` boxes
    ``[k, 4]`` (normalised xyxy; None: all) of its kind (``kind.cell``) with their labels
    (a detected object's class, a grounded box's query, whatever names the caller gives
    grid cells)."""
    cells = [{"kind": "image", "box": list(WHOLE_IMAGE), "label": None}]
    return cells + [
        {"kind": kind.cell, "box": [float(v) for v in box], "label": label}
        for box, label in zip(boxes[:limit], labels)
    ]


def normalise(image: torch.Tensor) -> torch.Tensor:
    """uint8 ``[3, H, W]`` to the float input ImageNet models expect."""
    mean, std = torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]
    return (image.float() / 255 - mean) / std


class Cropper:
    """A tweet's image and object crops as network inputs ``[n, 3, S, S]`` (the whole
    image first; with ``roi_align`` only the whole image), made where the image is loaded
    (a DataLoader worker: ``prepare`` of :func:`mner.features.images.image_batches`).
    ``boxes(index)``: the tweet's boxes ``[k, 4]``, normalised xyxy."""

    def __init__(self, boxes: Callable[[int], np.ndarray], config: VisualConfig) -> None:
        self.boxes, self.config = boxes, config

    def __call__(
        self, index: int, loaded: LoadedImage
    ) -> tuple[int, LoadedImage, torch.Tensor, torch.Tensor]:
        """``(index, the loaded image without its pixels, crops, boxes [k, 4])``."""
        import torchvision  # here, not at the top: it imports torch._dynamo (seconds per process)

        image = torchvision.transforms.functional.pil_to_tensor(loaded.image)  # [3, H, W] uint8
        boxes = torch.as_tensor(self.boxes(index), dtype=torch.float32).reshape(-1, 4)  # normalised xyxy
        size = self.config.image_size
        crops = [torchvision.transforms.functional.resize(image, [size, size], antialias=True)]
        if self.config.crop == "resize":
            height, width = image.shape[1:]
            for x0, y0, x1, y1 in (boxes * torch.tensor([width, height, width, height])).tolist():
                left, top = min(int(x0), width - 1), min(int(y0), height - 1)  # at least one pixel
                crop = image[:, top : max(int(y1), top + 1), left : max(int(x1), left + 1)]
                crops.append(torchvision.transforms.functional.resize(crop, [size, size], antialias=True))
        without_pixels = dataclasses.replace(loaded, image=None)  # the pixels stay in the worker
        return index, without_pixels, torch.stack([normalise(c) for c in crops]), boxes


class VisualEncoder:
    def __init__(self, config: VisualConfig) -> None:
        self.config, self.device = config, resolve_device(config.device)
        trunk, self.dim = load_resnet(config)
        self.trunk = trunk.eval().to(self.device)

    @torch.inference_mode()
    def feature_maps(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, S, S] -> [B, C, S/32, S/32]`` in chunks of ``batch_size``."""
        maps = []
        for chunk in images.split(self.config.batch_size):
            with autocast(self.device, self.config.amp):
                maps.append(self.trunk(chunk.to(self.device, non_blocking=True)).float())
        return torch.cat(maps)

    def encode(self, tweets: list[tuple[torch.Tensor, torch.Tensor]]) -> list[tuple[torch.Tensor, ...]]:
        """Per tweet, from its crops ``[n, 3, S, S]`` and boxes ``[k, 4]``: pooled features
        of the whole image ``[1, C]`` and of its boxes ``[k, C]``, and the grid ``[h*w, C]``
        of the whole image. The crops of all the tweets go through the network together."""
        counts = [len(crops) for crops, _ in tweets]
        all_maps = self.feature_maps(torch.cat([crops for crops, _ in tweets])).split(
            counts
        )  # [n, C, h, w] each
        pooled = [maps.mean(dim=(2, 3)) for maps in all_maps]  # [n, C] each
        grids = [maps[0].flatten(1).T for maps in all_maps]  # [h*w, C] each
        if self.config.crop == "resize":
            return [(p[:1], p[1:], grid) for p, grid in zip(pooled, grids)]
        import torchvision

        images = torch.stack([maps[0] for maps in all_maps])  # [B, C, h, w]: every tweet in one call
        height, width = images.shape[2:]
        scale = torch.tensor([width, height, width, height], device=images.device)
        rois = [boxes.to(images.device) * scale for _, boxes in tweets]
        regions = torchvision.ops.roi_align(images, rois, output_size=(7, 7), aligned=True)  # [k, C, 7, 7]
        boxed = regions.mean(dim=(2, 3)).split([len(r) for r in rois])
        return [(p[:1], b, grid) for p, b, grid in zip(pooled, boxed, grids)]


@dataclass
class VisualReport(ExtractionReport):
    crops: int = 0


def extract_visual_features(
    config: VisualConfig,
    images: ImagesConfig,
    workspace: Workspace,
    out_path: Path | str,
    shard: Shard | None = None,
    *,
    expect_objects: Mapping[str, Any],
    expect_grounding: Mapping[str, Any],
) -> VisualReport:
    """Encode every tweet's image, detected objects and grounded objects (of every tweet of
    ``workspace``'s dataset, or of those of ``shard``) into one cache, from its objects and
    grounding caches, which must meet ``expect_objects`` and ``expect_grounding``."""
    dataset = workspace.dataset
    objects = CacheReader(workspace.cache("objects"), expect_objects, rerun=rerun_hint("detect", dataset))
    grounded = CacheReader(
        workspace.cache("grounding"), expect_grounding, rerun=rerun_hint("ground", dataset)
    )
    encoder = VisualEncoder(config)
    source = ImageSource(images, dataset)
    inputs, splits = prepared_splits(workspace.prepared, shard)
    for split, sentences in splits.items():  # refused before the first image is encoded
        for boxed in (objects, grounded):
            if boxed.rows(split, [s.id for s in sentences]):  # the split's tweets are there
                boxed.check_rows(split, "boxes", normalised_xyxy, BOX_RULE)
    record = provenance(
        "visual_features",
        to_dict(config),
        inputs,
        model=config.model,
        weights=config.weights,
        images=to_dict(images),
        objects=objects.provenance.get("params"),
        grounding=grounded.provenance.get("params"),
        phrases=grounded.provenance.get("phrases"),
        feature_dim=encoder.dim,
    )
    report = VisualReport(images=ImageReport(no_directory=source.directory is None))

    def encode_split(cache: CacheWriter, split: str, sentences: Sequence[Sentence]) -> None:
        _encode_split(encoder, cache, split, sentences, source, objects, grounded, report)

    return write_cache(out_path, record, splits, encode_split, report)


BOX_RULE = "a normalised xyxy box (0 <= x0 <= x1 <= 1, the same for y)"


def normalised_xyxy(rows: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Which boxes ``[k, 4]`` are :data:`BOX_RULE`'s."""
    x0, y0, x1, y1 = rows.T
    return (x0 >= 0) & (x0 <= x1) & (x1 <= 1) & (y0 >= 0) & (y0 <= y1) & (y1 <= 1)


def _encode_split(encoder, cache, split, sentences, source, objects, grounded, report) -> None:
    ids = [s.id for s in sentences]  # looked up by id: a shard job reads the full caches
    object_rows, grounded_rows = objects.rows(split, ids), grounded.rows(split, ids)
    n_objects = np.diff(objects.offsets[split, "boxes"])[object_rows] if ids else []
    n_grounded = np.diff(grounded.offsets[split, "boxes"])[grounded_rows] if ids else []

    def boxes(i: int) -> np.ndarray:
        return np.concatenate(
            [objects.get(split, "boxes", object_rows[i]), grounded.get(split, "boxes", grounded_rows[i])]
        )

    fields = {}
    config = encoder.config
    batches = image_batches(
        source,
        [s.image_id for s in sentences],
        tweets_per_step(config),
        config.num_workers,
        prepare=Cropper(boxes, config),
    )
    for batch in tqdm(batches, desc=f"visual_features {split}", unit="batch"):
        encoded = encoder.encode([(crops, tweet_boxes) for _, _, crops, tweet_boxes in batch])
        for (index, loaded, crops, _), features in zip(batch, encoded):
            report.images.add(split, sentences[index].id, sentences[index].image_id, loaded)
            image, boxed, grid = (t.cpu().numpy() for t in features)
            if not fields:
                lengths = {
                    "image": [1] * len(sentences),
                    OBJECTS.field: n_objects,
                    GROUNDED.field: n_grounded,
                }
                if config.grid:
                    lengths[GRID.field] = [len(grid)] * len(sentences)
                fields = {
                    name: cache.create_field(split, name, n, (encoder.dim,), np.float16)
                    for name, n in lengths.items()
                }
            k = n_objects[index]
            fields["image"][index] = image
            fields[OBJECTS.field][index] = boxed[:k]
            fields[GROUNDED.field][index] = boxed[k:]
            if GRID.field in fields:
                fields[GRID.field][index] = grid
            report.crops += len(crops)
