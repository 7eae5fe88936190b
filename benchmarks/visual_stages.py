"""Image stages on this machine: images/s of each stage against a bare forward pass of the
same model on the same inputs, measured in one run (target: overhead at most 25%), and
the HDF5 size per 1000 images.

No pretrained weights can be downloaded here, so the models are the real architectures
with random weights (the compute is the same): DETR-ResNet-50 (the `hf` detector),
ResNet-152 (visual features) and Grounding DINO with the grounding-dino-tiny
configuration (Swin-T and a BERT-base text encoder; the tokenizer vocabulary comes from the
offline MiniLM package). The images are synthetic (`mner.offline.write_sample_images`).

    python -m benchmarks.visual_stages --tweets 48
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mner.core.cache import CacheReader
from mner.core.workspace import Workspace
from mner.data.conll import SPLITS
from mner.data.prepared import PrepareConfig, prepare, read_prepared
from mner.features.detect import HFDetector, detect_objects
from mner.features.ground import ground_dataset, read_phrase_spans, tweet_queries
from mner.features.images import ImageSource, image_batches
from mner.features.phrases import extract_phrases
from mner.features.visual import TWEETS_PER_STEP, Cropper, VisualEncoder, extract_visual_features
from mner.offline import write_sample_images
from mner.settings.detect import DetectConfig
from mner.settings.ground import GROUNDERS, GroundConfig
from mner.settings.images import ImagesConfig
from mner.settings.parse import ParseConfig, expected_provenance
from mner.settings.visual import VisualConfig

REPO = Path(__file__).resolve().parents[1]


def build_detr_r50(out_dir: Path) -> Path:
    from transformers import DetrConfig, DetrForObjectDetection, DetrImageProcessor, ResNetConfig

    backbone = ResNetConfig(
        depths=[3, 4, 6, 3],
        hidden_sizes=[256, 512, 1024, 2048],
        layer_type="bottleneck",
        out_features=["stage4"],
    )
    config = DetrConfig(backbone_config=backbone, use_timm_backbone=False, use_pretrained_backbone=False)
    DetrForObjectDetection(config).save_pretrained(out_dir)
    DetrImageProcessor().save_pretrained(out_dir)
    return out_dir


def loaded_images(images: ImagesConfig, dataset: str, prepared: Path, batch_size: int) -> list[list]:
    source = ImageSource(images, dataset)
    batches = []
    for split in SPLITS:
        ids = [s.image_id for s in read_prepared(prepared / f"{split}.jsonl")]
        batches += [
            [loaded.image for _, loaded in batch] for batch in image_batches(source, ids, batch_size, 0)
        ]
    return batches


def bench_detect(work: Path, images: ImagesConfig, dataset: str, prepared: Path, tweets: int) -> None:
    config = DetectConfig(
        model=str(build_detr_r50(work / "detr")), revision="main", num_workers=1, device="auto"
    )
    report = detect_objects(config, images, Workspace.of(dataset, prepared), work / "objects.h5")
    detector = HFDetector(config)
    inputs = [
        detector.processor(images=b, return_tensors="pt") for b in loaded_images(images, dataset, prepared, 8)
    ]
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in inputs:
            detector.model(**batch.to(detector.device))
    bare = time.perf_counter() - start
    _print("detect (DETR-R50)", tweets, report.seconds, bare, work / "objects.h5")


def bench_visual(work: Path, images: ImagesConfig, dataset: str, prepared: Path, tweets: int) -> None:
    config = VisualConfig(weights="", num_workers=1, device="auto", grid=True)
    objects = {"stage": "detect"}  # the objects stand in for the grounded ones too
    report = extract_visual_features(
        config,
        images,
        Workspace.of(dataset, prepared, objects=work / "objects.h5", grounding=work / "objects.h5"),
        work / "visual.h5",
        expect_objects=objects,
        expect_grounding=objects,
    )
    # the same crops, built beforehand: the bare forward passes see the same batches
    encoder = VisualEncoder(config)
    objects = CacheReader(work / "objects.h5")
    crops = []  # per step, the crops of its tweets together, as the stage builds them
    for split in SPLITS:
        sentences = read_prepared(prepared / f"{split}.jsonl")
        source, crop = ImageSource(images, dataset), Cropper(objects_twice(objects, split), config)
        for first in range(0, len(sentences), TWEETS_PER_STEP):
            step = range(first, min(first + TWEETS_PER_STEP, len(sentences)))
            crops.append(torch.cat([crop(i, source.load(sentences[i].image_id))[2] for i in step]))
    start = time.perf_counter()
    for step_crops in crops:
        encoder.feature_maps(step_crops)
    bare = time.perf_counter() - start
    print(f"  visual_features crops: {report.crops} ({report.crops / tweets:.1f} per image)")
    _print("visual_features (ResNet-152)", tweets, report.seconds, bare, work / "visual.h5")


def build_grounding_dino_tiny(out_dir: Path) -> Path:
    """grounding-dino-tiny's architecture (Swin-T, BERT-base text encoder) with random
    weights, and a processor whose tokenizer is the bert-base-uncased vocabulary shipped
    by the offline MiniLM package."""
    from transformers import (
        BertTokenizer,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
    )

    from benchmarks.common import minilm_path

    GroundingDinoForObjectDetection(GroundingDinoConfig()).save_pretrained(out_dir)
    tokenizer = BertTokenizer.from_pretrained(minilm_path())
    GroundingDinoProcessor(
        image_processor=GroundingDinoImageProcessor(), tokenizer=tokenizer
    ).save_pretrained(out_dir)
    return out_dir


def bench_ground(work: Path, images: ImagesConfig, dataset: str, prepared: Path, tweets: int) -> None:
    extract_phrases(ParseConfig(backend="spacy"), prepared, work / "phrases.h5")
    config = GroundConfig(
        model=str(build_grounding_dino_tiny(work / "gdino")), box_threshold=0.0, num_workers=2, device="auto"
    )
    report = ground_dataset(
        config,
        images,
        Workspace.of(dataset, prepared, phrases=work / "phrases.h5"),
        work / "grounding.h5",
        expect_phrases=expected_provenance(ParseConfig(backend="spacy")),
    )
    grounder = GROUNDERS["grounding-dino"](config)
    source, phrases = ImageSource(images, dataset), CacheReader(work / "phrases.h5")
    inputs = []  # the same batches as the stage: tweets sorted by query count, batch_size at a time
    for split in SPLITS:
        sentences = read_prepared(prepared / f"{split}.jsonl")
        queries = [
            tweet_queries(s.tokens, k, config).texts
            for s, k in zip(sentences, read_phrase_spans(phrases, split, sentences))
        ]
        order = sorted(range(len(sentences)), key=lambda i: len(queries[i]))
        for b in range(0, len(order), config.batch_size):
            batch = order[b : b + config.batch_size]
            loaded = [source.load(sentences[i].image_id).image for i in batch]
            inputs.append(grounder.model_inputs(loaded, grounder.prompts([queries[i] for i in batch])))
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in inputs:
            grounder.forward(**batch)
    bare = time.perf_counter() - start
    print(f"  ground queries: {report.queries} ({report.queries / tweets:.1f} per image)")
    _print("ground (Grounding DINO tiny)", tweets, report.seconds, bare, work / "grounding.h5")


def objects_twice(objects: CacheReader, split: str):
    """The boxes the stage crops when the objects cache also stands for the grounded one."""

    def boxes(index: int) -> np.ndarray:
        return np.concatenate([objects.get(split, "boxes", index)] * 2)

    return boxes


def _print(stage: str, tweets: int, seconds: float, bare: float, cache: Path) -> None:
    size = cache.stat().st_size / tweets * 1000 / 2**20
    print(
        f"{stage}: {tweets / seconds:.2f} images/s (stage {seconds:.1f} s) vs bare forward "
        f"{tweets / bare:.2f} images/s ({bare:.1f} s): overhead {100 * (seconds / bare - 1):.1f}%; "
        f"HDF5 {size:.1f} MiB per 1000 images",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tweets", type=int, default=48, help="tweets per split")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "data"
        data.mkdir()
        dataset = "twitter2017"
        (data / dataset).symlink_to(REPO / "data" / dataset)
        write_sample_images(data, dataset, args.tweets)
        prepared = work / "prepared"
        prepare(PrepareConfig(data_dir=str(data), limit=args.tweets), dataset, prepared)
        tweets = sum(len(read_prepared(prepared / f"{s}.jsonl")) for s in SPLITS)
        images = ImagesConfig(dir=str(data / "images"))
        threads, cuda = torch.get_num_threads(), torch.cuda.is_available()
        print(f"{tweets} synthetic images, {threads} CPU threads, cuda: {cuda}")
        bench_detect(work, images, dataset, prepared, tweets)
        bench_visual(work, images, dataset, prepared, tweets)
        bench_ground(work, images, dataset, prepared, tweets)


if __name__ == "__main__":
    main()
