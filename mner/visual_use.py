"""Does a trained multimodal checkpoint use the image? (``mner visual-use``)

The checkpoint's test scores (entity-level micro P/R/F1, :func:`mner.metrics.score`) in
three conditions that differ only in the visual inputs, swapped at the dataset level (the
model and the text features are those of ``evaluate``):

- ``own``: each tweet's own visual features, as ``evaluate`` reads them;
- ``blank``: for every tweet, the blank image (the white square that stands for a missing
  image, ``images.blank_size`` wide) encoded by the ResNet the visual cache records, and
  no detected or grounded objects (a detector finds none on a white image): the whole-image
  vector, plus the blank image's grid for the grid models;
- ``deranged``: each tweet the visual features of another tweet of the split, by a fixed
  derangement (:func:`derangement`): its whole-image vector and its objects or grid. A
  grounded cell belongs to a phrase of the tweet, so the tweet keeps its own grounded
  cells (their number and word positions) and they take, in turn, the vectors of the
  other tweet's grounded objects (its whole-image vector when it has none).

With each condition, the number of entities predicted, the share of tweets whose
predicted label sequence differs from the ``own`` one and the share of words whose
predicted label does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from mner.cached.dataset import CachedMultimodalDataset, add_visual
from mner.cached.inference import predict_labels
from mner.core.config import resolve_device
from mner.core.workspace import run_workspace
from mner.data.labels import Scheme
from mner.data.prepared import prepared_sentences
from mner.evaluation import check_input_sizes, checkpoint_caches
from mner.features.images import LoadedImage, blank_image
from mner.features.visual import Cropper, VisualEncoder
from mner.metrics import format_table, score
from mner.models import check_size, load_checkpoint, recorded
from mner.settings.images import ImagesConfig
from mner.settings.visual import VisualConfig
from mner.tagger import VisualKind, visual_kind

CONDITIONS = ("own", "blank", "deranged")
COLUMNS = ("P", "R", "F1", "dF1", "entities", "changed tweets", "changed words")


def derangement(n: int, seed: int = 0) -> np.ndarray:
    """A permutation ``[n]`` of ``range(n)`` with no fixed point, the same for the same
    ``n`` and ``seed``: one cycle through every item (Sattolo's shuffle)."""
    if n < 2:
        raise ValueError(f"a derangement needs at least 2 items, got {n}")
    rng = np.random.default_rng(seed)
    order = np.arange(n)
    for i in range(n - 1, 0, -1):
        j = int(rng.integers(i))  # j < i: never stays in place
        order[i], order[j] = order[j], order[i]
    return order


class SwappedVisual(Dataset):
    """The items of ``data`` with other visual inputs: those of item ``partners[i]`` for
    item i, or ``blank`` (a whole-image vector ``[1, C]`` and the rows ``[k, C]`` of the
    kind that come with it) for every item. See the module docstring for grounded cells."""

    def __init__(
        self,
        data: CachedMultimodalDataset,
        partners: np.ndarray | None = None,
        blank: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        if (partners is None) == (blank is None):
            raise ValueError("give either partners or blank")
        self.data, self.partners, self.blank = data, partners, blank

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict:
        item = self.data[index]
        if self.blank is not None:
            return add_visual(item, *self.blank, None)
        data, other = self.data, int(self.partners[index])
        image = data.visual.get(data.split, "image", other)  # [1, C]
        extra = data.visual.get(data.split, data.kind.field, other, data.limit)  # [k, C]
        if not data.kind.positions:
            return add_visual(item, image, extra, None)
        cells = item["visual_positions"][1:].numpy()  # [g, 2] the tweet's own grounded cells
        pool = extra if len(extra) else image
        return add_visual(item, image, pool[np.arange(len(cells)) % len(pool)], cells)


def blank_features(record: dict, where: str, device: str, root: Path) -> tuple[np.ndarray, np.ndarray]:
    """The blank image's whole-image vector ``[1, C]`` and grid ``[h*w, C]`` (float16, as
    cached), encoded with the ``visual_features`` params and image settings recorded in a
    checkpoint's ``record`` (read from ``where``); a local weights file is looked up
    under the workspace ``root`` too."""
    visual = record.get("visual_features")
    if not isinstance(visual, dict) or not visual.get("params") or not visual.get("images"):
        raise ValueError(f"{where}: records no visual_features params to encode the blank image with")
    config = recorded(VisualConfig, visual["params"], f"{where}:visual_features.params", device)
    images = recorded(ImagesConfig, visual["images"], f"{where}:visual_features.images", device)
    if config.weights and not Path(config.weights).is_file() and (root / config.weights).is_file():
        config = replace(config, weights=str(root / config.weights))
    try:
        encoder = VisualEncoder(config)
    except RuntimeError as error:  # weights not found (offline, nothing in TORCH_HOME)
        raise ValueError(f"{where}: cannot encode the blank image: {error}") from error
    check_size(where, "visual", (encoder.dim,), (record["inputs"]["visual_dim"],))
    no_boxes = Cropper(lambda i: np.zeros((0, 4), np.float32), config)
    _, _, crops, boxes = no_boxes(0, LoadedImage(blank_image(images.blank_size)))
    image, _, grid = encoder.encode([(crops, boxes)])[0]
    return image.cpu().numpy().astype(np.float16), grid.cpu().numpy().astype(np.float16)


@dataclass(frozen=True)
class ConditionScores:
    precision: float
    recall: float
    f1: float
    delta_f1: float  # f1 minus the f1 with the tweets' own visual features
    entities: int  # entities predicted
    changed_tweets: float  # share of tweets whose predicted label sequence differs from own
    changed_words: float  # share of words whose predicted label differs from own


@dataclass(frozen=True)
class VisualUse:
    """The scores of a run in each of :data:`CONDITIONS` (all shares in [0, 1])."""

    run: str
    model: str  # the run's name, e.g. fmit-no-obj
    visual_kind: str  # objects, grounded or grid
    split: str
    scheme: str
    tweets: int
    words: int
    conditions: dict[str, ConditionScores]
    described: dict[str, str]  # how each condition's visual inputs were made

    def to_dict(self) -> dict:
        return asdict(self)


def visual_use(
    run: Path | str,
    device: str = "auto",
    scheme: Scheme = "conlleval",
    batch_size: int = 128,
    split: str = "test",
    seed: int = 0,
) -> VisualUse:
    """The :class:`VisualUse` of the checkpoint of ``run`` (a run directory) on ``split``,
    over the caches of its workspace; a text-only checkpoint is refused."""
    workspace = run_workspace(run)
    checkpoint = Path(run) / "checkpoint"
    model, record = load_checkpoint(checkpoint)
    kind = visual_kind(model)
    if kind is None:
        raise ValueError(
            f"{checkpoint}: {record['model']} is a text-only model (it reads no visual features); "
            "give the run of a multimodal model"
        )
    caches = checkpoint_caches(record, str(checkpoint), workspace)
    caches.check_inputs(workspace.prepared)
    gold = prepared_sentences(workspace.prepared / f"{split}.jsonl")
    labels = record["labels"]
    own = caches.dataset(model, split, gold, labels)
    check_input_sizes(caches, split, record["inputs"], checkpoint / "checkpoint.json")
    image, grid = blank_features(record, str(checkpoint / "checkpoint.json"), device, workspace.root)
    # the blank image's grid cells, or none of the boxes an upstream stage finds (none on a white image)
    blank = (image, grid if kind.source is None else grid[:0])
    inputs = {
        "own": own,
        "blank": SwappedVisual(own, blank=blank),
        "deranged": SwappedVisual(own, partners=derangement(len(own), seed)),
    }
    target = resolve_device(device)
    model.to(target)
    predicted = {
        name: predict_labels(model, data, labels, batch_size, str(target)) for name, data in inputs.items()
    }
    return VisualUse(
        str(run),
        str(record.get("run", record["model"])),
        kind.name,
        split,
        scheme,
        len(gold),
        sum(len(s.tokens) for s in gold),
        compare([s.labels for s in gold], predicted, scheme),
        describe(record, kind, seed),
    )


def compare(gold: Sequence[Sequence[str]], predicted: dict[str, list[list[str]]], scheme: Scheme) -> dict:
    """:class:`ConditionScores` of each condition's ``predicted`` labels, against the ``own`` ones."""
    own = predicted["own"]
    base = score(gold, own, scheme).overall.f1
    words = sum(len(p) for p in own)
    out = {}
    for name, labels in predicted.items():
        overall = score(gold, labels, scheme).overall
        out[name] = ConditionScores(
            overall.precision,
            overall.recall,
            overall.f1,
            overall.f1 - base,
            overall.predicted,
            sum(a != b for a, b in zip(own, labels)) / len(own),
            sum(x != y for a, b in zip(own, labels) for x, y in zip(a, b)) / words,
        )
    return out


def describe(record: dict, kind: VisualKind, seed: int) -> dict[str, str]:
    """How each condition's visual inputs are made, in words."""
    params = record["visual_features"]["params"]
    images = record["visual_features"]["images"]
    weights = f"weights {params['weights']}" if params["weights"] else "random weights"
    encoder = f"{params['model']} ({weights}, {params['image_size']} px input)"
    return {
        "own": "each tweet's own visual features (as evaluate reads them)",
        "blank": (
            f"every tweet: the blank {images['blank_size']} px white image encoded by {encoder} "
            f"as the visual cache was, and {kind.blank}"
        ),
        "deranged": (
            f"each tweet: the visual features of another tweet (a fixed derangement, seed {seed}): "
            f"{kind.deranged}"
        ),
    }


def conditions_table(conditions: dict[str, ConditionScores]) -> str:
    """The scores of each condition as a text table (percent; dF1 and changed against own)."""
    table = {
        name: {
            "P": 100 * c.precision,
            "R": 100 * c.recall,
            "F1": 100 * c.f1,
            "dF1": round(100 * c.delta_f1, 2) + 0.0,  # + 0.0: no "-0.00"
            "entities": c.entities,
            "changed tweets": 100 * c.changed_tweets,
            "changed words": 100 * c.changed_words,
        }
        for name, c in conditions.items()
    }
    return format_table(table, COLUMNS)


def format_visual_use(result: VisualUse) -> str:
    """The conditions as a text table (percent), with what each one is."""
    head = (
        f"{result.run}: {result.model} ({result.visual_kind} cells), {result.split} split, "
        f"{result.tweets} tweets, {result.words} words, {result.scheme} scheme; percent, "
        "dF1 and changed against own"
    )
    notes = [f"{name}: {text}" for name, text in result.described.items()]
    return "\n".join([head, conditions_table(result.conditions), *notes])
