"""Captions of the tweets' images (the ``describe`` stage): an image-to-text model from the
hub (BLIP by default) writes one caption per image into the dataset's clue directory, in the
``captions`` clue format (:mod:`mner.clues`), so that a clue set ``{format: captions, path:
data/{dataset}/clues/described-captions.txt}`` reads it as it reads the vendored BLIP-2
captions. For users who have the images but no captions.

Every distinct image id of the prepared splits gets one caption (tweets that share an image
share it); an image that cannot be read is captioned as the blank image, as the other image
stages read it, and counted. Captions are one line each, stripped, their runs of whitespace
one space; with a ``prompt``, a BLIP caption begins with it. Generation is greedy or beam
search, never sampled, so a rerun with the same settings writes the same file. Beside the
captions, ``described-captions.json`` records how they were made (the provenance a reader
can check with :func:`mner.settings.describe.expected_provenance`) and the blank images.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from mner.clues import normalize, write_captions
from mner.core.cache import loaded_revision, provenance, remove_stale_temporaries
from mner.core.config import autocast, resolve_device, to_dict
from mner.core.workspace import Workspace
from mner.data.conll import Sentence
from mner.features.images import ImageReport, ImageSource, image_batches
from mner.runner.extraction import prepared_splits
from mner.runner.preflight import OFFLINE_ROUTE, PreflightError, check_hf_model
from mner.settings.describe import DescribeConfig
from mner.settings.images import ImagesConfig, dataset_image_dir


def check_ready(config: DescribeConfig, images: ImagesConfig, dataset: str) -> None:
    """Fail with what to do when the images, then the captioning model, are neither on disk
    nor downloadable (loads nothing)."""
    dataset_image_dir(images, dataset)
    if not Path(config.model).is_dir() and not is_hub_id(config.model):  # a local directory not there
        default = DescribeConfig.model
        raise PreflightError(
            f"describe.model: {config.model!r} is neither a local directory nor a hub id (org/name): check "
            "the path; it should hold a model saved with save_pretrained or downloaded with `hf download "
            f"{default} --local-dir models/{default.split('/')[-1]}`. {OFFLINE_ROUTE}"
        )
    check_hf_model("describe.model", config.model, config.revision)


def is_hub_id(name: str) -> bool:
    """Whether ``name`` has the form of a Hugging Face hub id (``name`` or ``org/name``)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


class Captioner:
    """A transformers image-to-text model and its processor, loaded by hub id or local
    directory (``config.model``); calling it captions one batch of images."""

    def __init__(self, config: DescribeConfig) -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.config, self.device = config, resolve_device(config.device)
        kwargs = {"revision": config.revision, "trust_remote_code": False}  # never run a model's own code
        self.processor = AutoProcessor.from_pretrained(config.model, **kwargs)
        model = AutoModelForImageTextToText.from_pretrained(config.model, **kwargs)
        self.model = model.eval().to(self.device)
        self.revision = loaded_revision(model, config.revision)

    @torch.inference_mode()
    def __call__(self, images: Sequence[Image.Image]) -> list[str]:
        """The normalised caption of each of ``images`` (RGB), in order."""
        if not images:
            return []
        text = {"text": [self.config.prompt] * len(images)} if self.config.prompt else {}
        inputs = self.processor(images=list(images), return_tensors="pt", **text).to(self.device)
        with autocast(self.device, self.config.amp):
            tokens = self.model.generate(
                **inputs,
                max_new_tokens=self.config.max_new_tokens,
                num_beams=self.config.num_beams,
                do_sample=False,
            )  # [B, T]
        return [
            normalize(caption) for caption in self.processor.batch_decode(tokens, skip_special_tokens=True)
        ]


def caption_images(captioner: Captioner, images: Sequence[Image.Image]) -> list[str]:
    """The caption of each of ``images``, in batches of the captioner's ``batch_size`` (for
    ``mner predict``: images it loaded itself, e.g. with :func:`mner.features.images.load_image`)."""
    size = captioner.config.batch_size
    return [caption for i in range(0, len(images), size) for caption in captioner(images[i : i + size])]


@dataclass
class DescribeReport:
    tweets: int = 0
    captions: int = 0  # distinct images captioned
    empty: int = 0  # captions that came out empty
    seconds: float = 0.0
    images: ImageReport = field(default_factory=ImageReport)


def distinct_images(splits: dict[str, Sequence[Sentence]]) -> dict[str, list[tuple[str, str]]]:
    """``{image id: [(split, tweet id), ...]}`` over the splits, the images in the order in
    which their first tweet comes."""
    tweets: dict[str, list[tuple[str, str]]] = {}
    for split, sentences in splits.items():
        for sentence in sentences:
            tweets.setdefault(sentence.image_id, []).append((split, sentence.id))
    return tweets


def describe_dataset(
    config: DescribeConfig,
    images: ImagesConfig,
    workspace: Workspace,
    out_path: Path | str,
    captioner: Captioner | None = None,
) -> DescribeReport:
    """Caption every distinct image of ``workspace``'s prepared splits into ``out_path`` (the
    ``captions`` clue format, written under a temporary name and renamed when whole), and
    record how beside it (:func:`describe_record`). ``captioner``: one already loaded."""
    start, out_path = time.perf_counter(), Path(out_path)
    captioner = captioner or Captioner(config)
    source = ImageSource(images, workspace.dataset)
    inputs, splits = prepared_splits(workspace.prepared, None)
    tweets = distinct_images(splits)
    image_ids = list(tweets)
    report = DescribeReport(images=ImageReport(no_directory=source.directory is None))
    captions: dict[str, str] = {}
    batches = image_batches(source, image_ids, config.batch_size, config.num_workers)
    for batch in tqdm(batches, desc=f"describe {workspace.dataset}", unit="batch"):
        texts = captioner([loaded.image for _, loaded in batch])
        for (index, loaded), text in zip(batch, texts):
            captions[image_ids[index]] = text
            for split, tweet_id in tweets[image_ids[index]]:
                report.images.add(split, tweet_id, image_ids[index], loaded)
    write_atomically(out_path, captions)
    report.tweets = sum(len(s) for s in splits.values())
    report.captions, report.empty = len(captions), sum(not c for c in captions.values())
    report.seconds = time.perf_counter() - start
    record = provenance(
        "describe",
        to_dict(config),
        inputs,
        model=config.model,
        revision=captioner.revision,
        images=to_dict(images),
    )
    write_record(describe_record(out_path), record, report)
    return report


def write_atomically(path: Path, captions: dict[str, str]) -> None:
    """:func:`write_captions` under a temporary name beside ``path``, renamed when whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write_captions(tmp, captions)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def describe_record(captions: Path | str) -> Path:
    """The record written beside a captions file: ``<name>.json``."""
    return Path(captions).with_suffix(".json")


def write_record(path: Path, record: dict, report: DescribeReport) -> None:
    """The provenance of the captions and the tweets whose image was blank, as JSON."""
    summary = {"tweets": report.tweets, "captions": report.captions, "empty_captions": report.empty}
    blank = {
        "no_directory": report.images.no_directory,
        "blank": report.images.summary(),
        "blank_images": report.images.items,
    }
    path.write_text(json.dumps({"provenance": record, **summary, **blank}, indent=2) + "\n")


def read_record(captions: Path | str) -> dict:
    """The provenance recorded beside a captions file (to check with
    :func:`mner.core.cache.check_provenance` against ``expected_provenance``)."""
    return json.loads(describe_record(captions).read_text())["provenance"]
