"""Running a trained checkpoint over cached features: predictions and their scores."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mner.cached.dataset import FeatureCaches
from mner.cached.inference import predict_labels
from mner.core.cache import CacheError
from mner.core.config import Count
from mner.core.workspace import MODEL_INPUTS, Workspace
from mner.data.conll import Sentence
from mner.data.labels import Scheme
from mner.data.prepared import prepared_sentences
from mner.metrics import Scores, score
from mner.models import load_checkpoint


@dataclass(frozen=True)
class EvaluateConfig:
    scheme: Scheme = "conlleval"  # conlleval (as the published results) or strict
    batch_size: Count = 128


def checkpoint_caches(record: dict, where: str, workspace: Workspace) -> FeatureCaches:
    """The caches of ``workspace`` that a checkpoint (its ``checkpoint.json`` ``record``) reads:
    those it was trained on, each checked against the provenance recorded then."""
    if "caches" not in record:
        raise CacheError(
            f"{where}: records no provenance of the caches it was trained on (saved by an older "
            "mner); retrain it"
        )
    expect = record["caches"] if isinstance(record["caches"], dict) else {}
    bad = [kind for kind in MODEL_INPUTS if kind in expect and not isinstance(expect[kind], dict)]
    if "text" not in expect or bad:
        raise CacheError(f"{where}: records no provenance of a {(bad or ['text'])[0]} cache to check against")
    return FeatureCaches.open(workspace, expect)


def check_input_sizes(caches: FeatureCaches, split: str, inputs: dict, where: Path) -> None:
    """Refuse caches whose feature sizes differ from those the checkpoint (its recorded
    ``inputs``, read from ``where``) was trained on."""
    found, trained = caches.text.row_shape(split, "words"), (inputs["text_layers"], inputs["text_dim"])
    if found != trained:
        raise CacheError(
            f"{caches.text.path}: word vectors of shape {list(found)} (layers, size), but {where} was "
            f"trained on {list(trained)}: give it the text cache it was trained on"
        )
    if inputs.get("visual_dim") and caches.visual_source is not None:
        found, trained = caches.visual_dim(split), inputs["visual_dim"]
        if found != trained:
            raise CacheError(
                f"{caches.visual_source.path}: visual vectors of size {found}, but {where} was trained "
                f"on {trained}: give it the cache it was trained on"
            )


def evaluate_checkpoint(
    checkpoint: Path,
    workspace: Workspace,
    split: str = "test",
    scheme: Scheme = "conlleval",
    batch_size: int = 128,
    decode: str | None = None,
) -> tuple[Scores, list[Sentence]]:
    """Scores of the checkpoint on ``split`` of ``workspace``'s dataset and the sentences with
    predicted labels, read from the caches it was trained on (rebuilt there with the same
    settings). ``decode`` overrides the decoding the checkpoint records (constrained or free)."""
    model, record = load_checkpoint(checkpoint, decode)
    caches = checkpoint_caches(record, str(checkpoint), workspace)
    caches.check_inputs(workspace.prepared)
    gold = prepared_sentences(workspace.prepared / f"{split}.jsonl")
    labels = record["labels"]
    data = caches.dataset(model, split, gold, labels)
    check_input_sizes(caches, split, record["inputs"], Path(checkpoint) / "checkpoint.json")
    predicted = predict_labels(model, data, labels, batch_size, desc=f"evaluate {split}")
    scores = score([s.labels for s in gold], predicted, scheme)
    sentences = [Sentence(s.id, s.image_id, s.tokens, tuple(p)) for s, p in zip(gold, predicted)]
    return scores, sentences
