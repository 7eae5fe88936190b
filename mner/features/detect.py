"""Object detection over the tweets' images (the ``detect`` stage), with swappable backends:

- ``hf``: any Hugging Face object-detection model (default ``facebook/detr-resnet-50`` at
  revision ``no_timm``, which needs no timm), by hub id or local directory;
- ``torchvision``: a torchvision detector by builder name (e.g.
  ``fasterrcnn_resnet50_fpn_v2``) with torchvision weights by name or a local state dict.

Per tweet the cache holds ``boxes`` float32 ``[k, 4]`` (normalised xyxy), ``scores``
float32 ``[k]`` and ``classes`` int32 ``[k]``, the objects with score >= threshold, best
first, at most ``max_objects``; the class names table is in the provenance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from mner.core.cache import CacheWriter, loaded_revision, provenance
from mner.core.config import autocast, resolve_device, to_dict
from mner.core.workspace import Workspace
from mner.data.conll import Sentence
from mner.features.images import ImageReport, ImageSource, image_batches
from mner.features.torchvision_models import load_torchvision_model
from mner.runner.extraction import ExtractionReport, prepared_splits, write_cache
from mner.runner.preflight import check_hf_model, check_torchvision_weights
from mner.runner.shards import Shard
from mner.settings.detect import DETECTORS, DetectConfig
from mner.settings.images import ImagesConfig, dataset_image_dir


def check_ready(config: DetectConfig, images: ImagesConfig, dataset: str) -> None:
    """Fail with what to do when the images, then the detector's model, are neither on disk
    nor downloadable (loads nothing)."""
    dataset_image_dir(images, dataset)
    if config.backend == "hf":
        check_hf_model("detect.model", config.model, config.revision)
    elif config.backend == "torchvision":
        check_torchvision_weights("detect.weights", config.model, config.weights)


@dataclass
class Detections:
    boxes: np.ndarray  # [k, 4] float32, normalised xyxy
    scores: np.ndarray  # [k] float32
    classes: np.ndarray  # [k] int32


def keep_best(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    classes: torch.Tensor,
    size: tuple[int, int],
    threshold: float,
    max_objects: int,
) -> Detections:
    """Objects at or above ``threshold``, best first, at most ``max_objects``, with boxes
    in pixels (xyxy) normalised by the image ``size`` (width, height) and clipped to [0, 1]."""
    keep = scores >= threshold
    boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
    order = scores.argsort(descending=True)[:max_objects]
    width, height = size
    scale = torch.tensor([width, height, width, height], dtype=torch.float32)
    normalised = (boxes[order].float().cpu() / scale).clamp(0, 1)
    return Detections(
        normalised.numpy().astype(np.float32),
        scores[order].float().cpu().numpy().astype(np.float32),
        classes[order].cpu().numpy().astype(np.int32),
    )


def best_objects(
    results: Sequence[dict], images: Sequence[Image.Image], config: DetectConfig
) -> list[Detections]:
    """:func:`keep_best` of each image's raw detections (``boxes`` in pixels, ``scores``,
    ``labels``)."""
    return [
        keep_best(r["boxes"], r["scores"], r["labels"], image.size, config.threshold, config.max_objects)
        for r, image in zip(results, images)
    ]


@DETECTORS.register("hf")
class HFDetector:
    """A transformers object-detection model and its image processor."""

    def __init__(self, config: DetectConfig) -> None:
        from transformers import AutoImageProcessor, AutoModelForObjectDetection

        self.config, self.device = config, resolve_device(config.device)
        kwargs = {"revision": config.revision, "trust_remote_code": False}  # never run a model's own code
        self.processor = AutoImageProcessor.from_pretrained(config.model, **kwargs)
        model = AutoModelForObjectDetection.from_pretrained(config.model, **kwargs)
        self.model = model.eval().to(self.device)
        self.classes = [model.config.id2label[i] for i in range(len(model.config.id2label))]
        self.revision = loaded_revision(model, config.revision)

    @torch.inference_mode()
    def __call__(self, images: Sequence[Image.Image]) -> list[Detections]:
        inputs = self.processor(images=list(images), return_tensors="pt").to(self.device)
        with autocast(self.device, self.config.amp):
            outputs = self.model(**inputs)
        sizes = [(image.height, image.width) for image in images]
        results = self.processor.post_process_object_detection(outputs, threshold=0.0, target_sizes=sizes)
        return best_objects(results, images, self.config)


@DETECTORS.register("torchvision")
class TorchvisionDetector:
    """A torchvision detection model (Faster R-CNN, RetinaNet, FCOS, ...)."""

    def __init__(self, config: DetectConfig) -> None:
        import torchvision

        self.config, self.device = config, resolve_device(config.device)
        model, weights = load_torchvision_model(
            config.model, config.weights, "detect.weights", weights_backbone=None
        )
        self.model = model.eval().to(self.device)
        default = torchvision.models.get_model_weights(config.model).DEFAULT
        self.classes = list((weights or default).meta["categories"])
        self.revision = config.weights
        self.to_tensor = torchvision.transforms.functional.pil_to_tensor

    @torch.inference_mode()
    def __call__(self, images: Sequence[Image.Image]) -> list[Detections]:
        batch = [self.to_tensor(image).to(self.device).float() / 255 for image in images]
        with autocast(self.device, self.config.amp):
            results = self.model(batch)
        return best_objects(results, images, self.config)


@dataclass
class DetectReport(ExtractionReport):
    objects: int = 0


def detect_objects(
    config: DetectConfig,
    images: ImagesConfig,
    workspace: Workspace,
    out_path: Path | str,
    shard: Shard | None = None,
) -> DetectReport:
    """Detect the objects of every tweet's image (or those of ``shard``) of ``workspace``'s
    dataset into one cache file."""
    detector = DETECTORS[config.backend](config)
    source = ImageSource(images, workspace.dataset)
    inputs, splits = prepared_splits(workspace.prepared, shard)
    record = provenance(
        "detect",
        to_dict(config),
        inputs,
        backend=config.backend,
        model=config.model,
        revision=detector.revision,
        classes=detector.classes,
        images=to_dict(images),
    )
    report = DetectReport(images=ImageReport(no_directory=source.directory is None))

    def encode_split(cache: CacheWriter, split: str, sentences: Sequence[Sentence]) -> None:
        found: list[Detections | None] = [None] * len(sentences)
        batches = image_batches(
            source, [s.image_id for s in sentences], config.batch_size, config.num_workers
        )
        for batch in tqdm(batches, desc=f"detect {split}", unit="batch"):
            for (index, loaded), detections in zip(batch, detector([loaded.image for _, loaded in batch])):
                report.images.add(split, sentences[index].id, sentences[index].image_id, loaded)
                found[index] = detections
        cache.write_field(split, "boxes", [d.boxes.reshape(-1, 4) for d in found], np.float32)
        cache.write_field(split, "scores", [d.scores for d in found], np.float32)
        cache.write_field(split, "classes", [d.classes for d in found], np.int32)
        report.objects += sum(len(d.scores) for d in found)

    return write_cache(out_path, record, splits, encode_split, report)
