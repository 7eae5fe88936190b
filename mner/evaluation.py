"""Running a trained checkpoint over cached features: predictions and their scores."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mner.cache import CacheError
from mner.config import Count
from mner.data.conll import Sentence
from mner.data.dataset import FeatureCaches
from mner.data.labels import Scheme
from mner.data.prepared import prepared_sentences
from mner.inference import predict_labels
from mner.metrics import Scores, score
from mner.models import load_checkpoint


@dataclass(frozen=True)
class EvaluateConfig:
    scheme: Scheme = "conlleval"  # conlleval (as the published results) or strict
    batch_size: Count = 128


def checkpoint_caches(
    record: dict,
    where: str,
    text_cache: Path,
    visual_cache: Path | None = None,
    grounding_cache: Path | None = None,
    dataset: str = "",
) -> FeatureCaches:
    """The caches a checkpoint (its ``checkpoint.json`` ``record``) reads, each checked
    against the provenance of the one it was trained on."""
    if "caches" not in record:
        raise CacheError(
            f"{where}: records no provenance of the caches it was trained on (saved by an older "
            "mner); retrain it"
        )
    expect = record["caches"] if isinstance(record["caches"], dict) else {}
    for name, path in {"text": text_cache, "visual": visual_cache, "grounding": grounding_cache}.items():
        if path and not isinstance(expect.get(name), dict):
            raise CacheError(f"{where}: records no provenance of a {name} cache to check {path} against")
    return FeatureCaches.open(text_cache, expect, visual_cache, grounding_cache, dataset)


def check_input_sizes(caches: FeatureCaches, split: str, inputs: dict, where: Path) -> None:
    """Refuse caches whose feature sizes differ from those the checkpoint (its recorded
    ``inputs``, read from ``where``) was trained on."""
    found, trained = caches.text.row_shape(split, "words"), (inputs["text_layers"], inputs["text_dim"])
    if found != trained:
        raise CacheError(
            f"{caches.text.path}: word vectors of shape {list(found)} (layers, size), but {where} was "
            f"trained on {list(trained)}: give it the text cache it was trained on"
        )
    if inputs.get("visual_dim") and caches.visual is not None:
        found, trained = caches.visual.row_shape(split, "image"), (inputs["visual_dim"],)
        if found != trained:
            raise CacheError(
                f"{caches.visual.path}: image vectors of shape {list(found)}, but {where} was trained on "
                f"{list(trained)}: give it the visual cache it was trained on"
            )


def evaluate_checkpoint(
    checkpoint: Path,
    prepared: Path,
    text_cache: Path,
    split: str = "test",
    scheme: Scheme = "conlleval",
    batch_size: int = 128,
    visual_cache: Path | None = None,
    grounding_cache: Path | None = None,
    decode: str | None = None,
) -> tuple[Scores, list[Sentence]]:
    """Scores of the checkpoint on ``split`` and the sentences with predicted labels.
    The text cache must have been built as the one the checkpoint was trained on.
    ``decode`` overrides the decoding the checkpoint records (constrained or free)."""
    model, record = load_checkpoint(checkpoint, decode)
    caches = checkpoint_caches(record, str(checkpoint), text_cache, visual_cache, grounding_cache)
    caches.check_inputs(prepared)
    gold = prepared_sentences(prepared / f"{split}.jsonl")
    labels = record["labels"]
    data = caches.dataset(model, split, gold, labels)
    check_input_sizes(caches, split, record["inputs"], Path(checkpoint) / "checkpoint.json")
    predicted = predict_labels(model, data, labels, batch_size, desc=f"evaluate {split}")
    scores = score([s.labels for s in gold], predicted, scheme)
    sentences = [Sentence(s.id, s.image_id, s.tokens, tuple(p)) for s, p in zip(gold, predicted)]
    return scores, sentences
